/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ca_index.h"
#include "cli.h"
#include "crl.h"
#include "error.h"

enum { OPT_CERT_SERIAL = 0x200, OPT_REASON, OPT_INVALIDITY_DATE, OPT_BY };

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner revoke SERIAL --reason R [--cert-serial HEX]\n"
               "                          [--invalidity-date T] [--by NAME] [--json]\n\n"
               "Records the revocation of device SERIAL's current certificate (or of the one\n"
               "named by --cert-serial) in the CA index ([ca] dir/index.sqlite, or [ca] index),\n"
               "with an audit record; the next `ca crl` lists it. No CA token is needed. A\n"
               "revocation is final: the same again is no change (exit 0), another reason is\n"
               "refused (exit 5).\n"
               "An unknown serial or certificate exits 5 and records nothing.\n"
               "  --reason R            unspecified, keyCompromise, affiliationChanged,\n"
               "                        superseded, cessationOfOperation, privilegeWithdrawn\n"
               "  --cert-serial HEX     that certificate of SERIAL (hex, colons allowed)\n"
               "  --invalidity-date T   when the key is known or suspected to have stopped\n"
               "                        being trustworthy: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ\n"
               "  --by NAME             who revokes, for the audit record (default: the user)\n"
               "  --json                machine-readable output\n");
}

static const struct option revoke_opts[] = {
    {"cert-serial", required_argument, NULL, OPT_CERT_SERIAL},
    {"reason", required_argument, NULL, OPT_REASON},
    {"invalidity-date", required_argument, NULL, OPT_INVALIDITY_DATE},
    {"by", required_argument, NULL, OPT_BY},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static json_object *result_json(const char *serial, const struct prov_ca_revocation *rv,
                                bool is_new)
{
    json_object *o = json_object_new_object();
    bool is_known = rv != NULL && rv->cert_serial[0] != '\0';

    json_object_object_add(o, "serial", json_object_new_string(serial ? serial : ""));
    json_object_object_add(o, "cert_serial",
                           is_known ? json_object_new_string(rv->cert_serial) : NULL);
    json_object_object_add(o, "reason", is_known && rv->revoked_at[0]
                                            ? json_object_new_string(
                                                  prov_crl_reason_name(rv->reason))
                                            : NULL);
    json_object_object_add(o, "revoked_at", is_known && rv->revoked_at[0]
                                                ? json_object_new_string(rv->revoked_at)
                                                : NULL);
    json_object_object_add(o, "invalidity_date",
                           is_known && rv->invalidity_date[0]
                               ? json_object_new_string(rv->invalidity_date)
                               : NULL);
    json_object_object_add(o, "revoked_by", is_known && rv->revoked_by[0]
                                                ? json_object_new_string(rv->revoked_by)
                                                : NULL);
    json_object_object_add(o, "new", json_object_new_boolean(is_new));
    return o;
}

/* The invalidity date as the index keeps it (RFC 3339 UTC, seconds); not in the future. */
static int invalidity_text(const char *arg, char out[32])
{
    struct tm tm;
    time_t t;
    int r;

    out[0] = '\0';
    if (arg == NULL) {
        return 0;
    }
    r = prov_crl_parse_time(arg, &t);
    if (r < 0) {
        return r;
    }
    if (t > time(NULL)) {
        return prov_fail(PROV_ERR_USAGE, "--invalidity-date %s: in the future", arg);
    }
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return 0;
}

static const char *default_by(void)
{
    const struct passwd *pw = getpwuid(geteuid());

    return pw != NULL ? pw->pw_name : "unknown";
}

int cmd_revoke(int argc, char **argv)
{
    struct prov_ca_revocation rv = {0};
    struct prov_config *cfg = NULL;
    struct prov_ca_index *ix = NULL;
    const char *cert_serial = NULL;
    const char *reason_name = NULL;
    const char *invalidity = NULL;
    const char *by = NULL;
    const char *serial;
    char when[32] = "";
    bool as_json = false;
    bool is_new = false;
    int reason = 0;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", revoke_opts, NULL)) != -1) {
        switch (c) {
        case OPT_CERT_SERIAL: cert_serial = optarg; break;
        case OPT_REASON: reason_name = optarg; break;
        case OPT_INVALIDITY_DATE: invalidity = optarg; break;
        case OPT_BY: by = optarg; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "provisioner: revoke: expected exactly one SERIAL\n");
        return PROV_EXIT_USAGE;
    }
    serial = argv[optind];
    prov_error_clear();
    if (reason_name == NULL) {
        r = prov_fail(PROV_ERR_USAGE, "revoke: --reason is required (%s)",
                      prov_crl_reason_names());
    } else if (!prov_serial_is_valid(serial)) {
        r = prov_fail(PROV_ERR_USAGE, "revoke: serial \"%s\": expected %s", serial,
                      PROV_SERIAL_RULE);
    } else if ((r = prov_crl_reason_parse(reason_name, &reason)) == 0) {
        r = invalidity_text(invalidity, when);
    }
    if (r < 0) {
        return cli_fail_json(r, "revoke", as_json, result_json(serial, NULL, false));
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_ca_index_open_config(cfg, &ix);
    if (r == 0) {
        r = prov_ca_index_revoke(ix, serial, cert_serial, reason, when[0] ? when : NULL,
                                 by ? by : default_by(), &rv, &is_new);
    }
    if (r < 0) {
        rc = cli_fail_json(r, "revoke", as_json, result_json(serial, &rv, false));
    } else if (as_json) {
        json_object *o = result_json(serial, &rv, is_new);

        json_object_object_add(o, "error", NULL);
        json_object_object_add(o, "exit", json_object_new_int(PROV_EXIT_OK));
        cli_print_json(o);
        rc = PROV_EXIT_OK;
    } else {
        printf("%s: certificate %s %s revoked (%s) at %s by %s%s%s\n", serial, rv.cert_serial,
               is_new ? "is" : "was already", prov_crl_reason_name(rv.reason), rv.revoked_at,
               rv.revoked_by, rv.invalidity_date[0] ? "; invalid since " : "",
               rv.invalidity_date);
        rc = PROV_EXIT_OK;
    }
    prov_ca_index_close(ix);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_revoke_optsets[] = {
    {"revoke", revoke_opts},
    {NULL, NULL},
};
