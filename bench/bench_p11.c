/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PKCS#11 floor: what the token itself costs, with nothing of the tool around it. Raw
 * PKCS#11 on the module's function list; one C_Initialize, one session, one C_Login. The key
 * and certificate templates are the tool's (backends/pkcs11/pkcs11_key.c: generate_key,
 * store_certificate), so that the floor and the tool ask the token for the same work.
 *
 *   bench_p11 --module SO --token LABEL --pin-file F [--cert DER] keygen N
 *       N x C_GenerateKeyPair of a token-resident P-256 key with the attributes the tool
 *       uses (CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE true, CKA_EXTRACTABLE false, sign only,
 *       a unique 16-byte CKA_ID and a label), filling the token from what it holds now;
 *   bench_p11 --module SO --token LABEL --pin-file F --cert DER device N
 *       the device floor: keygen plus the rest of the token work the tool must do per
 *       device: the public key and the protection attributes read back (one
 *       C_GetAttributeValue each), two ECDSA signatures (CSR, proof of possession) and the
 *       certificate stored on the token (C_CreateObject, CKO_CERTIFICATE, the key's CKA_ID
 *       and label; value, subject, issuer and serial from DER, a certificate the tool issued);
 *   bench_p11 ... --cert DER --ca-token LABEL --ca-pin-file F device N
 *       the line floor: the device floor, and beside it on a second thread, as the batch has
 *       it, the CA's signature of each device's certificate (C_SignInit + C_Sign with the
 *       key labelled "intermediate" on the CA's token, CKM_ECDSA over a 32-byte digest) as
 *       soon as that device's signatures are made; timed to the last CA signature. The
 *       device's token and the CA's share one module, as in the tool's process: what one
 *       costs the other is in this floor, and in no other;
 *   bench_p11 ... --ca-token LABEL --ca-pin-file F --work DIR --chain PEM device N
 *       the work floor: the line floor, and beside it the rest of what the batch must do per
 *       device, each part once and the leanest way (bench_work.c: the journal's three
 *       transactions and the CA index's two, the CSR's and the proof's signatures checked,
 *       the storage's seven files synced, the certificate checked with the intermediate),
 *       in DIR, on the threads a lean tool would use: one records the intents ahead, this
 *       one keeps the token busy (device i's certificate object once it is issued, after
 *       device i + 1's signatures), the CA's thread issues, a fourth stores; timed to the
 *       last device stored. PEM: the CA's chain, the intermediate then the root;
 *   bench_p11 --module SO --token LABEL --pin-file F sign N
 *       one such key, then N x C_SignInit + C_Sign (CKM_ECDSA over a 32-byte digest).
 *
 * Prints one line of key=value pairs (seconds, per_second, ms_first100 / ms_last100 for
 * keygen and device: the mean of the first and last 100, which shows how the cost grows with the
 * number of objects on the token). bench/run.sh drives it; see bench/README.md.
 */
#include <dlfcn.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "bench_work.h"

/* The certificate stored by the device floor: DER of the whole, its subject, issuer, serial. */
struct cert_der {
    unsigned char *value, *subject, *issuer, *serial;
    int value_len, subject_len, issuer_len, serial_len;
};

static CK_FUNCTION_LIST *fl;
static bool is_work; /* the work floor (bench_work.h) */
static struct cert_der cert;
static CK_BBOOL yes = CK_TRUE;
static CK_BBOOL no = CK_FALSE;
/* DER OID of prime256v1 */
static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

/* The line floor's CA: its session and key, and how many devices await its signature. */
static struct {
    bool is_on;
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE key;
    pthread_mutex_t mx;
    pthread_cond_t cv;
    unsigned long ready; /* devices whose own signatures are made */
    unsigned long n;     /* the run's devices */
    int r;
} ca = {.mx = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int check(CK_RV rv, const char *what)
{
    if (rv != CKR_OK) {
        fprintf(stderr, "bench_p11: %s: CK_RV 0x%08lx\n", what, (unsigned long)rv);
        return -1;
    }
    return 0;
}

static uint64_t id_stamp; /* the run's start (main): every key's CKA_ID carries it */

/* Key i's CKA_ID (16 bytes), unique per key and per run: the run's start time and i. */
static void make_id(unsigned long i, unsigned char id[16])
{
    uint64_t index = i;

    memcpy(id, &id_stamp, 8);
    memcpy(id + 8, &index, 8);
}

/* A key pair as the tool makes it, its CKA_ID id (make_id). */
static int keygen(CK_SESSION_HANDLE s, unsigned long i, const unsigned char *id,
                  CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
    char label[32];
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};

    snprintf(label, sizeof(label), "FLOOR-%06lu", i);
    CK_ATTRIBUTE pub_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_VERIFY, &yes, sizeof(yes)},    {CKA_ENCRYPT, &no, sizeof(no)},
        {CKA_WRAP, &no, sizeof(no)},        {CKA_DERIVE, &no, sizeof(no)},
        {CKA_ID, (void *)id, 16},           {CKA_EC_PARAMS, p256, sizeof(p256)},
        {CKA_LABEL, label, strlen(label)},
    };
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},   {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},    {CKA_DECRYPT, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},    {CKA_DERIVE, &no, sizeof(no)},
        {CKA_ID, (void *)id, 16},         {CKA_LABEL, label, strlen(label)},
    };

    return check(fl->C_GenerateKeyPair(s, &mech, pub_tmpl, sizeof(pub_tmpl) / sizeof(pub_tmpl[0]),
                                       priv_tmpl, sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), pub,
                                       priv),
                 "C_GenerateKeyPair");
}

