/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "forward.h"

/*
 * A fault-injecting PKCS#11 module for tests (tests/integration/test_p11_faults.sh). Loaded
 * by the binary under test instead of SoftHSM2 (config pkcs11_module), it forwards every call
 * to the module named by $FAULT_TARGET and, configured by the environment:
 *
 *   FAULT_LOG=FILE     appends "C_Name 0xRV\n" per call of the functions the tool uses (the
 *                      rv returned), one write(2) with O_APPEND, so threads and processes do
 *                      not interleave lines;
 *   FAULT_FUNC=C_Name  the function to fail,
 *   FAULT_CALL=N       at its N-th call in this process (1-based),
 *   FAULT_RV=0xRV      with this CK_RV (the real function is NOT called for that call);
 *   FAULT_STICKY=1     from then on every call of every wrapped function returns FAULT_RV
 *                      (a token that was pulled stays gone);
 *   FAULT_PULLED=FILE  while FILE exists the token is out: every wrapped call but C_Finalize
 *                      returns FAULT_RV (default CKR_DEVICE_REMOVED) without being forwarded.
 *                      Once FILE is gone, the token is back but the process's sessions are
 *                      not: every call returns CKR_CRYPTOKI_NOT_INITIALIZED until the process
 *                      calls C_Initialize again, which first finalizes the real module (an
 *                      HSM that restarted). A test pulls and puts back with touch and rm.
 *   FAULT_MAX_RW_SESSIONS=N  C_GetTokenInfo says every token allows N read-write sessions
 *                      (a smart card's limit; nothing else changes).
 *   FAULT_MAX_SESSIONS=N  C_OpenSession answers CKR_SESSION_COUNT while N sessions opened
 *                      through this module (in this process, every token) are open.
 *
 * Counting is per process and per function, with atomics (batch workers are threads).
 * Test-only: it never reads a PIN (C_Login's arguments are forwarded untouched).
 */

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static CK_FUNCTION_LIST shim;
static CK_FUNCTION_LIST_PTR target;
static const char *fault_func;
static unsigned long fault_call;
static CK_RV fault_rv;
static int is_sticky;
static int is_tripped;
static int log_fd = -1;
static const char *pulled_file;
static int was_pulled;

static void log_call(const char *name, CK_RV rv)
{
    char line[64];
    int n;

    if (log_fd < 0) {
        return;
    }
    n = snprintf(line, sizeof(line), "%s 0x%lx\n", name, (unsigned long)rv);
    if (n > 0 && write(log_fd, line, (size_t)n) < 0) {
        /* a test log that cannot be written shows up as a missing line */
    }
}

/*
 * Decides whether this call (the *count-th of name) fails. The counter is per wrapper
 * (a static in the macro below).
 */
static int must_fail(const char *name, unsigned long *count)
{
    unsigned long n = __atomic_add_fetch(count, 1, __ATOMIC_SEQ_CST);

    if (__atomic_load_n(&is_tripped, __ATOMIC_SEQ_CST) && is_sticky) {
        return 1;
    }
    if (fault_func != NULL && strcmp(fault_func, name) == 0 && n == fault_call) {
        __atomic_store_n(&is_tripped, 1, __ATOMIC_SEQ_CST);
        return 1;
    }
    return 0;
}

/*
 * FAULT_PULLED: the rv a call of name gets from a pulled (or pulled and put back) token, or
 * CKR_OK to forward it. C_Initialize after a put-back restarts the real module first.
 */
static CK_RV pulled_rv(const char *name)
{
    if (pulled_file == NULL) {
        return CKR_OK;
    }
    if (access(pulled_file, F_OK) == 0) {
        if (strcmp(name, "C_Finalize") == 0) {
            return CKR_OK;
        }
        __atomic_store_n(&was_pulled, 1, __ATOMIC_SEQ_CST);
        return fault_rv;
    }
    if (!__atomic_load_n(&was_pulled, __ATOMIC_SEQ_CST) || strcmp(name, "C_Finalize") == 0) {
        return CKR_OK;
    }
    if (strcmp(name, "C_Initialize") == 0) {
        target->C_Finalize(NULL);
        __atomic_store_n(&was_pulled, 0, __ATOMIC_SEQ_CST);
        return CKR_OK;
    }
    return CKR_CRYPTOKI_NOT_INITIALIZED;
}

