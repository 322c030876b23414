/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lot export without a token: the lot signer's key URI, the option values, which journal
 * rows an inventory lists (by state, never without a certificate), CSV quoting, an unknown
 * lot, and the directory write (whole or nothing, into parents it makes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <openssl/pem.h>

#include "ca_index.h"
#include "error.h"
#include "journal.h"
#include "lot_export.h"
#include "lot_signer.h"
#include "storage.h"
#include "test_pki.h"

static void assert_signer_uri(const char *ca_key, const char *want)
{
    char *uri = NULL;

    assert_int_equal(prov_lot_signer_uri(ca_key, &uri), 0);
    assert_string_equal(uri, want);
    free(uri);
}

static void test_signer_uri(void **state)
{
    char *uri = NULL;

    (void)state;
    assert_signer_uri("pkcs11:token=ca;object=intermediate", "pkcs11:token=ca;object=lot-signer");
    assert_signer_uri("pkcs11:object=intermediate;serial=42;id=%01%02?module-path=/m.so",
                      "pkcs11:serial=42;object=lot-signer?module-path=/m.so");
    assert_signer_uri("pkcs11:token=ca", "pkcs11:token=ca;object=lot-signer");
    assert_signer_uri("pkcs11:", "pkcs11:object=lot-signer");
    /* "objectx=" is not object= */
    assert_signer_uri("pkcs11:token=objectives;object=i", "pkcs11:token=objectives;object=lot-signer");
    prov_error_clear();
    assert_int_equal(prov_lot_signer_uri("tpm2:device:/dev/tpmrm0", &uri), PROV_ERR_CONFIG);
    assert_null(uri);
    prov_error_clear();
}

static void test_option_values(void **state)
{
    enum prov_lot_format f;
    unsigned mask = 0;

    (void)state;
    assert_int_equal(prov_lot_format_parse("azure-dps", &f), 0);
    assert_int_equal(f, PROV_LOT_AZURE_DPS);
    assert_true(prov_lot_format_is_dir(f));
    assert_int_equal(prov_lot_format_parse("csv", &f), 0);
    assert_false(prov_lot_format_is_dir(f));
    assert_string_equal(prov_lot_format_name(PROV_LOT_RECORD), "record");
    assert_int_equal(prov_lot_format_parse("xml", &f), PROV_ERR_USAGE);
    prov_error_clear();

    assert_int_equal(prov_lot_states_parse("stored,proven", &mask), 0);
    assert_int_equal(mask, PROV_LOT_DEFAULT_STATES);
    assert_int_equal(prov_lot_states_parse("all", &mask), 0);
    assert_int_equal(mask, (1u << PROV_JOURNAL_ISSUED) | (1u << PROV_JOURNAL_STORED) |
                               (1u << PROV_JOURNAL_PROVEN) | (1u << PROV_JOURNAL_FAILED));
    assert_int_equal(prov_lot_states_parse("issued", &mask), 0);
    assert_int_equal(mask, 1u << PROV_JOURNAL_ISSUED);
    assert_int_equal(prov_lot_states_parse("superseded", &mask), PROV_ERR_USAGE);
    prov_error_clear();
    assert_int_equal(prov_lot_states_parse("intent", &mask), PROV_ERR_USAGE);
    prov_error_clear();
    assert_int_equal(prov_lot_states_parse("", &mask), PROV_ERR_USAGE);
    prov_error_clear();
    assert_int_equal(prov_lot_states_parse("stored,,proven", &mask), PROV_ERR_USAGE);
    prov_error_clear();
}

struct fixture {
    char dir[64];
    char path[128];
    EVP_PKEY *keys[5];
    struct prov_config cfg; /* ca_dir only: the cloud formats read its chain.pem */
    struct prov_ca ca;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/test_lot_export.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/j.sqlite", f->dir);
    for (int i = 0; i < 5; i++) {
        f->keys[i] = test_pki_ec_key("P-256");
    }
    test_pki_small_ca(&f->ca);
    f->cfg.ca_dir = f->dir;
    {
        char chain[160];

        snprintf(chain, sizeof(chain), "%s/chain.pem", f->dir);
        test_pki_write_pem(chain, f->ca.cert, f->ca.root);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    for (int i = 0; i < 5; i++) {
        EVP_PKEY_free(f->keys[i]);
    }
    test_pki_small_ca_free(&f->ca);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Walks serial, its certificate's CN cn, to `last` (intent, issued, stored, proven; failed
 * after issued). */
static void walk_cn(struct prov_journal *j, long long lot, const char *serial, const char *cn,
                    int id, EVP_PKEY *key, const char *last)
{
    unsigned char kid[16] = {(unsigned char)id};
    X509 *c = test_pki_self_signed(cn, 100 + id, key);

    assert_int_equal(prov_journal_record_intent(j, lot, serial, "pkcs11:token=t", "d", kid, 16), 0);
    if (strcmp(last, "intent") != 0) {
        assert_int_equal(prov_journal_record_issued(j, lot, serial, kid, 16, c, "pkcs11:k"), 0);
    }
    if (strcmp(last, "failed") == 0) {
        assert_int_equal(prov_journal_record_failed(j, lot, serial, "pkcs11:token=t", "x"), 0);
    }
    if (strcmp(last, "stored") == 0 || strcmp(last, "proven") == 0) {
        assert_int_equal(prov_journal_record_stored(j, lot, serial), 0);
    }
    if (strcmp(last, "proven") == 0) {
        assert_int_equal(prov_journal_record_proven(j, lot, serial), 0);
    }
    X509_free(c);
}

/* walk_cn with the serial as the CN. */
static void walk(struct prov_journal *j, long long lot, const char *serial, int id,
                 EVP_PKEY *key, const char *last)
{
    walk_cn(j, lot, serial, serial, id, key, last);
}

/* A lot "lot,1" with a row in each state; the journal is closed again. */
static void make_lot(struct fixture *f)
{
    struct prov_journal *j = NULL;
    long long lot = 0;

    assert_int_equal(prov_journal_open(f->path, true, &j), 0);
    assert_int_equal(prov_journal_lot(j, "lot,1", "a.csv", &lot), 0);
    walk(j, lot, "SN-A", 1, f->keys[0], "proven");
    walk(j, lot, "SN-B", 2, f->keys[1], "issued");
    walk(j, lot, "SN-C", 3, f->keys[2], "failed");
    walk(j, lot, "SN-D", 4, f->keys[3], "intent");
    walk(j, lot, "SN-E", 5, f->keys[4], "stored");
    /* found replaced in its storage: still exported (with a warning) */
    assert_int_equal(prov_journal_record_outside_change(j, lot, "SN-E", "storage replaced"), 0);
    prov_journal_close(j);
}

/* The serial column of a CSV bundle, '|'-joined. */
static void csv_serials(const struct prov_lot_bundle *b, char *out, size_t len)
{
    const char *p = strchr(b->files[0].data, '\n') + 1;

    out[0] = '\0';
    while (*p != '\0') {
        size_t n = strcspn(p, ",");

        snprintf(out + strlen(out), len - strlen(out), "%s%.*s", out[0] ? "|" : "", (int)n, p);
        p = strchr(p, '\n') + 1;
    }
}

/*
 * With a CA index beside chain.pem, certificates another intermediate issued (here: self-
 * signed) cannot be checked against it: the inventory says revocations were not checked.
 */
static void test_revocations_other_issuer(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_export_opts o = {.lot = "lot,1", .journal = f->path, .format = PROV_LOT_JSON};
    struct prov_lot_bundle b;
    struct prov_ca_index *ix = NULL;

    make_lot(f);
    assert_int_equal(prov_lot_export_build(&f->cfg, &o, &b), 0);
    assert_non_null(strstr(b.files[0].data, "\"revocations_checked\":false"));
    prov_lot_bundle_clear(&b);
    assert_int_equal(prov_ca_index_open(f->dir, &ix), 0);
    prov_ca_index_close(ix);
    assert_int_equal(prov_lot_export_build(&f->cfg, &o, &b), 0);
    assert_non_null(strstr(b.files[0].data, "\"revocations_checked\":false"));
    assert_null(strstr(b.files[0].data, "\"revoked\""));
    prov_lot_bundle_clear(&b);
}

static void test_rows_by_state(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_export_opts o = {.lot = "lot,1", .journal = f->path, .format = PROV_LOT_CSV};
    struct prov_lot_bundle b;
    char serials[128];

    make_lot(f);
    assert_int_equal(prov_lot_export_build(NULL, &o, &b), 0);
    assert_int_equal(b.n_files, 1);
    assert_string_equal(b.files[0].name, "");
    csv_serials(&b, serials, sizeof(serials));
    assert_string_equal(serials, "SN-A|SN-E");
    assert_int_equal(b.n_devices, 2);
    assert_int_equal(b.n_left_out, 3);
    /* RFC 4180: the lot name holds a comma, so it is quoted */
    assert_non_null(strstr(b.files[0].data, ",proven,"));
    assert_non_null(strstr(b.files[0].data, ",\"lot,1\",,\n")); /* not revoked: empty */
    {
        static const char header[] = "serial,cert_serial,sha256,pubkey_sha256,state,not_after,lot,"
                                     "revoked,revoked_at\n";

        assert_int_equal(strncmp(b.files[0].data, header, sizeof(header) - 1), 0);
    }
    prov_lot_bundle_clear(&b);

    /* all: issued and failed rows with a certificate too, never the one without */
    assert_int_equal(prov_lot_states_parse("all", &o.states), 0);
    assert_int_equal(prov_lot_export_build(NULL, &o, &b), 0);
    csv_serials(&b, serials, sizeof(serials));
    assert_string_equal(serials, "SN-A|SN-B|SN-C|SN-E");
    prov_lot_bundle_clear(&b);

    o.format = PROV_LOT_JSON;
    o.states = 1u << PROV_JOURNAL_ISSUED;
    assert_int_equal(prov_lot_export_build(NULL, &o, &b), 0);
    assert_non_null(strstr(b.files[0].data, "\"count\":1"));
    assert_non_null(strstr(b.files[0].data, "\"serial\":\"SN-B\""));
    assert_non_null(strstr(b.files[0].data, "\"state\":\"issued\""));
    prov_lot_bundle_clear(&b);
}

static void test_unknown_lot(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_export_opts o = {.lot = "lot-x", .journal = f->path, .format = PROV_LOT_CSV};
    struct prov_lot_bundle b;

    make_lot(f);
    prov_error_clear();
    assert_int_equal(prov_lot_export_build(NULL, &o, &b), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "lot lot-x: not in journal"));
    assert_int_equal(b.n_files, 0);
    prov_error_clear();
    /* a lot with no row in the states asked for is refused the same way */
    {
        struct prov_journal *j = NULL;
        long long lot = 0;

        assert_int_equal(prov_journal_open(f->path, true, &j), 0);
        assert_int_equal(prov_journal_lot(j, "lot-2", "b.csv", &lot), 0);
        walk(j, lot, "SN-F", 6, f->keys[0], "intent");
        prov_journal_close(j);
    }
    o.lot = "lot-2";
    assert_int_equal(prov_lot_states_parse("all", &o.states), 0);
    assert_int_equal(prov_lot_export_build(NULL, &o, &b), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "lot lot-2: none of its 1 rows"));
    assert_int_equal(b.n_files, 0);
    prov_error_clear();
}

