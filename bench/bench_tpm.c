/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TPM enrollment against the ESAPI floor (bench/TPM.md), in one run on one swtpm:
 *
 *   floor   Create (under the persistent SRK) + Load + EvictControl + one Sign, raw ESAPI on a
 *           connection opened once: the least any tool must ask of the TPM per device;
 *   key     the same through the backend, as the core drives it: open the TPM (TCTI, Startup),
 *           generate_key (SRK read and checked, handle and NV index checked, Create, Load,
 *           EvictControl, flush), key_props, one ECDSA signature, close: the floor plus what
 *           the backend adds around it;
 *   enroll  prov_enroll() for one device, exactly what `provisioner enroll` does after start-
 *           up: connect to the TPM, generate and persist the key, check its attributes, CSR
 *           signed in the TPM, issue with the HSM-held intermediate (SoftHSM2), prove with a
 *           second TPM signature, certificate into NV (define, write, read back), storage
 *           files written atomically.
 *
 * The two alternate device by device so that drift on a noisy machine hits both alike. Between
 * devices the key (and NV index) is removed again, outside the timed part. Prints the mean and
 * median per device and the ratio. Usage (bench/tpm.sh sets everything up):
 *   bench_tpm --config provisioner.cnf --tcti swtpm:host=127.0.0.1,port=P --dir DIR [-n N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include "backend.h"
#include "issuer.h"
#include "config.h"
#include "enroll.h"
#include "error.h"
#include "issue.h"
#include "log.h"
#include "pkcs11.h"
#include "tpm.h"

#define HANDLE 0x81000101u

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void report(const char *what, double *ms, int n)
{
    double sum = 0;

    for (int i = 0; i < n; i++) {
        sum += ms[i];
    }
    qsort(ms, (size_t)n, sizeof(*ms), cmp_double);
    printf("%-52s N=%d  mean %.2f ms  median %.2f ms  per device\n", what, n, sum / n, ms[n / 2]);
}

static int esys_check(TSS2_RC rc, const char *what)
{
    if (rc != TSS2_RC_SUCCESS) {
        fprintf(stderr, "bench_tpm: %s: 0x%08x\n", what, (unsigned)rc);
        return -1;
    }
    return 0;
}

/* One device at the ESAPI floor: Create + Load + EvictControl + Sign (transient flushed). */
static int floor_once(ESYS_CONTEXT *esys, ESYS_TR srk, double *ms)
{
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_PUBLIC tmpl = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR loaded = ESYS_TR_NONE, persistent = ESYS_TR_NONE, gone = ESYS_TR_NONE;
    TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_ECDSA, .details.ecdsa.hashAlg = TPM2_ALG_SHA256};
    TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    TPM2B_DIGEST digest = {.size = 32};
    TPMT_SIGNATURE *sig = NULL;
    double t0;
    int r = -1;

    tmpl.publicArea.type = TPM2_ALG_ECC;
    tmpl.publicArea.nameAlg = TPM2_ALG_SHA256;
    tmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                       TPMA_OBJECT_SIGN_ENCRYPT;
    tmpl.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    tmpl.publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    tmpl.publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    tmpl.publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;

    t0 = now_ms();
    if (esys_check(Esys_Create(esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
                               &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL),
                   "Create") < 0 ||
        esys_check(
            Esys_Load(esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &loaded),
            "Load") < 0 ||
        esys_check(Esys_EvictControl(esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, HANDLE, &persistent),
                   "EvictControl") < 0 ||
        esys_check(Esys_FlushContext(esys, loaded), "FlushContext") < 0) {
        goto out;
    }
    loaded = ESYS_TR_NONE;
    if (esys_check(Esys_Sign(esys, persistent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                             &digest, &scheme, &ticket, &sig),
                   "Sign") < 0) {
        goto out;
    }
    *ms = now_ms() - t0;
    r = esys_check(Esys_EvictControl(esys, ESYS_TR_RH_OWNER, persistent, ESYS_TR_PASSWORD,
                                     ESYS_TR_NONE, ESYS_TR_NONE, HANDLE, &gone),
                   "EvictControl (evict)");
out:
    if (loaded != ESYS_TR_NONE) {
        Esys_FlushContext(esys, loaded);
    }
    Esys_Free(priv);
    Esys_Free(pub);
    Esys_Free(sig);
    return r;
}

/* Untimed: the key and its certificate leave the TPM again. */
static int remove_identity(const char *device, const char *key_uri)
{
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    int r;

    r = prov_device_open(device, NULL, &dev);
    if (r == 0) {
        r = dev->ops->find_key(dev, key_uri ? key_uri : device, &key);
    }
    if (r == 0) {
        r = dev->ops->delete_key(dev, key);
    }
    prov_key_free(key);
    prov_device_close(dev);
    return r;
}

