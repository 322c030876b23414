/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ISSUE_H
#define PROV_ISSUE_H

#include <stdbool.h>

#include <openssl/x509.h>

#include "ca_index.h"
#include "config.h"
#include "template.h"

/* Minimum random bits in a certificate serial (CA/B BR ask for 64; we use 159). */
#define PROV_SERIAL_BYTES 20

/* The CA that issues: the intermediate certificate, its chain and its HSM-held key. */
struct prov_ca {
    X509 *cert;             /* the intermediate */
    STACK_OF(X509) *chain;  /* intermediate(s) then root, as chain.pem */
    X509 *root;             /* the root (last of chain) */
    EVP_PKEY *key;          /* private operations in the HSM (prov_signer_pkey); NULL when
                               opened without the key */
    struct prov_device *dev;/* the HSM token, owned */
    struct prov_key *hsm_key;
    struct prov_ca_index *index; /* the record of what this CA issued (opened with the key);
                                    NULL: nothing is recorded (unit tests) */
};

/* What to certify for one device: the manifest row and the profile. Strings are borrowed. */
struct prov_request {
    const char *serial;     /* required, PROV_SERIAL_RULE */
    const char *cn;         /* NULL: the profile's subject template, whose default is ${serial} */
    const char *san_dns;    /* ';'-separated; NULL: the profile's template (if any) */
    const char *san_uri;
    const char *san_email;
    const char *san_ip;
    const char *lot;
    const struct prov_profile *profile;
    struct prov_vars vars;  /* x_ columns for templates (serial/cn/lot filled in by issue) */
    struct prov_ca_record record; /* how the CA index records it, and its serial rule */
    /*
     * The CA key signs outside the CA index's write lock (the CA service's workers, whose
     * signatures then overlap on an HSM's sessions): the index's rules are checked first
     * without the lock, the certificate signed, then the index locked for the rules again and
     * the record. A certificate the rules then refuse (another request certified the key or
     * the serial meanwhile) is thrown away unsent, with an audit record
     * (prov_ca_index_discarded). false: the lock is held across the signature.
     */
    bool is_signed_unlocked;
};

/*
 * The serial rule of a manifest (factory/README.md), plus: not "." or ".." (those match the
 * characters but would make the storage directory <output dir>/<serial> the output directory
 * itself or its parent).
 */
#define PROV_SERIAL_RULE "[A-Za-z0-9._-]{1,64}, not \".\" or \"..\""

/* true when serial follows PROV_SERIAL_RULE. */
bool prov_serial_is_valid(const char *serial);

/* A fresh positive random serial of PROV_SERIAL_BYTES bytes (top bit clear, first byte != 0). */
int prov_serial_random(ASN1_INTEGER **out);

/* The subject DN for the request: the profile's RDN template section, values expanded. */
int prov_issue_subject(const struct prov_config *cfg, const struct prov_request *rq,
                       X509_NAME **out);

/*
 * Policy checks on a CSR before anything is signed: the signature verifies (proof of
 * possession), the key type is allowed by the profile (RSA >= 2048, allowed curves), no
 * extension other than subjectAltName/keyUsage/extendedKeyUsage is requested and none asks
 * for CA:true. Subject and SAN of the CSR are ignored (they come from the request).
 * PROV_ERR_POLICY with the reason. *type_out (optional) gets the key type.
 */
int prov_issue_check_csr(const struct prov_profile *profile, X509_REQ *req,
                         enum prov_key_type *type_out);

/* The key-type part of prov_issue_check_csr alone, for a key that came without a CSR. */
int prov_issue_check_key(const struct prov_profile *profile, EVP_PKEY *pub,
                         enum prov_key_type *type_out);

/*
 * What a profile issues must be a device's end entity that the chain rules accept (the
 * clientAuth leaf of provisioner/pki/chain.c): not a CA, no keyCertSign or cRLSign, keyUsage (if
 * any) with digitalSignature, extendedKeyUsage (if any) with clientAuth, and nothing else
 * the chain rules refuse. Checked by issuing a probe certificate under the profile's
 * extension section with a throwaway in-memory CA. PROV_ERR_CONFIG naming the config file,
 * the section and key (or the profile and the chain rule). The built-in set passes as is.
 */
int prov_issue_check_profile(const struct prov_config *cfg, const struct prov_profile *pr);

/*
 * prov_config_load / prov_config_parse (support/config.h) and then prov_issue_check_profile
 * on every profile: what every command loads, so that a profile that would not issue device
 * end entities is refused (PROV_ERR_CONFIG) before any token is touched. The parse alone
 * stays in support/ (which knows no PKI), for the fuzz target and the syntax tests.
 */
int prov_issue_load_config(const char *path, struct prov_config **out);
int prov_issue_parse_config(const char *buf, size_t len, const char *name, const char *base_dir,
                            struct prov_config **out);

/*
 * Issues a certificate for req's public key: subject and SAN from rq (never the CSR), a fresh
 * random serial, notBefore now (minus 5 minutes of clock skew), notAfter now + days but never
 * after the issuer's notAfter, extensions from the profile (default: CA:false critical,
 * digitalSignature critical, clientAuth, SKI/AKI), signed by ca->key. Runs
 * prov_issue_check_csr first. A certificate that would not be a device end entity (see
 * prov_issue_check_profile) is refused with PROV_ERR_CONFIG before it is signed.
 * With ca->index, the index's rules (ca_index.h: a serial with a current certificate, a key
 * certified before) are applied and the certificate is recorded in one transaction around the
 * signing: it is in the index before it is returned, or it is not returned.
 */
int prov_issue_certificate(const struct prov_config *cfg, const struct prov_ca *ca,
                           X509_REQ *req, const struct prov_request *rq, X509 **out);

/*
 * The same for a public key that came without a CSR, whose possession the caller has proved
 * (a CMP ir/cr's proof of possession, verified by OpenSSL's CMP server: service/cmp_server.c):
 * the profile's key rule, then as prov_issue_certificate.
 */
int prov_issue_certificate_for_key(const struct prov_config *cfg, const struct prov_ca *ca,
                                   EVP_PKEY *pub, const struct prov_request *rq, X509 **out);

#endif