/* Device i's certificate object, the tool's template: the key's CKA_ID and label. */
static int store_cert(CK_SESSION_HANDLE s, unsigned long i, const unsigned char *id)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_OBJECT_HANDLE h;
    char label[32];

    snprintf(label, sizeof(label), "FLOOR-%06lu", i);
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_ID, (void *)id, 16},
        {CKA_SUBJECT, cert.subject, (CK_ULONG)cert.subject_len},
        {CKA_ISSUER, cert.issuer, (CK_ULONG)cert.issuer_len},
        {CKA_SERIAL_NUMBER, cert.serial, (CK_ULONG)cert.serial_len},
        {CKA_VALUE, cert.value, (CK_ULONG)cert.value_len},
        {CKA_LABEL, label, strlen(label)},
    };
    return check(fl->C_CreateObject(s, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h),
                 "C_CreateObject(certificate)");
}

/*
 * The rest of the token work the tool does per device once the key exists: the public key
 * read back (the CSR must carry it), the protection attributes read back (the tool refuses a
 * key that is not local and never extractable), two signatures (the CSR and the proof of
 * possession) and, but in the work floor (which stores it once the device is issued: run_keygen),
 * the certificate stored on the token under the key's CKA_ID and label.
 */
static int device_rest(CK_SESSION_HANDLE s, unsigned long i, CK_OBJECT_HANDLE pub,
                       CK_OBJECT_HANDLE priv, const unsigned char *id)
{
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_KEY_TYPE kt;
    CK_BBOOL v[10];
    CK_ATTRIBUTE props[] = {
        {CKA_TOKEN, &v[0], 1},     {CKA_PRIVATE, &v[1], 1},           {CKA_SENSITIVE, &v[2], 1},
        {CKA_EXTRACTABLE, &v[3], 1}, {CKA_NEVER_EXTRACTABLE, &v[4], 1}, {CKA_LOCAL, &v[5], 1},
        {CKA_SIGN, &v[6], 1},      {CKA_DECRYPT, &v[7], 1},           {CKA_UNWRAP, &v[8], 1},
        {CKA_DERIVE, &v[9], 1},
    };
    unsigned char params[16], point[80], digest[32] = {2}, sig[2][128];
    CK_ATTRIBUTE pubq[] = {
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_EC_PARAMS, params, sizeof(params)},
        {CKA_EC_POINT, point, sizeof(point)},
    };
    CK_ULONG len[2];

    if (check(fl->C_GetAttributeValue(s, pub, pubq, sizeof(pubq) / sizeof(pubq[0])),
              "C_GetAttributeValue(public key)") < 0 ||
        check(fl->C_GetAttributeValue(s, priv, props, sizeof(props) / sizeof(props[0])),
              "C_GetAttributeValue(protection)") < 0) {
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        len[k] = sizeof(sig[k]);
        digest[1] = (unsigned char)k;
        if (check(fl->C_SignInit(s, &mech, priv), "C_SignInit") < 0 ||
            check(fl->C_Sign(s, digest, sizeof(digest), sig[k], &len[k]), "C_Sign") < 0) {
            return -1;
        }
    }
    /* the work floor's CA thread checks both signatures with the point */
    if (is_work && work_signed(i, point, pubq[2].ulValueLen, sig[0], len[0], sig[1], len[1]) < 0) {
        return -1;
    }
    if (ca.is_on) { /* the CSR is made: the CA may sign this device's certificate */
        pthread_mutex_lock(&ca.mx);
        ca.ready++;
        pthread_cond_signal(&ca.cv);
        pthread_mutex_unlock(&ca.mx);
    }
    return is_work ? 0 : store_cert(s, i, id);
}

