/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What one CMP message came to, for the service's log line (cmp_server.h), and the longest
 * lot name a request's path may give (/.well-known/cmp/p/LOT): shared by the CMP server's
 * files (cmp_server.c, cmp_requests.c) and the HTTP layer (http.c).
 */
#ifndef PROV_SERVICE_CMP_OUTCOME_H
#define PROV_SERVICE_CMP_OUTCOME_H

#include <stdbool.h>

#define PROV_CMP_LOT_MAX 64

/* What one message did, for the service's log line. */
struct prov_cmp_outcome {
    char body[16];      /* "p10cr", "ir", "certConf", ... or "-" (not decoded) */
    char station[65];   /* the protection certificate's CN, or "-" */
    char serial[65];    /* the device serial asked for, or "-" */
    char cert_serial[64]; /* the certificate's serial (hex) when one was issued */
    char result[320];   /* "issued", "pkiConf", "caCerts", or the refusal */
    /*
     * A refusal that may come from the CA token (the issue path's or a revocation's error
     * that is none of the rules'): the service looks at the token after it (http.c). The
     * other refusals never reached the CA key.
     */
    bool is_ca_suspect;
};

#endif
