/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The command table and the global options; every command lives in cmd_<verb>.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "cli.h"
#include "error.h"
#include "log.h"
#include "pkcs11.h"
#include "prov_build_config.h"
#include "tpm.h"

struct prov_cli prov_cli;

static const struct {
    const char *name;
    int (*handler)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"ca", cmd_ca, "ca init | ca show: create the root and the HSM-held intermediate; show them"},
    {"enroll", cmd_enroll, "one device end to end: key on the device, CSR, issue, storage, proof"},
    {"csr", cmd_csr, "device side of the split flow: generate the key on the device, write a CSR"},
    {"sign", cmd_sign, "station side of the split flow: issue a certificate from a CSR under policy"},
    {"install", cmd_install, "device side of the split flow: store the certificate, write storage"},
    {"chain", cmd_chain, "chain verify FILE... | chain export: check PEM chains; write the CA set"},
    {"check", cmd_check, "re-prove a written identity: device-key challenge, chain; --connect URL"},
    {"batch", cmd_batch, "batch MANIFEST.csv | status | report: enroll a lot, resumably"},
    {"station", cmd_station, "fixture mode, started by udev/systemd: enroll the device that appeared"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner [--config FILE] [-v] [-q] COMMAND [ARGS]\n"
               "       provisioner COMMAND --help | --help | --version\n\n"
               "Gives devices a hardware-backed identity for mutual TLS: the key is generated\n"
               "inside the device's PKCS#11 token, the certificate is issued by an intermediate\n"
               "CA whose key is held in an HSM, and the identity is written to device storage.\n\n"
               "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    }
    fprintf(f, "\nGlobal options:\n"
               "  --config FILE  config file (default: $PROVISIONER_CONFIG, then ./provisioner.cnf)\n"
               "  -v, --verbose  more output on stderr (twice: debug; or PROVISIONER_DEBUG=pkcs11,ca)\n"
               "  -q, --quiet    only errors on stderr\n"
               "  -h, --help     this text\n"
               "  --version      the version\n\n"
               "Exit codes:\n"
               "  0 ok\n"
               "  1 operation failed (a device, a check, a chain or an mTLS proof failed)\n"
               "  2 usage or config error\n"
               "  3 authentication error (PIN incorrect or locked, PIN source unreadable)\n"
               "  4 device or token not found, or removed\n"
               "  5 refused by policy (bad CSR, weak key, already issued, lifetime, CA key)\n"
               "  6 journal or storage error\n");
}

int main(int argc, char **argv)
{
    int i;

    /*
     * Nothing this process creates is readable by others unless it says so: public files
     * (certificates, storage, results) get explicit modes, anything else (journal, temp
     * files, a file root key) stays 0600/0700 (STYLE.md "Secrets").
     */
    umask(077);
    prov_cli.config_path = getenv("PROVISIONER_CONFIG");
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "provisioner: %s: missing FILE\n", a);
                return PROV_EXIT_USAGE;
            }
            prov_cli.config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            prov_cli.config_path = a + 9;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            prov_cli.verbosity++;
        } else if (strcmp(a, "-vv") == 0) {
            prov_cli.verbosity += 2;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            prov_cli.quiet = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return PROV_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("provisioner %s\n", PROV_VERSION);
            return PROV_EXIT_OK;
        } else {
            fprintf(stderr, "provisioner: option \"%s\": unknown (see provisioner --help)\n", a);
            return PROV_EXIT_USAGE;
        }
    }
    if (prov_cli.config_path == NULL) {
        prov_cli.config_path = "provisioner.cnf";
    } else {
        prov_cli.config_path_is_explicit = true;
    }
    if (i >= argc) {
        usage(stderr);
        return PROV_EXIT_USAGE;
    }
    prov_log_init(prov_cli.verbosity, prov_cli.quiet);
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);

    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        if (strcmp(argv[i], commands[c].name) == 0) {
            int rc = commands[c].handler(argc - i, argv + i);

            prov_pkcs11_unload_all();
            return rc;
        }
    }
    fprintf(stderr, "provisioner: command \"%s\": unknown (see provisioner --help)\n", argv[i]);
    return PROV_EXIT_USAGE;
}
