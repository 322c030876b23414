/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "chain.h"
#include "cli.h"
#include "crl.h"
#include "error.h"
#include "storage.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner chain verify [--trust FILE] [--purpose client|server|any]\n"
               "                                [--crl FILE] [--json] FILE...\n"
               "       provisioner chain export [--with-crl] [--out FILE]\n\n"
               "chain verify checks each PEM file (leaf first) by the rules an edge applies:\n"
               "each certificate followed by its issuer, issuer DN = next subject, signatures,\n"
               "ending in a self-signed root (or a --trust certificate), CA certificates with a\n"
               "critical basicConstraints and keyCertSign, nested validity, the purpose, and\n"
               "everything `openssl verify -x509_strict` rejects. Every failure names the\n"
               "certificate (index, subject) and the rule. Exit 0 when all files are valid, 1\n"
               "when any is not.\n"
               "FILE may be PEM or DER (DER certificates back to back).\n"
               "  --trust FILE     extra trust anchors (PEM)\n"
               "  --purpose P      client (the leaf must allow clientAuth), server or any;\n"
               "                   default: client, but a chain whose first certificate is a\n"
               "                   CA (a CA directory's chain.pem) is checked as CAs (any)\n"
               "  --crl FILE       CRLs (PEM, or one DER CRL; `ca crl` writes crl-chain.pem):\n"
               "                   a revoked certificate is a finding \"revoked\" with its\n"
               "                   reason; the leaf needs a CRL of its issuer (finding \"crl\")\n"
               "  --json           machine-readable output\n\n"
               "chain export writes the client-CA trust set to upload to an edge or CDN: the\n"
               "intermediate then the root, from [ca] dir/chain.pem, after verifying it.\n"
               "  --with-crl       append the CRLs of [ca] dir/crl-chain.pem (`ca crl`), each\n"
               "                   verified against the chain: the set an edge loads\n"
               "  --out FILE       write to FILE (atomically) instead of stdout\n");
}

static json_object *finding_json(const struct prov_chain_finding *f)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "index", json_object_new_int(f->index));
    json_object_object_add(o, "subject", f->subject ? json_object_new_string(f->subject) : NULL);
    json_object_object_add(o, "rule", json_object_new_string(f->rule));
    json_object_object_add(o, "detail", json_object_new_string(f->detail ? f->detail : ""));
    return o;
}

static const struct option chain_verify_opts[] = {
    {"trust", required_argument, NULL, 't'},
    {"purpose", required_argument, NULL, 'p'},
    {"crl", required_argument, NULL, 'c'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int chain_verify(int argc, char **argv)
{
    enum prov_chain_purpose purpose = PROV_PURPOSE_CLIENT;
    bool is_purpose_given = false;
    STACK_OF(X509) *trust = NULL;
    STACK_OF(X509_CRL) *crls = NULL;
    const char *trust_path = NULL;
    const char *crl_path = NULL;
    json_object *all = json_object_new_array();
    bool as_json = false;
    int rc = PROV_EXIT_OK;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", chain_verify_opts, NULL)) != -1) {
        switch (c) {
        case 't': trust_path = optarg; break;
        case 'c': crl_path = optarg; break;
        case 'p':
            is_purpose_given = true;
            if (strcmp(optarg, "client") == 0) {
                purpose = PROV_PURPOSE_CLIENT;
            } else if (strcmp(optarg, "server") == 0) {
                purpose = PROV_PURPOSE_SERVER;
            } else if (strcmp(optarg, "any") == 0) {
                purpose = PROV_PURPOSE_ANY;
            } else {
                fprintf(stderr, "provisioner: --purpose \"%s\": expected client, server or any\n",
                        optarg);
                json_object_put(all);
                return PROV_EXIT_USAGE;
            }
            break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); json_object_put(all); return PROV_EXIT_OK;
        default: usage(stderr); json_object_put(all); return PROV_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "provisioner: chain verify: no FILE given\n");
        json_object_put(all);
        return PROV_EXIT_USAGE;
    }
    /* Files that cannot be read are usage errors (2), before any verdict is printed. */
    for (int i = optind - 1; i < argc; i++) {
        const char *path = i < optind ? trust_path : argv[i];

        if (path != NULL && cli_check_input(path, false) != 0) {
            json_object_put(all);
            return PROV_EXIT_USAGE;
        }
    }
    prov_error_clear();
    if (trust_path != NULL) {
        int r = prov_chain_load_pem(trust_path, &trust);

        if (r < 0) {
            json_object_put(all);
            return cli_fail(r, trust_path);
        }
    }
    if (crl_path != NULL && cli_check_input(crl_path, false) != 0) {
        json_object_put(all);
        sk_X509_pop_free(trust, X509_free);
        return PROV_EXIT_USAGE;
    }
    if (crl_path != NULL) {
        int r = prov_crl_load(crl_path, &crls);

        if (r < 0) {
            json_object_put(all);
            sk_X509_pop_free(trust, X509_free);
            return cli_fail(r, crl_path);
        }
    }
    for (int i = optind; i < argc; i++) {
        struct prov_chain_report rep = {0};
        STACK_OF(X509) *chain = NULL;
        json_object *o = json_object_new_object();
        json_object *findings = json_object_new_array();
        int r;

        prov_error_clear();
        r = prov_chain_load_file(argv[i], &chain, &rep);
        if (r == 0) {
            r = prov_chain_verify(chain, trust,
                                  is_purpose_given ? purpose : prov_chain_purpose_of(chain),
                                  time(NULL), &rep);
        }
        if ((r == 0 || r == PROV_ERR_VERIFY) && crls != NULL) {
            size_t before = rep.n;
            int reason;
            int rr = prov_crl_check_chain(crls, crl_path, chain, time(NULL), &rep, &reason);

            r = rr < 0 ? rr : rep.n > before ? PROV_ERR_VERIFY : r;
        }
        if (r < 0 && rep.n == 0) {
            /* A failure to check at all (out of memory): still a finding on the file. */
            struct prov_chain_finding f = {
                .index = -1,
                .rule = "parse",
                .detail = (char *)(prov_error_message() ? prov_error_message()
                                                        : prov_strerror(r)),
            };

            json_object_array_add(findings, finding_json(&f));
            if (!as_json) {
                printf("%s: invalid: %s: %s\n", argv[i], f.rule, f.detail);
            }
        }
        for (size_t k = 0; k < rep.n; k++) {
            json_object_array_add(findings, finding_json(&rep.items[k]));
            if (as_json) {
                continue;
            }
            if (rep.items[k].index < 0) {
                /* The file as a whole: it holds no certificate to name. */
                printf("%s: invalid: %s: %s\n", argv[i], rep.items[k].rule, rep.items[k].detail);
            } else {
                printf("%s: invalid: certificate %d (%s): %s: %s\n", argv[i], rep.items[k].index,
                       rep.items[k].subject ? rep.items[k].subject : "-", rep.items[k].rule,
                       rep.items[k].detail);
            }
        }
        if (r == 0 && !as_json) {
            printf("%s: ok (%d certificates)\n", argv[i], sk_X509_num(chain));
        }
        if (r < 0) {
            rc = PROV_EXIT_FAILED;
        }
        json_object_object_add(o, "file", json_object_new_string(argv[i]));
        json_object_object_add(o, "valid", json_object_new_boolean(r == 0));
        json_object_object_add(o, "certificates", json_object_new_int(chain ? sk_X509_num(chain) : 0));
        json_object_object_add(o, "findings", findings);
        json_object_array_add(all, o);
        prov_chain_report_free(&rep);
        sk_X509_pop_free(chain, X509_free);
    }
    if (as_json) {
        cli_print_json(all);
        all = NULL;
    }
    json_object_put(all);
    sk_X509_pop_free(trust, X509_free);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    return rc;
}

