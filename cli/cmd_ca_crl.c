/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `ca crl`, and the CRL files as `ca show` reports them (cmd_ca.c dispatches here; the usage
 * text of every `ca` subcommand is cmd_ca.c's).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli.h"
#include "crl.h"
#include "error.h"
#include "log.h"

const struct option cmd_ca_crl_opts[] = {
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static json_object *crl_json(const struct prov_config *cfg, const struct prov_crl_result *res)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "ca_dir", json_object_new_string(cfg ? cfg->ca_dir : ""));
    json_object_object_add(o, "crl_number", json_object_new_int64(res->number));
    json_object_object_add(o, "root_crl_number", json_object_new_int64(res->root_number));
    json_object_object_add(o, "revoked", json_object_new_int64((int64_t)res->n_revoked));
    json_object_object_add(o, "this_update", json_object_new_string(res->this_update));
    json_object_object_add(o, "next_update", json_object_new_string(res->next_update));
    json_object_object_add(o, "root_next_update", json_object_new_string(res->root_next_update));
    return o;
}

int cmd_ca_crl(int argc, char **argv)
{
    struct prov_crl_result res = {0};
    struct prov_config *cfg = NULL;
    bool as_json = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", cmd_ca_crl_opts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = true; break;
        case 'h': cmd_ca_usage(stdout); return PROV_EXIT_OK;
        default: cmd_ca_usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: ca crl: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_crl_publish(cfg, &res);
    if (r < 0) {
        rc = cli_fail_json(r, "ca crl", as_json, crl_json(cfg, &res));
    } else if (as_json) {
        json_object *o = crl_json(cfg, &res);

        json_object_object_add(o, "error", NULL);
        json_object_object_add(o, "exit", json_object_new_int(PROV_EXIT_OK));
        cli_print_json(o);
        rc = PROV_EXIT_OK;
    } else {
        printf("CRLs written in %s: " PROV_CRL_INTERMEDIATE_DER " (number %lld, %zu revoked, "
               "next update %s), " PROV_CRL_ROOT_DER " (number %lld, next update %s), their "
               ".pem forms and " PROV_CRL_CHAIN_PEM "\n",
               cfg->ca_dir, res.number, res.n_revoked, res.next_update, res.root_number,
               res.root_next_update);
        rc = PROV_EXIT_OK;
    }
    prov_config_free(cfg);
    return rc;
}

/*
 * The CRL files of the CA directory as `ca show` reports them: nextUpdate and a state
 * ("ok", "near-expiry", "expired", "missing"); a warning for the last three but "missing".
 */
json_object *cli_crls_json(const struct prov_config *cfg)
{
    static const char *const names[] = {PROV_CRL_INTERMEDIATE_DER, PROV_CRL_ROOT_DER};
    json_object *list = json_object_new_array();

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        json_object *e = json_object_new_object();
        char next[32] = "";
        char *path = NULL;
        bool is_expired = false;
        bool is_near = false;
        const char *state = "missing";

        if (asprintf(&path, "%s/%s", cfg->ca_dir, names[i]) < 0) {
            break;
        }
        if (access(path, F_OK) == 0) {
            prov_error_clear();
            if (prov_crl_file_freshness(path, time(NULL), next, &is_expired, &is_near) < 0) {
                state = "unreadable";
                prov_warn("%s: %s", path, prov_error_message());
            } else {
                state = is_expired ? "expired" : is_near ? "near-expiry" : "ok";
            }
        }
        if (is_expired || is_near) {
            prov_warn("%s: nextUpdate %s %s: verifiers that check CRLs refuse every device "
                      "once it passes; run `provisioner ca crl`",
                      path, next, is_expired ? "has passed" : "is close");
        }
        json_object_object_add(e, "file", json_object_new_string(path));
        json_object_object_add(e, "next_update", next[0] ? json_object_new_string(next) : NULL);
        json_object_object_add(e, "state", json_object_new_string(state));
        json_object_array_add(list, e);
        free(path);
    }
    return list;
}


void cli_print_crls(json_object *crls)
{
    for (size_t i = 0; i < json_object_array_length(crls); i++) {
        json_object *e = json_object_array_get_idx(crls, i);
        json_object *next = json_object_object_get(e, "next_update");

        printf("crl:              %s: %s%s%s\n",
               json_object_get_string(json_object_object_get(e, "file")),
               json_object_get_string(json_object_object_get(e, "state")),
               next ? ", next update " : "", next ? json_object_get_string(next) : "");
    }
}