/* A lot of two proven rows, serials s1 and s2 with CNs cn1 and cn2 (keys k, k + 1). */
static void make_pair(struct fixture *f, const char *name, int k, const char *s1,
                      const char *cn1, const char *s2, const char *cn2)
{
    struct prov_journal *j = NULL;
    long long lot = 0;

    assert_int_equal(prov_journal_open(f->path, true, &j), 0);
    assert_int_equal(prov_journal_lot(j, name, "p.csv", &lot), 0);
    walk_cn(j, lot, s1, cn1, k + 1, f->keys[k], "proven");
    walk_cn(j, lot, s2, cn2, k + 2, f->keys[k + 1], "proven");
    prov_journal_close(j);
}

/* cert as PEM text (malloc'd). */
static char *pem_of(X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *p = NULL;
    long len;
    char *out;

    assert_int_equal(PEM_write_bio_X509(bio, cert), 1);
    len = BIO_get_mem_data(bio, &p);
    out = strndup(p, (size_t)len);
    BIO_free(bio);
    return out;
}

static const struct prov_lot_file *bundle_file(const struct prov_lot_bundle *b, const char *name)
{
    for (size_t i = 0; i < b->n_files; i++) {
        if (strcmp(b->files[i].name, name) == 0) {
            return &b->files[i];
        }
    }
    fail_msg("no file %s in the bundle", name);
    return NULL;
}