/* One device's key through the ops table: open + generate_key + key_props + Sign + close. */
static int key_once(const char *device, double *ms)
{
    static const unsigned char id[16] = {'b', 'e', 'n', 'c', 'h'};
    struct prov_keygen_params kp = {
        .type = PROV_KEY_EC_P256, .label = "bench", .id = id, .id_len = sizeof(id)};
    struct prov_key_props props;
    struct prov_device *dev = NULL;
    struct prov_key *key = NULL;
    unsigned char digest[32] = {0}, sig[128];
    size_t sig_len = sizeof(sig);
    double t0;
    int r;

    prov_error_clear();
    t0 = now_ms();
    r = prov_device_open(device, NULL, &dev);
    if (r == 0) {
        r = dev->ops->generate_key(dev, &kp, &key);
    }
    if (r == 0) {
        r = dev->ops->key_props(dev, key, &props);
    }
    if (r == 0) {
        r = dev->ops->sign(dev, key, PROV_SIG_ECDSA, digest, sizeof(digest), sig, &sig_len);
    }
    prov_key_free(key);
    key = NULL;
    prov_device_close(dev);
    dev = NULL;
    *ms = now_ms() - t0;
    if (r < 0) {
        fprintf(stderr, "bench_tpm: key: %s\n", prov_error_message());
        return r;
    }
    r = remove_identity(device, NULL);
    if (r < 0) {
        fprintf(stderr, "bench_tpm: cleanup: %s\n", prov_error_message());
    }
    return r;
}

static int enroll_once(const struct prov_config *cfg, struct prov_issuer *is, const char *device,
                       const char *dir, int i, double *ms)
{
    struct prov_enroll_params p = {0};
    struct prov_enroll_result res = {0};
    char serial[32], storage[1024];
    double t0;
    int r;

    snprintf(serial, sizeof(serial), "BENCH-%05d", i);
    snprintf(storage, sizeof(storage), "%s/%s", dir, serial);
    p.device_uri = device;
    p.storage_dir = storage;
    p.req.serial = serial;
    p.req.profile = prov_config_profile(cfg, "device");
    p.key_type = PROV_KEY_EC_P256;
    prov_error_clear();
    t0 = now_ms();
    r = prov_enroll(cfg, is, &p, &res);
    *ms = now_ms() - t0;
    if (r < 0) {
        fprintf(stderr, "bench_tpm: enroll %s: %s\n", serial, prov_error_message());
        return r;
    }
    r = remove_identity(device, res.key_uri);
    if (r < 0) {
        fprintf(stderr, "bench_tpm: cleanup %s: %s\n", serial, prov_error_message());
    }
    prov_enroll_result_clear(&res);
    return r;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"tcti", required_argument, NULL, 't'},
        {"dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *tcti = NULL, *dir = NULL;
    struct prov_config *cfg = NULL;
    struct prov_issuer *is = NULL;
    TSS2_TCTI_CONTEXT *tctx = NULL;
    ESYS_CONTEXT *esys = NULL;
    ESYS_TR srk = ESYS_TR_NONE;
    char device[512];
    double *floor_ms = NULL, *key_ms = NULL, *enroll_ms = NULL;
    int n = 50, c, rc = 1;

    while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 't': tcti = optarg; break;
        case 'd': dir = optarg; break;
        case 'n': n = atoi(optarg); break;
        default: return 2;
        }
    }
    if (config == NULL || tcti == NULL || dir == NULL || n < 1) {
        fprintf(stderr, "usage: bench_tpm --config FILE --tcti TCTI --dir DIR [-n N]\n");
        return 2;
    }
    snprintf(device, sizeof(device), "tpm2:%s", tcti);
    prov_log_init(0, true);
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    floor_ms = calloc((size_t)n, sizeof(double));
    key_ms = calloc((size_t)n, sizeof(double));
    enroll_ms = calloc((size_t)n, sizeof(double));
    if (floor_ms == NULL || key_ms == NULL || enroll_ms == NULL ||
        prov_config_load(config, &cfg) < 0 || prov_issuer_open(cfg, NULL, &is) < 0) {
        fprintf(stderr, "bench_tpm: setup: %s\n", prov_error_message());
        goto out;
    }
    /* Warm-up, untimed: creates the SRK once (as the first enrollment on a TPM does). */
    if (enroll_once(cfg, is, device, dir, 0, &enroll_ms[0]) < 0) {
        goto out;
    }
    if (esys_check(Tss2_TctiLdr_Initialize(tcti, &tctx), "TCTI") < 0 ||
        esys_check(Esys_Initialize(&esys, tctx, NULL), "Esys_Initialize") < 0 ||
        esys_check(Esys_TR_FromTPMPublic(esys, PROV_TPM_DEFAULT_SRK_HANDLE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, ESYS_TR_NONE, &srk),
                   "SRK") < 0) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (floor_once(esys, srk, &floor_ms[i]) < 0 || key_once(device, &key_ms[i]) < 0 ||
            enroll_once(cfg, is, device, dir, i + 1, &enroll_ms[i]) < 0) {
            goto out;
        }
    }
    report("TPM floor: ESAPI Create+Load+EvictControl+Sign", floor_ms, n);
    report("TPM key: open+generate_key+key_props+sign+close", key_ms, n);
    report("TPM enroll: prov_enroll ec-p256 (CA on SoftHSM2)", enroll_ms, n);
    printf("ratio key/floor (medians): %.2f\n", key_ms[n / 2] / floor_ms[n / 2]);
    printf("ratio enroll/floor (medians): %.2f\n", enroll_ms[n / 2] / floor_ms[n / 2]);
    rc = 0;
out:
    Esys_Finalize(&esys);
    Tss2_TctiLdr_Finalize(&tctx);
    prov_issuer_close(is);
    prov_config_free(cfg);
    prov_pkcs11_unload_all();
    free(floor_ms);
    free(key_ms);
    free(enroll_ms);
    return rc;
}
