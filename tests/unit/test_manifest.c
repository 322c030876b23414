/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manifest parser: good files (quoting, CRLF, BOM, x_ columns, chunking, re-parsing a
 * row from its recorded extent) and every finding class with its exact line and column.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>

#include "backend.h"
#include "error.h"
#include "manifest.h"
#include "pkcs11.h"
#include "tpm.h"

#define MAX_SEEN 16

/* What the callbacks saw. */
struct seen {
    int n_rows;
    char serial[MAX_SEEN][80];
    char device[MAX_SEEN][80];
    char cn[MAX_SEEN][256];
    char storage[MAX_SEEN][80];
    char x[MAX_SEEN][80];
    unsigned long line[MAX_SEEN];
    unsigned long long offset[MAX_SEEN];
    size_t length[MAX_SEEN];
    int n_findings;
    char findings[32][400];
};

static int on_row(void *ctx, struct prov_manifest_parser *p, const struct prov_manifest_row *row)
{
    struct seen *s = ctx;
    int i = s->n_rows++;

    assert_true(i < MAX_SEEN);
    snprintf(s->serial[i], sizeof(s->serial[i]), "%s", row->value[PROV_COL_SERIAL]);
    snprintf(s->device[i], sizeof(s->device[i]), "%s", row->value[PROV_COL_DEVICE]);
    snprintf(s->cn[i], sizeof(s->cn[i]), "%s",
             row->value[PROV_COL_CN] ? row->value[PROV_COL_CN] : "(none)");
    snprintf(s->storage[i], sizeof(s->storage[i]), "%s",
             row->value[PROV_COL_STORAGE] ? row->value[PROV_COL_STORAGE] : "(none)");
    snprintf(s->x[i], sizeof(s->x[i]), "%s", row->n_x > 0 ? row->x_values[0] : "(none)");
    s->line[i] = row->line;
    s->offset[i] = row->offset;
    s->length[i] = row->length;
    return 0;
}

static void on_error(void *ctx, const char *name, unsigned long line, unsigned long column,
                     const char *reason)
{
    struct seen *s = ctx;

    if (s->n_findings < 32) {
        snprintf(s->findings[s->n_findings], sizeof(s->findings[0]), "%lu:%lu: %s", line, column,
                 reason);
    }
    s->n_findings++;
}

static int parse(const char *text, size_t len, struct seen *s)
{
    struct prov_manifest_callbacks cb = {.row = on_row, .error = on_error, .ctx = s};

    memset(s, 0, sizeof(*s));
    prov_error_clear();
    return prov_manifest_parse("m.csv", text, len, &cb, NULL);
}

static void test_good_basic(void **state)
{
    static const char text[] = "serial,device,cn,x_site\n"
                               "SN-1,pkcs11:token=dev-1,,berlin\n"
                               "SN-2,tpm2:swtpm:host=127.0.0.1,Sensor 2,\n";
    struct seen s;

    assert_int_equal(parse(text, sizeof(text) - 1, &s), 0);
    assert_int_equal(s.n_findings, 0);
    assert_int_equal(s.n_rows, 2);
    assert_string_equal(s.serial[0], "SN-1");
    assert_string_equal(s.device[0], "pkcs11:token=dev-1");
    assert_string_equal(s.cn[0], "(none)"); /* empty optional value: the default */
    assert_string_equal(s.x[0], "berlin");
    assert_string_equal(s.cn[1], "Sensor 2");
    assert_string_equal(s.x[1], "");
    assert_int_equal(s.line[0], 2);
    assert_int_equal(s.line[1], 3);
}

