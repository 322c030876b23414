/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cert_facts.h"
#include "cli.h"
#include "error.h"
#include "lot_export.h"
#include "lot_signer.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner lot export LOT --format F --journal FILE [--output PATH]\n"
               "                              [--state LIST] [--json]\n"
               "       provisioner lot signer [--force] [--json]\n\n"
               "lot export writes a lot's identities, read from its batch journal, in a format a\n"
               "customer loads (doc/export.md). Everything is built first and written\n"
               "atomically: on any error nothing is written.\n"
               "  --format F       aws        AWS IoT bulk registration: bulk-registration.jsonl,\n"
               "                              provisioning-template.json,\n"
               "                              register-ca-certificate.json (directory)\n"
               "                   azure-dps  Azure IoT Hub DPS: enrollment-group.json and\n"
               "                              enrollments/<registration id>.json (directory)\n"
               "                   edge       the CA trust set an edge loads, as chain export (file)\n"
               "                   csv, json  inventory: serial, cert_serial, sha256,\n"
               "                              pubkey_sha256, state, not_after, lot, revoked,\n"
               "                              revoked_at (file)\n"
               "                   record     lot-record.json and lot-record.json.p7s, its\n"
               "                              detached CMS signature by the lot signer, which\n"
               "                              `openssl cms -verify` checks (directory)\n"
               "  --journal FILE   the lot's batch journal (batch's default:\n"
               "                   MANIFEST.journal.sqlite)\n"
               "  --output PATH    a file (edge, csv, json; default: stdout), or a directory\n"
               "                   that does not exist yet (aws, azure-dps, record; required)\n"
               "  --state LIST     rows exported, by journal state: issued, stored, proven,\n"
               "                   failed (comma-separated), or all; default: stored,proven\n"
               "                   (the identity is on the device). Rows without a current\n"
               "                   certificate are never exported\n"
               "  --json           print a summary as JSON on stdout (needs --output)\n"
               "Revocations come from the CA index of [ca] dir (read only): a revoked\n"
               "certificate is marked in csv, json and record, and left out of aws and\n"
               "azure-dps with a warning.\n\n"
               "lot signer creates the lot-signing key in the CA token (label lot-signer, next to\n"
               "the intermediate key), issues its certificate with the intermediate (keyUsage\n"
               "digitalSignature only) and writes [ca] dir/lot-signer.crt. Run it on the CA host.\n"
               "  --force          replace an existing lot signer (key and certificate): the new\n"
               "                   key first, the old one deleted once the new one is written\n"
               "  --json           print the certificate's facts as JSON\n\n"
               "Exit: 0 ok, 2 usage or input, 3 CA token PIN, 4 CA token or lot signer not\n"
               "found, 5 unknown lot or no row to export, a lot signer already there,\n"
               "6 journal or output error.\n");
}

enum { OPT_FORMAT = 0x100, OPT_JOURNAL, OPT_OUTPUT, OPT_STATE, OPT_JSON, OPT_FORCE };

static const struct option lot_export_opts[] = {
    {"format", required_argument, NULL, OPT_FORMAT},
    {"journal", required_argument, NULL, OPT_JOURNAL},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"state", required_argument, NULL, OPT_STATE},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* --json: what was written (schema: provisioner(1), JSON OUTPUT). */
static json_object *export_json(const struct prov_lot_export_opts *o, const char *output,
                                const struct prov_lot_bundle *b)
{
    json_object *j = json_object_new_object();
    json_object *files = json_object_new_array();

    json_object_object_add(j, "lot", json_object_new_string(o->lot ? o->lot : ""));
    json_object_object_add(j, "format", json_object_new_string(prov_lot_format_name(o->format)));
    json_object_object_add(j, "output", output ? json_object_new_string(output) : NULL);
    json_object_object_add(j, "devices", json_object_new_int64(b ? (int64_t)b->n_devices : 0));
    json_object_object_add(j, "left_out", json_object_new_int64(b ? (int64_t)b->n_left_out : 0));
    for (size_t i = 0; b != NULL && i < b->n_files; i++) {
        json_object_array_add(files, json_object_new_string(b->files[i].name));
    }
    json_object_object_add(j, "files", files);
    return j;
}

static int parse_export(int argc, char **argv, struct prov_lot_export_opts *o,
                        const char **output, bool *as_json)
{
    const char *format = NULL;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lot_export_opts, NULL)) != -1) {
        switch (c) {
        case OPT_FORMAT: format = optarg; break;
        case OPT_JOURNAL: o->journal = optarg; break;
        case OPT_OUTPUT: *output = optarg; break;
        case OPT_STATE:
            if (prov_lot_states_parse(optarg, &o->states) < 0) {
                return cli_fail(PROV_ERR_USAGE, "--state");
            }
            break;
        case OPT_JSON: *as_json = true; break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "provisioner: lot export: name one LOT (see --help)\n");
        return PROV_EXIT_USAGE;
    }
    o->lot = argv[optind];
    if (format == NULL || o->journal == NULL) {
        fprintf(stderr, "provisioner: lot export: --format and --journal are required\n");
        return PROV_EXIT_USAGE;
    }
    if (prov_lot_format_parse(format, &o->format) < 0) {
        return cli_fail(PROV_ERR_USAGE, "--format");
    }
    if (*output == NULL && (prov_lot_format_is_dir(o->format) || *as_json)) {
        fprintf(stderr, "provisioner: lot export: --format %s%s needs --output\n", format,
                *as_json ? " --json" : "");
        return PROV_EXIT_USAGE;
    }
    return 0;
}

