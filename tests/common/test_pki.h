/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_TEST_PKI_H
#define PROV_TEST_PKI_H

#include <stdio.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "issue.h"

/*
 * Keys, certificates, CSRs and small CAs for the unit tests, made in memory with OpenSSL.
 * Every helper fails the running cmocka test (assert_*) when OpenSSL refuses something, so a
 * test never goes on with half a fixture. What a test wants different (validity, extensions,
 * names) is a field of struct test_cert_spec, not another copy of the builder.
 */

#define TEST_PKI_DAY 86400L

/* A CA certificate: basicConstraints critical CA:TRUE, keyUsage keyCertSign and cRLSign,
 * subject and authority key identifiers. */
extern const char *const test_pki_ca_exts[];
/* A device certificate: CA:FALSE, digitalSignature, clientAuth, key identifiers. */
extern const char *const test_pki_leaf_exts[];

/* A fresh EC key on the named curve ("P-256", "P-384", ...). */
EVP_PKEY *test_pki_ec_key(const char *curve);

struct test_cert_spec {
    const char *org;          /* O= before the CN; NULL: none */
    const char *cn;           /* CN=; NULL: no CN (with no org, an empty subject) */
    long serial;
    EVP_PKEY *key;            /* the public key certified */
    X509 *issuer;             /* NULL: self-issued (issuer name = subject name) */
    EVP_PKEY *issuer_key;     /* the signing key; NULL: key itself (self-signed) */
    long not_before;          /* seconds from *now (may be negative) */
    long not_after;
    const time_t *now;        /* NULL: the current time */
    const char *not_before_text; /* "YYYYMMDDHHMMSSZ": instead of not_before; NULL: unused */
    const char *not_after_text;
    const char *const *exts;  /* name, value pairs for X509V3_EXT_nconf, then NULL; may be NULL */
};

/* A v3 certificate as spec says, signed with SHA-256. */
X509 *test_pki_cert(const struct test_cert_spec *spec);

/*
 * A CA certificate (test_pki_ca_exts) named CN=cn for key, issued by issuer/issuer_key
 * (NULL, NULL: self-signed root), valid [now + nb, now + na] seconds.
 */
X509 *test_pki_ca_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                       long nb, long na);

/* A self-signed certificate CN=cn (NULL: empty subject) with that serial, valid one day. */
X509 *test_pki_self_signed(const char *cn, long serial, EVP_PKEY *key);

/* Fills ca with inter (its cert), root and the chain [inter, root]; both now belong to ca. */
void test_pki_prov_ca(struct prov_ca *ca, X509 *inter, X509 *root, EVP_PKEY *inter_key);

/* Frees what test_pki_prov_ca put in ca (not the key, not ca itself). */
void test_pki_prov_ca_clear(struct prov_ca *ca);

/*
 * A small CA in memory, as test_pki_prov_ca: a root and an intermediate on P-256 software
 * keys, valid from an hour ago for 30 days; ca->key is the intermediate's. The root's key is
 * not kept. test_pki_small_ca_free frees all of it (not ca itself).
 */
void test_pki_small_ca(struct prov_ca *ca);
void test_pki_small_ca_free(struct prov_ca *ca);

/* A CSR for key, subject CN=cn, asking for the extensions (name, value pairs) if any. */
X509_REQ *test_pki_csr(EVP_PKEY *key, const char *cn, const char *const *exts);

/* Writes a, then b unless NULL, as PEM to path (created or truncated). */
void test_pki_write_pem(const char *path, X509 *a, X509 *b);

#endif
