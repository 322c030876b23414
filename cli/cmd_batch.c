/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "batch.h"
#include "cli.h"
#include "connect.h"
#include "error.h"
#include "journal.h"

/* Findings printed before the rest are only counted (a broken export can have thousands). */
#define MAX_FINDINGS_SHOWN 100

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: provisioner batch MANIFEST.csv [OPTIONS]\n"
            "       provisioner batch status [MANIFEST.csv | --journal FILE] [--json]\n"
            "                                [--tokens [--pin SOURCE]]\n"
            "       provisioner batch report [MANIFEST.csv | --journal FILE] [--csv | --json]\n"
            "                                [--verify-audit]\n\n"
            "Enrolls every row of a manifest (columns: serial, device, key, profile, cn,\n"
            "san_dns, san_uri, san_email, san_ip, storage, pin, x_NAME). The whole manifest is\n"
            "validated first; every problem is printed as FILE:LINE:COLUMN: reason and nothing\n"
            "is issued when there is any. Progress is journaled: after a crash or kill, run the\n"
            "same command again and it resumes; every row is issued exactly once.\n\n"
            "  --jobs N           rows worked on in parallel (default: CPUs): a worker per\n"
            "                     token, then a second one on a PKCS#11 token (not on the\n"
            "                     ledger); a token does one row's work at a time, the CA's\n"
            "                     part overlaps it\n"
            "  --journal FILE     the journal (default: [provisioner] journal, else\n"
            "                     MANIFEST.journal.sqlite, .csv dropped); a postgresql:// URI\n"
            "                     is the shared ledger (doc/ledger.md)\n"
            "  --station NAME     this station in the ledger (default: [station] name, else\n"
            "                     the host name)\n"
            "  --results FILE     the results CSV (default: MANIFEST.results.csv):\n"
            "                     serial,status,cert_serial,sha256,not_after,storage,error,x_...\n"
            "  --reissue SERIAL   certify SERIAL again; its certificate is recorded as\n"
            "                     superseded and its old key deleted from the device it was\n"
            "                     made on, even when the manifest now names another (repeatable).\n"
            "                     The list is one request: the same command again (in any\n"
            "                     order) resumes it and never reissues a serial it has reissued\n"
            "  --again            with --reissue: a new request, so that serials an earlier\n"
            "                     request with the same list reissued are reissued once more\n"
            "  --pin SOURCE       device PIN source, file:PATH or env:VAR, for rows without a\n"
            "                     pin column value (default: [provisioner] device_pin); read\n"
            "                     once per device\n"
            "  --prove URL        each device's last step: a real mutual-TLS proof with its new\n"
            "                     identity (mqtts://, https:// or wss://, as `check` does);\n"
            "                     a refused proof fails the row (journal: failed, with the\n"
            "                     reason) and a re-run retries the proof without issuing again;\n"
            "                     rows already proven earlier are not connected again\n"
            "  --check            validate the manifest against the config and stop\n"
            "  --no-progress      no progress bar or progress lines on stderr\n"
            "  --json             print the summary as JSON (status/report: the journal), also\n"
            "                     when the run fails (error and exit set)\n\n"
            "status: devices per state, the rows not yet proven, and superseded keys not yet\n"
            "deleted from their device (not retired). With --tokens it also opens every token\n"
            "the journal names, logs in (--pin, else [provisioner] device_pin; read once, and\n"
            "a rejected PIN is sent to no other token) and lists each object no journal row\n"
            "explains by handle, class, CKA_ID and label; without it no token is touched.\n"
            "report: every row with its\n"
            "certificate (CSV by default); --verify-audit checks the journal's hash-chained\n"
            "audit trail and prints its head hash (keep it elsewhere to anchor the chain).\n\n"
            "Exit: 0 all rows issued or already issued, 1 some rows failed, 2 invalid, missing\n"
            "or unreadable manifest, or usage, 6 journal error or an output path that cannot be\n"
            "written; other codes as for enroll when the CA cannot be used.\n"
            "SIGINT, SIGTERM or SIGHUP: no new row starts, rows in progress are finished (or\n"
            "rolled back before their certificate), the results are written, and the run\n"
            "exits 1 with one line: interrupted; run the same command to resume.\n"
            "Test only: PROVISIONER_TEST_CRASH_AT=STATE:N exits (137) right after the N-th\n"
            "journal transition to STATE.\n");
}

