/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "check.h"
#include "cli.h"
#include "error.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner check [--pin SOURCE] [--connect URL] [--json] DIR\n\n"
               "Re-proves an identity written to a device's storage directory: every file is\n"
               "present and parses, fullchain.pem is client.crt plus the intermediate(s), the\n"
               "device key named by key.uri signs a fresh random challenge that verifies with\n"
               "the certificate's public key, client.crt + chain.pem pass the chain rules for\n"
               "clientAuth, and server-ca.pem holds CA certificates. Exit 0 when all pass, 1\n"
               "when one fails. The config file is optional here.\n"
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
               "  --json         machine-readable output\n");
}

static const char *ok(bool b)
{
    return b ? "ok" : "FAILED";
}

static const struct option check_opts[] = {
    {"pin", required_argument, NULL, 'p'},
    {"connect", required_argument, NULL, 'c'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_check(int argc, char **argv)
{
    struct prov_check_result res = {0};
    struct prov_config *cfg = NULL;
    const char *pin_spec = NULL;
    const char *url = NULL;
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
    if (url != NULL && prov_connect_url_check(url) < 0) {
        return cli_fail(PROV_ERR_USAGE, "--connect");
    }
    /* A DIR that is not there is a mistyped argument (2), not a failed check (1). */
    rc = cli_check_input(dir, true);
    if (rc != 0) {
        return rc;
    }
    /* On a device there may be no station config: only a PIN source is needed. */
    if (stat(prov_cli.config_path, &st) == 0 || prov_cli.config_path_is_explicit) {
        rc = cli_load_config(&cfg);
    } else {
        rc = prov_config_parse("", 0, "(no config)", NULL, &cfg) < 0 ? cli_fail(-1, "config")
                                                                      : 0;
    }
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_check_identity_connect(cfg, dir, pin_spec, url, &res);
    if (r < 0 && r != PROV_ERR_VERIFY) {
        rc = cli_fail(r, dir);
        goto out;
    }
    if (as_json) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "dir", json_object_new_string(dir));
        json_object_object_add(o, "serial", res.serial ? json_object_new_string(res.serial) : NULL);
        json_object_object_add(o, "ok", json_object_new_boolean(r == 0));
        json_object_object_add(o, "storage", json_object_new_boolean(res.is_storage_ok));
        json_object_object_add(o, "key_proof", json_object_new_boolean(res.is_key_proven));
        json_object_object_add(o, "chain", json_object_new_boolean(res.is_chain_ok));
        json_object_object_add(o, "server_ca", json_object_new_boolean(res.is_server_ca_ok));
        json_object_object_add(o, "cert_serial", json_object_new_string(res.facts.serial_hex));
        json_object_object_add(o, "not_after", json_object_new_string(res.facts.not_after));
        json_object_object_add(o, "connect", url ? cli_connect_json(&res.connect) : NULL);
        json_object_object_add(o, "error", res.detail[0] ? json_object_new_string(res.detail)
                                                          : NULL);
        cli_print_json(o);
    } else {
        printf("%s: %s storage=%s key-proof=%s chain=%s server-ca=%s", dir,
               r == 0 ? "ok" : "FAILED", ok(res.is_storage_ok), ok(res.is_key_proven),
               ok(res.is_chain_ok), ok(res.is_server_ca_ok));
        if (url != NULL) {
            printf(" connect=%s", res.is_connect_run
                                      ? prov_connect_outcome_name(res.connect.outcome)
                                      : "not-run");
            if (res.is_connect_run && res.connect.tls_version[0]) {
                printf(" tls=%s", res.connect.tls_version);
            }
        }
        printf("\n");
    }
    if (r < 0) {
        fprintf(stderr, "provisioner: %s\n", res.detail[0] ? res.detail : prov_strerror(r));
    }
    rc = r == 0 ? PROV_EXIT_OK : PROV_EXIT_FAILED;
out:
    prov_check_result_clear(&res);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_check_optsets[] = {
    {"check", check_opts},
    {NULL, NULL},
};
