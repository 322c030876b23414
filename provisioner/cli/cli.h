/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_CLI_H
#define PROV_CLI_H

#include <stdbool.h>

#include "config.h"

/* Global options, parsed by main before the command. */
struct prov_cli {
    const char *config_path; /* --config, $PROVISIONER_CONFIG, ./provisioner.cnf */
    int verbosity;
    bool quiet;
};

extern struct prov_cli prov_cli;

/* Loads the config named by the global options; prints the error and returns an exit code
 * (>0) on failure, 0 on success. */
int cli_load_config(struct prov_config **out);

/* Prints the recorded error (or a fallback naming what failed) as one line on stderr and
 * returns the SPEC exit code for err. */
int cli_fail(int err, const char *what);

int cmd_ca(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_csr(int argc, char **argv);
int cmd_sign(int argc, char **argv);
int cmd_install(int argc, char **argv);
int cmd_chain(int argc, char **argv);
int cmd_check(int argc, char **argv);

#endif