static int lot_export(int argc, char **argv)
{
    struct prov_lot_export_opts o = {0};
    struct prov_lot_bundle b = {0};
    struct prov_config *cfg = NULL;
    const char *output = NULL;
    bool as_json = false;
    bool is_dir;
    int rc;
    int r;

    rc = parse_export(argc, argv, &o, &output, &as_json);
    if (rc != 0) {
        return rc < 0 ? PROV_EXIT_OK : rc;
    }
    is_dir = prov_lot_format_is_dir(o.format);
    /* a journal file must be readable; a server store is named by a URL (scheme://) */
    if (strstr(o.journal, "://") == NULL && cli_check_input(o.journal, false) != 0) {
        return PROV_EXIT_USAGE;
    }
    prov_error_clear();
    if (output != NULL && prov_lot_export_check_output(is_dir, output) < 0) {
        return cli_fail_json(PROV_ERR_STORAGE, output, as_json, export_json(&o, output, NULL));
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_lot_export_build(cfg, &o, &b);
    if (r == 0 && output != NULL) {
        r = prov_lot_export_write(&b, is_dir, output);
    } else if (r == 0) {
        r = fwrite(b.files[0].data, 1, b.files[0].len, stdout) == b.files[0].len ? 0 : PROV_ERR_IO;
    }
    if (r < 0) {
        rc = cli_fail_json(r, "lot export", as_json, export_json(&o, output, NULL));
    } else {
        if (as_json) {
            json_object *j = export_json(&o, output, &b);

            json_object_object_add(j, "error", NULL);
            json_object_object_add(j, "exit", json_object_new_int(PROV_EXIT_OK));
            cli_print_json(j);
        }
        if (output != NULL && !prov_cli.quiet) {
            fprintf(stderr, "provisioner: lot %s: %zu devices exported as %s to %s (rows left out by "
                            "their state or revoked: %zu)\n",
                    o.lot, b.n_devices, prov_lot_format_name(o.format), output, b.n_left_out);
        }
        rc = PROV_EXIT_OK;
    }
    prov_lot_bundle_clear(&b);
    prov_config_free(cfg);
    return rc;
}

static const struct option lot_signer_opts[] = {
    {"force", no_argument, NULL, OPT_FORCE},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* f NULL (a failure): every field there, empty. */
static json_object *signer_json(const struct prov_cert_facts *facts, const char *ca_dir)
{
    static const struct prov_cert_facts none;
    const struct prov_cert_facts *f = facts != NULL ? facts : &none;
    json_object *j = json_object_new_object();
    char *path = NULL;

    if (asprintf(&path, "%s/" PROV_LOT_SIGNER_CERT, ca_dir) < 0) {
        path = NULL;
    }
    json_object_object_add(j, "certificate", json_object_new_string(path ? path : ""));
    json_object_object_add(j, "subject", json_object_new_string(f->subject));
    json_object_object_add(j, "issuer", json_object_new_string(f->issuer));
    json_object_object_add(j, "serial", json_object_new_string(f->serial_hex));
    json_object_object_add(j, "sha256", json_object_new_string(f->sha256_hex));
    json_object_object_add(j, "not_after", json_object_new_string(f->not_after));
    free(path);
    return j;
}

static int lot_signer(int argc, char **argv)
{
    struct prov_config *cfg = NULL;
    struct prov_cert_facts facts;
    X509 *cert = NULL;
    bool force = false;
    bool as_json = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lot_signer_opts, NULL)) != -1) {
        switch (c) {
        case OPT_FORCE: force = true; break;
        case OPT_JSON: as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: lot signer: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_lot_signer_create(cfg, force, &cert);
    if (r == 0 && as_json) {
        r = prov_cert_facts(cert, &facts);
    }
    if (r < 0) {
        rc = cli_fail_json(r, "lot signer", as_json, signer_json(NULL, cfg->ca_dir));
    } else if (as_json) {
        json_object *j = signer_json(&facts, cfg->ca_dir);

        json_object_object_add(j, "error", NULL);
        json_object_object_add(j, "exit", json_object_new_int(PROV_EXIT_OK));
        cli_print_json(j);
        rc = PROV_EXIT_OK;
    } else {
        printf("lot signer created: %s/%s (key in the CA token, label %s)\n", cfg->ca_dir,
               PROV_LOT_SIGNER_CERT, PROV_LOT_SIGNER_LABEL);
        rc = PROV_EXIT_OK;
    }
    X509_free(cert);
    prov_config_free(cfg);
    return rc;
}

int cmd_lot(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "export") == 0) {
        return lot_export(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "signer") == 0) {
        return lot_signer(argc - 1, argv + 1);
    }
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return PROV_EXIT_OK;
    }
    if (argc < 2) {
        fprintf(stderr, "provisioner: lot: name a subcommand, export or signer (see --help)\n");
    } else {
        fprintf(stderr, "provisioner: lot: unknown subcommand \"%s\" (expected export or signer; "
                        "see --help)\n", argv[1]);
    }
    return PROV_EXIT_USAGE;
}

const struct cli_optset cmd_lot_optsets[] = {
    {"lot export", lot_export_opts},
    {"lot signer", lot_signer_opts},
    {NULL, NULL},
};
