/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for a CMP request as `ca serve` handles it (service/http.h, service/cmp_server.h):
 * the HTTP route (path, method, Content-Type), then each message through the CMP server with
 * a CA index behind it. Input: the first byte's low bit says POST, then the path up to the
 * first newline, the Content-Type up to the next, and the rest is the body: one or more DER
 * PKIMessages one after another, each sent as one request of the same station to one server
 * (so that a certConf follows its ir, and a message can replay a finished transaction);
 * bytes that do not parse as one DER object are the last request, as they are.
 *
 * The CA is the one tests/fuzz/make_cmp_corpus.sh made the seed corpus against
 * (tests/fuzz/cmp-ca/: its chain and its CA index, copied afresh for every input so that an
 * input does the same each time): a message of the corpus verifies and reaches the issue
 * path. The intermediate's key stays in that script's token: certificates are signed here
 * with a key of the target's own, which nothing checks. FUZZ_CMP_LOG=1 prints what each message
 * did (to see that the corpus still reaches the issue path).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca_index.h"
#include "cmp_server.h"
#include "config.h"
#include "error.h"
#include "fuzz_input.h"
#include "http.h"
#include "issue.h"

#ifndef FUZZ_CMP_CA_DIR
#error "FUZZ_CMP_CA_DIR: the directory of tests/fuzz/cmp-ca (tests/fuzz/meson.build)"
#endif

#define CMP_PATH "/.well-known/cmp"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_text[] = "[provisioner]\n"
                                  "pkcs11_module = /nonexistent.so\n"
                                  "[ca]\n"
                                  "dir = ca\n"
                                  "intermediate_key = pkcs11:token=fuzz;object=intermediate\n"
                                  "pin = file:/nonexistent\n";

static struct {
    bool ready;
    struct prov_config *cfg;
    struct prov_ca ca;
    X509 *signer_cert;
    EVP_PKEY *signer_key;
    unsigned char *index; /* the committed index.sqlite */
    size_t index_len;
    char dir[64]; /* a directory of this process, for the index's copy */
    bool log;     /* FUZZ_CMP_LOG set: each message's outcome on stderr */
} g;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_cmp: %s: %s\n", what, prov_error_message() ? prov_error_message() : "");
    abort();
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n)) == NULL ||
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (f != NULL) {
        fclose(f);
    }
    *len = buf != NULL ? (size_t)n : 0;
    return buf;
}

/* The CMP signer: any end-entity certificate will do, nothing here verifies the answers. */
static void make_signer(void)
{
    X509 *c = X509_new();

    g.signer_key = EVP_EC_gen("P-256");
    if (c == NULL || g.signer_key == NULL || X509_set_version(c, X509_VERSION_3) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(c), 1) != 1 ||
        X509_NAME_add_entry_by_txt(X509_get_subject_name(c), "CN", MBSTRING_ASC,
                                   (const unsigned char *)"fuzz cmp signer", -1, -1, 0) != 1 ||
        X509_set_issuer_name(c, X509_get_subject_name(c)) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(c), 0) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(c), 86400) == NULL ||
        X509_set_pubkey(c, g.signer_key) != 1 || X509_sign(c, g.signer_key, EVP_sha256()) <= 0) {
        die("the CMP signer");
    }
    g.signer_cert = c;
}

/* The index's copy and what SQLite made beside it, then the directory. */
static void cleanup(void)
{
    DIR *d = opendir(g.dir);
    struct dirent *e;
    char path[384];

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof(path), "%s/%s", g.dir, e->d_name);
            unlink(path);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    rmdir(g.dir);
}