struct findings {
    unsigned long n;
};

static void print_finding(void *ctx, const char *name, unsigned long line, unsigned long column,
                          const char *reason)
{
    struct findings *f = ctx;

    if (++f->n <= MAX_FINDINGS_SHOWN) {
        fprintf(stderr, "%s:%lu:%lu: %s\n", name, line, column, reason);
    }
}

/* The journal named by --journal, or the default one of the manifest. */
static char *journal_path(const char *journal, const char *manifest)
{
    if (journal != NULL) {
        return strdup(journal);
    }
    if (manifest != NULL) {
        return prov_batch_default_path(manifest, ".journal.sqlite");
    }
    return NULL;
}

/* batch status / batch report: read-only views of the journal (status may list tokens). */
static const struct option batch_report_opts[] = {
    {"journal", required_argument, NULL, 'J'}, {"json", no_argument, NULL, 'j'},
    {"csv", no_argument, NULL, 'c'},           {"verify-audit", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
};
static const struct option batch_status_opts[] = {
    {"journal", required_argument, NULL, 'J'}, {"json", no_argument, NULL, 'j'},
    {"csv", no_argument, NULL, 'c'},           {"verify-audit", no_argument, NULL, 'V'},
    {"tokens", no_argument, NULL, 'T'},        {"pin", required_argument, NULL, 'p'},
    {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
};

static int journal_view(int argc, char **argv, bool is_report)
{
    struct prov_journal_audit audit;
    struct prov_journal *j = NULL;
    struct prov_status_tokens tokens = {0};
    struct prov_config *cfg = NULL;
    const char *journal = NULL;
    char *shown = NULL;
    bool as_json = false;
    bool verify = false;
    bool is_tokens = false;
    char *path = NULL;
    int c;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", is_report ? batch_report_opts : batch_status_opts,
                            NULL)) != -1) {
        switch (c) {
        case 'J': journal = optarg; break;
        case 'j': as_json = true; break;
        case 'c': as_json = false; break;
        case 'V': verify = true; break;
        case 'T': is_tokens = true; break;
        case 'p': tokens.pin_spec = optarg; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    /*
     * Without --journal, the journal the run used: [provisioner] journal when the config
     * names one (the ledger of a line, doc/ledger.md), else the manifest's own. A config
     * that does not load is no error here: status and report need none.
     */
    if (journal == NULL && prov_issue_load_config(prov_cli.config_path, &cfg) == 0 &&
        cfg->journal != NULL) {
        journal = cfg->journal;
    }
    prov_error_clear();
    path = journal_path(journal, optind < argc ? argv[optind] : NULL);
    if (tokens.pin_spec != NULL && !is_tokens) {
        fprintf(stderr, "provisioner: batch status: --pin is used only with --tokens\n");
        free(path);
        prov_config_free(cfg);
        return PROV_EXIT_USAGE;
    }
    if (path == NULL || argc - optind > 1 || (verify && !is_report)) {
        fprintf(stderr,
                "provisioner: batch %s: name the journal: MANIFEST.csv or --journal "
                "FILE\n",
                argv[0]);
        free(path);
        prov_config_free(cfg);
        return PROV_EXIT_USAGE;
    }
    /* the tokens need the module and the PIN source of the config; status alone does not */
    if (is_tokens && cfg == NULL && (r = cli_load_config(&cfg)) != 0) {
        free(path);
        return r;
    }
    tokens.cfg = cfg;
    prov_error_clear();
    r = prov_journal_open_with(path, cfg ? cfg->journal_password : NULL, NULL, false, &j);
    if (r == 0 && verify) {
        r = prov_journal_verify_audit(j, &audit);
        if (r == 0) {
            fprintf(stderr,
                    "provisioner: journal %s: audit chain verifies: %lld records, head "
                    "%s\n",
                    prov_journal_path(j), audit.n_records, audit.head_hash);
        }
    }
    if (r == 0) {
        r = is_report ? prov_batch_report(j, as_json ? PROV_REPORT_JSON : PROV_REPORT_CSV, stdout)
                      : prov_batch_status(j, as_json, is_tokens ? &tokens : NULL, stdout);
    }
    prov_journal_close(j);
    prov_config_free(cfg);
    if (r < 0) {
        /* status --json keeps its shape on failure; report's is an array, which cannot */
        json_object *o = NULL;

        if (as_json && !is_report) {
            o = json_object_new_object();
            json_object_object_add(o, "lots", json_object_new_array());
            json_object_object_add(o, "tokens", NULL);
        }
        shown = prov_journal_name(path);
        r = cli_fail_json(r, shown ? shown : "journal", o != NULL, o);
        free(shown);
        free(path);
        return r;
    }
    free(path);
    return PROV_EXIT_OK;
}

/*
 * The run's summary for a program (schema in provisioner(1), JSON OUTPUT), also when the run
 * failed or never started: problems counts the manifest's findings, error says why (NULL:
 * null), exit_code is the exit status.
 */
static void print_summary_json(const struct prov_batch_opts *o, const struct prov_batch_summary *s,
                               unsigned long problems, const char *error, int exit_code)
{
    json_object *j = json_object_new_object();

    json_object_object_add(j, "manifest", json_object_new_string(o->manifest));
    json_object_object_add(j, "check_only", json_object_new_boolean(o->is_check_only));
    json_object_object_add(j, "rows", json_object_new_int64((int64_t)s->n_rows));
    json_object_object_add(j, "issued", json_object_new_int64((int64_t)s->n_issued));
    json_object_object_add(j, "already_issued", json_object_new_int64((int64_t)s->n_already));
    json_object_object_add(j, "elsewhere", json_object_new_int64((int64_t)s->n_elsewhere));
    json_object_object_add(j, "failed", json_object_new_int64((int64_t)s->n_failed));
    json_object_object_add(j, "seconds", json_object_new_double(s->seconds));
    json_object_object_add(j, "devices_per_second", json_object_new_double(s->devices_per_second));
    json_object_object_add(j, "results", s->results ? json_object_new_string(s->results) : NULL);
    json_object_object_add(j, "journal", s->journal ? json_object_new_string(s->journal) : NULL);
    json_object_object_add(j, "problems", json_object_new_int64((int64_t)problems));
    json_object_object_add(j, "error", error ? json_object_new_string(error) : NULL);
    json_object_object_add(j, "exit", json_object_new_int(exit_code));
    cli_print_json(j);
}

static const struct option batch_run_opts[] = {
    {"jobs", required_argument, NULL, 'n'},
    {"journal", required_argument, NULL, 'J'},
    {"results", required_argument, NULL, 'R'},
    {"reissue", required_argument, NULL, 'r'},
    {"again", no_argument, NULL, 'A'},
    {"pin", required_argument, NULL, 'p'},
    {"station", required_argument, NULL, 'S'},
    {"check", no_argument, NULL, 'C'},
    {"prove", required_argument, NULL, 'X'},
    {"no-progress", no_argument, NULL, 'P'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int run(int argc, char **argv)
{
    struct prov_batch_opts o = {.show_progress = !prov_cli.quiet, .is_tty = isatty(2) == 1};
    struct prov_batch_summary sum = {0};
    char line[1536];
    struct prov_config *cfg = NULL;
    struct findings found = {0};
    bool as_json = false;
    const char **reissue = calloc((size_t)argc, sizeof(*reissue));
    char *end = NULL;
    int rc = PROV_EXIT_USAGE;
    int c;
    int r;

    optind = 1;
    while (reissue != NULL && (c = getopt_long(argc, argv, "h", batch_run_opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            o.jobs = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || o.jobs < 1 || o.jobs > 64) {
                fprintf(stderr, "provisioner: batch: --jobs %s: a number from 1 to 64\n", optarg);
                goto out;
            }
            break;
        case 'J': o.journal = optarg; break;
        case 'R': o.results = optarg; break;
        case 'r': reissue[o.n_reissue++] = optarg; break;
        case 'A': o.is_again = true; break;
        case 'p': o.pin_spec = optarg; break;
        case 'S': o.station = optarg; break;
        case 'C': o.is_check_only = true; break;
        case 'X': o.prove_url = optarg; break;
        case 'P': o.show_progress = false; break;
        case 'j': as_json = true; break;
        case 'h':
            usage(stdout);
            rc = PROV_EXIT_OK;
            goto out;
        default: usage(stderr); goto out;
        }
    }
    if (reissue == NULL || optind + 1 != argc) {
        fprintf(stderr, "provisioner: batch: exactly one MANIFEST.csv expected\n");
        goto out;
    }
    o.manifest = argv[optind];
    if (o.prove_url != NULL && prov_connect_url_check(o.prove_url) < 0) {
        rc = cli_fail(PROV_ERR_USAGE, "--prove");
        goto out;
    }
    o.reissue = reissue;
    o.on_finding = print_finding;
    o.finding_ctx = &found;
    prov_error_clear();
    r = prov_issue_load_config(prov_cli.config_path, &cfg);
    if (r == 0) {
        prov_error_clear();
        r = prov_batch_run(cfg, &o, &sum);
    }
    if (found.n > MAX_FINDINGS_SHOWN) {
        fprintf(stderr, "%s: ... and %lu more problems\n", o.manifest,
                found.n - MAX_FINDINGS_SHOWN);
    }
    if (r < 0 && r != PROV_ERR_INTERRUPTED) {
        if (r == PROV_ERR_INPUT && found.n > 0) {
            snprintf(line, sizeof(line), "%s: %lu problem%s, nothing issued", o.manifest,
                     found.n, found.n == 1 ? "" : "s");
        } else {
            cli_error_text(r, cfg ? o.manifest : prov_cli.config_path, line, sizeof(line));
        }
        rc = prov_exit_code(r);
        if (as_json) {
            print_summary_json(&o, &sum, found.n, line, rc);
        }
        fprintf(stderr, "provisioner: %s\n", line);
    } else if (as_json) {
        rc = sum.n_failed > 0 ? PROV_EXIT_FAILED : PROV_EXIT_OK;
        snprintf(line, sizeof(line), "%lu of %lu rows failed (reasons in %s)", sum.n_failed,
                 sum.n_rows, sum.results ? sum.results : "the results");
        print_summary_json(&o, &sum, 0, rc != 0 ? line : NULL, rc);
    } else if (o.is_check_only) {
        printf("%s: %lu rows, valid\n", o.manifest, sum.n_rows);
        rc = PROV_EXIT_OK;
    } else {
        char elsewhere[48] = "";

        /* only a ledger shares a lot with other stations: the line is as before otherwise */
        if (sum.n_elsewhere > 0) {
            snprintf(elsewhere, sizeof(elsewhere), ", %lu elsewhere", sum.n_elsewhere);
        }
        printf("%lu rows: %lu issued, %lu already-issued, %lu failed%s in %.1f s (%.1f "
               "devices/s); results %s, journal %s\n",
               sum.n_rows, sum.n_issued, sum.n_already, sum.n_failed, elsewhere, sum.seconds,
               sum.devices_per_second, sum.results, sum.journal);
        rc = sum.n_failed > 0 ? PROV_EXIT_FAILED : PROV_EXIT_OK;
    }
    /* stopped by a signal: the summary of what was done, then how to resume (exit 1) */
    if (r == PROV_ERR_INTERRUPTED) {
        rc = cli_fail(r, o.manifest);
    }
    prov_batch_summary_clear(&sum);
out:
    prov_config_free(cfg);
    free(reissue);
    return rc;
}

int cmd_batch(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "status") == 0) {
        return journal_view(argc - 1, argv + 1, false);
    }
    if (argc >= 2 && strcmp(argv[1], "report") == 0) {
        return journal_view(argc - 1, argv + 1, true);
    }
    return run(argc, argv);
}

const struct cli_optset cmd_batch_optsets[] = {
    {"batch", batch_run_opts},
    {"batch status", batch_status_opts},
    {"batch report", batch_report_opts},
    {NULL, NULL},
};
