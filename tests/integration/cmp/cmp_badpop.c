/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmp_badpop: an ir whose proof of possession does not verify, sent by OpenSSL's CMP client
 * (tests/integration/cmp/test_cmp.sh). The request is made as usual (the template holds
 * NEWKEY's public key, the POP is NEWKEY's signature), then, in the client's transfer
 * callback, the last byte of the POP's signature is flipped and the message protected again
 * with the station's key (OSSL_CMP_MSG_update_transactionID), so that it passes the service's
 * protection check and only its POP is wrong: `openssl cmp` cannot send such a request.
 *
 *   cmp_badpop HOST:PORT PATH STATION_CERT STATION_KEY ROOT_CERT NEWKEY CN
 *
 * Prints the service's answer (PKIStatus, failure info, text) on one line; exits 0 when the
 * request was refused, 1 when a certificate came back, 2 when nothing was answered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/cmp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* The element at *p (within end): its tag; *p moves to its content, *len is its length. */
static int enter(const unsigned char **p, const unsigned char *end, long *len)
{
    int tag, xclass;
    int r = ASN1_get_object(p, len, &tag, &xclass, end - *p);

    return (r & 0x80) != 0 ? -1 : (xclass == V_ASN1_CONTEXT_SPECIFIC ? 0x100 | tag : tag);
}

/*
 * The offset in der of the last byte of an ir's POP signature: PKIMessage { header,
 * body [0] { CertReqMsg { certReq, popo [1] { [poposkInput [0]], algorithm, signature } } } }.
 */
static long pop_signature_end(const unsigned char *der, long der_len)
{
    const unsigned char *p = der, *end = der + der_len, *stop;
    long len;

    if (enter(&p, end, &len) != V_ASN1_SEQUENCE || enter(&p, end, &len) != V_ASN1_SEQUENCE) {
        return -1;
    }
    p += len; /* the header */
    if (enter(&p, end, &len) != (0x100 | 0) || enter(&p, end, &len) != V_ASN1_SEQUENCE ||
        enter(&p, end, &len) != V_ASN1_SEQUENCE || enter(&p, end, &len) != V_ASN1_SEQUENCE) {
        return -1;
    }
    p += len; /* the certReq */
    if (enter(&p, end, &len) != (0x100 | 1)) {
        return -1;
    }
    for (stop = p + len; p < stop;) {
        int tag = enter(&p, stop, &len);

        if (tag < 0) {
            return -1;
        }
        if (tag == V_ASN1_BIT_STRING) {
            return (long)(p - der) + len - 1;
        }
        p += len;
    }
    return -1;
}

static OSSL_CMP_MSG *spoil_pop(OSSL_CMP_CTX *ctx, const OSSL_CMP_MSG *req)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_OSSL_CMP_MSG(req, &der);
    long at = len > 0 ? pop_signature_end(der, len) : -1;
    OSSL_CMP_MSG *spoiled = NULL, *rsp = NULL;

    if (at < 0) {
        fprintf(stderr, "cmp_badpop: no POP signature found in the request\n");
        OPENSSL_free(der);
        return NULL;
    }
    der[at] ^= 0x01;
    p = der;
    spoiled = d2i_OSSL_CMP_MSG(NULL, &p, len);
    if (spoiled != NULL && OSSL_CMP_MSG_update_transactionID(ctx, spoiled)) {
        rsp = OSSL_CMP_MSG_http_perform(ctx, spoiled);
    }
    OSSL_CMP_MSG_free(spoiled);
    OPENSSL_free(der);
    return rsp;
}

static void *read_pem(const char *path, int is_key)
{
    FILE *f = fopen(path, "r");
    void *obj = NULL;

    if (f != NULL) {
        obj = is_key ? (void *)PEM_read_PrivateKey(f, NULL, NULL, NULL)
                     : (void *)PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (obj == NULL) {
        fprintf(stderr, "cmp_badpop: cannot read %s\n", path);
    }
    return obj;
}

int main(int argc, char **argv)
{
    char host[256], status[512] = "";
    char *colon;
    X509 *cert, *root, *issued = NULL;
    EVP_PKEY *key, *newkey;
    X509_STORE *trust = X509_STORE_new();
    X509_NAME *subject = X509_NAME_new();
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);

    if (argc != 8 || strlen(argv[1]) >= sizeof(host)) {
        fprintf(stderr, "usage: cmp_badpop HOST:PORT PATH STATION_CERT STATION_KEY ROOT_CERT "
                        "NEWKEY CN\n");
        return 2;
    }
    snprintf(host, sizeof(host), "%s", argv[1]);
    colon = strrchr(host, ':');
    cert = read_pem(argv[3], 0);
    key = read_pem(argv[4], 1);
    root = read_pem(argv[5], 0);
    newkey = read_pem(argv[6], 1);
    if (colon == NULL || cert == NULL || key == NULL || root == NULL || newkey == NULL ||
        trust == NULL || subject == NULL || ctx == NULL) {
        return 2;
    }
    *colon = '\0';
    if (!X509_STORE_add_cert(trust, root) || !OSSL_CMP_CTX_set1_server(ctx, host) ||
        !OSSL_CMP_CTX_set_serverPort(ctx, atoi(colon + 1)) ||
        !OSSL_CMP_CTX_set1_serverPath(ctx, argv[2]) || !OSSL_CMP_CTX_set1_cert(ctx, cert) ||
        !OSSL_CMP_CTX_set1_pkey(ctx, key) || !OSSL_CMP_CTX_set0_newPkey(ctx, 1, newkey) ||
        !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (unsigned char *)argv[7], -1,
                                    -1, 0) ||
        !OSSL_CMP_CTX_set1_subjectName(ctx, subject)) {
        ERR_print_errors_fp(stderr);
        return 2;
    }
    OSSL_CMP_CTX_set0_trustedStore(ctx, trust);
    OSSL_CMP_CTX_set_transfer_cb(ctx, spoil_pop);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_MSG_TIMEOUT, 20);
    issued = OSSL_CMP_exec_certreq(ctx, OSSL_CMP_IR, NULL);
    if (OSSL_CMP_CTX_get_status(ctx) >= 0) {
        OSSL_CMP_CTX_snprint_PKIStatus(ctx, status, sizeof(status));
    }
    printf("%s\n", status[0] != '\0' ? status : "no answer");
    if (issued == NULL && status[0] == '\0') {
        ERR_print_errors_fp(stderr);
    }
    X509_NAME_free(subject);
    X509_free(root);
    X509_free(cert);
    EVP_PKEY_free(key);
    OSSL_CMP_CTX_free(ctx);
    return issued != NULL ? 1 : (status[0] != '\0' ? 0 : 2);
}
