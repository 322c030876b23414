/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ISSUER_CMP_H
#define PROV_ISSUER_CMP_H

#include <stdbool.h>

#include "issuer.h"

/*
 * The issuer of a station with [ca] url = cmp://HOST:PORT/PATH (issuer_cmp.c): opens the
 * station's token (station_key, station_pin), reads station_cert and root_cert, and asks the
 * service for its CA certificates (genm caCerts), checked against root_cert; a service that
 * cannot be reached is PROV_ERR_NOT_FOUND (exit 4). is_deferred: nothing is opened until
 * the first issue (csr and install never issue; sign checks the CSR first).
 * prov_remote_register (remote.h) registers it for prov_issuer_open.
 */
int prov_issuer_cmp_open(const struct prov_config *cfg, bool is_deferred,
                         struct prov_issuer **out);

#endif
