/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "forward.h"

/*
 * A PKCS#11 module for tests: forwards everything to the module named by $SHIM_TARGET
 * (SoftHSM2) and only
 *   - counts C_Login calls (shim_login_calls), to prove a rejected PIN is never resent, and
 *   - ORs shim_extra_flags into the token flags, because SoftHSM2 2.6.1 never sets
 *     CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED or CKF_USER_PIN_TO_BE_CHANGED.
 * The test program, in the same process, reaches both variables with dlsym.
 */

unsigned long shim_login_calls;
CK_FLAGS shim_extra_flags;
CK_FLAGS shim_real_flags; /* the token flags the target last reported */

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static CK_FUNCTION_LIST shim;
static CK_FUNCTION_LIST_PTR target;

static CK_RV shim_get_token_info(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    CK_RV rv = target->C_GetTokenInfo(slot, info);

    if (rv == CKR_OK) {
        shim_real_flags = info->flags;
        info->flags |= shim_extra_flags;
    }
    return rv;
}

static CK_RV shim_login(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                        CK_ULONG pin_len)
{
    __atomic_add_fetch(&shim_login_calls, 1, __ATOMIC_SEQ_CST);
    return target->C_Login(session, user, pin, pin_len);
}

static CK_RV shim_get_function_list(CK_FUNCTION_LIST_PTR_PTR list);

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return shim_get_function_list(list);
}

static CK_RV shim_get_function_list(CK_FUNCTION_LIST_PTR_PTR list)
{
    CK_RV rv;

    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    if (target == NULL) {
        rv = forward_load_target("SHIM_TARGET", &target);
        if (rv != CKR_OK) {
            return rv;
        }
        shim = *target;
        shim.C_GetFunctionList = shim_get_function_list;
        shim.C_GetTokenInfo = shim_get_token_info;
        shim.C_Login = shim_login;
    }
    *list = &shim;
    return CKR_OK;
}
