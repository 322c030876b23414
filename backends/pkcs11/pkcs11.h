/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_BACKEND_PKCS11_H
#define PROV_BACKEND_PKCS11_H

#include "backend.h"

/*
 * The PKCS#11 backend: raw PKCS#11 through the module's function list (loaded with p11-kit,
 * one C_Initialize per module per process; the p11-kit proxy, the default module, with dlopen
 * as p11-kit wants it: pkcs11_module.c), RFC 7512 URIs parsed and matched with p11-kit.
 * Devices are named "pkcs11:token=...;serial=..." and keys "pkcs11:...;id=...;object=...".
 */
extern const struct prov_backend_ops prov_pkcs11_ops;

/* CK_RV as its name ("CKR_PIN_INCORRECT"), or "CKR_0x..." for an unknown value. */
const char *prov_pkcs11_rv_name(unsigned long rv);

/* The PROV_ERR_* a CK_RV maps to (PIN incorrect/locked, removed, not found, ...). */
int prov_pkcs11_rv_to_err(unsigned long rv);

/* Finalizes and unloads every module this process loaded (at exit; tests). */
void prov_pkcs11_unload_all(void);

#endif
