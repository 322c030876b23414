/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "forward.h"

/*
 * A PKCS#11 module that makes SoftHSM2 tokens behave like slow secure elements on I2C or USB,
 * for the benchmark's line of secure elements (bench/run.sh, bench/README.md "A line of
 * secure elements"). Loaded by the tool instead of SoftHSM2 (config pkcs11_module), it
 * forwards every call to the module named by $LATENCY_TARGET and, on a slow token, first
 * waits as long as the part would take:
 *
 *   LATENCY_KEYGEN_MS=60   C_GenerateKeyPair
 *   LATENCY_SIGN_MS=30     C_Sign (C_SignInit only selects the key: no wait)
 *   LATENCY_CREATE_MS=10   C_CreateObject (the certificate written to the part)
 *   LATENCY_LOGIN_MS=5     C_Login
 *   LATENCY_OTHER_MS=0     every other call on a session of a slow token (attribute reads,
 *                          searches, closing a session): a bus round trip
 *   LATENCY_INFO_ON_CHIP=1 slot-level calls (C_GetTokenInfo, C_GetSlotInfo,
 *                          C_GetMechanismInfo, C_OpenSession) wait for the part too (and
 *                          LATENCY_OTHER_MS), as in modules that lock a slot for every call;
 *                          by default the module answers them from memory, at once
 *   LATENCY_PARALLEL=1     sessions of a slow token wait at once, each for its own call,
 *                          as a network HSM serves sessions on many cores (the CA
 *                          service's workers, bench/ca_service.sh); by default one command
 *                          at a time per token, as on a secure element
 *   LATENCY_TOKENS=PREFIX  only tokens whose label starts with PREFIX are slow (default:
 *                          every token); the CA's HSM token stays as fast as SoftHSM2
 *   LATENCY_STATS=FILE     at C_Finalize, appends one line per process: by kind, the calls
 *                          on slow tokens and the milliseconds they were made to wait
 *                          ("keygen=CALLS/MS ... total_ms=MS max_at_once=N", N the most
 *                          calls that waited at once)
 *
 * Values are milliseconds, fractions allowed. bench/README.md lists the datasheet figures the
 * defaults were checked against.
 *
 * A secure element runs one command at a time: each slow token has a mutex held across the
 * wait and the forwarded call, so two threads on one token queue as on the real part, while
 * different tokens (sockets of a gang programmer) wait in parallel. The module itself holds
 * no lock across tokens, so whatever stops tokens from overlapping is the caller's. With
 * LATENCY_PARALLEL=1 there is no such mutex: only the caller keeps a session's calls apart.
 * Benchmark-only: it never looks at a PIN (C_Login's arguments are forwarded untouched).
 */

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

enum kind { KEYGEN, SIGN, CREATE, LOGIN, OTHER, N_KINDS };

static const char *const kind_name[N_KINDS] = {"keygen", "sign", "create", "login", "other"};
static const char *const kind_env[N_KINDS] = {"LATENCY_KEYGEN_MS", "LATENCY_SIGN_MS",
                                              "LATENCY_CREATE_MS", "LATENCY_LOGIN_MS",
                                              "LATENCY_OTHER_MS"};
static const double kind_default_ms[N_KINDS] = {60, 30, 10, 5, 0};

/* Enough for a gang programmer's sockets plus the CA; a slot beyond it is never slow. */
#define MAX_SLOTS 128

struct slot_state {
    CK_SLOT_ID id;
    int is_slow;
    pthread_mutex_t chip; /* one command at a time, as on the part */
};

static CK_FUNCTION_LIST shim;
static CK_FUNCTION_LIST_PTR target;
static long kind_ns[N_KINDS];
static const char *token_prefix;
static const char *stats_path;
static int is_info_on_chip;
static int is_parallel;
static struct slot_state slots[MAX_SLOTS];
static int n_slots;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long slow_calls[N_KINDS];
static unsigned long waiting;     /* calls waiting on slow tokens now */
static unsigned long max_waiting; /* the most at once: the stats' max_at_once */
static unsigned long slow_us[N_KINDS];

/*
 * The state of slot id, looked up once: whether its token's label starts with the prefix.
 * NULL when the slot is not slow (or has no token, or the table is full).
 */
