/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "cli.h"
#include "connect.h"
#include "enroll.h"
#include "enroll_attempt.h"
#include "error.h"
#include "ledger.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner enroll --serial SN --device URI [OPTIONS]\n\n"
               "Enrolls one device end to end: generates the key inside the device's token,\n"
               "makes a CSR signed by it, issues the certificate with the HSM-held intermediate,\n"
               "stores the certificate on the token, writes the device storage (client.crt,\n"
               "client.der, fullchain.pem, chain.pem, server-ca.pem, key.uri, identity.json)\n"
               "and proves that the device key signs a challenge the certificate verifies.\n\n"
               "  --device URI       the device: pkcs11:token=...;serial=... (RFC 7512) or a TPM,\n"
               "                     tpm2:device:/dev/tpmrm0, tpm2:swtpm:host=H,port=P, ...\n"
               CLI_REQUEST_HELP
               "  --storage DIR      storage directory (default: <output_dir>/<serial>)\n"
               "  --pin SOURCE       device PIN source: file:PATH, env:VAR, fd:N or prompt\n"
               "                     (default: [provisioner] device_pin)\n"
               "  --reissue          certify a device whose storage already holds an identity;\n"
               "                     the superseded key is deleted from the token afterwards (a\n"
               "                     TPM key handle and NV index are replaced, unless the key\n"
               "                     there is another identity's: exit 5)\n"
               "  --prove URL        the last step: a real mutual-TLS proof with the new identity\n"
               "                     (mqtts://, https:// or wss://, as `check` does); when it\n"
               "                     is refused the identity stays issued and stored, the result\n"
               "                     says proof-failed and the exit code is 1\n"
               "  --json             print the result as JSON\n\n"
               "SIGINT/SIGTERM before the key is made or the CA signs: rolled back (the new\n"
               "key deleted), exit 1, run the same command again; later, the enrollment\n"
               "finishes.\n");
}

static const struct option enroll_opts[] = {
    CLI_REQUEST_OPTIONS,
    {"device", required_argument, NULL, 'd'},
    {"storage", required_argument, NULL, 's'},
    {"pin", required_argument, NULL, 'p'},
    {"reissue", no_argument, NULL, 'r'},
    {"prove", required_argument, NULL, 'P'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_enroll(int argc, char **argv)
{
    struct cli_request in = {0};
    struct prov_enroll_params p = {0};
    struct prov_enroll_result res = {0};
    struct prov_config *cfg = NULL;
    struct prov_issuer *is = NULL;
    const char *status;
    struct prov_ledger_hold *hold = NULL;
    bool as_json = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", enroll_opts, NULL)) != -1) {
        if (cli_request_opt(&in, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'd': p.device_uri = optarg; break;
        case 's': p.storage_dir = optarg; break;
        case 'p': p.pin_spec = optarg; break;
        case 'r': p.reissue = true; break;
        case 'P': p.prove_url = optarg; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "provisioner: enroll: unexpected argument \"%s\"\n", argv[optind]);
        return PROV_EXIT_USAGE;
    }
    if (p.device_uri == NULL) {
        fprintf(stderr, "provisioner: enroll: --device is required\n");
        return PROV_EXIT_USAGE;
    }
    if (p.prove_url != NULL && prov_connect_url_check(p.prove_url) < 0) {
        return cli_fail(PROV_ERR_USAGE, "--prove");
    }
    rc = cli_check_device(p.device_uri);
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_issue_load_config(prov_cli.config_path, &cfg);
    if (r < 0) {
        rc = cli_identity_failed(in.serial, &res, r, prov_cli.config_path, true, as_json);
        goto out;
    }
    rc = cli_request_build(cfg, &in, &p.req, &p.key_type);
    if (rc != 0) {
        goto out;
    }
    prov_error_clear();
    if (p.reissue) {
        char station[256];

        /* on the ledger, the serial's rows are this process's while it reissues */
        prov_batch_station_name(cfg, NULL, NULL, station, sizeof(station));
        r = prov_ledger_hold_serial(cfg, station, p.req.serial, &hold);
        if (r < 0) {
            rc = cli_identity_failed(p.req.serial, &res, r, p.req.serial, true, as_json);
            goto out;
        }
    }
    r = prov_issuer_open(cfg, NULL, &is);
    if (r == 0) {
        /* Recorded in the CA index: an interrupted enroll is settled by the next one. */
        r = prov_enroll_attempt(cfg, is, &p, &res);
    }
    if (r < 0 && !(res.is_proof_run && res.storage_dir != NULL)) {
        rc = cli_identity_failed(p.req.serial, &res, r, p.req.serial, true, as_json);
        goto out;
    }
    /* A refused proof still prints the result: the certificate exists and is stored. */
    status = r == 0 ? "issued" : "proof-failed";
    if (as_json) {
        char line[1536];

        if (r < 0) {
            cli_error_text(r, p.req.serial, line, sizeof(line));
        }
        cli_print_identity_json(p.req.serial, status, &res, true, r < 0 ? line : NULL,
                                prov_exit_code(r));
    } else {
        printf("%s %s cert_serial=%s sha256=%s not_after=%s storage=%s", p.req.serial, status,
               res.facts.serial_hex, res.facts.sha256_hex, res.facts.not_after, res.storage_dir);
        if (res.is_proof_run) {
            printf(" proof=%s", prov_connect_outcome_name(res.proof.outcome));
        }
        printf("\n");
    }
    if (r < 0) {
        rc = cli_fail(r, p.req.serial);
        goto out;
    }
    rc = PROV_EXIT_OK;
out:
    prov_ledger_hold_release(hold);
    prov_enroll_result_clear(&res);
    prov_issuer_close(is);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_enroll_optsets[] = {
    {"enroll", enroll_opts},
    {NULL, NULL},
};