/* RFC 4180 quoting: commas, doubled quotes and line breaks inside quoted fields. */
static void test_good_quoting(void **state)
{
    static const char text[] = "serial,device,cn,x_note\r\n"
                               "\"SN-1\",\"pkcs11:token=a\",\"/CN=x, O=evil\",\"two\r\nlines\"\r\n"
                               "SN-2,pkcs11:token=a,\"say \"\"hi\"\"\",\"\"\r\n";
    struct seen s;

    assert_int_equal(parse(text, sizeof(text) - 1, &s), 0);
    assert_int_equal(s.n_rows, 2);
    /* A DN-looking cn is a literal value. */
    assert_string_equal(s.cn[0], "/CN=x, O=evil");
    assert_string_equal(s.x[0], "two\r\nlines");
    assert_string_equal(s.cn[1], "say \"hi\"");
    assert_int_equal(s.line[1], 4); /* the quoted line break counted */
}

/* A UTF-8 BOM at the start is skipped and takes no column; no final line break is fine. */
static void test_good_bom_and_no_final_newline(void **state)
{
    static const char text[] = "\xef\xbb\xbfserial,device,cn\nSN-1,pkcs11:token=a,J\xc3\xbcrgen";
    struct seen s;

    assert_int_equal(parse(text, sizeof(text) - 1, &s), 0);
    assert_int_equal(s.n_rows, 1);
    assert_string_equal(s.serial[0], "SN-1");
    assert_string_equal(s.cn[0], "J\xc3\xbcrgen");
}

/* Feeding one byte at a time gives the same rows as one buffer (state across chunks). */
static void test_chunked_equals_whole(void **state)
{
    static const char text[] = "\xef\xbb\xbfserial,device,x_note,storage,cn\r\n"
                               "A1,pkcs11:token=a,\"x,\"\"y\"\"\r\nz\",a/b,\"q\"\r\n"
                               "A2,pkcs11:token=a,\xe2\x82\xac uro,,\xe2\x82\xac\r\n";
    struct prov_manifest_callbacks cb;
    struct prov_manifest_parser *p = NULL;
    struct seen whole;
    struct seen one;

    assert_int_equal(parse(text, sizeof(text) - 1, &whole), 0);
    memset(&one, 0, sizeof(one));
    cb = (struct prov_manifest_callbacks){.row = on_row, .error = on_error, .ctx = &one};
    assert_int_equal(prov_manifest_parser_new("m.csv", &cb, &p), 0);
    for (size_t i = 0; i + 1 < sizeof(text); i++) {
        assert_int_equal(prov_manifest_parser_feed(p, text + i, 1), 0);
    }
    assert_int_equal(prov_manifest_parser_finish(p), 0);
    prov_manifest_parser_free(p);
    assert_int_equal(one.n_rows, 2);
    assert_memory_equal(&one, &whole, sizeof(one));
}

struct reparse {
    const char *serial;
    const char *cn;
    int calls;
};

static int on_reparsed(void *ctx, struct prov_manifest_parser *p,
                       const struct prov_manifest_row *row)
{
    struct reparse *r = ctx;

    r->calls++;
    assert_string_equal(row->value[PROV_COL_SERIAL], r->serial);
    assert_int_equal(row->n_x, 1);
    assert_string_equal(row->x_values[0], r->cn);
    return 0;
}

/* A row's recorded extent parses again on its own with the validated header. */
static void test_reparse_record(void **state)
{
    static const char text[] = "serial,device,x_note\nA1,pkcs11:token=a,one\n"
                               "A2,pkcs11:token=a,\"t,w\no\"\nA3,pkcs11:token=a,three";
    struct prov_manifest_callbacks cb;
    struct prov_manifest_parser *p = NULL;
    struct seen s;
    struct reparse want = {.serial = "A2", .cn = "t,w\no"};

    memset(&s, 0, sizeof(s));
    cb = (struct prov_manifest_callbacks){.row = on_row, .error = on_error, .ctx = &s};
    assert_int_equal(prov_manifest_parser_new("m.csv", &cb, &p), 0);
    assert_int_equal(prov_manifest_parser_feed(p, text, sizeof(text) - 1), 0);
    assert_int_equal(prov_manifest_parser_finish(p), 0);
    assert_int_equal(s.n_rows, 3);
    assert_int_equal(s.line[1], 3);
    assert_int_equal(prov_manifest_parse_record(p, text + s.offset[1], s.length[1], s.line[1],
                                                on_reparsed, &want),
                     0);
    assert_int_equal(want.calls, 1);
    want = (struct reparse){.serial = "A3", .cn = "three"};
    assert_int_equal(prov_manifest_parse_record(p, text + s.offset[2], s.length[2], s.line[2],
                                                on_reparsed, &want),
                     0);
    /* Bytes that are not the row (the file changed) are refused. */
    assert_int_equal(prov_manifest_parse_record(p, text + s.offset[1], s.length[1] - 3, s.line[1],
                                                on_reparsed, &want),
                     PROV_ERR_INPUT);
    prov_manifest_parser_free(p);
}

