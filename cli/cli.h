/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CLI_H
#define PROV_CLI_H

#include <getopt.h>
#include <stdio.h>
#include <stdbool.h>

#include "config.h"
#include "issue.h"

/* Global options, parsed by main before the command. */
struct prov_cli {
    const char *config_path; /* --config, $PROVISIONER_CONFIG, ./provisioner.cnf */
    bool config_path_is_explicit; /* named by --config or $PROVISIONER_CONFIG */
    int verbosity;
    bool quiet;
};

extern struct prov_cli prov_cli;

/* Loads the config named by the global options; prints the error and returns an exit code
 * (>0) on failure, 0 on success. */
int cli_load_config(struct prov_config **out);

/* Prints the recorded error (or a fallback naming what failed) as one line on stderr and
 * returns the exit code for err (doc/exit-codes.md). */
int cli_fail(int err, const char *what);

/* The line cli_fail prints, without "provisioner: " (the error field of --json output). */
void cli_error_text(int err, const char *what, char *buf, size_t len);

/*
 * cli_fail for a --json command: with as_json, o (the command's documented object, filled
 * as far as known; owned and released here) gets "error" (that line) and "exit", and is
 * printed on stdout before the line goes to stderr. Returns the exit code.
 */
struct json_object;
int cli_fail_json(int err, const char *what, bool as_json, struct json_object *o);

/*
 * Checks a --device string with its backend before anything is opened (syntax, refused
 * attributes, a known TCTI). Prints the error and returns an exit code (2), or 0.
 */
int cli_check_device(const char *uri);

/*
 * An input file (or, with is_dir, a directory) named on the command line must be readable
 * before anything else happens: missing, unreadable or of the wrong kind is a usage error.
 * Prints one line naming it and returns 2, or returns 0.
 */
int cli_check_input(const char *path, bool is_dir);

/* Options every issuing command shares (enroll, sign): what to put in the certificate. */
struct cli_request {
    const char *serial;
    const char *profile;
    const char *key;
    const char *cn;
    const char *san_dns;
    const char *san_uri;
    const char *san_email;
    const char *san_ip;
};

enum cli_request_opt {
    OPT_SERIAL = 0x100,
    OPT_PROFILE,
    OPT_KEY,
    OPT_CN,
    OPT_SAN_DNS,
    OPT_SAN_URI,
    OPT_SAN_EMAIL,
    OPT_SAN_IP,
};

/* getopt_long entries for the request options, to splice into a command's table. */
#define CLI_REQUEST_OPTIONS                                                                     \
    {"serial", required_argument, NULL, OPT_SERIAL},                                            \
    {"profile", required_argument, NULL, OPT_PROFILE},                                          \
    {"key", required_argument, NULL, OPT_KEY},                                                  \
    {"cn", required_argument, NULL, OPT_CN},                                                    \
    {"san-dns", required_argument, NULL, OPT_SAN_DNS},                                          \
    {"san-uri", required_argument, NULL, OPT_SAN_URI},                                          \
    {"san-email", required_argument, NULL, OPT_SAN_EMAIL},                                      \
    {"san-ip", required_argument, NULL, OPT_SAN_IP}

#define CLI_REQUEST_HELP                                                                        \
    "  --serial SN        device serial, [A-Za-z0-9._-]{1,64}, not . or .. (required)\n"      \
    "  --profile P        issuance profile from the config (default: device)\n"                 \
    "  --key TYPE         ec-p256 (default), ec-p384, rsa-2048, rsa-3072\n"                     \
    "  --cn CN            subject common name (default: the serial)\n"                          \
    "  --san-dns LIST     subjectAltName DNS names, ';'-separated\n"                            \
    "  --san-uri LIST     subjectAltName URIs, ';'-separated\n"                                 \
    "  --san-email LIST   subjectAltName e-mail addresses, ';'-separated\n"                     \
    "  --san-ip LIST      subjectAltName IP addresses, ';'-separated\n"

