/* SPDX-License-Identifier: Apache-2.0 */
/* The facts of a certificate that identity.json, results and --json output show. */
#include "cert_facts.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "error.h"

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static int rfc3339(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;

    if (t == NULL || !ASN1_TIME_to_tm(t, &tm) ||
        strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return prov_fail(PROV_ERR_INPUT, "certificate: unreadable validity time");
    }
    return 0;
}

static int name_line(const X509_NAME *name, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;

    /* RFC 2253 order and escaping, but UTF-8 kept as is: the JSON is UTF-8 anyway. */
    if (bio == NULL ||
        X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~(unsigned long)ASN1_STRFLGS_ESC_MSB) <
            0) {
        BIO_free(bio);
        return prov_fail_ossl(PROV_ERR_CRYPTO, "certificate: cannot print name");
    }
    len = BIO_get_mem_data(bio, &data);
    snprintf(out, cap, "%.*s", (int)len, data);
    BIO_free(bio);
    return 0;
}

int prov_cert_facts(X509 *cert, struct prov_cert_facts *f)
{
    const ASN1_INTEGER *serial;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int n;
    int r;

    memset(f, 0, sizeof(*f));
    if (cert == NULL) {
        return prov_fail(PROV_ERR_INPUT, "certificate: none given");
    }
    serial = X509_get0_serialNumber(cert);
    n = serial ? ASN1_STRING_length(serial) : 0;
    if (n <= 0 || (size_t)n * 2 >= sizeof(f->serial_hex) ||
        ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) {
        return prov_fail(PROV_ERR_INPUT, "certificate: serial number missing, negative or longer "
                         "than 32 bytes");
    }
    to_hex(ASN1_STRING_get0_data(serial), (size_t)n, f->serial_hex);
    if (!X509_digest(cert, EVP_sha256(), md, &md_len) || md_len != 32) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "certificate: cannot hash");
    }
    to_hex(md, md_len, f->sha256_hex);
    if ((r = rfc3339(X509_get0_notBefore(cert), f->not_before, sizeof(f->not_before))) < 0 ||
        (r = rfc3339(X509_get0_notAfter(cert), f->not_after, sizeof(f->not_after))) < 0 ||
        (r = name_line(X509_get_issuer_name(cert), f->issuer, sizeof(f->issuer))) < 0 ||
        (r = name_line(X509_get_subject_name(cert), f->subject, sizeof(f->subject))) < 0) {
        return r;
    }
    return 0;
}