/* Each finding class, at its exact position. */
struct bad_case {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen */
    const char *want;
};

static const struct bad_case bad_cases[] = {
    {"empty file", "", 0, "1:1: empty manifest"},
    {"header only", "serial,device\n", 0, "2:1: no device rows"},
    {"unterminated quote", "serial,device\nA1,\"pkcs11:x\n", 0, "2:4: unterminated quoted"},
    {"quote in unquoted", "serial,device\nA\"1,pkcs11:x\n", 0, "2:2: quote inside an unquoted"},
    {"char after quote", "serial,device\n\"A1\"x,pkcs11:x\n", 0, "2:5: character after the"},
    {"too few fields", "serial,device,cn\nA1,pkcs11:x\n", 0, "2:12: row has 2 fields"},
    {"too many fields", "serial,device\nA1,pkcs11:x,extra\n", 0, "2:13: row has 3 fields"},
    {"unknown column", "serial,device,serail\nA1,pkcs11:x,y\n", 0,
     "1:15: unknown column \"serail\""},
    {"upper-case column", "Serial,device\nA1,pkcs11:x\n", 0, "1:1: unknown column \"Serial\""},
    {"missing required", "serial,cn\nA1,x\n", 0, "1:1: required column \"device\""},
    {"duplicate column", "serial,device,cn,cn\nA1,pkcs11:x,a,b\n", 0,
     "1:18: column \"cn\" appears twice"},
    {"duplicate x_ column", "serial,device,x_site,x_site\nA1,pkcs11:x,a,b\n", 0,
     "1:22: column \"x_site\" appears twice"},
    {"bad x_ name", "serial,device,x_\nA1,pkcs11:x,y\n", 0, "1:15: column \"x_\""},
    {"empty column name", "serial,,device\nA1,,pkcs11:x\n", 0, "1:8: empty column name"},
    {"duplicate serial", "serial,device\nA1,pkcs11:x\nA1,pkcs11:y\n", 0,
     "3:1: serial \"A1\" is also used on line 2"},
    {"serials differing in case", "serial,device\nhid-001,pkcs11:x\nHID-001,pkcs11:y\n", 0,
     "3:1: serial \"HID-001\" differs only in letter case from \"hid-001\" on line 2"},
    {"bad serial", "serial,device\nA/1,pkcs11:x\n", 0, "2:1: serial \"A/1\": must match"},
    {"empty serial", "serial,device\n,pkcs11:x\n", 0, "2:1: serial: empty"},
    {"serial too long",
     "serial,device\n"
     "A12345678901234567890123456789012345678901234567890123456789012345,p"
     "kcs11:x\n",
     0, "2:1: serial \"A1234"},
    {"bad device", "serial,device\nA1,/dev/tpm0\n", 0, "2:4: device: must start with"},
    {"bad key", "serial,device,key\nA1,pkcs11:x,ec-p521\n", 0, "2:13: key \"ec-p521\": unknown"},
    {"bad profile", "serial,device,profile\nA1,pkcs11:x,a b\n", 0, "2:13: profile: not a"},
    {"storage traversal", "serial,device,storage\nA1,pkcs11:x,a/../../etc\n", 0,
     "2:13: storage \"a/../../etc\": a \"..\" component"},
    {"storage absolute", "serial,device,storage\nA1,pkcs11:x,/etc/ssl\n", 0,
     "2:13: storage \"/etc/ssl\": an absolute path"},
    {"storage is output dir", "serial,device,storage\nA1,pkcs11:x,./\n", 0,
     "2:13: storage \"./\": the output directory itself"},
    {"storage duplicate", "serial,device,storage\nA1,pkcs11:x,\nA2,pkcs11:x,./A1/\n", 0,
     "3:13: storage directory \"A1\" is also used on line 2"},
    {"storage differing in case", "serial,device,storage\nA1,pkcs11:x,\nA2,pkcs11:x,a1\n", 0,
     "3:13: storage directory \"a1\" differs only in letter case from \"A1\" on line 2"},
    {"cn control", "serial,device,cn\nA1,pkcs11:x,\"a\nb\"\n", 0,
     "2:13: cn: control or direction-changing character U+000A"},
    {"cn bidi override",
     "serial,device,cn\nA1,pkcs11:x,ab\xe2\x80\xae"
     "cd\n",
     0, "2:13: cn: control or direction-changing character U+202E"},
    {"san ip", "serial,device,san_ip\nA1,pkcs11:x,10.0.0.1;10.0.0.300\n", 0,
     "2:13: san_ip: \"10.0.0.300\" is not a valid IP"},
    {"san dns", "serial,device,san_dns\nA1,pkcs11:x,ok.example;bad_name.example\n", 0,
     "2:13: san_dns: \"bad_name.example\""},
    {"san email", "serial,device,san_email\nA1,pkcs11:x,nobody\n", 0,
     "2:13: san_email: \"nobody\""},
    {"san uri", "serial,device,san_uri\nA1,pkcs11:x,no scheme\n", 0,
     "2:13: san_uri: \"no scheme\""},
    {"NUL byte", "serial,device\nA\0001,pkcs11:x\n", 27, "2:2: NUL byte"},
    {"invalid UTF-8", "serial,device,cn\nA1,pkcs11:x,\xff\n", 0, "2:13: invalid UTF-8 (byte 0xFF)"},
    {"overlong UTF-8", "serial,device,cn\nA1,pkcs11:x,\xc0\xaf\n", 0, "2:13: invalid UTF-8"},
    {"truncated UTF-8", "serial,device,cn\nA1,pkcs11:x,\xe2\x82\n", 0,
     "2:13: invalid UTF-8 (truncated"},
    {"surrogate", "serial,device,cn\nA1,pkcs11:x,\xed\xa0\x80\n", 0, "2:13: invalid UTF-8"},
    {"UTF-16 BOM", "\xff\xfes\000e\000", 6, "1:1: UTF-16 or UTF-32 byte-order mark"},
    {"BOM inside",
     "serial,device\n\xef\xbb\xbf"
     "A1,pkcs11:x\n",
     0, "2:1: byte-order mark"},
    {"mixed endings", "serial,device\r\nA1,pkcs11:x\nA2,pkcs11:y\r\n", 0,
     "2:12: line ends with LF but line 1 ends with CRLF"},
    {"bare CR", "serial,device\rA1,pkcs11:x\n", 0, "1:14: carriage return (CR) not followed"},
    {"empty line", "serial,device\nA1,pkcs11:x\n\nA2,pkcs11:y\n", 0, "3:1: empty line"},
    {"empty header line", "\nserial,device\n", 0, "1:1: empty line where the header"},
};

