/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The command table and the global options; every command lives in cmd_<verb>.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "error.h"
#include "interrupt.h"
#include "log.h"
#include "pkcs11.h"
#include "prov_build_config.h"
#include "remote.h"
#include "tpm.h"

struct prov_cli prov_cli;

/* One line per command: name, handler, its option tables (cli.h), one-line help. */
static const struct {
    const char *name;
    int (*handler)(int argc, char **argv);
    const struct cli_optset *optsets;
    const char *help;
} commands[] = {
    {"ca", cmd_ca, cmd_ca_optsets,
     "ca init|show|crl|serve|station|lot: the root and HSM-held intermediate; CRLs; CMP service"},
    {"enroll", cmd_enroll, cmd_enroll_optsets,
     "one device end to end: key on the device, CSR, issue, storage, proof"},
    {"csr", cmd_csr, cmd_csr_optsets,
     "device side of the split flow: generate the key on the device, write a CSR"},
    {"sign", cmd_sign, cmd_sign_optsets,
     "station side of the split flow: issue a certificate from a CSR under policy"},
    {"install", cmd_install, cmd_install_optsets,
     "device side of the split flow: store the certificate, write storage"},
    {"chain", cmd_chain, cmd_chain_optsets,
     "chain verify FILE... | chain export: check PEM chains; write the CA set"},
    {"check", cmd_check, cmd_check_optsets,
     "re-prove a written identity: device-key challenge, chain, optional mTLS proof"},
    {"batch", cmd_batch, cmd_batch_optsets,
     "batch MANIFEST.csv | status | report: enroll a lot, resumably"},
    {"station", cmd_station, cmd_station_optsets,
     "fixture mode, started by udev/systemd: enroll the device that appeared"},
    {"revoke", cmd_revoke, cmd_revoke_optsets,
     "revoke SERIAL: record a device certificate's revocation (reason, date) for the CRL"},
    {"lot", cmd_lot, cmd_lot_optsets,
     "lot export LOT | lot signer: hand a lot to the customer; a signed lot record"},
    {"ledger", cmd_ledger, cmd_ledger_optsets,
     "ledger init | migrate | import | verify | release: the shared ledger on PostgreSQL"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

enum { OPT_VERSION = 0x100, OPT_LIST_OPTIONS };

static const struct option global_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"list-options", no_argument, NULL, OPT_LIST_OPTIONS},
    {NULL, 0, NULL, 0},
};

/* One line per option table: NAME<TAB>--opt --opt= ... ("=" when it takes a value). */
static void print_optset(const char *name, const struct option *opts)
{
    printf("%s\t", name);
    for (size_t k = 0; opts[k].name != NULL; k++) {
        printf("%s--%s%s", k ? " " : "", opts[k].name,
               opts[k].has_arg == required_argument ? "=" : "");
    }
    printf("\n");
}

/* For the bash completion and the tests that hold --help and the man page to the parsers. */
static void list_options(void)
{
    print_optset("global", global_opts);
    for (size_t c = 0; c < N_COMMANDS; c++) {
        if (commands[c].optsets == NULL) {
            printf("%s\t(no option table)\n", commands[c].name);
            continue;
        }
        for (size_t k = 0; commands[c].optsets[k].name != NULL; k++) {
            print_optset(commands[c].optsets[k].name, commands[c].optsets[k].opts);
        }
    }
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner [--config FILE] [-v] [-q] COMMAND [ARGS]\n"
               "       provisioner COMMAND --help | --help | --version\n\n"
               "Gives devices a hardware-backed identity for mutual TLS: the key is generated\n"
               "inside the device's PKCS#11 token, the certificate is issued by an intermediate\n"
               "CA whose key is held in an HSM, and the identity is written to device storage.\n\n"
               "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    }
    fprintf(f, "\nGlobal options:\n"
               "  --config FILE  config file (default: $PROVISIONER_CONFIG, then ./provisioner.cnf)\n"
               "  -v, --verbose  more output on stderr (twice: debug; or PROVISIONER_DEBUG=pkcs11,ca)\n"
               "  -q, --quiet    only errors on stderr\n"
               "  -h, --help     this text\n"
               "  --version      the version\n"
               "  --list-options every command's options, one table per line (for completion)\n\n"
               "Exit codes:\n"
               "  0 ok\n"
               "  1 operation failed (a device, a check, a chain or an mTLS proof failed), or\n"
               "    interrupted by SIGINT/SIGTERM/SIGHUP: the tool stops between token operations,\n"
               "    never inside one; run the same command again to resume\n"
               "  2 usage, config or input error (an input file missing, unreadable or\n"
               "    malformed: manifest, CSR, certificate bundle, chain, storage directory)\n"
               "  3 authentication error (PIN incorrect or locked, PIN source unreadable)\n"
               "  4 device or token not found, or removed\n"
               "  5 refused by policy (bad CSR, weak key, already issued, lifetime, CA key)\n"
               "  6 journal or storage error\n");
}

