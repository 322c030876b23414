/* SPDX-License-Identifier: Apache-2.0 */
/* `provisioner ca serve`: the CA service over CMP (doc/ca-service.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "cli.h"
#include "cmp_server.h"
#include "cmp_signer.h"
#include "error.h"
#include "est_server.h"
#include "http.h"

#define SERVE_DEFAULT_LISTEN "127.0.0.1:8829"
#define SERVE_DEFAULT_PATH "/.well-known/cmp"
#define SERVE_DEFAULT_MAX_BODY (256 * 1024)

const struct option cmd_ca_serve_opts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"path", required_argument, NULL, 'p'},
    {"tls-cert", required_argument, NULL, 'c'},
    {"tls-key", required_argument, NULL, 'k'},
    {"max-body", required_argument, NULL, 'm'},
    {"profile", required_argument, NULL, 'P'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: provisioner ca serve [--listen HOST:PORT] [--path PATH]\n"
            "                            [--tls-cert FILE --tls-key FILE] [--max-body BYTES]\n"
            "                            [--profile NAME]\n\n"
            "Runs the CA service on the host that holds the CA's HSM: CMP (RFC 9483: p10cr,\n"
            "ir, cr, kur, certConf, genm caCerts, rr) over HTTP (RFC 6712), answers signed by\n"
            "the CMP signer (a key in the CA token, <CA dir>/cmp-signer.crt, made on first\n"
            "start). A request must be signed by a registered station (ca station add) for\n"
            "a lot it serves (ca lot add); the device serial is the CN of the subject asked\n"
            "for. Every certificate goes through the CSR policy and the CA index, recorded\n"
            "before it is answered. One line per request on stderr; SIGTERM or SIGINT stops\n"
            "it between requests.\n"
            "With --tls-cert it also serves EST (RFC 7030) under /.well-known/est/ and\n"
            "/.well-known/est/LOT/: cacerts, csrattrs, simpleenroll (the TLS client\n"
            "certificate is the station's identity) and simplereenroll (a device's current\n"
            "certificate).\n"
            "  --listen HOST:PORT  where to listen (default " SERVE_DEFAULT_LISTEN ")\n"
            "  --path PATH         the CMP path (default " SERVE_DEFAULT_PATH ")\n"
            "  --tls-cert FILE     serve HTTPS with this PEM certificate (chain)...\n"
            "  --tls-key FILE      ...and this PEM key\n"
            "  --max-body BYTES    a larger request is refused (413; default 262144)\n"
            "  --profile NAME      the profile certificates are issued under (default device)\n");
}

static void log_line(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "provisioner: ca serve: %s\n", line);
}

static void ready(void *arg, const char *listen)
{
    (void)arg;
    printf("ca serve: listening on %s\n", listen);
    fflush(stdout);
}

int cmd_ca_serve(int argc, char **argv)
{
    struct prov_http_opts http = {
        .listen = SERVE_DEFAULT_LISTEN,
        .path = SERVE_DEFAULT_PATH,
        .max_body = SERVE_DEFAULT_MAX_BODY,
        .log = log_line,
        .ready = ready,
    };
    struct prov_cmp_server_opts so = {0};
    struct prov_cmp_server *cmp = NULL;
    struct prov_est_server *est = NULL;
    struct prov_config *cfg = NULL;
    struct prov_ca *ca = NULL;
    struct prov_cmp_signer signer = {0};
    char *end = NULL;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", cmd_ca_serve_opts, NULL)) != -1) {
        switch (c) {
        case 'l': http.listen = optarg; break;
        case 'p': http.path = optarg; break;
        case 'c': http.tls_cert = optarg; break;
        case 'k': http.tls_key = optarg; break;
        case 'm':
            http.max_body = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || http.max_body == 0 ||
                http.max_body > 64u * 1024 * 1024) {
                fprintf(stderr, "provisioner: ca serve: --max-body %s: not 1 to 67108864\n",
                        optarg);
                return PROV_EXIT_USAGE;
            }
            break;
        case 'P': so.profile = optarg; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: ca serve: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    if ((http.tls_cert == NULL) != (http.tls_key == NULL)) {
        fprintf(stderr, "provisioner: ca serve: --tls-cert and --tls-key go together\n");
        return PROV_EXIT_USAGE;
    }
    if (http.path[0] != '/') {
        fprintf(stderr, "provisioner: ca serve: --path %s: must start with /\n", http.path);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_ca_open(cfg, true, &ca);
    if (r == 0) {
        r = prov_cmp_signer_open(cfg, ca, &signer);
    }
    if (r == 0) {
        so.cfg = cfg;
        so.signer_cert = signer.cert;
        so.signer_key = signer.key;
        so.ca = ca;
        r = prov_cmp_server_new(&so, &cmp);
    }
    if (r == 0 && http.tls_cert != NULL) {
        /* EST needs the TLS client certificate: only over HTTPS (doc/ca-service.md) */
        r = prov_est_server_new(cfg, ca, so.profile, &est);
        http.est = est;
        http.tls_client_ca = ca->root;
    }
    if (r == 0) {
        http.crl_dir = cfg->ca_dir; /* the CRLs `ca crl` writes, at /crl/ */
        r = prov_http_serve(&http, cmp);
    }
    rc = r < 0 ? cli_fail(r, "ca serve") : PROV_EXIT_OK;
    prov_est_server_free(est);
    prov_cmp_server_free(cmp);
    prov_cmp_signer_close(&signer);
    prov_ca_close(ca);
    prov_config_free(cfg);
    return rc;
}
