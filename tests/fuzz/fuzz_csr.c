/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for CSR input to `sign`: the bytes are read as the tool reads a CSR file (PEM,
 * else one DER request with no trailing bytes; at most PROV_CSR_MAX_BYTES) and then put
 * through the policy checks of prov_issue_check_csr under a profile that allows every key
 * type, so that the signature, key and extension checks all run.
 */
#include <stddef.h>
#include <stdint.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"
#include "csr.h"
#include "error.h"
#include "issue.h"
#include "keytype.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static X509_REQ *parse(const uint8_t *data, size_t size)
{
    BIO *bio = BIO_new_mem_buf(data, (int)size);
    const unsigned char *p = data;
    X509_REQ *req = NULL;

    if (bio != NULL) {
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    }
    BIO_free(bio);
    if (req == NULL) {
        req = d2i_X509_REQ(NULL, &p, (long)size);
        if (req != NULL && p != data + size) {
            X509_REQ_free(req);
            req = NULL;
        }
    }
    return req;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct prov_profile profile = {
        .name = "device",
        .key_type = PROV_KEY_EC_P256,
        .allowed_keys = PROV_KEY_BIT(PROV_KEY_EC_P256) | PROV_KEY_BIT(PROV_KEY_EC_P384) |
                        PROV_KEY_BIT(PROV_KEY_RSA_2048) | PROV_KEY_BIT(PROV_KEY_RSA_3072),
        .days = 30,
    };
    enum prov_key_type type;
    X509_REQ *req;

    if (size > PROV_CSR_MAX_BYTES) {
        return 0;
    }
    req = parse(data, size);
    if (req != NULL) {
        if (prov_csr_verify(req, NULL) < 0 && prov_error_message() == NULL) {
            __builtin_trap();
        }
        prov_error_clear();
        if (prov_issue_check_csr(&profile, req, &type) < 0 && prov_error_message() == NULL) {
            __builtin_trap(); /* a refusal always says why */
        }
    }
    X509_REQ_free(req);
    prov_error_clear();
    return 0;
}
