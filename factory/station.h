/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_STATION_H
#define PROV_FACTORY_STATION_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "manifest.h"

/*
 * The fixture station (udev/README.md): one process per arriving device, started by udev through
 * the systemd template unit provisioner-station@INSTANCE.service (udev/). It
 *   1. turns the instance name into a device: "tpmrmN" -> the TPM behind /dev/tpmrmN
 *      ([station] tpm_tcti, default "device:/dev/%i"), "usb-VVVV:PPPP-SERIAL" -> the PKCS#11
 *      token of a USB token listed in the device table (module by vendor:product);
 *   2. identifies it: token serial (the PKCS#11 serialNumber) or TPM EK digest, never a
 *      slot id;
 *   3. validates the whole manifest like batch and picks the device's row: the row whose
 *      device names this identity (row-by-identity), or the first row no device has
 *      claimed (next-free); the binding is recorded in the journal ("claim") and kept, so a
 *      device pulled mid-enrollment returns to its row;
 *   4. enrolls that row with the batch row logic (journal states, resume policy: the
 *      exactly-once rules of batch hold across station runs), under a per-row lock, with the
 *      journal opened shared so that other stations go on at the same time;
 *   5. proves (the mTLS proof of prove_url as the row's last step, recorded in the journal;
 *      then the challenge proof of `check`) and reports one result.
 * The station never prints; the caller prints the result (cmd_station.c).
 */

enum prov_station_mode {
    PROV_STATION_ROW_BY_IDENTITY = 0,
    PROV_STATION_NEXT_FREE,
};

struct prov_station_opts {
    const char *instance;  /* the systemd instance name (%i); required */
    const char *manifest;  /* NULL: [station] manifest */
    const char *journal;   /* NULL: [station] journal, [provisioner] journal, else
                              MANIFEST.journal.sqlite */
    const char *station;   /* the station's name in a ledger; NULL: [station] name, else the
                              host name and "@" and the instance (doc/ledger.md) */
    const char *mode;      /* NULL: [station] mode, else row-by-identity */
    const char *prove_url; /* NULL: [station] prove; NULL there: the challenge proof only */
    const char *pin_spec;  /* device PIN source; NULL: [provisioner] device_pin */
    prov_manifest_error_fn on_finding; /* each manifest finding */
    void *finding_ctx;
};

enum prov_station_status {
    PROV_STATION_FAILED = 0,
    PROV_STATION_ISSUED,
    PROV_STATION_ALREADY,
    PROV_STATION_EXCLUDED, /* [station] exclude names the device (the station PC's own TPM) */
};

/* One device's outcome; owned strings, released by prov_station_result_clear. */
struct prov_station_result {
    enum prov_station_status status;
    int err;             /* the PROV_ERR_* of a failure (exit code: prov_exit_code), else 0 */
    char *instance;
    char *device_uri;    /* NULL when the instance could not be resolved */
    char *identity;      /* "pkcs11:SERIAL" / "tpm2:EK-SHA256"; NULL when not reached */
    char *serial;        /* the manifest row; NULL when none was picked */
    char *cert_serial;   /* NULL unless issued / already issued */
    char *sha256;
    char *not_after;
    char *storage;
    char *reason;        /* NULL unless failed */
    unsigned long n_findings; /* manifest findings (PROV_ERR_INPUT) */
};

void prov_station_result_clear(struct prov_station_result *res);

/*
 * Serves one device. Returns 0 when the station ran to a result (res->status says which;
 * a failed device is also recorded in the journal with its reason), or the PROV_ERR_* that
 * stopped it before it could pick a row (config, manifest, journal, CA); res->reason holds
 * the message in both cases. A device that disappears mid-enrollment (token removed, TPM
 * gone) fails with PROV_ERR_DEVICE_REMOVED; running the station again for it resumes.
 */
int prov_station_run(const struct prov_config *cfg, const struct prov_station_opts *opts,
                     struct prov_station_result *res);

const char *prov_station_status_name(enum prov_station_status st);

/* ---- station_config.c ------------------------------------------------------------------- */

/* The [station] section (every key checked; unknown keys are PROV_ERR_CONFIG). */
struct prov_station_config {
    char *manifest;     /* manifest = FILE */
    char *journal;      /* journal = FILE */
    char *mode;         /* mode = row-by-identity | next-free */
    char *device_table; /* device_table = FILE (vendor:product -> PKCS#11 module) */
    char *tpm_tcti;     /* tpm_tcti = TCTI template, %i = the instance; default device:/dev/%i */
    char *prove;        /* prove = URL of the end-of-line mTLS proof */
    char *exclude;      /* exclude = identities never served, space or comma separated */
    long device_wait;   /* device_wait = seconds to wait for a device not there yet */
};

/* How long a station waits by default for a device it was started for to show up. */
#define PROV_STATION_DEVICE_WAIT 20
#define PROV_STATION_DEVICE_WAIT_MAX 600

int prov_station_config_load(const struct prov_config *cfg, struct prov_station_config *out);
void prov_station_config_clear(struct prov_station_config *sc);

/*
 * The device string for an instance name: "tpmrmN" -> "tpm2:" + tpm_tcti with %i replaced;
 * "usb-VVVV:PPPP-SERIAL" -> the device table's module for VVVV:PPPP and, by the entry's
 * match rule, "pkcs11:serial=SERIAL?module-path=MODULE" (usb-serial: the token serial is the
 * USB serial) or "pkcs11:?module-path=MODULE" (only-token: the one token the module shows).
 * The backends build the strings (values percent-encoded as RFC 7512 wants; a TCTI that
 * would not read back as itself is refused). PROV_ERR_USAGE for an instance of neither form,
 * PROV_ERR_CONFIG for a vendor:product the table does not list (or no table).
 * *is_pkcs11_any is set for only-token entries.
 */
int prov_station_device_for(const struct prov_config *cfg, const struct prov_station_config *sc,
                            const char *instance, char **device_uri, bool *is_pkcs11_any);

/*
 * Whether identity ("pkcs11:SERIAL", "tpm2:EK-SHA256", as the result line shows it) is one of
 * the [station] exclude list: a device the station must never claim a row for, such as the
 * station PC's own TPM, whose tpmrm node the udev rule matches like any other.
 */
bool prov_station_is_excluded(const struct prov_station_config *sc, const char *identity);

/*
 * Whether a manifest row's device names the device with this identity (row-by-identity),
 * as the row's backend reads it (prov_device_names_identity): a pkcs11: URI by its serial
 * attribute ("pkcs11:serial=..."), a tpm2: row written "tpm2:ek-sha256=HEX" by the EK
 * digest. backend is "pkcs11" or "tpm2".
 */
bool prov_station_row_names(const char *row_device, const char *backend, const char *identity);

#endif
