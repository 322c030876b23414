/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "csr.h"
#include "enroll.h"
#include "error.h"
#include "storage.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner csr --serial SN --device URI --out FILE.csr [OPTIONS]\n\n"
               "Device side of the split flow: generates the key inside the device (labelled\n"
               "with the serial) and writes a CSR signed by it. Take the CSR to the station\n"
               "(`provisioner sign`), then bring the result back (`provisioner install`).\n\n"
               "  --device URI       the device: pkcs11:token=... or tpm2:TCTI (e.g. tpm2:device:/dev/tpmrm0)\n"
               "  --serial SN        device serial (required)\n"
               "  --profile P        profile whose subject the CSR carries (default: device)\n"
               "  --key TYPE         ec-p256 (default), ec-p384, rsa-2048, rsa-3072\n"
               "  --out FILE         where to write the CSR (PEM)\n"
               "  --pin SOURCE       device PIN source (default: [provisioner] device_pin)\n"
               "  --reissue          a TPM whose key handle or NV index is taken: replace them,\n"
               "                     unless the key there is another identity's (exit 5)\n");
}

static const struct option csr_opts[] = {
    {"serial", required_argument, NULL, OPT_SERIAL},
    {"profile", required_argument, NULL, OPT_PROFILE},
    {"key", required_argument, NULL, OPT_KEY},
    {"device", required_argument, NULL, 'd'},
    {"out", required_argument, NULL, 'o'},
    {"pin", required_argument, NULL, 'p'},
    {"reissue", no_argument, NULL, 'r'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_csr(int argc, char **argv)
{
    struct cli_request in = {0};
    struct prov_enroll_params p = {0};
    struct prov_config *cfg = NULL;
    struct prov_issuer_opts is_opts = {.is_deferred = true};
    struct prov_issuer *is = NULL;
    const char *out_path = NULL;
    X509_REQ *req = NULL;
    int c;
    int rc;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", csr_opts, NULL)) != -1) {
        if (cli_request_opt(&in, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'd': p.device_uri = optarg; break;
        case 'o': out_path = optarg; break;
        case 'p': p.pin_spec = optarg; break;
        case 'r': p.reissue = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (optind != argc || p.device_uri == NULL || out_path == NULL) {
        fprintf(stderr, "provisioner: csr: --serial, --device and --out are required\n");
        return PROV_EXIT_USAGE;
    }
    rc = cli_check_device(p.device_uri);
    if (rc != 0) {
        return rc;
    }
    /* The key is made on the device before the CSR is written: --out must work first. */
    prov_error_clear();
    if (prov_storage_check_output_file(out_path, "--out") < 0) {
        return cli_fail(PROV_ERR_STORAGE, out_path);
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    rc = cli_request_build(cfg, &in, &p.req, &p.key_type);
    if (rc != 0) {
        goto out;
    }
    prov_error_clear();
    /* nothing is issued here: the issuer only names the device that is not a device's */
    r = prov_issuer_open(cfg, &is_opts, &is);
    if (r == 0) {
        r = prov_enroll_csr(cfg, is, &p, &req);
    }
    if (r == 0) {
        r = prov_csr_write(out_path, req);
    }
    if (r < 0) {
        rc = cli_fail(r, p.req.serial);
        goto out;
    }
    printf("%s csr=%s\n", p.req.serial, out_path);
    rc = PROV_EXIT_OK;
out:
    X509_REQ_free(req);
    prov_issuer_close(is);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_csr_optsets[] = {
    {"csr", csr_opts},
    {NULL, NULL},
};