static void test_bad_cases(void **state)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        size_t len = c->len ? c->len : strlen(c->text);
        struct seen s;
        int r = parse(c->text, len, &s);

        if (r != PROV_ERR_INPUT || s.n_findings < 1 ||
            strncmp(s.findings[0], c->want, strlen(c->want)) != 0) {
            fail_msg("%s: got r=%d, %d findings, first \"%s\"; want \"%s\"", c->name, r,
                     s.n_findings, s.n_findings ? s.findings[0] : "", c->want);
        }
    }
}

/* All findings are reported, not only the first, and parsing goes on after each. */
static void test_all_findings_reported(void **state)
{
    static const char text[] = "serial,device,key\n"
                               "A1,pkcs11:x,\n"
                               "A/2,pkcs11:x,\n"
                               "A3,nope,ec-p999\n"
                               "A1,pkcs11:x,\n"
                               "A5,pkcs11:x,\n"
                               "..,pkcs11:x,\n";
    struct seen s;

    assert_int_equal(parse(text, sizeof(text) - 1, &s), PROV_ERR_INPUT);
    assert_int_equal(s.n_findings, 5);
    assert_string_equal(s.findings[0],
                        "3:1: serial \"A/2\": must match [A-Za-z0-9._-]{1,64}, not \".\" or \"..\"");
    assert_true(strncmp(s.findings[1], "4:4: device", 11) == 0);
    assert_true(strncmp(s.findings[2], "4:9: key \"ec-p999\"", 18) == 0);
    assert_true(strncmp(s.findings[3], "5:1: serial \"A1\" is also used on line 2", 39) == 0);
    assert_true(strncmp(s.findings[4], "7:1: serial \"..\": must match", 28) == 0);
    /* The good rows still reach the callback (the caller decides nothing runs). */
    assert_int_equal(s.n_rows, 2);
    assert_non_null(strstr(prov_error_message(), "5 problems"));
}

