/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "ca.h"
#include "ca_index.h"
#include "pg_conn.h"
#include "chain.h"
#include "cli.h"
#include "error.h"
#include "log.h"
#include "storage.h"

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
        case 'h': cmd_ca_usage(stdout); return PROV_EXIT_OK;
        default: cmd_ca_usage(stderr); return PROV_EXIT_USAGE;
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

/* NULL when the certificate's facts cannot be read (the error is set). */
static json_object *cert_json(X509 *cert, const char *role)
{
    struct prov_cert_facts f;
    json_object *o;

    if (prov_cert_facts(cert, &f) < 0) {
        return NULL;
    }
    o = json_object_new_object();
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

/* The index's audit trail (revocations): its length and whether its hash chain holds. */
struct audit_state {
    long long records;
    bool is_intact;
    long long bad_seq;
};

/* The CA index as `ca show` reports it (JSON; the text form is printed from it). */
static json_object *index_json(const char *path, const struct prov_ca_index_stats *st,
                               const struct audit_state *audit)
{
    json_object *o = json_object_new_object();
    json_object *counts = json_object_new_object();
    json_object *list = json_object_new_array();

    json_object_object_add(o, "path", json_object_new_string(path));
    json_object_object_add(counts, "issued", json_object_new_int64(st->issued));
    json_object_object_add(counts, "delivered", json_object_new_int64(st->delivered));
    json_object_object_add(counts, "superseded", json_object_new_int64(st->superseded));
    json_object_object_add(counts, "abandoned", json_object_new_int64(st->abandoned));
    json_object_object_add(o, "certificates", counts);
    for (size_t i = 0; i < st->n_undelivered; i++) {
        const struct prov_ca_index_undelivered *u = &st->undelivered[i];
        json_object *e = json_object_new_object();

        json_object_object_add(e, "serial", json_object_new_string(u->serial));
        json_object_object_add(e, "cert_serial", json_object_new_string(u->cert_serial));
        json_object_object_add(e, "status", json_object_new_string(u->status));
        json_object_object_add(e, "issued_at", json_object_new_string(u->issued_at));
        json_object_object_add(e, "issued_by", json_object_new_string(u->issued_by));
        json_object_array_add(list, e);
    }
    json_object_object_add(o, "undelivered", list);
    json_object_object_add(o, "open_attempts", json_object_new_int64(st->attempts_open));
    json_object_object_add(o, "audit_records", json_object_new_int64(audit->records));
    json_object_object_add(o, "audit_intact", json_object_new_boolean(audit->is_intact));
    return o;
}

static void print_index(const char *path, const struct prov_ca_index_stats *st,
                        const struct audit_state *audit)
{
    printf("index:            %s: %lld delivered, %lld issued not delivered, %lld superseded, "
           "%lld abandoned; %lld enroll attempt(s) open\n",
           path, st->delivered, st->issued, st->superseded, st->abandoned, st->attempts_open);
    for (size_t i = 0; i < st->n_undelivered; i++) {
        const struct prov_ca_index_undelivered *u = &st->undelivered[i];

        printf("undelivered: %s cert_serial=%s %s (issued by %s at %s)\n", u->serial,
               u->cert_serial, u->status, u->issued_by, u->issued_at);
    }
    if (audit->is_intact) {
        printf("audit:            %lld record(s), hash chain intact\n", audit->records);
    } else {
        printf("audit:            %lld record(s), hash chain BROKEN at record %lld\n",
               audit->records, audit->bad_seq);
    }
}

static const struct option ca_show_opts[] = {
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* ca show --json when the CA cannot be shown: the same shape (error and exit added). */
static json_object *show_failed_json(const struct prov_config *cfg)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "ca_dir", json_object_new_string(cfg ? cfg->ca_dir : ""));
    json_object_object_add(o, "intermediate_key",
                           cfg && cfg->ca_key ? json_object_new_string(cfg->ca_key) : NULL);
    json_object_object_add(o, "root_key",
                           cfg && cfg->root_key ? json_object_new_string(cfg->root_key) : NULL);
    json_object_object_add(o, "chain", json_object_new_array());
    json_object_object_add(o, "lint", json_object_new_array());
    json_object_object_add(o, "index", NULL); /* not read: the command failed before */
    json_object_object_add(o, "crls", json_object_new_array());
    return o;
}