/*
 * AWS bulk registration (doc/export.md): each line holds the template's parameters only, the
 * device's thing name, serial and certificate; the CA certificate is registered on its own
 * (register-ca-certificate.json), not repeated in every line.
 */
static void test_aws_lines(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_export_opts o = {.lot = "aws-1", .journal = f->path, .format = PROV_LOT_AWS};
    struct prov_lot_bundle b;
    const struct prov_lot_file *lines;
    const struct prov_lot_file *tpl;
    json_object *line;
    json_object *ca;
    char *inter_pem = pem_of(f->ca.cert);

    make_pair(f, "aws-1", 0, "SN-1", "SN-1", "SN_2:x", "SN_2:x");
    assert_int_equal(prov_lot_export_build(&f->cfg, &o, &b), 0);
    assert_int_equal(b.n_files, 3);
    lines = bundle_file(&b, "bulk-registration.jsonl");
    line = json_tokener_parse(lines->data); /* the first line */
    assert_non_null(line);
    assert_int_equal(json_object_object_length(line), 3);
    assert_string_equal(json_object_get_string(json_object_object_get(line, "ThingName")), "SN-1");
    assert_string_equal(json_object_get_string(json_object_object_get(line, "SerialNumber")),
                        "SN-1");
    assert_non_null(json_object_object_get(line, "CertificatePem"));
    json_object_put(line);
    assert_null(strstr(lines->data, "CACertificatePem"));
    tpl = bundle_file(&b, "provisioning-template.json");
    assert_null(strstr(tpl->data, "CACertificatePem"));
    ca = json_tokener_parse(bundle_file(&b, "register-ca-certificate.json")->data);
    assert_string_equal(json_object_get_string(json_object_object_get(ca, "caCertificate")),
                        inter_pem);
    json_object_put(ca);
    prov_lot_bundle_clear(&b);
    free(inter_pem);
}

