/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "check.h"
#include "cli.h"
#include "crl.h"
#include "error.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner check [--pin SOURCE] [--connect URL] [--crl FILE] [--json] DIR\n\n"
               "Re-proves an identity written to a device's storage directory: every file is\n"
               "present and parses, fullchain.pem is client.crt plus the intermediate(s), the\n"
               "device key named by key.uri signs a fresh random challenge that verifies with\n"
               "the certificate's public key, client.crt + chain.pem pass the chain rules for\n"
               "clientAuth, and server-ca.pem holds CA certificates; each check runs on its own\n"
               "with the files it needs. Exit 0 when all pass, 1 when one fails, 2 when DIR is\n"
               "not a readable directory. The config file is optional here.\n"
               "  --pin SOURCE   device PIN source (default: [provisioner] device_pin)\n"
               "  --connect URL  then a real mutual-TLS connection with the device key and\n"
               "                 fullchain.pem, trusting only server-ca.pem:\n"
               "                   mqtts://HOST[:PORT]        MQTT over TLS (CONNECT, one QoS 1\n"
               "                                              PUBLISH to provisioner/proof/<CN>)\n"
               "                   https://HOST[:PORT][/PATH] HTTP GET, a 2xx answer passes\n"
               "                   wss://HOST[:PORT][/PATH]   MQTT over WebSocket, as mqtts\n"
               "                 A refusal says which side refused: \"server did not trust our\n"
               "                 certificate\", \"we did not trust the server\", or the TLS error;\n"
               "                 refused or unreachable exits 1, a bad URL exits 2\n"
               "  --crl FILE     CRLs (PEM, or one DER CRL; `ca crl` writes crl-chain.pem): a\n"
               "                 revoked certificate fails the check (\"revoked\" and the\n"
               "                 reason), so does a FILE without the issuer's CRL; an expired\n"
               "                 CRL or one near its nextUpdate is a warning\n"
               "  --json         machine-readable output, also when the check fails or cannot\n"
               "                 be carried out (ok false, error set)\n");
}

static const char *ok(bool b)
{
    return b ? "ok" : "FAILED";
}

static const struct option check_opts[] = {
    {"pin", required_argument, NULL, 'p'},
    {"connect", required_argument, NULL, 'c'},
    {"crl", required_argument, NULL, 'r'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/*
 * The result, also when the check could not be carried out (a wrong PIN, no such DIR): with
 * --json the documented object, carrying the error; err is the PROV_ERR_* (0 when passed).
 */
static void print_result(const char *dir, const char *url, const struct prov_check_result *res,
                         int err, const char *error, bool as_json)
{
    if (as_json) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "dir", json_object_new_string(dir));
        json_object_object_add(o, "serial", res->serial ? json_object_new_string(res->serial)
                                                        : NULL);
        json_object_object_add(o, "ok", json_object_new_boolean(err == 0));
        json_object_object_add(o, "storage", json_object_new_boolean(res->is_storage_ok));
        json_object_object_add(o, "key_proof", json_object_new_boolean(res->is_key_proven));
        json_object_object_add(o, "chain", json_object_new_boolean(res->is_chain_ok));
        json_object_object_add(o, "server_ca", json_object_new_boolean(res->is_server_ca_ok));
        json_object_object_add(o, "cert_serial", json_object_new_string(res->facts.serial_hex));
        json_object_object_add(o, "not_after", json_object_new_string(res->facts.not_after));
        json_object_object_add(o, "connect", url ? cli_connect_json(&res->connect) : NULL);
        json_object_object_add(o, "crl", res->is_crl_run ? json_object_new_boolean(res->is_crl_ok)
                                                         : NULL);
        json_object_object_add(o, "revocation",
                               res->is_crl_run && res->revoked_reason >= 0
                                   ? json_object_new_string(
                                         prov_crl_reason_name(res->revoked_reason))
                                   : NULL);
        json_object_object_add(o, "error", error ? json_object_new_string(error) : NULL);
        json_object_object_add(o, "exit", json_object_new_int(prov_exit_code(err)));
        cli_print_json(o);
        return;
    }
    if (err != 0 && err != PROV_ERR_VERIFY && !res->is_connect_run) {
        return; /* the check did not run: the error line says why */
    }
    printf("%s: %s storage=%s key-proof=%s chain=%s server-ca=%s", dir, err == 0 ? "ok" : "FAILED",
           ok(res->is_storage_ok), ok(res->is_key_proven), ok(res->is_chain_ok),
           ok(res->is_server_ca_ok));
    if (res->is_crl_run) {
        printf(" crl=%s", res->is_crl_ok ? "ok" : res->revoked_reason >= 0 ? "revoked" : "FAILED");
    }
    if (url != NULL) {
        printf(" connect=%s", res->is_connect_run ? prov_connect_outcome_name(res->connect.outcome)
                                                 : "not-run");
        if (res->is_connect_run && res->connect.tls_version[0]) {
            printf(" tls=%s", res->connect.tls_version);
        }
    }
    printf("\n");
}

