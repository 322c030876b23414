/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CMP_STATION_CACHE_H
#define PROV_CMP_STATION_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

/*
 * The protection certificates (a station's, or a device's for kur) whose chain to this CA
 * verified, keyed by the SHA-256 of their DER, newest use kept (LRU) up to a bound: a
 * request whose first extraCerts certificate is one of them has its protection checked
 * against that certificate alone (OSSL_CMP_CTX_set1_srvCert, cmp_server.c), so the chain is
 * verified once per certificate, not on every message (doc/ca-service.md, "Who may ask").
 *
 * Only the chain is remembered. What can change while an entry lives is checked on every
 * request all the same: the certificate's validity period against the request's time (here,
 * at each look-up), and the station's registration and revocation in the CA index
 * (prov_ca_registry_authorize, by the caller). The caller clears the cache when the CA or the
 * configuration changes (prov_cmp_server_set_ca, prov_cmp_server_set_config).
 *
 * The CA service's workers use one cache at once (service/http.c): every function takes its
 * lock; a new certificate's chain is verified outside it.
 */
struct prov_cmp_station_cache;

/* A cache of at most cap certificates into *out; PROV_ERR_NOMEM. */
int prov_cmp_station_cache_new(size_t cap, struct prov_cmp_station_cache **out);

void prov_cmp_station_cache_free(struct prov_cmp_station_cache *c);

/* Forgets every certificate. */
void prov_cmp_station_cache_clear(struct prov_cmp_station_cache *c);

/*
 * The first certificate of a DER PKIMessage's extraCerts (RFC 4210 section 5.1, RFC 9483
 * section 3.1: the protection certificate), as it lies in der: *cert points into der. 0, or
 * PROV_ERR_INPUT when der is not a PKIMessage with extraCerts (nothing is decoded but the
 * lengths of what comes before).
 */
int prov_cmp_station_cache_first_extra(const unsigned char *der, size_t len,
                                       const unsigned char **cert, size_t *cert_len);

/*
 * The same DER PKIMessage without its extraCerts (its last field) into *out (*out_len
 * bytes, the caller's to free): for a request whose protection certificate the cache holds,
 * so that OpenSSL does not decode again certificates (and their keys) the service has
 * already. The protection covers the header and the body only (RFC 4210 section 5.1.3), so
 * it verifies the same. Only the outer SEQUENCE's length is written anew (ASN1_put_object);
 * the rest is the message's own bytes. PROV_ERR_INPUT when der has no extraCerts last,
 * PROV_ERR_NOMEM.
 */
int prov_cmp_station_cache_strip_extra(const unsigned char *der, size_t len, unsigned char **out,
                                       size_t *out_len);

/*
 * The certificate to check a request's protection against, or NULL: the first certificate
 * of its extraCerts (der, the PKIMessage as received) when it is in the cache (*is_new
 * false), or else when it chains to trust through chain at now (*is_new true: not in the
 * cache yet, prov_cmp_station_cache_keep puts it there once the message's protection
 * verified with it, so that messages whose signature fails cannot push stations out), and in
 * either case only while now is within its validity period. The caller owns the reference
 * returned. NULL also for a message without extraCerts, and when memory runs out: the
 * caller then checks the message in full.
 */
X509 *prov_cmp_station_cache_pin(struct prov_cmp_station_cache *c, const unsigned char *der,
                                 size_t len, X509_STORE *trust, STACK_OF(X509) *chain,
                                 time_t now, bool *is_new);

/*
 * Remembers cert, which prov_cmp_station_cache_pin gave as new (only such a certificate: its
 * chain verified there) and which verified a message's protection: the least recently used
 * one is dropped beyond the bound. Keyed by the digest of its DER as decoded (i2d gives the
 * bytes it was decoded from), so several threads may keep what each was given.
 */
void prov_cmp_station_cache_keep(struct prov_cmp_station_cache *c, X509 *cert);

/* Forgets cert (one prov_cmp_station_cache_pin gave) when the CA index refused it. */
void prov_cmp_station_cache_drop(struct prov_cmp_station_cache *c, const X509 *cert);

/* How many certificates the cache holds (for the tests). */
size_t prov_cmp_station_cache_count(struct prov_cmp_station_cache *c);

#endif