/* A serial that is no AWS thing name is refused before anything is built (exit 5). */
static void test_aws_bad_thing_name(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_export_opts o = {.lot = "aws-2", .journal = f->path, .format = PROV_LOT_AWS};
    struct prov_lot_bundle b;

    make_pair(f, "aws-2", 0, "SN-1", "SN-1", "SN.2", "SN.2");
    prov_error_clear();
    assert_int_equal(prov_lot_export_build(&f->cfg, &o, &b), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "serial SN.2"));
    assert_non_null(strstr(prov_error_message(), "thing name"));
    assert_int_equal(b.n_files, 0);
    prov_error_clear();
}

/* Two devices with one DPS registration id (the CN, compared without case): refused. */
static void test_dps_duplicate_id(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_export_opts o = {.lot = "dps-1", .journal = f->path,
                                     .format = PROV_LOT_AZURE_DPS};
    struct prov_lot_bundle b;

    make_pair(f, "dps-1", 0, "SN-1", "device-a", "SN-2", "Device-A");
    prov_error_clear();
    assert_int_equal(prov_lot_export_build(&f->cfg, &o, &b), PROV_ERR_POLICY);
    assert_non_null(strstr(prov_error_message(), "SN-1"));
    assert_non_null(strstr(prov_error_message(), "SN-2"));
    assert_non_null(strstr(prov_error_message(), "registration id"));
    assert_int_equal(b.n_files, 0);
    prov_error_clear();
    /* distinct CNs: one enrollment each */
    make_pair(f, "dps-2", 2, "SN-3", "device-a", "SN-4", "device-b");
    o.lot = "dps-2";
    assert_int_equal(prov_lot_export_build(&f->cfg, &o, &b), 0);
    assert_int_equal(b.n_files, 3);
    assert_non_null(bundle_file(&b, "enrollments/device-b.json"));
    prov_lot_bundle_clear(&b);
}

