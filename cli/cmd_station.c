/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "error.h"
#include "station.h"

#define MAX_FINDINGS_SHOWN 100

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: provisioner station --instance NAME [OPTIONS]\n\n"
            "Fixture station mode: serves one device that has just appeared, as started by\n"
            "udev through the systemd unit provisioner-station@NAME.service (udev/). NAME is\n"
            "tpmrmN (the TPM at /dev/tpmrmN; [station] tpm_tcti overrides the TCTI, %%i is\n"
            "NAME) or usb-VVVV:PPPP-SERIAL (a USB token listed in the [station] device_table).\n"
            "The device is identified by its token serial or TPM EK digest, never by slot;\n"
            "its manifest row is picked, claimed in the journal, enrolled with the batch rules\n"
            "(exactly once across station runs, resumed after an interruption), proven, and\n"
            "one result line is printed on stdout:\n"
            "  station instance=NAME device=URI identity=ID serial=SN status=STATUS\n"
            "    cert_serial=HEX sha256=HEX not_after=TIME storage=DIR reason=\"TEXT\"\n"
            "STATUS is issued, already-issued, failed, or excluded (exit 0) for a device that\n"
            "[station] exclude lists (the station PC's own TPM); absent values are left out.\n"
            "A device not there yet is waited for up to [station] device_wait seconds.\n\n"
            "  --instance NAME    the unit's instance name (%%i)\n"
            "  --manifest FILE    the lot's manifest (default: [station] manifest)\n"
            "  --journal FILE     the journal, shared by every station of the lot, or the\n"
            "                     ledger's postgresql:// URI (default: [station] journal,\n"
            "                     [provisioner] journal, then MANIFEST.journal.sqlite)\n"
            "  --station NAME     the station's name in the ledger (default: [station] name,\n"
            "                     then the host name, \"@\" and the instance)\n"
            "  --mode MODE        row-by-identity (the row whose device is pkcs11:serial=...\n"
            "                     or tpm2:ek-sha256=...) or next-free (the first unclaimed\n"
            "                     row); default: [station] mode, then row-by-identity\n"
            "  --prove URL        end-of-line mTLS proof (mqtts://, https://, wss://) as the\n"
            "                     row's last step (default: [station] prove); refused: exit 1\n"
            "  --pin SOURCE       device PIN source, file:PATH or env:VAR (default:\n"
            "                     [provisioner] device_pin)\n"
            "  --json             the result as one JSON object on one line\n\n"
            "A PIN a token rejected is remembered next to the journal (JOURNAL.pin-rejected.*,\n"
            "for the token and for the PIN source; with the ledger MANIFEST.ledger-HASH.*, HASH\n"
            "from the ledger's URI) and not tried again by later runs, on that token or any\n"
            "other, until the PIN source is fixed and those files are removed.\n\n"
            "Exit: 0 issued, already issued or excluded, 1 failed or interrupted (SIGTERM/SIGINT:\n"
            "stopped between token operations; the next arrival resumes), 2 usage/config/manifest\n"
            "(also one that cannot be read; checked before the device is opened), 3 PIN, 4 device\n"
            "not found (after device_wait) or removed mid-enrollment (run again to resume), 5 policy\n"
            "(no row for the device, lot full), 6 journal or storage.\n"
            "Test only: PROVISIONER_TEST_PAUSE_AT=STATE:FILE creates FILE after each journal\n"
            "transition to STATE and waits until FILE is removed.\n");
}

static void print_finding(void *ctx, const char *name, unsigned long line, unsigned long column,
                          const char *reason)
{
    unsigned long *n = ctx;

    if (++*n <= MAX_FINDINGS_SHOWN) {
        fprintf(stderr, "%s:%lu:%lu: %s\n", name, line, column, reason);
    }
}

/* key=value, the value in double quotes (with \" and \\) when it is empty or needs them. */
static void print_pair(const char *key, const char *value, bool always_quote)
{
    if (value == NULL) {
        return;
    }
    if (!always_quote && value[0] != '\0' && strpbrk(value, " \t\"\\=") == NULL) {
        printf(" %s=%s", key, value);
        return;
    }
    printf(" %s=\"", key);
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            putchar('\\');
        }
        putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
    }
    putchar('"');
}

