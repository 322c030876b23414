/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_BACKEND_TSS2_API_H
#define PROV_BACKEND_TSS2_API_H

/*
 * tpm2-tss (ESAPI, the TCTI loader, the response-code decoder), loaded when the first TPM is
 * opened (open_tpm in tpm.c) instead of at every start of the tool: a station of PKCS#11
 * tokens never needs them, and their loading cost every start about 1.3 ms on the benchmark
 * machine (provisioner/support/lazy_lib.h says why that counts; bench/README.md, "Start-up").
 * The backend's files include this header (through tpm_internal.h) instead of the tss2
 * headers: the functions they call go through the table below under their own names, with
 * tss2's own prototypes. A function the backend starts to call must be added to its
 * library's list, or the build fails on its use (tss2 is not linked).
 *
 * Tss2_RC_Decode and Esys_Free also work before anything is loaded (an error text; NULL
 * freed), so that failure paths need not ask.
 */
#include <stdbool.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#define PROV_TSS2_ESYS_SONAME "libtss2-esys.so.0"
#define PROV_TSS2_TCTILDR_SONAME "libtss2-tctildr.so.0"
#define PROV_TSS2_RC_SONAME "libtss2-rc.so.0"

#define PROV_TSS2_ESYS_FUNCTIONS(X)                                                         \
    X(Esys_Create) X(Esys_CreatePrimary) X(Esys_EvictControl) X(Esys_Finalize)               \
    X(Esys_FlushContext) X(Esys_Free) X(Esys_GetCapability) X(Esys_Initialize) X(Esys_Load)  \
    X(Esys_NV_DefineSpace) X(Esys_NV_Read) X(Esys_NV_ReadPublic) X(Esys_NV_UndefineSpace)    \
    X(Esys_NV_Write) X(Esys_ReadPublic) X(Esys_Sign) X(Esys_Startup) X(Esys_TR_Close)        \
    X(Esys_TR_FromTPMPublic)
#define PROV_TSS2_TCTILDR_FUNCTIONS(X) X(Tss2_TctiLdr_Finalize) X(Tss2_TctiLdr_Initialize)
#define PROV_TSS2_RC_FUNCTIONS(X) X(Tss2_RC_Decode)

struct prov_tss2_api {
#define PROV_TSS2_SLOT(f) __typeof__(f) *f;
    PROV_TSS2_ESYS_FUNCTIONS(PROV_TSS2_SLOT)
    PROV_TSS2_TCTILDR_FUNCTIONS(PROV_TSS2_SLOT)
    PROV_TSS2_RC_FUNCTIONS(PROV_TSS2_SLOT)
#undef PROV_TSS2_SLOT
};

extern struct prov_tss2_api prov_tss2;

/* Loads the three libraries once: 0, or -1 with prov_tss2_why() naming the one missing. */
int prov_tss2_load(void);

/* Why tss2 could not be loaded, on one line ("" when it was, or was not tried). */
const char *prov_tss2_why(void);

/* Whether prov_tss2_load has succeeded (in this process). */
bool prov_tss2_is_loaded(void);

static inline const char *prov_tss2_rc_decode(TSS2_RC rc)
{
    return prov_tss2_is_loaded() ? prov_tss2.Tss2_RC_Decode(rc) : "tpm2-tss not loaded";
}

static inline void prov_tss2_esys_free(void *p)
{
    if (p != NULL) {
        prov_tss2.Esys_Free(p);
    }
}

#ifndef PROV_TSS2_API_TABLE
#define Esys_Create prov_tss2.Esys_Create
#define Esys_CreatePrimary prov_tss2.Esys_CreatePrimary
#define Esys_EvictControl prov_tss2.Esys_EvictControl
#define Esys_Finalize prov_tss2.Esys_Finalize
#define Esys_FlushContext prov_tss2.Esys_FlushContext
#define Esys_Free prov_tss2_esys_free
#define Esys_GetCapability prov_tss2.Esys_GetCapability
#define Esys_Initialize prov_tss2.Esys_Initialize
#define Esys_Load prov_tss2.Esys_Load
#define Esys_NV_DefineSpace prov_tss2.Esys_NV_DefineSpace
#define Esys_NV_Read prov_tss2.Esys_NV_Read
#define Esys_NV_ReadPublic prov_tss2.Esys_NV_ReadPublic
#define Esys_NV_UndefineSpace prov_tss2.Esys_NV_UndefineSpace
#define Esys_NV_Write prov_tss2.Esys_NV_Write
#define Esys_ReadPublic prov_tss2.Esys_ReadPublic
#define Esys_Sign prov_tss2.Esys_Sign
#define Esys_Startup prov_tss2.Esys_Startup
#define Esys_TR_Close prov_tss2.Esys_TR_Close
#define Esys_TR_FromTPMPublic prov_tss2.Esys_TR_FromTPMPublic
#define Tss2_TctiLdr_Finalize prov_tss2.Tss2_TctiLdr_Finalize
#define Tss2_TctiLdr_Initialize prov_tss2.Tss2_TctiLdr_Initialize
#define Tss2_RC_Decode prov_tss2_rc_decode
#endif

#endif
