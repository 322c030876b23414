/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "ca.h"
#include "chain.h"
#include "cli.h"
#include "error.h"
#include "storage.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner ca init [--force] [--strict]\n"
               "       provisioner ca show [--json]\n\n"
               "ca init creates the root CA (new, with its key in a PKCS#11 token or an encrypted\n"
               "PEM file, or imported from [ca] root_cert + root_key) and an intermediate CA whose\n"
               "key is generated inside the HSM token named by [ca] intermediate_key. It writes\n"
               "root.crt, intermediate.crt and chain.pem (intermediate then root) into [ca] dir.\n"
               "  --force   replace an existing CA directory and existing CA keys\n"
               "  --strict  refuse a root config that strict verifiers reject (exit 5)\n\n"
               "ca show prints the chain, the key locations, validity and lint findings.\n"
               "  --json    machine-readable output\n");
}

static const struct option ca_init_opts[] = {
    {"force", no_argument, NULL, 'f'},
    {"strict", no_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int ca_init(int argc, char **argv)
{
    struct prov_ca_init_opts o = {0};
    struct prov_config *cfg = NULL;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", ca_init_opts, NULL)) != -1) {
        switch (c) {
        case 'f': o.force = true; break;
        case 's': o.strict = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: ca init: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_ca_init(cfg, &o);
    if (r < 0) {
        rc = cli_fail(r, "ca init");
    } else {
        printf("CA created in %s: root.crt intermediate.crt chain.pem\n", cfg->ca_dir);
        rc = PROV_EXIT_OK;
    }
    prov_config_free(cfg);
    return rc;
}

static json_object *cert_json(X509 *cert, const char *role)
{
    struct prov_cert_facts f;
    json_object *o = json_object_new_object();

    prov_cert_facts(cert, &f);
    json_object_object_add(o, "role", json_object_new_string(role));
    json_object_object_add(o, "subject", json_object_new_string(f.subject));
    json_object_object_add(o, "issuer", json_object_new_string(f.issuer));
    json_object_object_add(o, "serial", json_object_new_string(f.serial_hex));
    json_object_object_add(o, "sha256", json_object_new_string(f.sha256_hex));
    json_object_object_add(o, "not_before", json_object_new_string(f.not_before));
    json_object_object_add(o, "not_after", json_object_new_string(f.not_after));
    json_object_object_add(o, "key_type",
                           json_object_new_string(prov_key_type_name(
                               prov_key_type_of(X509_get0_pubkey(cert)))));
    return o;
}

static const struct option ca_show_opts[] = {
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int ca_show(int argc, char **argv)
{
    struct prov_chain_report rep = {0};
    struct prov_config *cfg = NULL;
    struct prov_ca *ca = NULL;
    json_object *root = NULL;
    json_object *certs;
    json_object *lint;
    bool as_json = false;
    int n;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", ca_show_opts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: ca show: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_ca_open(cfg, false, &ca);
    if (r < 0) {
        rc = cli_fail(r, "ca show");
        goto out;
    }
    r = prov_chain_verify(ca->chain, NULL, PROV_PURPOSE_ANY, time(NULL), &rep);
    if (r == 0 || r == PROV_ERR_VERIFY) {
        r = prov_ca_lint_lifetime(cfg, ca, time(NULL), &rep);
    }
    if (r < 0 && r != PROV_ERR_VERIFY) {
        rc = cli_fail(r, "ca show");
        goto out;
    }
    root = json_object_new_object();
    certs = json_object_new_array();
    lint = json_object_new_array();
    json_object_object_add(root, "ca_dir", json_object_new_string(cfg->ca_dir));
    json_object_object_add(root, "intermediate_key",
                           cfg->ca_key ? json_object_new_string(cfg->ca_key) : NULL);
    json_object_object_add(root, "root_key",
                           cfg->root_key ? json_object_new_string(cfg->root_key) : NULL);
    n = sk_X509_num(ca->chain);
    for (int i = 0; i < n; i++) {
        json_object_array_add(certs, cert_json(sk_X509_value(ca->chain, i),
                                               i == n - 1 ? "root" : "intermediate"));
    }
    json_object_object_add(root, "chain", certs);
    for (size_t i = 0; i < rep.n; i++) {
        json_object *f = json_object_new_object();

        json_object_object_add(f, "index", json_object_new_int(rep.items[i].index));
        json_object_object_add(f, "rule", json_object_new_string(rep.items[i].rule));
        json_object_object_add(f, "detail", json_object_new_string(rep.items[i].detail));
        json_object_array_add(lint, f);
    }
    json_object_object_add(root, "lint", lint);

    if (as_json) {
        printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    } else {
        printf("CA directory:     %s\n", cfg->ca_dir);
        printf("intermediate key: %s\n", cfg->ca_key ? cfg->ca_key : "(not set)");
        printf("root key:         %s\n", cfg->root_key ? cfg->root_key : "(not set)");
        for (int i = 0; i < n; i++) {
            json_object *o = json_object_array_get_idx(certs, i);
            json_object *v;

#define F(k) (json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "")
            printf("[%d] %s\n    subject:  %s\n    issuer:   %s\n    serial:   %s\n"
                   "    validity: %s .. %s\n    key:      %s\n    sha256:   %s\n",
                   i, F("role"), F("subject"), F("issuer"), F("serial"), F("not_before"),
                   F("not_after"), F("key_type"), F("sha256"));
#undef F
        }
        if (rep.n == 0) {
            printf("lint: no findings (chain passes the SPEC §7 rules and -x509_strict)\n");
        }
        for (size_t i = 0; i < rep.n; i++) {
            printf("lint: [%d] %s: %s\n", rep.items[i].index, rep.items[i].rule,
                   rep.items[i].detail);
        }
    }
    rc = PROV_EXIT_OK;
out:
    json_object_put(root);
    prov_chain_report_free(&rep);
    prov_ca_close(ca);
    prov_config_free(cfg);
    return rc;
}

int cmd_ca(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "init") == 0) {
        return ca_init(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "show") == 0) {
        return ca_show(argc - 1, argv + 1);
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return PROV_EXIT_OK;
    }
    usage(stderr);
    return PROV_EXIT_USAGE;
}

const struct cli_optset cmd_ca_optsets[] = {
    {"ca init", ca_init_opts},
    {"ca show", ca_show_opts},
    {NULL, NULL},
};
