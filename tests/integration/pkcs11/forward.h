/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the test PKCS#11 modules (shim_module.c, fault_module.c) share: loading the module
 * they forward to. Header-only; each module includes it once.
 */
#ifndef PROV_TEST_PKCS11_FORWARD_H
#define PROV_TEST_PKCS11_FORWARD_H

#include <dlfcn.h>
#include <stdlib.h>

#include <p11-kit/pkcs11.h>

/* The function list of the module whose path is in the environment variable env_var. */
static CK_RV forward_load_target(const char *env_var, CK_FUNCTION_LIST_PTR *target)
{
    const char *path = getenv(env_var);
    void *dl = path != NULL ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) =
        dl != NULL ? (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(dl, "C_GetFunctionList") : NULL;

    return get != NULL ? get(target) : CKR_GENERAL_ERROR;
}

#endif
