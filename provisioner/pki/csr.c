/* SPDX-License-Identifier: Apache-2.0 */
#include "csr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "error.h"
#include "keytype.h"
#include "memo.h"
#include "storage.h"

int prov_csr_create(EVP_PKEY *signer, const X509_NAME *subject, const EVP_MD *md,
                    X509_REQ **out)
{
    X509_REQ *req = NULL;
    int r = PROV_ERR_CRYPTO;

    *out = NULL;
    req = X509_REQ_new();
    if (req == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "CSR: out of memory");
    }
    /* PKCS#10 knows only version 1, encoded as 0. */
    if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
        X509_REQ_set_subject_name(req, subject) != 1 || X509_REQ_set_pubkey(req, signer) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "CSR: cannot set subject or public key");
        goto out;
    }
    if (X509_REQ_sign(req, signer, md) <= 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "CSR: signing with the device key failed");
        /* The device's own reason (and code: removed, PIN...) wins when it gave one. */
        r = prov_error_code() < 0 ? prov_error_code() : r;
        goto out;
    }
    *out = req;
    req = NULL;
    r = 0;
out:
    X509_REQ_free(req);
    return r;
}

/*
 * CSRs that verified, by the digest of their DER: enroll verifies the CSR the token has just
 * signed, and issuing then checks the same CSR as policy.
 */
static struct prov_memo csr_memo = PROV_MEMO_INIT;

static bool csr_digest(X509_REQ *req, unsigned char d[32])
{
    unsigned char *der = NULL;
    int len = i2d_X509_REQ(req, &der);
    bool ok = len > 0 && prov_memo_digest(d, der, (size_t)len, NULL, 0);

    OPENSSL_free(der);
    return ok;
}

int prov_csr_verify(X509_REQ *req, EVP_PKEY *expected_pub)
{
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    unsigned char d[32];
    bool is_memo;

    if (pub == NULL) {
        return prov_fail_ossl(PROV_ERR_POLICY, "CSR public key is unreadable or unsupported");
    }
    is_memo = csr_digest(req, d);
    if (!is_memo || !prov_memo_has(&csr_memo, d)) {
        if (X509_REQ_verify(req, pub) != 1) {
            return prov_fail_ossl(PROV_ERR_POLICY, "CSR signature does not verify");
        }
        if (is_memo) {
            prov_memo_add(&csr_memo, d);
        }
    }
    /* A signature that verifies can still carry another key (doc/platform.md). */
    if (expected_pub != NULL &&
        !prov_key_type_spki_holds(X509_REQ_get_X509_PUBKEY(req), expected_pub)) {
        return prov_fail(PROV_ERR_POLICY, "CSR public key is not the device key");
    }
    return 0;
}

/* Reads at most PROV_CSR_MAX_BYTES; a larger file is refused before any of it is parsed. */
static int read_bounded(const char *path, unsigned char *buf, size_t *len)
{
    struct stat st;
    size_t have = 0;
    int fd;
    int r = PROV_ERR_INPUT;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return prov_fail(PROV_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        r = prov_fail(PROV_ERR_INPUT, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (S_ISREG(st.st_mode) && st.st_size > PROV_CSR_MAX_BYTES) {
        r = prov_fail(PROV_ERR_POLICY, "%s: %lld bytes, larger than the %d-byte CSR limit", path,
                      (long long)st.st_size, PROV_CSR_MAX_BYTES);
        goto out;
    }
    /* Pipes have no size: read one byte past the limit to notice an oversize stream. */
    while (have <= PROV_CSR_MAX_BYTES) {
        ssize_t n = read(fd, buf + have, PROV_CSR_MAX_BYTES + 1 - have);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = prov_fail(PROV_ERR_INPUT, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        have += (size_t)n;
    }
    if (have > PROV_CSR_MAX_BYTES) {
        r = prov_fail(PROV_ERR_POLICY, "%s: larger than the %d-byte CSR limit", path,
                      PROV_CSR_MAX_BYTES);
        goto out;
    }
    *len = have;
    r = 0;
out:
    close(fd);
    return r;
}

static X509_REQ *parse_pem(const unsigned char *buf, size_t len)
{
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    X509_REQ *req = NULL;

    if (bio != NULL) {
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    return req;
}

static X509_REQ *parse_der(const unsigned char *buf, size_t len)
{
    const unsigned char *p = buf;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);

    /* Trailing bytes mean this is not one DER request; refuse rather than guess. */
    if (req != NULL && p != buf + len) {
        X509_REQ_free(req);
        return NULL;
    }
    return req;
}

int prov_csr_read(const char *path, X509_REQ **out)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    X509_REQ *req = NULL;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    buf = malloc(PROV_CSR_MAX_BYTES + 1);
    if (buf == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    r = read_bounded(path, buf, &len);
    if (r < 0) {
        goto out;
    }
    buf[len] = '\0';
    if (strstr((const char *)buf, "-----BEGIN") != NULL) {
        req = parse_pem(buf, len);
    } else {
        req = parse_der(buf, len);
    }
    if (req == NULL) {
        r = prov_fail_ossl(PROV_ERR_INPUT, "%s: not a PEM or DER certificate request", path);
        goto out;
    }
    *out = req;
    r = 0;
out:
    free(buf);
    return r;
}

int prov_csr_write(const char *path, X509_REQ *req)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;
    int r = PROV_ERR_CRYPTO;

    if (bio == NULL || PEM_write_bio_X509_REQ(bio, req) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot encode the CSR", path);
        goto out;
    }
    len = BIO_get_mem_data(bio, &data);
    if (len <= 0) {
        r = prov_fail(PROV_ERR_CRYPTO, "%s: cannot encode the CSR", path);
        goto out;
    }
    r = prov_atomic_write_file(path, data, (size_t)len, 0644);
out:
    BIO_free(bio);
    return r;
}
