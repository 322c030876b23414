/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `ca station add|renew|revoke|list` and `ca lot add`: who may ask the CA service (doc/ca-service.md), kept in
 * the CA index (provisioner/pki/ca_registry.h).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ca.h"
#include "ca_registry.h"
#include "chain.h"
#include "cli.h"
#include "crl_names.h"
#include "csr.h"
#include "durable.h"
#include "error.h"
#include "manifest.h"

#define STATION_PROFILE "station"
#define LOT_MAX_STATIONS 64

const struct option cmd_ca_station_opts[] = {
    {"csr", required_argument, NULL, 'c'},
    {"out", required_argument, NULL, 'o'},
    {"reissue", no_argument, NULL, 'r'},
    {"rate", required_argument, NULL, 'M'},
    {"reason", required_argument, NULL, 'R'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

const struct option cmd_ca_lot_opts[] = {
    {"count", required_argument, NULL, 'n'},
    {"manifest", required_argument, NULL, 'm'},
    {"station", required_argument, NULL, 's'},
    {"profile", required_argument, NULL, 'p'},
    {"reissue", no_argument, NULL, 'r'},
    {"rate", required_argument, NULL, 'R'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void station_usage(FILE *f)
{
    fprintf(f, "Usage: provisioner ca station add NAME --csr FILE --out FILE [--reissue]\n"
               "                                  [--rate N]\n"
               "       provisioner ca station renew NAME --csr FILE --out FILE [--rate N]\n"
               "       provisioner ca station revoke NAME [--reason R]\n"
               "       provisioner ca station list [--json]\n\n"
               "add issues station NAME's identity certificate under the profile \"station\"\n"
               "from a CSR made on the station's own token (provisioner csr --profile station),\n"
               "and registers it: the CA service accepts requests signed with it. FILE receives\n"
               "the certificate then the CA chain. --reissue replaces the station's certificate.\n"
               "renew does the same for a registered station: the new certificate is registered,\n"
               "the old one is superseded and no longer accepted. revoke records the revocation\n"
               "of the station's certificate (reason R, default unspecified; one of %s):\n"
               "the service refuses the station from then on. list shows the stations, their\n"
               "certificates, revocations, rates and lots.\n"
               "  --rate N         the station's certificates per minute across all its lots\n"
               "                   (0: no limit; default: a new station none, else unchanged),\n"
               "                   beside each lot's rate (ca lot add --rate)\n",
            prov_crl_reason_names());
}

static void lot_usage(FILE *f)
{
    fprintf(f, "Usage: provisioner ca lot add NAME (--count N | --manifest FILE)\n"
               "                                  --station S [--station S...] [--profile P...]\n"
               "                                  [--reissue] [--rate N]\n"
               "       provisioner ca lot list [--json]\n\n"
               "Registers lot NAME with the CA service: at most N devices (counted by the CA),\n"
               "issued only for the stations named (registered with ca station add).\n"
               "  --manifest FILE  the lot's manifest: N is its rows, and only its serials\n"
               "                   may be issued for the lot\n"
               "  --profile P      a profile the lot may be issued under (repeatable;\n"
               "                   default: any)\n"
               "  --reissue        a station may ask to supersede a device's certificate\n"
               "  --rate N         each station's certificates per minute for the lot\n"
               "                   (default: no limit)\n"
               "list shows the lots: devices issued of the cap, reissue, profiles, whether\n"
               "the serials come from a manifest, and each station with its rate (0: none).\n"
               "  --json           an array of objects\n");
}

/* The station's certificate: issued under the station profile, then registered. */
static int station_issue(const struct prov_config *cfg, const char *name, X509_REQ *req,
                         bool is_reissue, long long per_minute, const char *out_path)
{
    struct prov_request rq;
    struct prov_ca *ca = NULL;
    STACK_OF(X509) *bundle = NULL;
    X509 *cert = NULL;
    char *pem = NULL;
    size_t pem_len = 0;
    int r;

    memset(&rq, 0, sizeof(rq));
    rq.serial = name;
    rq.profile = prov_config_profile(cfg, STATION_PROFILE);
    rq.record.issued_by = "ca station";
    rq.record.is_reissue = is_reissue;
    if (rq.profile == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "%s: no [profile_" STATION_PROFILE "] section",
                         cfg->path);
    }
    r = prov_ca_open(cfg, true, &ca);
    if (r == 0) {
        r = prov_issue_certificate(cfg, ca, req, &rq, &cert);
    }
    if (r == 0) {
        bundle = sk_X509_dup(ca->chain);
        r = bundle != NULL && sk_X509_unshift(bundle, cert) ? 0 : PROV_ERR_NOMEM;
    }
    if (r == 0) {
        r = prov_chain_to_pem(bundle, &pem, &pem_len);
    }
    if (r == 0) {
        r = prov_atomic_write_file(out_path, pem, pem_len, 0644);
    }
    if (r == 0) {
        r = prov_ca_registry_station_add(ca->index, name, cert, per_minute);
    }
    if (r == 0) {
        r = prov_ca_index_delivered(ca->index, cert);
    }
    free(pem);
    sk_X509_free(bundle);
    X509_free(cert);
    prov_ca_close(ca);
    return r;
}

/* renew: the station must be registered already (PROV_ERR_USAGE naming it). */
static int station_registered(const struct prov_config *cfg, const char *name)
{
    struct prov_ca_index *ix = NULL;
    char hex[72];
    int r = prov_ca_index_open(cfg->ca_dir, &ix);

    if (r == 0) {
        r = prov_ca_registry_station_cert(ix, name, hex, sizeof(hex));
    }
    prov_ca_index_close(ix);
    return r;
}

/* add and renew: NAME --csr FILE --out FILE; renew needs the station registered. */
static int station_add(int argc, char **argv, bool is_renew)
{
    const char *verb = is_renew ? "renew" : "add";
    struct prov_config *cfg = NULL;
    const char *csr_path = NULL;
    const char *out_path = NULL;
    bool is_reissue = false;
    long long per_minute = -1; /* unchanged */
    X509_REQ *req = NULL;
    char *end = NULL;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", cmd_ca_station_opts, NULL)) != -1) {
        switch (c) {
        case 'c': csr_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'r': is_reissue = true; break;
        case 'M':
            per_minute = strtoll(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || per_minute < 0 || per_minute > 1000000) {
                fprintf(stderr, "provisioner: ca station %s: --rate %s: not 0 to 1000000\n",
                        verb, optarg);
                return PROV_EXIT_USAGE;
            }
            break;
        case 'h': station_usage(stdout); return PROV_EXIT_OK;
        default: station_usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || csr_path == NULL || out_path == NULL) {
        fprintf(stderr, "provisioner: ca station %s: NAME, --csr and --out are required\n",
                verb);
        return PROV_EXIT_USAGE;
    }
    if (!prov_serial_is_valid(argv[optind])) {
        fprintf(stderr, "provisioner: station \"%s\": must match " PROV_SERIAL_RULE "\n",
                argv[optind]);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_storage_check_output_file(out_path, "--out");
    if (r == 0 && is_renew) {
        r = station_registered(cfg, argv[optind]);
    }
    if (r == 0) {
        r = prov_csr_read(csr_path, &req);
    }
    if (r == 0) {
        r = station_issue(cfg, argv[optind], req, is_reissue || is_renew, per_minute, out_path);
    }
    if (r < 0) {
        rc = cli_fail(r, argv[optind]);
    } else {
        printf("station %s %s: %s\n", argv[optind], is_renew ? "renewed" : "registered",
               out_path);
        rc = PROV_EXIT_OK;
    }
    X509_REQ_free(req);
    prov_config_free(cfg);
    return rc;
}

/*
 * revoke: the station's registered certificate gets a revocation record (the revocation
 * table and the audit trail, as `provisioner revoke` writes): the service refuses it after.
 */
static int station_revoke(int argc, char **argv)
{
    struct prov_ca_revocation rv = {0};
    struct prov_config *cfg = NULL;
    struct prov_ca_index *ix = NULL;
    const char *reason_name = "unspecified";
    char hex[72];
    bool is_new = false;
    int reason = 0;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", cmd_ca_station_opts, NULL)) != -1) {
        switch (c) {
        case 'R': reason_name = optarg; break;
        case 'h': station_usage(stdout); return PROV_EXIT_OK;
        default: station_usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "provisioner: ca station revoke: expected exactly one NAME\n");
        return PROV_EXIT_USAGE;
    }
    prov_error_clear();
    r = prov_crl_reason_parse(reason_name, &reason);
    if (r < 0) {
        return cli_fail(r, argv[optind]);
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_ca_index_open(cfg->ca_dir, &ix);
    if (r == 0) {
        r = prov_ca_registry_station_cert(ix, argv[optind], hex, sizeof(hex));
    }
    if (r == 0) {
        r = prov_ca_index_revoke(ix, argv[optind], hex, reason, NULL, "ca station revoke", &rv,
                                 &is_new);
    }
    if (r < 0) {
        rc = cli_fail(r, argv[optind]);
    } else {
        printf("station %s: certificate %s %s revoked (%s) at %s\n", argv[optind],
               rv.cert_serial, is_new ? "is" : "was already", prov_crl_reason_name(rv.reason),
               rv.revoked_at);
        rc = PROV_EXIT_OK;
    }
    prov_ca_index_close(ix);
    prov_config_free(cfg);
    return rc;
}

static int station_print(void *arg, const struct prov_ca_station *st)
{
    json_object *list = arg;
    json_object *o;

    if (list == NULL) {
        printf("%-24s %-40s %s%s rate=%lld lots=%s\n", st->name, st->cert_serial,
               st->revoked_at != NULL ? "revoked " : "", st->revoked_at != NULL ? st->revoked_at
                                                                             : st->added_at,
               st->per_minute, st->lots[0] != '\0' ? st->lots : "-");
        return 0;
    }
    o = json_object_new_object();
    if (o == NULL) {
        return PROV_ERR_NOMEM;
    }

    json_object_object_add(o, "name", json_object_new_string(st->name));
    json_object_object_add(o, "cert_serial", json_object_new_string(st->cert_serial));
    json_object_object_add(o, "added_at", json_object_new_string(st->added_at));
    json_object_object_add(o, "revoked_at", st->revoked_at != NULL
                                                ? json_object_new_string(st->revoked_at)
                                                : NULL);
    json_object_object_add(o, "rate", json_object_new_int64(st->per_minute));
    json_object_object_add(o, "lots", json_object_new_string(st->lots));
    json_object_array_add(list, o);
    return 0;
}

/* What a list command shows: run calls the registry's *_each with list (NULL: text). */
struct list_cmd {
    const char *what; /* "ca station list" */
    const struct option *opts;
    void (*usage)(FILE *f);
    int (*run)(struct prov_ca_index *ix, json_object *list);
};

/* ca station list / ca lot list [--json]: one line per row, or a JSON array. */
static int list_command(int argc, char **argv, const struct list_cmd *lc)
{
    struct prov_config *cfg = NULL;
    struct prov_ca_index *ix = NULL;
    json_object *list = NULL;
    bool as_json = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lc->opts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = true; break;
        case 'h': lc->usage(stdout); return PROV_EXIT_OK;
        default: lc->usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: %s: unexpected argument \"%s\"\n", lc->what,
                argv[optind]);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    list = as_json ? json_object_new_array() : NULL;
    prov_error_clear();
    r = as_json && list == NULL ? PROV_ERR_NOMEM : prov_ca_index_open(cfg->ca_dir, &ix);
    if (r == 0) {
        r = lc->run(ix, list);
    }
    if (r < 0) {
        rc = cli_fail(r, lc->what);
    } else {
        if (as_json) {
            cli_print_json(list);
            list = NULL;
        }
        rc = PROV_EXIT_OK;
    }
    json_object_put(list);
    prov_ca_index_close(ix);
    prov_config_free(cfg);
    return rc;
}

static int station_list_run(struct prov_ca_index *ix, json_object *list)
{
    return prov_ca_registry_station_each(ix, station_print, list);
}

static int lot_print(void *arg, const struct prov_ca_lot_row *lot)
{
    json_object *list = arg;
    json_object *o;

    if (list == NULL) {
        printf("%-24s %lld/%lld devices reissue=%s profiles=%s serials=%s stations=%s\n",
               lot->name, lot->devices, lot->cap, lot->is_reissue ? "yes" : "no",
               lot->profiles[0] != '\0' ? lot->profiles : "any",
               lot->n_serials > 0 ? "manifest" : "any", lot->stations);
        return 0;
    }
    o = json_object_new_object();
    if (o == NULL) {
        return PROV_ERR_NOMEM;
    }
    json_object_object_add(o, "name", json_object_new_string(lot->name));
    json_object_object_add(o, "cap", json_object_new_int64(lot->cap));
    json_object_object_add(o, "devices", json_object_new_int64(lot->devices));
    json_object_object_add(o, "reissue", json_object_new_boolean(lot->is_reissue));
    json_object_object_add(o, "manifest_serials", json_object_new_int64(lot->n_serials));
    json_object_object_add(o, "profiles", json_object_new_string(lot->profiles));
    json_object_object_add(o, "stations", json_object_new_string(lot->stations));
    json_object_object_add(o, "added_at", json_object_new_string(lot->added_at));
    json_object_array_add(list, o);
    return 0;
}

static int lot_list_run(struct prov_ca_index *ix, json_object *list)
{
    return prov_ca_registry_lot_each(ix, lot_print, list);
}

/* The serials of a manifest (`ca lot add --manifest`), in a growing array. */
struct lot_serials {
    char **v;
    size_t n;
    size_t cap;
    char first[256]; /* the manifest's first finding, "" for none */
};

static void manifest_finding(void *ctx, const char *name, unsigned long line,
                             unsigned long column, const char *reason)
{
    struct lot_serials *ls = ctx;

    if (ls->first[0] == '\0') {
        snprintf(ls->first, sizeof(ls->first), "%s:%lu:%lu: %s", name, line, column, reason);
    }
}

static int collect_serial(void *ctx, struct prov_manifest_parser *p,
                          const struct prov_manifest_row *row)
{
    struct lot_serials *ls = ctx;
    char *copy;

    (void)p;
    if (ls->n == ls->cap) {
        size_t cap = ls->cap != 0 ? ls->cap * 2 : 256;
        char **v = realloc(ls->v, cap * sizeof(*v));

        if (v == NULL) {
            return PROV_ERR_NOMEM;
        }
        ls->v = v;
        ls->cap = cap;
    }
    copy = strdup(row->value[PROV_COL_SERIAL]);
    if (copy == NULL) {
        return PROV_ERR_NOMEM;
    }
    ls->v[ls->n++] = copy;
    return 0;
}

/* The manifest's serials into ls: a manifest with any finding is refused whole. */
static int read_manifest(const char *path, struct lot_serials *ls)
{
    struct prov_manifest_callbacks cb = {
        .row = collect_serial, .error = manifest_finding, .ctx = ls};
    unsigned long n_errors = 0;
    unsigned char *buf = NULL;
    size_t len = 0;
    int r = prov_read_small_file(path, PROV_ERR_INPUT, &buf, &len);

    if (r == 0) {
        r = prov_manifest_parse(path, buf, len, &cb, &n_errors);
    }
    if (r == PROV_ERR_INPUT && ls->first[0] != '\0') {
        prov_error_clear();
        r = prov_fail(PROV_ERR_INPUT, "%s (%lu finding(s) in all)", ls->first, n_errors);
    }
    if (r == 0 && ls->n == 0) {
        r = prov_fail(PROV_ERR_INPUT, "%s: no devices", path);
    }
    free(buf);
    return r;
}

static int lot_add(int argc, char **argv)
{
    const char *stations[LOT_MAX_STATIONS];
    const char *profiles[LOT_MAX_STATIONS];
    struct lot_serials ls = {0};
    struct prov_ca_lot lot = {0};
    struct prov_ca_index *ix = NULL;
    struct prov_config *cfg = NULL;
    const char *manifest = NULL;
    char *end = NULL;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", cmd_ca_lot_opts, NULL)) != -1) {
        switch (c) {
        case 'n':
        case 'R': {
            long long v = strtoll(optarg, &end, 10);

            if (*optarg == '\0' || *end != '\0' || v < 1 || v > 100000000) {
                fprintf(stderr, "provisioner: ca lot add: --%s %s: not 1 to 100000000\n",
                        c == 'n' ? "count" : "rate", optarg);
                return PROV_EXIT_USAGE;
            }
            *(c == 'n' ? &lot.cap : &lot.per_minute) = v;
            break;
        }
        case 'm': manifest = optarg; break;
        case 'r': lot.is_reissue = true; break;
        case 's':
        case 'p':
            if ((c == 's' ? lot.n_stations : lot.n_profiles) == LOT_MAX_STATIONS) {
                fprintf(stderr, "provisioner: ca lot add: more than %d --%s\n",
                        LOT_MAX_STATIONS, c == 's' ? "station" : "profile");
                return PROV_EXIT_USAGE;
            }
            if (c == 's') {
                stations[lot.n_stations++] = optarg;
            } else {
                profiles[lot.n_profiles++] = optarg;
            }
            break;
        case 'h': lot_usage(stdout); return PROV_EXIT_OK;
        default: lot_usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || (lot.cap == 0) == (manifest == NULL) || lot.n_stations == 0) {
        fprintf(stderr, "provisioner: ca lot add: NAME, --station and one of --count or "
                        "--manifest are required\n");
        return PROV_EXIT_USAGE;
    }
    lot.name = argv[optind];
    lot.stations = stations;
    lot.profiles = profiles;
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = 0;
    for (size_t i = 0; i < lot.n_profiles && r == 0; i++) {
        if (prov_config_profile(cfg, profiles[i]) == NULL) {
            r = prov_fail(PROV_ERR_USAGE, "--profile %s: not in %s (no [profile_%s] section)",
                          profiles[i], cfg->path, profiles[i]);
        }
    }
    if (r == 0 && manifest != NULL) {
        r = read_manifest(manifest, &ls);
        lot.serials = (const char *const *)ls.v;
        lot.n_serials = ls.n;
        lot.cap = (long long)ls.n;
    }
    if (r == 0) {
        r = prov_ca_index_open(cfg->ca_dir, &ix);
    }
    if (r == 0) {
        r = prov_ca_registry_lot_add(ix, &lot);
    }
    if (r < 0) {
        rc = cli_fail(r, argv[optind]);
    } else {
        printf("lot %s registered: cap %lld%s, %zu station(s)\n", argv[optind], lot.cap,
               manifest != NULL ? " (the manifest's devices)" : "", lot.n_stations);
        rc = PROV_EXIT_OK;
    }
    for (size_t i = 0; i < ls.n; i++) {
        free(ls.v[i]);
    }
    free(ls.v);
    prov_ca_index_close(ix);
    prov_config_free(cfg);
    return rc;
}

int cmd_ca_station(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "add") == 0) {
        return station_add(argc - 1, argv + 1, false);
    }
    if (argc >= 2 && strcmp(argv[1], "renew") == 0) {
        return station_add(argc - 1, argv + 1, true);
    }
    if (argc >= 2 && strcmp(argv[1], "revoke") == 0) {
        return station_revoke(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        static const struct list_cmd lc = {"ca station list", cmd_ca_station_opts,
                                           station_usage, station_list_run};

        return list_command(argc - 1, argv + 1, &lc);
    }
    station_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? PROV_EXIT_OK : PROV_EXIT_USAGE;
}

int cmd_ca_lot(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "add") == 0) {
        return lot_add(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        static const struct list_cmd lc = {"ca lot list", cmd_ca_lot_opts, lot_usage,
                                           lot_list_run};

        return list_command(argc - 1, argv + 1, &lc);
    }
    lot_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? PROV_EXIT_OK : PROV_EXIT_USAGE;
}