static int ca_show(int argc, char **argv)
{
    struct prov_chain_report rep = {0};
    struct prov_ca_index_stats stats = {0};
    struct audit_state audit = {0};
    struct prov_config *cfg = NULL;
    struct prov_ca_index *ix = NULL;
    struct prov_ca *ca = NULL;
    char *index_path = NULL;
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
        case 'h': cmd_ca_usage(stdout); return PROV_EXIT_OK;
        default: cmd_ca_usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: ca show: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    prov_error_clear();
    r = prov_issue_load_config(prov_cli.config_path, &cfg);
    if (r < 0) {
        return cli_fail_json(r, prov_cli.config_path, as_json, show_failed_json(NULL));
    }
    prov_error_clear();
    r = prov_ca_open(cfg, false, &ca);
    if (r < 0) {
        rc = cli_fail_json(r, "ca show", as_json, show_failed_json(cfg));
        goto out;
    }
    r = prov_chain_verify(ca->chain, NULL, PROV_PURPOSE_ANY, time(NULL), &rep);
    if (r == 0 || r == PROV_ERR_VERIFY) {
        r = prov_ca_lint_lifetime(cfg, ca, time(NULL), &rep);
    }
    if (r < 0 && r != PROV_ERR_VERIFY) {
        rc = cli_fail_json(r, "ca show", as_json, show_failed_json(cfg));
        goto out;
    }
    /* What the CA issued (opening it the first time imports an older issued-keys file). */
    prov_error_clear();
    r = prov_ca_index_open_config(cfg, &ix);
    if (r == 0) {
        r = prov_ca_index_stats(ix, &stats);
    }
    if (r == 0) {
        r = prov_ca_index_audit_verify(ix, &audit.records, &audit.is_intact, &audit.bad_seq);
    }
    /* the index on PostgreSQL is named by its URI, any password masked (doc/revocation.md) */
    if (r == 0) {
        index_path = cfg->ca_index != NULL ? prov_pg_mask_uri(cfg->ca_index) : NULL;
        if (cfg->ca_index == NULL &&
            asprintf(&index_path, "%s/" PROV_CA_INDEX_FILE, cfg->ca_dir) < 0) {
            index_path = NULL;
        }
    }
    if (r == 0 && index_path != NULL && !audit.is_intact) {
        prov_warn("%s: the audit trail's hash chain breaks at record %lld: a record was changed "
                  "or removed",
                  index_path, audit.bad_seq);
    }
    if (r < 0 || index_path == NULL) {
        rc = cli_fail(r < 0 ? r : PROV_ERR_NOMEM, "ca show");
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
    json_object_object_add(root, "chain", certs);
    for (int i = 0; i < n; i++) {
        json_object *cj = cert_json(sk_X509_value(ca->chain, i),
                                    i == n - 1 ? "root" : "intermediate");

        if (cj == NULL) {
            json_object_put(lint);
            rc = cli_fail_json(PROV_ERR_INPUT, "ca show", as_json, show_failed_json(cfg));
            goto out;
        }
        json_object_array_add(certs, cj);
    }
    for (size_t i = 0; i < rep.n; i++) {
        json_object *f = json_object_new_object();

        json_object_object_add(f, "index", json_object_new_int(rep.items[i].index));
        json_object_object_add(f, "rule", json_object_new_string(rep.items[i].rule));
        json_object_object_add(f, "detail", json_object_new_string(rep.items[i].detail));
        json_object_array_add(lint, f);
    }
    json_object_object_add(root, "lint", lint);
    json_object_object_add(root, "index", index_json(index_path, &stats, &audit));
    json_object_object_add(root, "crls", cli_crls_json(cfg));

    if (as_json) {
        json_object_object_add(root, "error", NULL);
        json_object_object_add(root, "exit", json_object_new_int(PROV_EXIT_OK));
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
            printf("lint: no findings (chain passes the rules of chain verify and -x509_strict)\n");
        }
        for (size_t i = 0; i < rep.n; i++) {
            printf("lint: [%d] %s: %s\n", rep.items[i].index, rep.items[i].rule,
                   rep.items[i].detail);
        }
        print_index(index_path, &stats, &audit);
        cli_print_crls(json_object_object_get(root, "crls"));
    }
    rc = PROV_EXIT_OK;
out:
    json_object_put(root);
    prov_chain_report_free(&rep);
    prov_ca_index_stats_clear(&stats);
    prov_ca_index_close(ix);
    free(index_path);
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
    if (argc >= 2 && strcmp(argv[1], "crl") == 0) {
        return cmd_ca_crl(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
        return cmd_ca_serve(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "station") == 0) {
        return cmd_ca_station(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "lot") == 0) {
        return cmd_ca_lot(argc - 1, argv + 1);
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        cmd_ca_usage(stdout);
        return PROV_EXIT_OK;
    }
    cmd_ca_usage(stderr);
    return PROV_EXIT_USAGE;
}

const struct cli_optset cmd_ca_optsets[] = {
    {"ca init", ca_init_opts},
    {"ca show", ca_show_opts},
    {"ca crl", cmd_ca_crl_opts},
    {"ca serve", cmd_ca_serve_opts},
    {"ca station", cmd_ca_station_opts},
    {"ca lot", cmd_ca_lot_opts},
    {NULL, NULL},
};