/* The work floor: device i's certificate object once it is issued, then its storage may go. */
static int store_issued(CK_SESSION_HANDLE s, unsigned long i, const unsigned char *id)
{
    return work_wait_issued(i) < 0 || store_cert(s, i, id) < 0 ? -1 : work_certified(i);
}

/* The line floor's CA thread: one signature per device, each once the device is ready. */
static void *ca_signer(void *arg)
{
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    unsigned char digest[32] = {3}, sig[128];

    (void)arg;
    for (unsigned long i = 0; i < ca.n; i++) {
        CK_ULONG len = sizeof(sig);

        pthread_mutex_lock(&ca.mx);
        while (ca.ready <= i) {
            pthread_cond_wait(&ca.cv, &ca.mx);
        }
        pthread_mutex_unlock(&ca.mx);
        digest[1] = (unsigned char)i;
        if (check(fl->C_SignInit(ca.s, &mech, ca.key), "C_SignInit(CA)") < 0 ||
            check(fl->C_Sign(ca.s, digest, sizeof(digest), sig, &len), "C_Sign(CA)") < 0 ||
            (is_work && work_issue(i) < 0)) {
            ca.r = -1;
            if (is_work) {
                work_fail(); /* the token's thread may wait for this device's issue */
            }
            break;
        }
    }
    return NULL;
}

/* The DER certificate in path, split as the certificate object wants it. */
static int load_cert(const char *path)
{
    FILE *f = fopen(path, "rb");
    X509 *x = f != NULL ? d2i_X509_fp(f, NULL) : NULL;

    if (f != NULL) {
        fclose(f);
    }
    if (x == NULL) {
        fprintf(stderr, "bench_p11: %s: not a DER certificate\n", path);
        return -1;
    }
    cert.value_len = i2d_X509(x, &cert.value);
    cert.subject_len = i2d_X509_NAME(X509_get_subject_name(x), &cert.subject);
    cert.issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &cert.issuer);
    cert.serial_len = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &cert.serial);
    X509_free(x);
    if (cert.value_len <= 0 || cert.subject_len <= 0 || cert.issuer_len <= 0 ||
        cert.serial_len <= 0) {
        fprintf(stderr, "bench_p11: %s: cannot encode its parts\n", path);
        return -1;
    }
    return 0;
}