/* What the callbacks saw; seen first, so that on_row and on_error take the same context. */
struct seen_and_checked {
    struct seen s;
    int n;
    unsigned long line[8];
    unsigned bad[8];
    bool is_valid[8];
    bool has_profile[8];
    bool has_san[8];
};

static int on_check(void *ctx, struct prov_manifest_parser *p, const struct prov_manifest_row *row)
{
    struct seen_and_checked *c = ctx;

    assert_true(c->n < 8);
    c->line[c->n] = row->line;
    c->bad[c->n] = row->bad_columns;
    c->is_valid[c->n] = row->is_valid;
    c->has_profile[c->n] = row->value[PROV_COL_PROFILE] != NULL;
    c->has_san[c->n] = row->value[PROV_COL_SAN_DNS] != NULL;
    c->n++;
    if (row->value[PROV_COL_PROFILE] != NULL && strcmp(row->value[PROV_COL_PROFILE], "nope") == 0) {
        prov_manifest_report(p, &row->pos[PROV_COL_PROFILE], "profile nope: unknown");
    }
    return 0;
}

static int parse_checked(const char *text, struct seen_and_checked *c)
{
    struct prov_manifest_callbacks cb = {.check = on_check, .row = on_row, .error = on_error,
                                         .ctx = c};

    memset(c, 0, sizeof(*c));
    prov_error_clear();
    return prov_manifest_parse("m.csv", text, strlen(text), &cb, NULL);
}

/*
 * The check callback sees every row that splits into the header's columns, also rows with
 * findings and rows under a bad header, with their bad columns marked and NULL: one pass
 * reports every problem. The row callback still gets only rows without any finding.
 */