/* Prints the error line (and the --json object) for a check that failed or could not run. */
static int fail_check(const char *dir, const char *url, const struct prov_check_result *res,
                      int err, bool as_json)
{
    const char *msg = err == PROV_ERR_VERIFY && res->detail[0] ? res->detail
                                                               : prov_error_message();
    char line[1200];

    if (msg == NULL) {
        msg = res->detail[0] ? res->detail : prov_strerror(err);
    }
    /* one line that names the directory, as cli_fail would print it */
    if (strstr(msg, dir) == NULL) {
        snprintf(line, sizeof(line), "%s: %s", dir, msg);
    } else {
        snprintf(line, sizeof(line), "%s", msg);
    }
    print_result(dir, url, res, err, line, as_json);
    fprintf(stderr, "provisioner: %s\n", line);
    return err == PROV_ERR_VERIFY ? PROV_EXIT_FAILED : prov_exit_code(err);
}

int cmd_check(int argc, char **argv)
{
    struct prov_check_result res = {0};
    struct prov_config *cfg = NULL;
    const char *pin_spec = NULL;
    const char *url = NULL;
    const char *crl_path = NULL;
    STACK_OF(X509_CRL) *crls = NULL;
    const char *dir;
    bool as_json = false;
    struct stat st;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", check_opts, NULL)) != -1) {
        switch (c) {
        case 'p': pin_spec = optarg; break;
        case 'c': url = optarg; break;
        case 'r': crl_path = optarg; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "provisioner: check: expected exactly one DIR\n");
        return PROV_EXIT_USAGE;
    }
    dir = argv[optind];
    prov_error_clear();
    if (url != NULL && prov_connect_url_check(url) < 0) {
        return fail_check(dir, url, &res, PROV_ERR_USAGE, as_json);
    }
    /* A DIR that is not there is a mistyped argument (2), not a failed check (1). */
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, R_OK | X_OK) != 0) {
        int e = stat(dir, &st) != 0 || S_ISDIR(st.st_mode) ? errno : ENOTDIR;

        prov_fail(PROV_ERR_INPUT, "%s: cannot read: %s", dir, strerror(e));
        return fail_check(dir, url, &res, PROV_ERR_INPUT, as_json);
    }
    if (crl_path != NULL) {
        if (cli_check_input(crl_path, false) != 0) {
            return PROV_EXIT_USAGE;
        }
        r = prov_crl_load(crl_path, &crls);
        if (r < 0) {
            return fail_check(dir, url, &res, r, as_json);
        }
    }
    /* On a device there may be no station config: only a PIN source is needed. */
    if (stat(prov_cli.config_path, &st) == 0 || prov_cli.config_path_is_explicit) {
        r = prov_issue_load_config(prov_cli.config_path, &cfg);
    } else {
        r = prov_issue_parse_config("", 0, "(no config)", NULL, &cfg);
    }
    if (r < 0) {
        sk_X509_CRL_pop_free(crls, X509_CRL_free);
        return fail_check(dir, url, &res, r, as_json);
    }
    prov_error_clear();
    r = prov_check_identity_connect(cfg, dir, pin_spec, url, &res);
    if (crls != NULL && (r == 0 || r == PROV_ERR_VERIFY)) {
        int rr = prov_check_revocation(dir, crls, crl_path, &res);

        r = r == 0 ? rr : r;
    }
    if (r < 0) {
        rc = fail_check(dir, url, &res, r, as_json);
    } else {
        print_result(dir, url, &res, 0, NULL, as_json);
        rc = PROV_EXIT_OK;
    }
    prov_check_result_clear(&res);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_check_optsets[] = {
    {"check", check_opts},
    {NULL, NULL},
};