/* One wrapper per function: count, maybe fail, else forward; log the rv returned. */
#define WRAP(name, params, args)                                                              \
    static CK_RV fault_##name params                                                          \
    {                                                                                         \
        static unsigned long count;                                                           \
        CK_RV rv = pulled_rv(#name);                                                          \
        if (rv == CKR_OK) {                                                                   \
            rv = must_fail(#name, &count) ? fault_rv : target->name args;                     \
        }                                                                                     \
        log_call(#name, rv);                                                                  \
        return rv;                                                                            \
    }

WRAP(C_Initialize, (CK_VOID_PTR a), (a))
WRAP(C_Finalize, (CK_VOID_PTR a), (a))
WRAP(C_GetInfo, (CK_INFO_PTR a), (a))
WRAP(C_GetSlotList, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c))
WRAP(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b))
/* FAULT_MAX_RW_SESSIONS=N: every token says it allows N read-write sessions. */
static const char *max_rw_sessions;

static CK_RV fault_C_GetTokenInfo(CK_SLOT_ID a, CK_TOKEN_INFO_PTR b)
{
    static unsigned long count;
    CK_RV rv = pulled_rv("C_GetTokenInfo");

    if (rv == CKR_OK) {
        rv = must_fail("C_GetTokenInfo", &count) ? fault_rv : target->C_GetTokenInfo(a, b);
    }
    if (rv == CKR_OK && b != NULL && max_rw_sessions != NULL) {
        b->ulMaxRwSessionCount = strtoul(max_rw_sessions, NULL, 0);
    }
    log_call("C_GetTokenInfo", rv);
    return rv;
}
WRAP(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c))
/* FAULT_MAX_SESSIONS=N: no more than N sessions open at once in this process. */
static unsigned long max_sessions;
static unsigned long open_sessions;

static CK_RV fault_C_OpenSession(CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d,
                                 CK_SESSION_HANDLE_PTR e)
{
    static unsigned long count;
    CK_RV rv = pulled_rv("C_OpenSession");

    if (rv == CKR_OK && max_sessions > 0 &&
        __atomic_add_fetch(&open_sessions, 1, __ATOMIC_SEQ_CST) > max_sessions) {
        __atomic_sub_fetch(&open_sessions, 1, __ATOMIC_SEQ_CST);
        rv = CKR_SESSION_COUNT;
    } else if (rv == CKR_OK) {
        rv = must_fail("C_OpenSession", &count) ? fault_rv : target->C_OpenSession(a, b, c, d, e);
        if (rv != CKR_OK && max_sessions > 0) {
            __atomic_sub_fetch(&open_sessions, 1, __ATOMIC_SEQ_CST);
        }
    }
    log_call("C_OpenSession", rv);
    return rv;
}

static CK_RV fault_C_CloseSession(CK_SESSION_HANDLE a)
{
    static unsigned long count;
    CK_RV rv = pulled_rv("C_CloseSession");

    if (rv == CKR_OK) {
        rv = must_fail("C_CloseSession", &count) ? fault_rv : target->C_CloseSession(a);
    }
    if (rv == CKR_OK && max_sessions > 0) {
        __atomic_sub_fetch(&open_sessions, 1, __ATOMIC_SEQ_CST);
    }
    log_call("C_CloseSession", rv);
    return rv;
}
WRAP(C_CloseAllSessions, (CK_SLOT_ID a), (a))
WRAP(C_GetSessionInfo, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b))
WRAP(C_Login, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d), (a, b, c, d))
WRAP(C_Logout, (CK_SESSION_HANDLE a), (a))
WRAP(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c,
                      CK_OBJECT_HANDLE_PTR d), (a, b, c, d))
WRAP(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b))
WRAP(C_GetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c,
                           CK_ULONG d), (a, b, c, d))
WRAP(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c,
                           CK_ULONG d), (a, b, c, d))
WRAP(C_FindObjectsInit, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c))
WRAP(C_FindObjects, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c, CK_ULONG_PTR d),
     (a, b, c, d))