/* Every documented key is always there (null when unknown): provisioner(1) JSON OUTPUT. */
static void json_add(struct json_object *o, const char *key, const char *value)
{
    json_object_object_add(o, key, value != NULL ? json_object_new_string(value) : NULL);
}

/* The exit code of a result: a manifest with problems is a usage error (2), as for batch. */
static int result_exit(const struct prov_station_result *res)
{
    if (res->status != PROV_STATION_FAILED) {
        return PROV_EXIT_OK;
    }
    if (res->err == PROV_ERR_INPUT && res->n_findings > 0) {
        return PROV_EXIT_USAGE;
    }
    return prov_exit_code(res->err ? res->err : PROV_ERR_INTERNAL);
}

static void print_result(const struct prov_station_result *res, bool as_json)
{
    const char *status = prov_station_status_name(res->status);

    if (as_json) {
        struct json_object *o = json_object_new_object();

        json_add(o, "instance", res->instance);
        json_add(o, "device", res->device_uri);
        json_add(o, "identity", res->identity);
        json_add(o, "serial", res->serial);
        json_add(o, "status", status);
        json_add(o, "cert_serial", res->cert_serial);
        json_add(o, "sha256", res->sha256);
        json_add(o, "not_after", res->not_after);
        json_add(o, "storage", res->storage);
        json_add(o, "reason", res->reason);
        json_object_object_add(o, "exit", json_object_new_int(result_exit(res)));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    } else {
        printf("station");
        print_pair("instance", res->instance, false);
        print_pair("device", res->device_uri, false);
        print_pair("identity", res->identity, false);
        print_pair("serial", res->serial, false);
        print_pair("status", status, false);
        print_pair("cert_serial", res->cert_serial, false);
        print_pair("sha256", res->sha256, false);
        print_pair("not_after", res->not_after, false);
        print_pair("storage", res->storage, false);
        print_pair("reason", res->reason, true);
        printf("\n");
    }
    fflush(stdout);
}

static const struct option station_opts[] = {
    {"instance", required_argument, NULL, 'i'},
    {"manifest", required_argument, NULL, 'm'},
    {"journal", required_argument, NULL, 'J'},
    {"station", required_argument, NULL, 'S'},
    {"mode", required_argument, NULL, 'M'},
    {"prove", required_argument, NULL, 'P'},
    {"pin", required_argument, NULL, 'p'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_station(int argc, char **argv)
{
    struct prov_station_opts o = {0};
    struct prov_station_result res;
    struct prov_config *cfg = NULL;
    unsigned long n_findings = 0;
    bool as_json = false;
    int rc;
    int c;
    int r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", station_opts, NULL)) != -1) {
        switch (c) {
        case 'i': o.instance = optarg; break;
        case 'm': o.manifest = optarg; break;
        case 'J': o.journal = optarg; break;
        case 'S': o.station = optarg; break;
        case 'M': o.mode = optarg; break;
        case 'P': o.prove_url = optarg; break;
        case 'p': o.pin_spec = optarg; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return PROV_EXIT_OK;
        default: usage(stderr); return PROV_EXIT_USAGE;
        }
    }
    if (o.instance == NULL || o.instance[0] == '\0' || optind != argc) {
        fprintf(stderr, "provisioner: station: --instance NAME is required (and nothing else)\n");
        return PROV_EXIT_USAGE;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0) {
        return rc;
    }
    o.on_finding = print_finding;
    o.finding_ctx = &n_findings;
    prov_error_clear();
    r = prov_station_run(cfg, &o, &res);
    if (r == PROV_ERR_INPUT && res.n_findings > 0) {
        fprintf(stderr, "provisioner: %s: %lu problem%s; nothing issued\n",
                o.manifest ? o.manifest : "manifest", res.n_findings,
                res.n_findings == 1 ? "" : "s");
    } else if (r < 0 && res.reason != NULL && strstr(res.reason, o.instance) != NULL) {
        fprintf(stderr, "provisioner: %s\n", res.reason);
    } else if (r < 0) {
        fprintf(stderr, "provisioner: instance %s: %s\n", o.instance,
                res.reason ? res.reason : prov_strerror(r));
    }
    print_result(&res, as_json);
    rc = result_exit(&res);
    prov_station_result_clear(&res);
    prov_config_free(cfg);
    return rc;
}

const struct cli_optset cmd_station_optsets[] = {
    {"station", station_opts},
    {NULL, NULL},
};
