/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>

#include "chain.h"
#include "cli.h"
#include "enroll.h"
#include "error.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner install --serial SN --device URI --cert FILE.pem [OPTIONS]\n\n"
               "Device side of the split flow, last step: finds the device key whose public key\n"
               "the certificate carries, checks the bundle by the chain rules, proves the key\n"
               "against the certificate, stores the certificate on the token and writes the\n"
               "device storage.\n\n"
               "  --serial SN        device serial (required)\n"
               "  --device URI       the device: pkcs11:token=... or tpm2:TCTI\n"
               "  --cert FILE        the bundle written by `provisioner sign`\n"
               "  --storage DIR      storage directory (default: <output_dir>/<serial>)\n"
               "  --server-ca FILE   server CA bundle to install (default: [provisioner] server_ca)\n"
               "  --profile P        profile name recorded in identity.json (default: device)\n"
               "  --pin SOURCE       device PIN source (default: [provisioner] device_pin)\n"
               "  --reissue          replace an identity already in the storage directory\n"
               "  --json             print the result as JSON\n");
}

static const struct option install_opts[] = {
    {"serial", required_argument, NULL, OPT_SERIAL},
    {"profile", required_argument, NULL, OPT_PROFILE},
    {"device", required_argument, NULL, 'd'},
    {"cert", required_argument, NULL, 'c'},
    {"storage", required_argument, NULL, 's'},
    {"server-ca", required_argument, NULL, 'S'},
    {"pin", required_argument, NULL, 'p'},
    {"reissue", no_argument, NULL, 'r'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_install(int argc, char **argv)
{
    struct prov_install_params p = {0};
    struct prov_enroll_result res = {0};
    struct prov_config *cfg = NULL;
    struct prov_issuer_opts is_opts = {.is_deferred = true};
    struct prov_issuer *is = NULL;
    const char *cert_path = NULL;
    bool as_json = false;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", install_opts, NULL)) != -1) {
        switch (c) {
        case OPT_SERIAL: p.serial = optarg; break;
        case OPT_PROFILE: p.profile = optarg; break;
        case 'd': p.device_uri = optarg; break;
        case 'c': cert_path = optarg; break;
        case 's': p.storage_dir = optarg; break;
        case 'S': p.server_ca_path = optarg; break;
        case 'p': p.pin_spec = optarg; break;
        case 'r': p.reissue = true; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc || p.serial == NULL || p.device_uri == NULL || cert_path == NULL) {
        fprintf(stderr, "provisioner: install: --serial, --device and --cert are required\n");
        return PROV_EXIT_USAGE;
    }
    rc = cli_check_device(p.device_uri);
    if (rc == 0) {
        rc = cli_check_input(cert_path, false);
    }
    if (rc != 0) {
        return rc;
    }
    prov_error_clear();
    r = prov_issue_load_config(prov_cli.config_path, &cfg);
    if (r < 0) {
        rc = cli_identity_failed(p.serial, &res, r, prov_cli.config_path, false, as_json);
        goto out;
    }
    prov_error_clear();
    r = prov_chain_load_pem(cert_path, &p.bundle);
    if (r == 0 && sk_X509_num(p.bundle) < 2) {
        r = prov_fail(PROV_ERR_INPUT,
                      "%s: %d certificate(s); expected the certificate followed by its CA "
                      "chain (as written by `provisioner sign`)",
                      cert_path, sk_X509_num(p.bundle));
    }
    /* nothing is issued here: the issuer only names the device that is not a device's */
    if (r == 0) {
        r = prov_issuer_open(cfg, &is_opts, &is);
    }
    if (r == 0) {
        r = prov_install(cfg, is, &p, &res);
    }
    if (r < 0) {
        rc = cli_identity_failed(p.serial, &res, r, p.serial, false, as_json);
        goto out;
    }
    if (as_json) {
        cli_print_identity_json(p.serial, "installed", &res, false, NULL, PROV_EXIT_OK);
    } else {
        printf("%s installed cert_serial=%s sha256=%s not_after=%s storage=%s\n", p.serial,
               res.facts.serial_hex, res.facts.sha256_hex, res.facts.not_after, res.storage_dir);
    }
    rc = PROV_EXIT_OK;
out:
    sk_X509_pop_free(p.bundle, X509_free);
    prov_issuer_close(is);
    prov_enroll_result_clear(&res);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_install_optsets[] = {
    {"install", install_opts},
    {NULL, NULL},
};
