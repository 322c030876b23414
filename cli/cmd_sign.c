/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "chain.h"
#include "cli.h"
#include "csr.h"
#include "error.h"
#include "issuer.h"
#include "steps.h"
#include "storage.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner sign --serial SN --csr FILE.csr --out FILE.pem [OPTIONS]\n\n"
               "Station side of the split flow: checks the CSR against policy (signature, key\n"
               "type and size, no CA or unknown extensions requested, a public key this CA\n"
               "has never certified, a serial without a current certificate: the CA index\n"
               "<CA dir>/index.sqlite, or [ca] index) and issues a certificate with the HSM-held\n"
               "intermediate, recorded in the index. Subject and subjectAltName come from the\n"
               "options and the profile, never from the CSR. FILE.pem receives the certificate\n"
               "followed by the CA chain (intermediate, root), ready for `provisioner install`.\n\n"
               "  --csr FILE         the CSR (PEM or DER, at most 64 KiB)\n"
               "  --out FILE         where to write the certificate bundle (PEM)\n"
               CLI_REQUEST_HELP
               "                     (--key restricts the accepted key type)\n"
               "  --reissue          certify a serial that already has a current certificate;\n"
               "                     the index records the earlier one as superseded\n"
               "  --json             print the result as JSON\n");
}

static const struct option sign_opts[] = {
    CLI_REQUEST_OPTIONS,
    {"csr", required_argument, NULL, 'c'},
    {"out", required_argument, NULL, 'o'},
    {"reissue", no_argument, NULL, 'r'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The --json result (provisioner(1) JSON OUTPUT); the caller adds error and exit. */
static json_object *result_json(const char *serial, const char *status,
                                const struct prov_cert_facts *facts, const char *out_path)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "serial", json_object_new_string(serial ? serial : ""));
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "cert_serial", json_object_new_string(facts->serial_hex));
    json_object_object_add(o, "sha256", json_object_new_string(facts->sha256_hex));
    json_object_object_add(o, "not_after", json_object_new_string(facts->not_after));
    json_object_object_add(o, "out", json_object_new_string(out_path));
    return o;
}

int cmd_sign(int argc, char **argv)
{
    struct cli_request in = {0};
    struct prov_request rq;
    struct prov_profile prof;
    struct prov_cert_facts facts;
    enum prov_key_type key_type = PROV_KEY_NONE;
    struct prov_config *cfg = NULL;
    struct prov_issuer_opts is_opts = {.is_deferred = true};
    struct prov_issuer *is = NULL;
    const char *csr_path = NULL;
    const char *out_path = NULL;
    STACK_OF(X509) *bundle = NULL;
    X509_REQ *req = NULL;
    X509 *cert = NULL;
    char *pem = NULL;
    size_t pem_len = 0;
    bool as_json = false;
    bool is_reissue = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", sign_opts, NULL)) != -1) {
        if (cli_request_opt(&in, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'c': csr_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'r': is_reissue = true; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc || csr_path == NULL || out_path == NULL) {
        fprintf(stderr, "provisioner: sign: --serial, --csr and --out are required\n");
        return PROV_EXIT_USAGE;
    }
    memset(&facts, 0, sizeof(facts));
    /* The certificate is recorded as issued before it is written: --out must work first. */
    prov_error_clear();
    if (prov_storage_check_output_file(out_path, "--out") < 0) {
        return cli_fail_json(PROV_ERR_STORAGE, out_path, as_json,
                             result_json(in.serial, "failed", &facts, out_path));
    }
    r = prov_issue_load_config(prov_cli.config_path, &cfg);
    if (r < 0) {
        return cli_fail_json(r, prov_cli.config_path, as_json,
                             result_json(in.serial, "failed", &facts, out_path));
    }
    r = prov_issuer_open(cfg, &is_opts, &is);
    if (r < 0) {
        rc = cli_fail_json(r, prov_cli.config_path, as_json,
                           result_json(in.serial, "failed", &facts, out_path));
        goto out;
    }
    rc = cli_request_build(cfg, &in, &rq, &key_type);
    if (rc != 0) {
        goto out;
    }
    if (key_type != PROV_KEY_NONE) {
        /* --key narrows what the profile accepts for this one CSR. */
        prof = *rq.profile;
        prof.allowed_keys &= PROV_KEY_BIT(key_type);
        rq.profile = &prof;
    }
    rq.record.issued_by = "sign";
    rq.record.lot = NULL; /* a lot's serials are its journal's; sign answers for itself */
    rq.record.is_reissue = is_reissue;
    prov_error_clear();
    r = prov_csr_read(csr_path, &req);
    if (r == 0) {
        /*
         * The issue step: CSR policy first (a bad CSR is refused before the CA token is even
         * opened), the CA index's rules, then the CA's token signs (issuer.h).
         */
        r = prov_step_issue(is, req, &rq, &cert);
    }
    if (r == 0) {
        r = prov_cert_facts(cert, &facts);
    }
    if (r == 0) {
        bundle = sk_X509_dup(is->ops->chain(is));
        r = bundle && sk_X509_unshift(bundle, cert) ? 0 : PROV_ERR_NOMEM;
    }
    if (r == 0) {
        r = prov_chain_to_pem(bundle, &pem, &pem_len);
    }
    if (r == 0) {
        r = prov_atomic_write_file(out_path, pem, pem_len, 0644);
    }
    if (r == 0) {
        r = is->ops->delivered(is, cert);
    }
    if (r < 0) {
        struct prov_cert_facts none = {0};

        rc = cli_fail_json(r, rq.serial, as_json,
                           result_json(rq.serial, "failed", &none, out_path));
        goto out;
    }
    if (as_json) {
        json_object *o = result_json(rq.serial, "issued", &facts, out_path);

        json_object_object_add(o, "error", NULL);
        json_object_object_add(o, "exit", json_object_new_int(PROV_EXIT_OK));
        cli_print_json(o);
    } else {
        printf("%s issued cert_serial=%s sha256=%s not_after=%s out=%s\n", rq.serial,
               facts.serial_hex, facts.sha256_hex, facts.not_after, out_path);
    }
    rc = PROV_EXIT_OK;
out:
    free(pem);
    sk_X509_free(bundle);
    X509_free(cert);
    X509_REQ_free(req);
    prov_issuer_close(is);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_sign_optsets[] = {
    {"sign", sign_opts},
    {NULL, NULL},
};