static void test_check_sees_every_row(void **state)
{
    struct seen_and_checked c;

    assert_int_equal(parse_checked("serial,device,profile,san_dns\n"
                                   "A1,pkcs11:x,nope,bad_name\n"
                                   "A2,pkcs11:x,,\n"
                                   "A3,pkcs11:x,nope,\n"
                                   "A4,pkcs11:x,\"a\"x,\n",
                                   &c),
                     PROV_ERR_INPUT);
    /* Line 5 has a syntax finding: it never splits into columns and is not checked. */
    assert_int_equal(c.n, 3);
    assert_int_equal(c.line[0], 2);
    assert_int_equal(c.bad[0], 1u << PROV_COL_SAN_DNS);
    assert_false(c.is_valid[0]);
    assert_true(c.has_profile[0]);
    assert_false(c.has_san[0]);
    assert_int_equal(c.bad[1], 0);
    assert_true(c.is_valid[1]);
    assert_true(c.is_valid[2]);
    /* The check's findings come in line order with the parser's, also on the bad-SAN row. */
    assert_int_equal(c.s.n_findings, 4);
    assert_true(strncmp(c.s.findings[0], "2:18: san_dns", 13) == 0);
    assert_string_equal(c.s.findings[1], "2:13: profile nope: unknown");
    assert_string_equal(c.s.findings[2], "4:13: profile nope: unknown");
    assert_true(strncmp(c.s.findings[3], "5:16: character after the closing quote", 39) == 0);
    /* Only A2 is without findings; A3's finding came from the check. */
    assert_int_equal(c.s.n_rows, 1);
    assert_string_equal(c.s.serial[0], "A2");

    /* A header with an unknown column: rows are still checked, none is valid. */
    assert_int_equal(parse_checked("serial,device,profile,bogus\nA1,pkcs11:x,nope,\n", &c),
                     PROV_ERR_INPUT);
    assert_int_equal(c.n, 1);
    assert_false(c.is_valid[0]);
    assert_true(c.has_profile[0]);
    assert_int_equal(c.s.n_findings, 2);
    assert_string_equal(c.s.findings[1], "2:13: profile nope: unknown");
    assert_int_equal(c.s.n_rows, 0);
}

/* Limits: a field over 4 KiB, more than 128 fields. Memory stays bounded either way. */
static void test_limits(void **state)
{
    size_t n = PROV_MANIFEST_FIELD_MAX + 64;
    char *text = malloc(n + 64);
    struct seen s;
    size_t len;

    len = (size_t)sprintf(text, "serial,device,cn\nA1,pkcs11:x,");
    memset(text + len, 'c', PROV_MANIFEST_FIELD_MAX + 1);
    len += PROV_MANIFEST_FIELD_MAX + 1;
    text[len++] = '\n';
    assert_int_equal(parse(text, len, &s), PROV_ERR_INPUT);
    assert_string_equal(s.findings[0], "2:13: field longer than 4096 bytes");
    free(text);

    text = malloc(2 * 200 + 64);
    len = (size_t)sprintf(text, "serial,device");
    for (int i = 0; i < 200; i++) {
        text[len++] = ',';
        text[len++] = 'x';
    }
    text[len++] = '\n';
    assert_int_equal(parse(text, len, &s), PROV_ERR_INPUT);
    assert_true(strncmp(s.findings[0], "1:", 2) == 0);
    assert_non_null(strstr(s.findings[0], "more than 128 fields"));
    free(text);
}

/* Serial set at scale: 20,000 distinct serials, then one duplicate found by its first line. */
static void test_many_serials(void **state)
{
    struct prov_manifest_callbacks cb;
    struct prov_manifest_parser *p = NULL;
    struct seen *s = calloc(1, sizeof(*s));
    char line[96];

    cb = (struct prov_manifest_callbacks){.error = on_error, .ctx = s};
    assert_int_equal(prov_manifest_parser_new("big.csv", &cb, &p), 0);
    assert_int_equal(prov_manifest_parser_feed(p, "serial,device\n", 14), 0);
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(line, sizeof(line), "SN-%06d,pkcs11:token=t%d\n", i, i % 7);

        assert_int_equal(prov_manifest_parser_feed(p, line, (size_t)n), 0);
    }
    assert_int_equal(prov_manifest_parser_feed(p, "SN-012345,pkcs11:token=z\n", 25), 0);
    assert_int_equal(prov_manifest_parser_finish(p), PROV_ERR_INPUT);
    assert_int_equal(s->n_findings, 1);
    assert_string_equal(s->findings[0], "20002:1: serial \"SN-012345\" is also used on line 12347");
    assert_int_equal(prov_manifest_row_count(p), 20000);
    prov_manifest_parser_free(p);
    free(s);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf = malloc(1 << 20);

    assert_non_null(fp);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, fp);
    fclose(fp);
    return buf;
}