static struct slot_state *slot_of(CK_SLOT_ID id)
{
    struct slot_state *s = NULL;
    CK_TOKEN_INFO info;

    pthread_mutex_lock(&slots_lock);
    for (int i = 0; i < n_slots; i++) {
        if (slots[i].id == id) {
            s = &slots[i];
            break;
        }
    }
    if (s == NULL && n_slots < MAX_SLOTS && target->C_GetTokenInfo(id, &info) == CKR_OK) {
        size_t len = token_prefix != NULL ? strlen(token_prefix) : 0;

        s = &slots[n_slots++];
        s->id = id;
        /* The label is blank-padded to 32 bytes; a prefix longer than that never matches. */
        s->is_slow = len == 0 || (len <= sizeof(info.label) &&
                                  memcmp(info.label, token_prefix, len) == 0);
        pthread_mutex_init(&s->chip, NULL);
    }
    pthread_mutex_unlock(&slots_lock);
    return s != NULL && s->is_slow ? s : NULL;
}

static struct slot_state *session_slot(CK_SESSION_HANDLE session)
{
    CK_SESSION_INFO info;

    if (target->C_GetSessionInfo(session, &info) != CKR_OK) {
        return NULL; /* the real call reports the bad handle */
    }
    return slot_of(info.slotID);
}

/* Takes the part (when slow) and waits as long as a command of this kind takes on it. */
static void chip_begin(struct slot_state *s, enum kind k)
{
    struct timespec ts = {kind_ns[k] / 1000000000L, kind_ns[k] % 1000000000L};

    if (s == NULL) {
        return;
    }
    if (!is_parallel) {
        pthread_mutex_lock(&s->chip);
    }
    if (kind_ns[k] > 0) {
        unsigned long now = __atomic_add_fetch(&waiting, 1, __ATOMIC_RELAXED);
        unsigned long most = __atomic_load_n(&max_waiting, __ATOMIC_RELAXED);

        while (now > most && !__atomic_compare_exchange_n(&max_waiting, &most, now, 0,
                                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        __atomic_sub_fetch(&waiting, 1, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&slow_calls[k], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&slow_us[k], (unsigned long)(kind_ns[k] / 1000), __ATOMIC_RELAXED);
}

static void chip_end(struct slot_state *s)
{
    if (s != NULL && !is_parallel) {
        pthread_mutex_unlock(&s->chip);
    }
}

/* One wrapper per function: find the slot (by session or slot id), wait, forward. */
#define BY_SESSION(name, kind, params, args)                                                  \
    static CK_RV lat_##name params                                                            \
    {                                                                                         \
        struct slot_state *s = session_slot(a);                                               \
        CK_RV rv;                                                                             \
        chip_begin(s, kind);                                                                  \
        rv = target->name args;                                                               \
        chip_end(s);                                                                          \
        return rv;                                                                            \
    }
#define BY_SLOT(name, params, args)                                                           \
    static CK_RV lat_##name params                                                            \
    {                                                                                         \
        struct slot_state *s = is_info_on_chip ? slot_of(a) : NULL;                           \
        CK_RV rv;                                                                             \
        chip_begin(s, OTHER);                                                                 \
        rv = target->name args;                                                               \
        chip_end(s);                                                                          \
        return rv;                                                                            \
    }

BY_SLOT(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b))
BY_SLOT(C_GetTokenInfo, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b))
BY_SLOT(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c))
BY_SLOT(C_OpenSession, (CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d,
                        CK_SESSION_HANDLE_PTR e), (a, b, c, d, e))
BY_SESSION(C_GetSessionInfo, OTHER, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b))
BY_SESSION(C_Login, LOGIN, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d),
           (a, b, c, d))
BY_SESSION(C_Logout, OTHER, (CK_SESSION_HANDLE a), (a))
BY_SESSION(C_CreateObject, CREATE, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c,
                                    CK_OBJECT_HANDLE_PTR d), (a, b, c, d))
BY_SESSION(C_DestroyObject, OTHER, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b))
BY_SESSION(C_GetAttributeValue, OTHER, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
                                        CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d))
BY_SESSION(C_SetAttributeValue, OTHER, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
                                        CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d))