static void add_file(struct prov_lot_bundle *b, const char *name, const char *data)
{
    b->files = realloc(b->files, (b->n_files + 1) * sizeof(*b->files));
    b->files[b->n_files].name = strdup(name);
    b->files[b->n_files].data = strdup(data);
    b->files[b->n_files].len = strlen(data);
    b->n_files++;
}

/* The entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    char cmd[256];
    FILE *p;
    int n = 0;
    int c;

    snprintf(cmd, sizeof(cmd), "ls -A '%s' | grep -c '^%s' || true", dir, prefix);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%d", &n), 1);
    while ((c = fgetc(p)) != EOF) {
    }
    pclose(p);
    return n;
}

static void test_write_dir(void **state)
{
    struct fixture *f = *state;
    struct prov_lot_bundle b = {0};
    char out[160];
    char path[200];
    struct stat st;

    add_file(&b, "a.json", "{}\n");
    add_file(&b, "sub/b.json", "[]\n");
    /* parents are made; a trailing slash names the same directory */
    snprintf(out, sizeof(out), "%s/new/parent/out/", f->dir);
    assert_int_equal(prov_lot_export_check_output(true, out), 0);
    assert_int_equal(prov_lot_export_write(&b, true, out), 0);
    snprintf(path, sizeof(path), "%ssub/b.json", out);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    snprintf(path, sizeof(path), "%s/new/parent/out", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    snprintf(path, sizeof(path), "%s/new/parent", f->dir);
    assert_int_equal(count_prefixed(path, "out.tmp."), 0);
    /* a directory that is there already is refused before anything is built */
    prov_error_clear();
    assert_int_equal(prov_lot_export_check_output(true, out), PROV_ERR_STORAGE);
    prov_error_clear();

    /* a file that cannot be written ("sub" is a file, then "sub/b.json"): nothing left */
    prov_lot_bundle_clear(&b);
    add_file(&b, "sub", "x\n");
    add_file(&b, "sub/b.json", "[]\n");
    snprintf(out, sizeof(out), "%s/broken", f->dir);
    assert_int_equal(prov_lot_export_write(&b, true, out), PROV_ERR_STORAGE);
    prov_error_clear();
    assert_int_equal(stat(out, &st), -1);
    assert_int_equal(count_prefixed(f->dir, "broken"), 0);
    /* the same into parents it had to make: those go too */
    snprintf(out, sizeof(out), "%s/made/for/broken", f->dir);
    assert_int_equal(prov_lot_export_write(&b, true, out), PROV_ERR_STORAGE);
    prov_error_clear();
    assert_int_equal(count_prefixed(f->dir, "made"), 0);
    /* a parent that was there before stays */
    snprintf(path, sizeof(path), "%s/kept", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(out, sizeof(out), "%s/kept/made/broken", f->dir);
    assert_int_equal(prov_lot_export_write(&b, true, out), PROV_ERR_STORAGE);
    prov_error_clear();
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(count_prefixed(path, ""), 0);
    prov_lot_bundle_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signer_uri),
        cmocka_unit_test(test_option_values),
        cmocka_unit_test_setup_teardown(test_rows_by_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocations_other_issuer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_lot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aws_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aws_bad_thing_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dps_duplicate_id, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
