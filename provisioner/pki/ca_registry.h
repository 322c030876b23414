/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CA_REGISTRY_H
#define PROV_CA_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

#include "ca_index.h"
#include "issue.h"

/*
 * Who may ask the CA service (doc/ca-service.md), kept in the CA index beside what the CA
 * issued: the stations (`ca station add`), each by its identity certificate, and the lots the
 * CA's operator registers (`ca lot add`): a cap and the stations that may issue for it.
 */

/*
 * Registers (or re-registers, a renewed certificate) station name with its certificate, and
 * its rate across all its lots (certificates per minute; 0: none; below 0: as before, none
 * for a new station) beside each lot's own (doc/ca-service.md, "Who may ask").
 */
int prov_ca_registry_station_add(struct prov_ca_index *ix, const char *name, X509 *cert,
                                 long long per_minute);

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
    long long per_minute;    /* its rate across its lots; 0: none */
};

/* Calls fn for every registered station, by name; a non-zero return of fn stops there. */
int prov_ca_registry_station_each(struct prov_ca_index *ix,
                                  int (*fn)(void *arg, const struct prov_ca_station *st),
                                  void *arg);

/*
 * A lot as the CA's operator registers it (`ca lot add`, doc/ca-service.md): the CA's own data,
 * never a station's word.
 */
struct prov_ca_lot {
    const char *name;
    long long cap;                /* devices (distinct serials) it may have certificates for */
    const char *const *stations;  /* registered already; may issue for it */
    size_t n_stations;
    const char *const *profiles;  /* the profiles it may be issued under; none: any */
    size_t n_profiles;
    const char *const *serials;   /* the devices it may issue for (a manifest's); none: any */
    size_t n_serials;
    bool is_reissue;              /* a station's reissue of a serial is honoured */
    long long per_minute;         /* each station's certificates per minute for it; 0: no limit */
};

/*
 * Is name[0..len) a lot name a request path can carry (CMP's /p/LOT, EST's /LOT/): 1 to
 * PROV_CA_LOT_NAME_MAX of A-Z a-z 0-9 "." "_" "-", and not "." or ".."?
 */
#define PROV_CA_LOT_NAME_MAX 64
#define PROV_CA_LOT_NAME_RULE "1 to 64 of A-Z a-z 0-9 . _ - (not . or ..)"
bool prov_ca_registry_lot_name_ok(const char *name, size_t len);

/*
 * Registers lot (a lot registered before gets the new terms, stations, profiles and
 * serials, and its devices counted again from the index: the repair of a count a service of
 * an older schema left behind, doc/ca-service.md). PROV_ERR_USAGE naming a station that is not registered, or for a name that
 * breaks PROV_CA_LOT_NAME_RULE.
 */
int prov_ca_registry_lot_add(struct prov_ca_index *ix, const struct prov_ca_lot *lot);

/* One registered lot, as `ca lot list` shows it. */
struct prov_ca_lot_row {
    const char *name;
    long long cap;
    long long devices;      /* distinct serials the index holds certificates for in it */
    bool is_reissue;
    long long n_serials;    /* the manifest's serials recorded; 0: any serial */
    const char *profiles;   /* comma-separated; "" for any */
    const char *stations;   /* "STATION/PER_MINUTE" comma-separated (0: no limit) */
    const char *added_at;
};

/* Calls fn for every registered lot, by name; a non-zero return of fn stops there. */
int prov_ca_registry_lot_each(struct prov_ca_index *ix,
                              int (*fn)(void *arg, const struct prov_ca_lot_row *lot), void *arg);

/* What a station asks for, and what the CA's data lets it have (prov_ca_registry_ask). */
struct prov_ca_ask {
    const char *serial;   /* the device serial */
    const char *lot;      /* the lot the request names; NULL: the oldest that admits it */
    const char *profile;  /* the profile the service issues under */
    bool is_reissue;      /* the request asks to supersede serial's current certificate */
    char lot_out[128];    /* out: the lot the certificate is recorded with */
    int retry_after;      /* out: > 0 when refused for the station's rate, in seconds */
};

/*
 * May station name (presenting cert, checked as by prov_ca_registry_authorize) have a
 * certificate for ask->serial now? A lot must admit it: the station may serve it, it allows ask->profile
 * and ask->serial (when it lists either), its cap is not reached (a serial it has a
 * certificate for already is not counted again), it allows a reissue when ask->is_reissue,
 * and the station's certificates for it in the last minute are below its rate. A refusal is
 * PROV_ERR_POLICY with the reason (ask->retry_after set for the rate) and an audit record.
 */
int prov_ca_registry_ask(struct prov_ca_index *ix, const char *name, X509 *cert,
                         struct prov_ca_ask *ask);

/*
 * May station (its CN: name, presenting cert) ask at all? It must be registered with exactly
 * this certificate, which has no revocation in the index's revocation table. A refusal is
 * PROV_ERR_POLICY with the reason, and an audit record ("refuse", the station certificate's
 * serial, the reason).
 */
int prov_ca_registry_authorize(struct prov_ca_index *ix, const char *name, X509 *cert);

/*
 * An audit record ("refuse") for a request the service refused before it knew the station
 * (a message whose protection does not verify, from a certificate of another CA): what
 * says who, why the reason.
 */
int prov_ca_registry_refused(struct prov_ca_index *ix, const char *what, const char *why);

/*
 * A retry (doc/ca-service.md): the certificate the index already holds for this device serial
 * and this public key (pubkey_sha256: prov_ca_index_spki_sha256 of it, which the caller passes
 * on in prov_ca_record.pubkey_sha256 as well), asked by the same station (issued_by), issued or
 * delivered; *out NULL when there is none. The same request sent again after a lost answer
 * gets the same certificate instead of a refusal or a second one.
 */
int prov_ca_registry_retry(struct prov_ca_index *ix, const char *serial, const char *issued_by,
                           const char *pubkey_sha256, X509 **out);

/*
 * A station's request for a certificate of ask->serial for pub, in the order both protocols
 * of the CA service ask it (doc/ca-service.md "Who may ask"): the station itself
 * (prov_ca_registry_authorize with station_cert; *station_refused true when that refused it),
 * then a retry (prov_ca_registry_retry for issued_by: *cert the certificate pub was given
 * before), else a lot that admits the request (prov_ca_registry_ask, ask filled). spki gets
 * pub's hash (prov_ca_index_spki_sha256) for prov_ca_registry_request. 0 with *cert NULL: issue.
 */
int prov_ca_registry_admit(struct prov_ca_index *ix, const char *station, X509 *station_cert,
                           EVP_PKEY *pub, const char *issued_by, struct prov_ca_ask *ask,
                           char spki[65], X509 **cert, bool *station_refused);

/*
 * The issue request (issue.h) for what prov_ca_registry_admit let through: ask's serial and
 * lot, profile, recorded as issued_by with the key's hash spki (both kept by the caller).
 */
void prov_ca_registry_request(const struct prov_ca_ask *ask, const struct prov_profile *profile,
                              const char *issued_by, const char *spki, struct prov_request *rq);

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

/*
 * Is cert the current certificate of device serial in the index, issued under profile
 * (issued or delivered, not superseded, not revoked)? A device renewing (EST
 * simplereenroll) must present it; a station's identity (profile "station") is no device's.
 */
int prov_ca_registry_is_current(struct prov_ca_index *ix, X509 *cert, const char *serial,
                                const char *profile, bool *out);

#endif