/*
 * Finds argument a ("--name", "--name=VALUE", "-x", "-vv") in global_opts; returns its val,
 * '?' when unknown. Not getopt: glibc keeps getopt's ordering mode ("+") across calls, which
 * would change how every command then parses its own options.
 */
static int global_option(const char *a, const char **value)
{
    *value = NULL;
    if (strncmp(a, "--", 2) == 0) {
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);

        for (size_t k = 0; global_opts[k].name != NULL; k++) {
            if (strlen(global_opts[k].name) == len && strncmp(a + 2, global_opts[k].name, len) == 0 &&
                (eq == NULL || global_opts[k].has_arg == required_argument)) {
                *value = eq ? eq + 1 : NULL;
                return global_opts[k].val;
            }
        }
        return '?';
    }
    if (strcmp(a, "-vv") == 0) {
        return 'V';
    }
    if (a[1] != '\0' && a[2] == '\0' && strchr("cvqh", a[1]) != NULL) {
        return a[1];
    }
    return '?';
}

int main(int argc, char **argv)
{
    int i;

    /* first: from here on SIGINT/SIGTERM/SIGHUP never land inside a token call (interrupt.h) */
    prov_interrupt_install(false);
    /*
     * Nothing this process creates is readable by others unless it says so: public files
     * (certificates, storage, results) get explicit modes, anything else (journal, temp
     * files, a file root key) stays 0600/0700 (doc/style.md, "Secrets").
     */
    umask(077);
    prov_cli.config_path = getenv("PROVISIONER_CONFIG");
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *value;

        switch (global_option(argv[i], &value)) {
        case 'c':
            if (value == NULL && i + 1 >= argc) {
                fprintf(stderr, "provisioner: %s: missing FILE\n", argv[i]);
                return PROV_EXIT_USAGE;
            }
            prov_cli.config_path = value ? value : argv[++i];
            break;
        case 'v': prov_cli.verbosity++; break;
        case 'V': prov_cli.verbosity += 2; break;
        case 'q': prov_cli.quiet = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        case OPT_VERSION: printf("provisioner %s\n", PROV_VERSION); return PROV_EXIT_OK;
        case OPT_LIST_OPTIONS: list_options(); return PROV_EXIT_OK;
        default:
            fprintf(stderr, "provisioner: option \"%s\": unknown (see provisioner --help)\n",
                    argv[i]);
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
    prov_interrupt_install(!prov_cli.quiet && isatty(STDERR_FILENO) == 1);
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    prov_remote_register();

    for (size_t k = 0; k < N_COMMANDS; k++) {
        if (strcmp(argv[i], commands[k].name) == 0) {
            int rc = commands[k].handler(argc - i, argv + i);

            prov_pkcs11_unload_all();
            return rc;
        }
    }
    fprintf(stderr, "provisioner: command \"%s\": unknown (see provisioner --help)\n", argv[i]);
    return PROV_EXIT_USAGE;
}
