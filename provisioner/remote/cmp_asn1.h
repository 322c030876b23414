/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CMP_ASN1_H
#define PROV_CMP_ASN1_H

#include <openssl/asn1.h>
#include <openssl/cmp.h>
#include <openssl/x509.h>

/*
 * The CMP types OpenSSL 3.0 has no helper for, made with OpenSSL's own ASN.1 templates (no
 * hand-written DER), for the CA service (service/cmp_server.c) and its client
 * (provisioner/remote/issuer_cmp.c): the caCerts general message of RFC 9483 section 4.3.1, a
 * received message's extraCerts and protection; and two small helpers both sides use.
 */

/* id-it-caCerts: its value is SEQUENCE SIZE (1..MAX) OF CMPCertificate. */
#define PROV_CMP_OID_CACERTS "1.3.6.1.5.5.7.4.17"

/* An ITAV id-it-caCerts carrying certs (copied), or NULL. */
OSSL_CMP_ITAV *prov_cmp_cacerts_itav(STACK_OF(X509) *certs);

/* The certificates of an id-it-caCerts ITAV (the caller frees them), or NULL. */
STACK_OF(X509) *prov_cmp_cacerts_of(const OSSL_CMP_ITAV *itav);

/* Whether itav is an id-it-caCerts. */
int prov_cmp_is_cacerts(const OSSL_CMP_ITAV *itav);

/*
 * The extraCerts of msg (the caller frees them), or NULL when it has none: OpenSSL 3.0 keeps
 * a received message's to itself (RFC 9483 section 3.1: the protection certificate first).
 */
STACK_OF(X509) *prov_cmp_msg_extra_certs(const OSSL_CMP_MSG *msg);

/* Whether msg carries a protection (not whether it verifies: OpenSSL checks that). */
int prov_cmp_msg_is_protected(const OSSL_CMP_MSG *msg);

/*
 * A CMP context's log callback that drops OpenSSL's own lines: the service and the station
 * say what happened in their one line (OSSL_CMP_CTX_set_log_cb).
 */
int prov_cmp_log_nothing(const char *func, const char *file, int line, OSSL_CMP_severity level,
                         const char *msg);

/*
 * Whether cert may sign the CA service's CMP answers: its extendedKeyUsage names id-kp-cmcCA
 * (1.3.6.1.5.5.7.3.27, RFC 6402 section 2.10). RFC 9480 section 2.2 (RFC 4210's new section
 * 4.5, which RFC 9483 builds on) makes a certificate used for CMP message protection carry the
 * extended key usage of the role its CA delegated: id-kp-cmcCA for the CA's own. Every other
 * certificate under the same root (devices, stations) has none of it. The service gives its
 * cmp-signer.crt that usage (service/cmp_signer.c), its client accepts no other signer
 * (provisioner/remote/issuer_cmp.c). A certificate with no extendedKeyUsage at all, or only
 * anyExtendedKeyUsage, is not one.
 */
int prov_cmp_is_signer_cert(X509 *cert);

/* The first certificate of a PEM file, or NULL (missing, unreadable, none). */
X509 *prov_cmp_read_cert(const char *path);

#endif