/* Stores a request option; returns false when c is not one. */
bool cli_request_opt(struct cli_request *rq, int c, const char *arg);

/*
 * Turns the request options into a prov_request (profile looked up, serial checked) and the
 * key type (PROV_KEY_NONE when --key was not given). Prints the error; returns an exit code.
 */
int cli_request_build(const struct prov_config *cfg, const struct cli_request *in,
                      struct prov_request *out, enum prov_key_type *key_type);

/* Prints a JSON object on stdout (pretty) and releases it. */
struct json_object;
void cli_print_json(struct json_object *o);

/* The mTLS proof as a JSON object: url, ok, outcome, tls_version, status, detail. */
struct prov_connect_result;
struct json_object *cli_connect_json(const struct prov_connect_result *c);

/*
 * Prints what enroll and install report with --json (schema: provisioner(1) JSON OUTPUT);
 * with_proof adds enroll's "proof" (the --prove outcome, null without it). On failure status
 * is "failed", the fields not known are empty, error says why (NULL: null) and exit_code is
 * the exit status.
 */
struct prov_enroll_result;
void cli_print_identity_json(const char *serial, const char *status,
                             const struct prov_enroll_result *res, bool with_proof,
                             const char *error, int exit_code);

/* A failed enroll or install: with as_json the object (status failed), then the error line. */
int cli_identity_failed(const char *serial, const struct prov_enroll_result *res, int err,
                        const char *what, bool with_proof, bool as_json);

/*
 * The getopt_long table of one command or subcommand, named as typed ("enroll", "ca init").
 * Each cmd_<verb>.c exports cmd_<verb>_optsets[] (ended by {NULL, NULL}) and main.c's command
 * table points at it: `provisioner --list-options` prints them, the bash completion reads
 * that, and tests/install compares them with --help and the man page, so the parser is the
 * single source of truth for which options exist.
 */
struct cli_optset {
    const char *name;
    const struct option *opts;
};

int cmd_ca(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_csr(int argc, char **argv);
int cmd_sign(int argc, char **argv);
int cmd_install(int argc, char **argv);
int cmd_chain(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_station(int argc, char **argv);
int cmd_revoke(int argc, char **argv);

/* `ca crl` (cmd_ca_crl.c): the command, its options, and the CRL files for `ca show`. */
int cmd_ca_crl(int argc, char **argv);
extern const struct option cmd_ca_crl_opts[];

/* `ca serve` (cmd_ca_serve.c): the CA service over CMP, and its options. */
int cmd_ca_serve(int argc, char **argv);
extern const struct option cmd_ca_serve_opts[];

/* `ca station add`, `ca lot add` (cmd_ca_registry.c): who may ask the CA service. */
int cmd_ca_station(int argc, char **argv);
int cmd_ca_lot(int argc, char **argv);
extern const struct option cmd_ca_station_opts[];
extern const struct option cmd_ca_lot_opts[];
void cmd_ca_usage(FILE *f);
struct json_object *cli_crls_json(const struct prov_config *cfg);
void cli_print_crls(struct json_object *crls);
int cmd_lot(int argc, char **argv);
int cmd_ledger(int argc, char **argv);

extern const struct cli_optset cmd_ca_optsets[];
extern const struct cli_optset cmd_enroll_optsets[];
extern const struct cli_optset cmd_csr_optsets[];
extern const struct cli_optset cmd_sign_optsets[];
extern const struct cli_optset cmd_install_optsets[];
extern const struct cli_optset cmd_chain_optsets[];
extern const struct cli_optset cmd_check_optsets[];
extern const struct cli_optset cmd_batch_optsets[];
extern const struct cli_optset cmd_station_optsets[];
extern const struct cli_optset cmd_revoke_optsets[];
extern const struct cli_optset cmd_lot_optsets[];
extern const struct cli_optset cmd_ledger_optsets[];

#endif
