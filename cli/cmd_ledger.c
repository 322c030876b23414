/* SPDX-License-Identifier: Apache-2.0 */
/* provisioner ledger: the shared ledger's schema, imports, audit and leases (doc/ledger.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "cli.h"
#include "config.h"
#include "error.h"
#include "journal.h"
#include "ledger.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: provisioner ledger init | migrate | verify [--journal URI]\n"
               "       provisioner ledger import JOURNAL.sqlite [--journal URI]\n"
               "       provisioner ledger release --station NAME [--journal URI]\n\n"
               "The shared ledger of a line of stations, a PostgreSQL database (doc/ledger.md):\n"
               "[provisioner] journal = postgresql://..., its password from journal_password\n"
               "(file: or env:) or PGPASSFILE.\n"
               "  init        create the schema in an empty database (a current one: nothing)\n"
               "  migrate     bring an older schema up to date, in one transaction, holding the\n"
               "              ledger's writer lock exclusively: stop the stations first\n"
               "  import      move a station's SQLite journal into the ledger, its audit records\n"
               "              as a chain of their own (\"import:\" and the file name)\n"
               "  verify      check every station's audit chain and every row against it; name\n"
               "              the first broken record\n"
               "  release     end the leases of a station that will not come back, so that the\n"
               "              others take its rows at once\n"
               "  --journal URI   the ledger (default: [provisioner] journal)\n"
               "  --station NAME  the station whose leases release ends\n\n"
               "Exit: 0 ok, 2 usage or config, 6 ledger error (unreachable, schema newer than\n"
               "this provisioner's, refused import), 1 audit verification failed.\n");
}

enum { OPT_JOURNAL = 0x100, OPT_STATION };

static const struct option ledger_opts[] = {
    {"journal", required_argument, NULL, OPT_JOURNAL},
    {"station", required_argument, NULL, OPT_STATION},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct ledger_args {
    const char *verb;
    const char *file; /* import's journal */
    const char *journal;
    const char *station;
    struct prov_config *cfg;
};

static int parse(int argc, char **argv, struct ledger_args *a)
{
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", ledger_opts, NULL)) != -1) {
        switch (c) {
        case OPT_JOURNAL: a->journal = optarg; break;
        case OPT_STATION: a->station = optarg; break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    a->verb = optind < argc ? argv[optind++] : NULL;
    if (a->verb != NULL && strcmp(a->verb, "import") == 0 && optind < argc) {
        a->file = argv[optind++];
    }
    if (a->verb == NULL || optind != argc ||
        (strcmp(a->verb, "import") == 0 && a->file == NULL) ||
        (strcmp(a->verb, "release") == 0) != (a->station != NULL)) {
        fprintf(stderr, "provisioner: ledger: init, migrate, verify, import JOURNAL.sqlite or "
                        "release --station NAME expected (see --help)\n");
        return PROV_EXIT_USAGE;
    }
    return 0;
}

static int verify(const char *uri, const char *password)
{
    struct prov_journal_audit audit;
    struct prov_journal *j = NULL;
    int r;

    r = prov_journal_open_with(uri, password, NULL, false, &j);
    r = r ? r : prov_journal_verify_audit(j, &audit);
    if (r == 0) {
        printf("ledger %s: every audit chain verifies: %lld records\n", prov_journal_path(j),
               audit.n_records);
    }
    prov_journal_close(j);
    return r;
}

static int run_verb(const struct ledger_args *a, const char *uri)
{
    const char *password = a->cfg ? a->cfg->journal_password : NULL;
    struct prov_ledger_schema schema;
    struct prov_ledger_import im;
    long long n = 0;
    char *shown = prov_journal_name(uri);
    int r;

    if (strcmp(a->verb, "init") == 0 || strcmp(a->verb, "migrate") == 0) {
        r = prov_ledger_schema(uri, password, a->verb[0] == 'i', &schema);
        if (r == 0) {
            printf(schema.from == schema.to ? "ledger %s: schema version %d, nothing to do\n"
                                            : "ledger %s: schema version %d -> %d\n",
                   shown, schema.from, schema.to);
        }
    } else if (strcmp(a->verb, "import") == 0) {
        r = prov_ledger_import(uri, password, a->file, &im);
        if (r == 0) {
            printf("ledger %s: imported %s: %lld lots, %lld devices, %lld certificates, %lld "
                   "audit records (chain %s)\n",
                   shown, a->file, im.lots, im.devices, im.certificates, im.audit_records,
                   im.chain);
        }
    } else if (strcmp(a->verb, "verify") == 0) {
        r = verify(uri, password);
    } else if (strcmp(a->verb, "release") == 0) {
        r = prov_ledger_release(uri, password, a->station, &n);
        if (r == 0) {
            printf("ledger %s: released %lld leases of station %s\n", shown, n, a->station);
        }
    } else {
        r = prov_fail(PROV_ERR_USAGE, "ledger: unknown command %s", a->verb);
    }
    free(shown);
    return r;
}

int cmd_ledger(int argc, char **argv)
{
    struct ledger_args a = {0};
    const char *uri;
    int r;

    r = parse(argc, argv, &a);
    if (r != 0) {
        return r < 0 ? PROV_EXIT_OK : r;
    }
    r = cli_load_config(&a.cfg);
    if (r != 0) {
        return r;
    }
    uri = a.journal ? a.journal : a.cfg->journal;
    prov_error_clear();
    if (uri == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "ledger: no ledger named ([provisioner] journal or "
                                       "--journal)");
    } else {
        r = run_verb(&a, uri);
    }
    prov_config_free(a.cfg);
    return r < 0 ? cli_fail(r, "ledger") : PROV_EXIT_OK;
}

const struct cli_optset cmd_ledger_optsets[] = {
    {"ledger", ledger_opts},
    {NULL, NULL},
};
