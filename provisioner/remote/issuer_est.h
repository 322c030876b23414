/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ISSUER_EST_H
#define PROV_ISSUER_EST_H

#include <stdbool.h>

#include "issuer.h"

/*
 * The issuer of a station with [ca] url = est://HOST:PORT or https://HOST:PORT/.well-known/est
 * (issuer_est.c): EST (RFC 7030) with libcurl over one kept-alive TLS connection whose client
 * certificate is the station's identity (station_cert, its key station_key in the station's
 * token, station_pin). The service's TLS certificate must chain to [ca] tls_ca (default
 * root_cert); its cacerts must chain to root_cert. A service that cannot be reached is
 * PROV_ERR_NOT_FOUND (exit 4). is_deferred: nothing is opened until the first issue (csr
 * and install never issue; sign checks the CSR first).
 */
int prov_issuer_est_open(const struct prov_config *cfg, bool is_deferred,
                         struct prov_issuer **out);

#endif