static void setup(void)
{
    FILE *f = fopen(FUZZ_CMP_CA_DIR "/chain.pem", "r");
    X509 *x;

    if (prov_config_parse(config_text, sizeof(config_text) - 1, "fuzz_cmp.cnf", NULL, &g.cfg) < 0) {
        die("the config");
    }
    g.ca.chain = sk_X509_new_null();
    while (f != NULL && g.ca.chain != NULL && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        sk_X509_push(g.ca.chain, x);
    }
    if (f != NULL) {
        fclose(f);
    }
    if (g.ca.chain == NULL || sk_X509_num(g.ca.chain) < 2) {
        die(FUZZ_CMP_CA_DIR "/chain.pem: not an intermediate and a root");
    }
    g.ca.cert = sk_X509_value(g.ca.chain, 0);
    g.ca.root = sk_X509_value(g.ca.chain, sk_X509_num(g.ca.chain) - 1);
    g.ca.key = EVP_EC_gen("P-256");
    g.index = read_all(FUZZ_CMP_CA_DIR "/" PROV_CA_INDEX_FILE, &g.index_len);
    if (g.ca.key == NULL || g.index == NULL) {
        die(FUZZ_CMP_CA_DIR "/" PROV_CA_INDEX_FILE);
    }
    make_signer();
    snprintf(g.dir, sizeof(g.dir), "/tmp/fuzz_cmp.XXXXXX");
    if (mkdtemp(g.dir) == NULL) {
        die("mkdtemp");
    }
    atexit(cleanup);
    g.log = getenv("FUZZ_CMP_LOG") != NULL;
    g.ready = true;
}

/* A fresh copy of the committed index, opened as the CA's. */
static void index_fresh(void)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", g.dir, PROV_CA_INDEX_FILE);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(g.index, 1, g.index_len, f) != g.index_len || fclose(f) != 0) {
        die(path);
    }
    if (prov_ca_index_open(g.dir, &g.ca.index) < 0) {
        die("the CA index");
    }
}

/* The length of the DER object at p (header and content), or len when there is none. */
static size_t one_message(const uint8_t *p, size_t len)
{
    const unsigned char *q = p;
    long content = 0;
    int tag = 0;
    int cls = 0;
    int r = ASN1_get_object(&q, &content, &tag, &cls, (long)(len > 0x7fffffff ? 0x7fffffff : len));

    if ((r & 0x80) != 0 || r != V_ASN1_CONSTRUCTED) {
        return len; /* an error, indefinite length or not a constructed object */
    }
    return (size_t)(q - p) + (size_t)content;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct prov_cmp_server_opts o;
    struct prov_cmp_server *srv = NULL;
    const char *why = NULL;
    size_t at = 1;
    char *path;
    char *type;
    char lot[PROV_CMP_LOT_MAX + 1];

    if (size == 0) {
        return 0;
    }
    if (!g.ready) {
        setup();
    }
    path = fuzz_take_line(data, size, &at);
    type = fuzz_take_line(data, size, &at);
    if (path == NULL || type == NULL ||
        prov_http_cmp_route(path, CMP_PATH, (data[0] & 1) != 0, type[0] != '\0' ? type : NULL,
                            lot, sizeof(lot), &why) != 0) {
        free(path);
        free(type);
        return 0;
    }
    index_fresh();
    memset(&o, 0, sizeof(o));
    o.cfg = g.cfg;
    o.ca = &g.ca;
    o.signer_cert = g.signer_cert;
    o.signer_key = g.signer_key;
    if (prov_cmp_server_new(&o, &srv) < 0) {
        die("prov_cmp_server_new");
    }
    /* an HTTP request carries a body, possibly empty: at least one request */
    do {
        size_t n = one_message(data + at, size - at);
        struct prov_cmp_outcome oc;
        unsigned char *rsp = NULL;
        size_t rsp_len = 0;

        prov_error_clear();
        memset(&oc, 0, sizeof(oc));
        if (prov_cmp_server_handle_lot(srv, lot[0] != '\0' ? lot : NULL, data + at, n, time(NULL),
                                       &rsp, &rsp_len, &oc) == 0) {
            OPENSSL_free(rsp);
        }
        if (g.log) {
            fprintf(stderr, "fuzz_cmp: %s station=%s serial=%s outcome=\"%s\"\n", oc.body,
                    oc.station, oc.serial, oc.result);
        }
        at += n;
    } while (at < size);
    prov_cmp_server_free(srv);
    prov_ca_index_close(g.ca.index);
    g.ca.index = NULL;
    free(path);
    free(type);
    return 0;
}