static int run_keygen(CK_SESSION_HANDLE s, unsigned long n, bool is_device)
{
    double *t = calloc(n, sizeof(*t));
    double start, end, first = 0, last = 0;
    unsigned long k = n < 100 ? n : 100;
    CK_OBJECT_HANDLE pub, priv;
    unsigned char id[16], prev_id[16];
    pthread_t th;

    if (t == NULL) {
        return -1;
    }
    ca.n = n;
    start = now();
    if (ca.is_on && pthread_create(&th, NULL, ca_signer, NULL) != 0) {
        free(t);
        return -1;
    }
    for (unsigned long i = 0; i < n; i++) {
        double t0 = now();

        make_id(i, id);
        if ((is_work && work_wait_intent(i) < 0) || keygen(s, i, id, &pub, &priv) < 0 ||
            (is_device && device_rest(s, i, pub, priv, id) < 0) ||
            /* the work floor: the last device's certificate object, once it is issued */
            (is_work && i > 0 && store_issued(s, i - 1, prev_id) < 0)) {
            exit(1); /* it said why; the other threads would wait for this device forever */
        }
        memcpy(prev_id, id, sizeof(id));
        t[i] = now() - t0;
    }
    if (is_work && store_issued(s, n - 1, prev_id) < 0) {
        exit(1);
    }
    if (ca.is_on && (pthread_join(th, NULL) != 0 || ca.r < 0)) {
        free(t);
        return -1;
    }
    if (is_work && work_wait_done() < 0) { /* to the storage of the last device */
        free(t);
        return -1;
    }
    end = now();
    for (unsigned long i = 0; i < k; i++) {
        first += t[i];
        last += t[n - k + i];
    }
    printf("op=%s n=%lu seconds=%.3f per_second=%.2f ms_first100=%.3f ms_last100=%.3f\n",
           is_device ? (is_work ? "work" : ca.is_on ? "line" : "device") : "keygen", n,
           end - start, (double)n / (end - start), 1e3 * first / (double)k,
           1e3 * last / (double)k);
    free(t);
    if (is_work) {
        work_close(); /* after the clock, as the batch's end is in its start-up and tail */
    }
    return 0;
}

static int run_sign(CK_SESSION_HANDLE s, unsigned long n)
{
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_OBJECT_HANDLE pub, priv;
    unsigned char id[16], digest[32] = {1}, sig[128];
    double start;

    make_id(999999, id);
    if (keygen(s, 999999, id, &pub, &priv) < 0) {
        return -1;
    }
    start = now();
    for (unsigned long i = 0; i < n; i++) {
        CK_ULONG len = sizeof(sig);

        digest[1] = (unsigned char)i;
        if (check(fl->C_SignInit(s, &mech, priv), "C_SignInit") < 0 ||
            check(fl->C_Sign(s, digest, sizeof(digest), sig, &len), "C_Sign") < 0) {
            return -1;
        }
    }
    printf("op=sign n=%lu seconds=%.3f per_second=%.2f\n", n, now() - start,
           (double)n / (now() - start));
    fl->C_DestroyObject(s, priv);
    fl->C_DestroyObject(s, pub);
    return 0;
}

/* The slot whose token label is exactly label (padded field compared whole). */
static int find_slot(const char *label, CK_SLOT_ID *slot)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    char want[32];

    memset(want, ' ', sizeof(want));
    memcpy(want, label, strlen(label) < 32 ? strlen(label) : 32);
    if (check(fl->C_GetSlotList(CK_TRUE, slots, &n), "C_GetSlotList") < 0) {
        return -1;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;

        if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, want, 32) == 0) {
            *slot = slots[i];
            return 0;
        }
    }
    fprintf(stderr, "bench_p11: token \"%s\" not found\n", label);
    return -1;
}

/* A read-write session on the token labelled label, logged in as its user. */
static int open_session(const char *label, const char *pin, size_t pin_len, CK_SESSION_HANDLE *s)
{
    CK_SLOT_ID slot;

    if (find_slot(label, &slot) < 0 ||
        check(fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s),
              "C_OpenSession") < 0 ||
        check(fl->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)pin, pin_len), "C_Login") < 0) {
        return -1; /* find_slot or check said why */
    }
    return 0;
}

/* The CA's session on the token labelled label, logged in, and its key "intermediate". */
static int open_ca(const char *label, const char *pin, size_t pin_len)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE q[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_LABEL, "intermediate", strlen("intermediate")},
    };
    CK_ULONG found = 0;

    if (open_session(label, pin, pin_len, &ca.s) < 0 ||
        check(fl->C_FindObjectsInit(ca.s, q, 2), "C_FindObjectsInit(CA)") < 0 ||
        check(fl->C_FindObjects(ca.s, &ca.key, 1, &found), "C_FindObjects(CA)") < 0 ||
        check(fl->C_FindObjectsFinal(ca.s), "C_FindObjectsFinal(CA)") < 0) {
        return -1;
    }
    if (found != 1) {
        fprintf(stderr, "bench_p11: token \"%s\": no private key labelled intermediate\n", label);
        return -1;
    }
    ca.is_on = true;
    return 0;
}