/* Ending a search, like a failing C_Sign, ends it in the token too: forward, then fail. */
static CK_RV fault_C_FindObjectsFinal(CK_SESSION_HANDLE a)
{
    static unsigned long count;
    CK_RV rv = pulled_rv("C_FindObjectsFinal");

    if (rv != CKR_OK) {
        log_call("C_FindObjectsFinal", rv);
        return rv;
    }
    rv = target->C_FindObjectsFinal(a);
    if (must_fail("C_FindObjectsFinal", &count)) {
        rv = fault_rv;
    }
    log_call("C_FindObjectsFinal", rv);
    return rv;
}
WRAP(C_SignInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
/*
 * A failing C_Sign ends the signing operation (PKCS#11 3.0 §5.13: unless it is a length query
 * or CKR_BUFFER_TOO_SMALL); the real call is made and its result dropped so that SoftHSM2's
 * session state matches what a failing token leaves (no operation still active).
 */
static CK_RV fault_C_Sign(CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d,
                          CK_ULONG_PTR e)
{
    static unsigned long count;
    CK_RV rv = pulled_rv("C_Sign");

    if (rv != CKR_OK) {
        log_call("C_Sign", rv);
        return rv;
    }
    rv = target->C_Sign(a, b, c, d, e);
    if (must_fail("C_Sign", &count)) {
        rv = fault_rv;
    }
    log_call("C_Sign", rv);
    return rv;
}
WRAP(C_GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d,
                         CK_ATTRIBUTE_PTR e, CK_ULONG f, CK_OBJECT_HANDLE_PTR g,
                         CK_OBJECT_HANDLE_PTR h), (a, b, c, d, e, f, g, h))
WRAP(C_GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))

static CK_RV fault_get_function_list(CK_FUNCTION_LIST_PTR_PTR list);

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return fault_get_function_list(list);
}

static void read_config(void)
{
    const char *call = getenv("FAULT_CALL");
    const char *rv = getenv("FAULT_RV");
    const char *log = getenv("FAULT_LOG");
    const char *sticky = getenv("FAULT_STICKY");

    fault_func = getenv("FAULT_FUNC");
    max_rw_sessions = getenv("FAULT_MAX_RW_SESSIONS");
    max_sessions = getenv("FAULT_MAX_SESSIONS") != NULL
                       ? strtoul(getenv("FAULT_MAX_SESSIONS"), NULL, 0) : 0;
    fault_call = call != NULL ? strtoul(call, NULL, 0) : 0;
    pulled_file = getenv("FAULT_PULLED");
    if (pulled_file != NULL && pulled_file[0] == '\0') {
        pulled_file = NULL;
    }
    fault_rv = rv != NULL            ? (CK_RV)strtoul(rv, NULL, 0)
               : pulled_file != NULL ? CKR_DEVICE_REMOVED
                                     : CKR_FUNCTION_FAILED;
    is_sticky = sticky != NULL && strcmp(sticky, "1") == 0;
    if (log != NULL && log[0] != '\0') {
        log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
}

static CK_RV fault_get_function_list(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_RV rv;

    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    if (target == NULL) {
        rv = forward_load_target("FAULT_TARGET", &target);
        if (rv != CKR_OK) {
            return rv;
        }
        read_config();
        shim = *target;
        shim.C_GetFunctionList = fault_get_function_list;
#define SET(name) shim.name = fault_##name
        SET(C_Initialize);
        SET(C_Finalize);
        SET(C_GetInfo);
        SET(C_GetSlotList);
        SET(C_GetSlotInfo);
        SET(C_GetTokenInfo);
        SET(C_GetMechanismInfo);
        SET(C_OpenSession);
        SET(C_CloseSession);
        SET(C_CloseAllSessions);
        SET(C_GetSessionInfo);
        SET(C_Login);
        SET(C_Logout);
        SET(C_CreateObject);
        SET(C_DestroyObject);
        SET(C_GetAttributeValue);
        SET(C_SetAttributeValue);
        SET(C_FindObjectsInit);
        SET(C_FindObjects);
        SET(C_FindObjectsFinal);
        SET(C_SignInit);
        SET(C_Sign);
        SET(C_GenerateKeyPair);
        SET(C_GenerateRandom);
#undef SET
    }
    *list = &shim;
    return CKR_OK;
}
