/* SPDX-License-Identifier: Apache-2.0 */
/* `provisioner ca serve`: the CA service over CMP (doc/ca-service.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ca_keeper.h"
#include "cli.h"
#include "error.h"
#include "http.h"
#include "issue.h"
#include "pkcs11.h"
#include "sd_api.h"

#define SERVE_DEFAULT_LISTEN "127.0.0.1:8829"
#define SERVE_DEFAULT_PATH "/.well-known/cmp"
#define SERVE_DEFAULT_MAX_BODY (256 * 1024)
#define SERVE_MAX_WORKERS 64
#define SERVE_WORKERS_PER_CPU 4

const struct option cmd_ca_serve_opts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"path", required_argument, NULL, 'p'},
    {"tls-cert", required_argument, NULL, 'c'},
    {"tls-key", required_argument, NULL, 'k'},
    {"max-body", required_argument, NULL, 'm'},
    {"profile", required_argument, NULL, 'P'},
    {"workers", required_argument, NULL, 'w'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: provisioner ca serve [--listen HOST:PORT] [--path PATH]\n"
            "                            [--tls-cert FILE --tls-key FILE] [--max-body BYTES]\n"
            "                            [--profile NAME] [--workers N]\n\n"
            "Runs the CA service on the host that holds the CA's HSM: CMP (RFC 9483: p10cr,\n"
            "ir, cr, kur, certConf, genm caCerts, rr) over HTTP (RFC 6712), answers signed by\n"
            "the CMP signer (a key in the CA token, <CA dir>/cmp-signer.crt, made on first\n"
            "start). A request must be signed by a registered station (ca station add) for\n"
            "a lot it serves (ca lot add); the device serial is the CN of the subject asked\n"
            "for. Every certificate goes through the CSR policy and the CA index, recorded\n"
            "before it is answered. One line per request on stderr. SIGTERM or SIGINT\n"
            "drains it (open connections answered, then exit 0); SIGHUP reads the config's\n"
            "profiles (a broken config keeps the old one) and the TLS certificate and key\n"
            "again. When the CA token goes away it answers \"CA\n"
            "unavailable\" (CMP systemUnavail, EST 503) and re-opens it once a second; a\n"
            "rejected PIN is not tried again. GET /status (from loopback): JSON. Under\n"
            "systemd (Type=notify): READY=1, WATCHDOG=1, STOPPING=1.\n"
            "With --tls-cert it also serves EST (RFC 7030) under /.well-known/est/ and\n"
            "/.well-known/est/LOT/: cacerts, csrattrs, simpleenroll (the TLS client\n"
            "certificate is the station's identity) and simplereenroll (a device's current\n"
            "certificate).\n"
            "  --listen HOST:PORT  where to listen (default " SERVE_DEFAULT_LISTEN ")\n"
            "  --path PATH         the CMP path (default " SERVE_DEFAULT_PATH ")\n"
            "  --tls-cert FILE     serve HTTPS with this PEM certificate (chain)...\n"
            "  --tls-key FILE      ...and this PEM key\n"
            "  --max-body BYTES    a larger request is refused (413; default 262144)\n"
            "  --profile NAME      the profile certificates are issued under (default device)\n"
            "  --workers N         CMP requests and EST enrollments answered at once, 1 to\n"
            "                      64 (default: 4 per processor online: a worker waiting\n"
            "                      for the HSM or the disk holds no processor)\n");
}

static void log_line(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "provisioner: ca serve: %s\n", line);
}

/*
 * systemd (udev/provisioner-ca.service, Type=notify): READY=1 once listening, WATCHDOG=1 from
 * the event loop at half the watchdog's interval, STOPPING=1 when the drain starts. Without
 * NOTIFY_SOCKET and WATCHDOG_USEC, libsystemd is not even loaded (provisioner/support/sd_api.h).
 */
struct notify {
    uint64_t watchdog_us; /* 0: no watchdog */
    struct timespec last_ping;
};

static void ready(void *arg, const char *listen)
{
    struct notify *n = arg;
    char state[320];

    printf("ca serve: listening on %s\n", listen);
    fflush(stdout);
    snprintf(state, sizeof(state), "READY=1\nSTATUS=listening on %s", listen);
    prov_sd_notify(state);
    clock_gettime(CLOCK_MONOTONIC, &n->last_ping);
}