BY_SESSION(C_FindObjectsInit, OTHER, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c),
           (a, b, c))
BY_SESSION(C_FindObjects, OTHER, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c,
                                  CK_ULONG_PTR d), (a, b, c, d))
BY_SESSION(C_FindObjectsFinal, OTHER, (CK_SESSION_HANDLE a), (a))
BY_SESSION(C_Sign, SIGN, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d,
                          CK_ULONG_PTR e), (a, b, c, d, e))
BY_SESSION(C_GenerateKeyPair, KEYGEN, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c,
                                       CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f,
                                       CK_OBJECT_HANDLE_PTR g, CK_OBJECT_HANDLE_PTR h),
           (a, b, c, d, e, f, g, h))
BY_SESSION(C_GenerateRandom, OTHER, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))

/*
 * C_CloseSession: the slot is looked up before the session goes. C_SignInit is left
 * unwrapped on purpose: on a secure element the sign command carries the key and the digest
 * together, so the whole wait is C_Sign's.
 */
static CK_RV lat_C_CloseSession(CK_SESSION_HANDLE a)
{
    struct slot_state *s = session_slot(a);
    CK_RV rv;

    chip_begin(s, OTHER);
    rv = target->C_CloseSession(a);
    chip_end(s);
    return rv;
}

/* The LATENCY_STATS line, appended with one write(2). */
static void write_stats(void)
{
    char line[512];
    unsigned long total_us = 0;
    int n = 0, fd;

    if (stats_path == NULL || stats_path[0] == '\0') {
        return;
    }
    for (int k = 0; k < N_KINDS; k++) {
        unsigned long us = __atomic_load_n(&slow_us[k], __ATOMIC_RELAXED);

        total_us += us;
        n += snprintf(line + n, sizeof(line) - (size_t)n, "%s=%lu/%.1f ", kind_name[k],
                      __atomic_load_n(&slow_calls[k], __ATOMIC_RELAXED), (double)us / 1000.0);
    }
    n += snprintf(line + n, sizeof(line) - (size_t)n, "total_ms=%.1f max_at_once=%lu\n",
                  (double)total_us / 1000.0, __atomic_load_n(&max_waiting, __ATOMIC_RELAXED));
    fd = open(stats_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) < 0) {
            /* a stats file that cannot be written shows up as a missing line */
        }
        close(fd);
    }
}

static CK_RV lat_C_Finalize(CK_VOID_PTR reserved)
{
    CK_RV rv = target->C_Finalize(reserved);

    write_stats();
    return rv;
}

static void read_config(void)
{
    for (int k = 0; k < N_KINDS; k++) {
        const char *v = getenv(kind_env[k]);
        double ms = v != NULL && v[0] != '\0' ? strtod(v, NULL) : kind_default_ms[k];

        kind_ns[k] = ms > 0 ? (long)(ms * 1e6) : 0;
    }
    token_prefix = getenv("LATENCY_TOKENS");
    stats_path = getenv("LATENCY_STATS");
    is_info_on_chip = getenv("LATENCY_INFO_ON_CHIP") != NULL &&
                      strcmp(getenv("LATENCY_INFO_ON_CHIP"), "1") == 0;
    is_parallel = getenv("LATENCY_PARALLEL") != NULL && strcmp(getenv("LATENCY_PARALLEL"), "1") == 0;
}

static CK_RV lat_get_function_list(CK_FUNCTION_LIST_PTR_PTR list);

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return lat_get_function_list(list);
}

static CK_RV lat_get_function_list(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_RV rv;

    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    if (target == NULL) {
        rv = forward_load_target("LATENCY_TARGET", &target);
        if (rv != CKR_OK) {
            return rv;
        }
        read_config();
        shim = *target;
        shim.C_GetFunctionList = lat_get_function_list;
#define SET(name) shim.name = lat_##name
        SET(C_Finalize);
        SET(C_GetSlotInfo);
        SET(C_GetTokenInfo);
        SET(C_GetMechanismInfo);
        SET(C_OpenSession);
        SET(C_CloseSession);
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
        SET(C_Sign);
        SET(C_GenerateKeyPair);
        SET(C_GenerateRandom);
#undef SET
    }
    *list = &shim;
    return CKR_OK;
}