static const struct option chain_export_opts[] = {
    {"with-crl", no_argument, NULL, 'c'},
    {"out", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int chain_export(int argc, char **argv)
{
    struct prov_config *cfg = NULL;
    STACK_OF(X509) *chain = NULL;
    const char *out_path = NULL;
    char *path = NULL;
    char *pem = NULL;
    char *crl_pem = NULL;
    const char *what = "chain export";
    size_t len = 0;
    size_t crl_len = 0;
    bool with_crl = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", chain_export_opts, NULL)) != -1) {
        switch (c) {
        case 'c': with_crl = true; break;
        case 'o': out_path = optarg; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: chain export: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    prov_error_clear();
    if (out_path != NULL && prov_storage_check_output_file(out_path, "--out") < 0) {
        return cli_fail(PROV_ERR_STORAGE, out_path);
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    if (asprintf(&path, "%s/chain.pem", cfg->ca_dir) < 0) {
        rc = cli_fail(PROV_ERR_NOMEM, "chain export");
        goto out;
    }
    what = path;
    r = prov_chain_load_verified(path, &chain);
    if (r == 0) {
        r = prov_chain_to_pem(chain, &pem, &len);
    }
    if (r == 0 && with_crl) {
        r = prov_crl_export_pem(cfg->ca_dir, chain, time(NULL), &crl_pem, &crl_len);
        what = r < 0 ? "chain export --with-crl" : path;
    }
    if (r == 0 && crl_len > 0) {
        char *both = realloc(pem, len + crl_len + 1);

        r = both != NULL ? 0 : PROV_ERR_NOMEM;
        if (both != NULL) {
            memcpy(both + len, crl_pem, crl_len + 1);
            pem = both;
            len += crl_len;
        }
    }
    if (r == 0 && out_path != NULL) {
        r = prov_atomic_write_file(out_path, pem, len, 0644);
    } else if (r == 0) {
        r = fwrite(pem, 1, len, stdout) == len ? 0 : PROV_ERR_IO;
    }
    rc = r < 0 ? cli_fail(r, what) : PROV_EXIT_OK;
out:
    free(crl_pem);
    sk_X509_pop_free(chain, X509_free);
    free(pem);
    free(path);
    prov_config_free(cfg);
    return rc;
}

int cmd_chain(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0) {
        return chain_verify(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "export") == 0) {
        return chain_export(argc - 1, argv + 1);
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return PROV_EXIT_OK;
    }
    usage(stderr);
    return PROV_EXIT_USAGE;
}

const struct cli_optset cmd_chain_optsets[] = {
    {"chain verify", chain_verify_opts},
    {"chain export", chain_export_opts},
    {NULL, NULL},
};
