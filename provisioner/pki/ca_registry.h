/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CA_REGISTRY_H
#define PROV_CA_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "ca_index.h"

/*
 * Who may ask the CA service (doc/ca-service.md), kept in the CA index beside what the CA
 * issued: the stations (`ca station add`), each by its identity certificate, and the lots the
 * CA's operator registers (`ca lot add`): a cap and the stations that may issue for it.
 */

/* Registers (or re-registers, a renewed certificate) station name with its certificate. */
int prov_ca_registry_station_add(struct prov_ca_index *ix, const char *name, X509 *cert);

/*
 * The certificate serial (lower-case hex, hex_cap bytes) station name is registered with;
 * PROV_ERR_USAGE when no station of that name is registered.
 */
int prov_ca_registry_station_cert(struct prov_ca_index *ix, const char *name, char *hex,
                                  size_t hex_cap);

/* One registered station, as `ca station list` shows it. */
struct prov_ca_station {
    const char *name;
    const char *cert_serial; /* lower-case hex */
    const char *added_at;
    const char *revoked_at;  /* NULL unless its certificate has a revocation */
    const char *lots;        /* the lots it may serve, comma-separated ("" for none) */
};

/* Calls fn for every registered station, by name; a non-zero return of fn stops there. */
int prov_ca_registry_station_each(struct prov_ca_index *ix,
                                  int (*fn)(void *arg, const struct prov_ca_station *st),
                                  void *arg);

/*
 * Registers lot name with its cap and the stations (registered already) that may issue for
 * it; a lot registered before gets the new cap and stations. PROV_ERR_USAGE naming a station
 * that is not registered.
 */
int prov_ca_registry_lot_add(struct prov_ca_index *ix, const char *name, long long cap,
                             const char *const *stations, size_t n_stations);

/*
 * May station (its CN: name, presenting cert) have a certificate issued for device serial
 * now? It must be registered with exactly this certificate, which has no revocation in the
 * index's revocation table, and serve a lot whose cap is not reached: the oldest such lot
 * goes to lot (cap bytes). Without serial (a genm), the station alone is checked. A refusal is
 * PROV_ERR_POLICY with the reason, and an audit record ("refuse", serial, the station
 * certificate's serial, the reason).
 */
int prov_ca_registry_authorize(struct prov_ca_index *ix, const char *name, X509 *cert,
                               const char *serial, char *lot, size_t cap);

/*
 * An audit record ("refuse") for a request the service refused before it knew the station
 * (a message whose protection does not verify, from a certificate of another CA): what
 * says who, why the reason.
 */
int prov_ca_registry_refused(struct prov_ca_index *ix, const char *what, const char *why);

/*
 * A retry (doc/ca-service.md): the certificate the index already holds for this device serial
 * and this public key, asked by the same station (issued_by), issued or delivered; *out NULL
 * when there is none. The same request sent again after a lost answer gets the same
 * certificate instead of a refusal or a second one.
 */
int prov_ca_registry_retry(struct prov_ca_index *ix, const char *serial, const char *issued_by,
                           EVP_PKEY *pub, X509 **out);

/*
 * The device serial (serial_cap bytes) and issued_by (by_cap) of the certificate cert_serial
 * (lower-case hex) in the index; PROV_ERR_POLICY when the index has no such certificate.
 */
int prov_ca_registry_cert_owner(struct prov_ca_index *ix, const char *cert_serial, char *serial,
                                size_t serial_cap, char *by, size_t by_cap);

/*
 * kur: may cert renew itself? It must be a certificate the index holds as its device
 * serial's current one (issued or delivered: not superseded, not abandoned) with no
 * revocation; serial (serial_cap bytes) gets that device serial. A refusal is PROV_ERR_POLICY
 * with the reason and an audit record.
 */
int prov_ca_registry_renewable(struct prov_ca_index *ix, X509 *cert, char *serial,
                               size_t serial_cap);

/* Certificates the index holds for lot (the cap counts these). */
int prov_ca_registry_lot_count(struct prov_ca_index *ix, const char *lot, long long *out);

/*
 * As prov_ca_registry_authorize for the lot the request names (EST's /.well-known/est/LOT/):
 * the station must be allowed for exactly this lot and the lot's cap not reached. A refusal
 * is PROV_ERR_POLICY with an audit record, as there.
 */
int prov_ca_registry_authorize_lot(struct prov_ca_index *ix, const char *name, X509 *cert,
                                   const char *serial, const char *lot);

/*
 * Is cert the current certificate of device serial in the index, issued under profile
 * (issued or delivered, not superseded, not revoked)? A device renewing (EST
 * simplereenroll) must present it; a station's identity (profile "station") is no device's.
 */
int prov_ca_registry_is_current(struct prov_ca_index *ix, X509 *cert, const char *serial,
                                const char *profile, bool *out);

#endif