/* The first line of path, without its line end, in buf. */
static int read_pin(const char *path, char *buf, size_t size, size_t *len)
{
    FILE *f = fopen(path, "r");

    if (f == NULL || fgets(buf, (int)size, f) == NULL) {
        fprintf(stderr, "bench_p11: %s: cannot read the PIN\n", path);
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    fclose(f);
    *len = strcspn(buf, "\r\n");
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"module", required_argument, NULL, 'm'},
        {"token", required_argument, NULL, 't'},
        {"pin-file", required_argument, NULL, 'p'},
        {"cert", required_argument, NULL, 'c'},
        {"ca-token", required_argument, NULL, 'C'},
        {"ca-pin-file", required_argument, NULL, 'P'},
        {"work", required_argument, NULL, 'w'},
        {"chain", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    const char *module = NULL, *token = NULL, *pin_file = NULL, *cert_file = NULL;
    const char *ca_token = NULL, *ca_pin_file = NULL, *work_dir = NULL, *chain_file = NULL;
    char ca_pin[256];
    size_t ca_pin_len = 0;
    CK_RV (*get_list)(CK_FUNCTION_LIST **);
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_SESSION_HANDLE s;
    char pin[256];
    size_t pin_len;
    unsigned long n;
    void *so;
    int c, r;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': module = optarg; break;
        case 't': token = optarg; break;
        case 'p': pin_file = optarg; break;
        case 'c': cert_file = optarg; break;
        case 'C': ca_token = optarg; break;
        case 'P': ca_pin_file = optarg; break;
        case 'w': work_dir = optarg; break;
        case 'k': chain_file = optarg; break;
        default: return 2;
        }
    }
    if (module == NULL || token == NULL || pin_file == NULL || argc - optind != 2 ||
        (strcmp(argv[optind], "keygen") != 0 && strcmp(argv[optind], "sign") != 0 &&
         strcmp(argv[optind], "device") != 0) ||
        (n = strtoul(argv[optind + 1], NULL, 10)) == 0 ||
        (strcmp(argv[optind], "device") == 0 && cert_file == NULL) ||
        (ca_token == NULL) != (ca_pin_file == NULL) ||
        (ca_token != NULL && strcmp(argv[optind], "device") != 0) ||
        (work_dir == NULL) != (chain_file == NULL) || (work_dir != NULL && ca_token == NULL)) {
        fprintf(stderr, "usage: bench_p11 --module SO --token LABEL --pin-file F [--cert DER] "
                        "[--ca-token LABEL --ca-pin-file F [--work DIR --chain PEM]] "
                        "keygen|device|sign N (device needs --cert; the CA's token only with "
                        "device, the work floor only with the CA's token)\n");
        return 2;
    }
    id_stamp = (uint64_t)time(NULL);
    if (cert_file != NULL && load_cert(cert_file) < 0) {
        return 1;
    }
    if (read_pin(pin_file, pin, sizeof(pin), &pin_len) < 0 ||
        (ca_pin_file != NULL && read_pin(ca_pin_file, ca_pin, sizeof(ca_pin), &ca_pin_len) < 0)) {
        return 1;
    }
    so = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    get_list = so ? (CK_RV(*)(CK_FUNCTION_LIST **))dlsym(so, "C_GetFunctionList") : NULL;
    if (get_list == NULL || check(get_list(&fl), "C_GetFunctionList") < 0) {
        fprintf(stderr, "bench_p11: %s: cannot load (%s)\n", module, dlerror());
        return 1;
    }
    if (check(fl->C_Initialize(&args), "C_Initialize") < 0 ||
        open_session(token, pin, pin_len, &s) < 0 ||
        (ca_token != NULL && open_ca(ca_token, ca_pin, ca_pin_len) < 0)) {
        return 1;
    }
    if (work_dir != NULL) {
        if (work_open(work_dir, chain_file, cert.value, (size_t)cert.value_len, n, make_id) < 0) {
            return 1;
        }
        is_work = true;
    }
    if (strcmp(argv[optind], "sign") == 0) {
        r = run_sign(s, n);
    } else {
        r = run_keygen(s, n, strcmp(argv[optind], "device") == 0);
    }
    fl->C_Logout(s);
    fl->C_CloseSession(s);
    fl->C_Finalize(NULL);
    return r < 0 ? 1 : 0;
}