/*
 * The manifest corpus (tests/data/manifests): every good file parses clean; every bad file
 * produces each "LINE:COLUMN: reason" of its .expect sidecar. Files marked "# needs-config"
 * are found by the config checks of `batch`, which the integration suite runs.
 */
static void test_corpus(void **state)
{
    const char *root = getenv("PROV_SOURCE_ROOT");
    char dir[512];
    struct dirent *ent;
    DIR *d;
    int n_bad = 0;

    assert_non_null(root);
    snprintf(dir, sizeof(dir), "%s/tests/data/manifests/good", root);
    d = opendir(dir);
    assert_non_null(d);
    while ((ent = readdir(d)) != NULL) {
        char path[1024];
        struct seen s;
        size_t len;
        char *text;

        if (strstr(ent->d_name, ".csv") == NULL) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        text = read_file(path, &len);
        if (parse(text, len, &s) != 0) {
            fail_msg("%s: %s", ent->d_name, s.findings[0]);
        }
        free(text);
    }
    closedir(d);

    snprintf(dir, sizeof(dir), "%s/tests/data/manifests/bad", root);
    d = opendir(dir);
    assert_non_null(d);
    while ((ent = readdir(d)) != NULL) {
        char path[1024];
        char want[8][512];
        int n_want;
        struct seen s;
        size_t len;
        char *text;
        FILE *expect;

        if (strstr(ent->d_name, ".csv") == NULL) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%.*s.expect", dir, (int)(strlen(ent->d_name) - 4),
                 ent->d_name);
        expect = fopen(path, "r");
        assert_non_null(expect);
        n_want = 0;
        while (n_want < 8 && fgets(want[n_want], sizeof(want[0]), expect) != NULL) {
            want[n_want][strcspn(want[n_want], "\n")] = '\0';
            if (strcmp(want[n_want], "# needs-config") == 0) {
                n_want = -1;
                break;
            }
            if (want[n_want][0] != '#' && want[n_want][0] != '\0') {
                n_want++;
            }
        }
        if (n_want < 0) {
            fclose(expect);
            continue;
        }
        assert_true(n_want > 0);
        snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        text = read_file(path, &len);
        if (parse(text, len, &s) != PROV_ERR_INPUT) {
            fail_msg("%s: accepted", ent->d_name);
        }
        for (int w = 0; w < n_want; w++) {
            bool found = false;

            for (int i = 0; i < s.n_findings && i < 32 && !found; i++) {
                found = strncmp(s.findings[i], want[w], strlen(want[w])) == 0;
            }
            if (!found) {
                fail_msg("%s: no finding \"%s\" (first: \"%s\")", ent->d_name, want[w],
                         s.findings[0]);
            }
        }
        fclose(expect);
        free(text);
        n_bad++;
    }
    closedir(d);
    assert_true(n_bad >= 30);
}

/* The device schemes and device strings come from the registered backends, as in the binary. */
static int register_backends(void **state)
{
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_basic),
        cmocka_unit_test(test_good_quoting),
        cmocka_unit_test(test_good_bom_and_no_final_newline),
        cmocka_unit_test(test_chunked_equals_whole),
        cmocka_unit_test(test_reparse_record),
        cmocka_unit_test(test_bad_cases),
        cmocka_unit_test(test_all_findings_reported),
        cmocka_unit_test(test_check_sees_every_row),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_many_serials),
        cmocka_unit_test(test_corpus),
    };

    return cmocka_run_group_tests(tests, register_backends, NULL);
}