static void tick(void *arg)
{
    struct notify *n = arg;
    struct timespec now;
    uint64_t us;

    if (n->watchdog_us == 0) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    us = (uint64_t)(now.tv_sec - n->last_ping.tv_sec) * 1000000u +
         (uint64_t)((now.tv_nsec - n->last_ping.tv_nsec) / 1000);
    if (us >= n->watchdog_us / 2) {
        prov_sd_notify("WATCHDOG=1");
        n->last_ping = now;
    }
}

static void stopping(void *arg)
{
    (void)arg;
    prov_sd_notify("STOPPING=1\nSTATUS=draining");
}

/*
 * SIGHUP's configuration (prov_http_opts.reload): the file read and checked again as at start,
 * then handed to the keeper, which refuses what needs a restart. Each configuration taken
 * stays alive until the service exits: what was opened under an earlier one may point into it.
 */
struct reloads {
    struct prov_ca_keeper *keeper;
    struct prov_config **taken;
    size_t n;
};

static int reload(void *arg, char *said, size_t cap)
{
    struct reloads *rl = arg;
    struct prov_config *fresh = NULL;
    struct prov_config **grown;
    int r = prov_issue_load_config(prov_cli.config_path, &fresh);

    if (r == 0) {
        grown = realloc(rl->taken, (rl->n + 1) * sizeof(*grown));
        r = grown != NULL ? 0 : prov_fail(PROV_ERR_NOMEM, "out of memory");
        rl->taken = grown != NULL ? grown : rl->taken;
    }
    r = r ? r : prov_ca_keeper_reload(rl->keeper, fresh, said, cap);
    if (r < 0) {
        prov_config_free(fresh);
        return r;
    }
    rl->taken[rl->n++] = fresh;
    return 0;
}

int cmd_ca_serve(int argc, char **argv)
{
    struct prov_http_opts http = {
        .listen = SERVE_DEFAULT_LISTEN,
        .path = SERVE_DEFAULT_PATH,
        .max_body = SERVE_DEFAULT_MAX_BODY,
        .log = log_line,
        .ready = ready,
        .tick = tick,
        .stopping = stopping,
    };
    struct notify notify = {0};
    struct prov_ca_keeper_opts ko = {.log = log_line, .release_modules = prov_pkcs11_unload_all};
    struct prov_ca_keeper *keeper = NULL;
    struct prov_config *cfg = NULL;
    struct reloads rl = {0};
    char *end = NULL;
    long workers = 0;
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
        case 'P': ko.profile = optarg; break;
        case 'w':
            workers = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || workers < 1 || workers > SERVE_MAX_WORKERS) {
                fprintf(stderr, "provisioner: ca serve: --workers %s: not 1 to %d\n", optarg,
                        SERVE_MAX_WORKERS);
                return PROV_EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (workers == 0) {
        /* a worker waiting for a network HSM's signature or the index's sync uses no core */
        workers = SERVE_WORKERS_PER_CPU * sysconf(_SC_NPROCESSORS_ONLN);
        workers = workers < 1 ? 1 : workers > SERVE_MAX_WORKERS ? SERVE_MAX_WORKERS : workers;
    }
    http.workers = (int)workers;
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
    /* before the CA's PIN is used: a unit that cannot be told "ready" would be killed anyway */
    if (prov_sd_load_if_asked() < 0) {
        fprintf(stderr, "provisioner: ca serve: the service manager asks for notifications "
                        "(NOTIFY_SOCKET or WATCHDOG_USEC is set), but %s\n", prov_sd_why());
        return PROV_EXIT_FAILED;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    ko.cfg = cfg;
    /* EST needs the TLS client certificate: only over HTTPS (doc/ca-service.md) */
    ko.est = http.tls_cert != NULL;
    r = prov_ca_keeper_open(&ko, &keeper);
    if (r == 0) {
        http.keeper = keeper;
        http.crl_dir = cfg->ca_dir; /* the CRLs `ca crl` writes, at /crl/ */
        http.log_arg = &notify;
        rl.keeper = keeper;
        http.reload = reload;
        http.reload_arg = &rl;
        if (prov_sd_watchdog_enabled(&notify.watchdog_us) <= 0) {
            notify.watchdog_us = 0;
        }
        r = prov_http_serve(&http);
    }
    rc = r < 0 ? cli_fail(r, "ca serve") : PROV_EXIT_OK;
    prov_ca_keeper_free(keeper);
    prov_config_free(cfg);
    for (size_t i = 0; i < rl.n; i++) {
        prov_config_free(rl.taken[i]);
    }
    free(rl.taken);
    return rc;
}
