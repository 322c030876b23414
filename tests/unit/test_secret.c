/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PIN sources: file (newline handling, permissions warning, no symlinks), env, fd, prompt
 * without a terminal, specs that must never be echoed, and that every buffer that held the
 * PIN is wiped (seen through an OPENSSL_cleanse defined here, which the core links against).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "secret.h"

#define MARKER "pin-MARKER-4711"

static char tmpdir[] = "/tmp/test_secret.XXXXXX";
static int n_wiped_with_marker;

/*
 * Replaces libcrypto's OPENSSL_cleanse for this program: counts the wiped regions that still
 * held the marker PIN, then wipes like the original (volatile stores the compiler keeps).
 */
void OPENSSL_cleanse(void *ptr, size_t len);
void OPENSSL_cleanse(void *ptr, size_t len)
{
    volatile unsigned char *p = ptr;

    if (ptr != NULL && len >= strlen(MARKER) && memmem(ptr, len, MARKER, strlen(MARKER))) {
        n_wiped_with_marker++;
    }
    for (size_t i = 0; i < len; i++) {
        p[i] = 0;
    }
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *name, const void *data, size_t len, mode_t mode, char *path,
                       size_t cap)
{
    int fd;

    snprintf(path, cap, "%s/%s", tmpdir, name);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Loads spec and checks the secret. */
static void expect_secret(const char *spec, const char *want, size_t want_len)
{
    struct prov_secret *s = NULL;

    prov_error_clear();
    if (prov_secret_load(spec, "test PIN", &s) != 0) {
        fail_msg("%s: %s", spec, prov_error_message());
    }
    assert_int_equal(s->len, want_len);
    assert_memory_equal(s->data, want, want_len);
    assert_int_equal(s->data[s->len], '\0');
    prov_secret_free(s);
}

static void expect_error(const char *spec, int err, const char *needle, const char *absent)
{
    struct prov_secret *s = (struct prov_secret *)1;
    const char *msg;

    prov_error_clear();
    assert_int_equal(prov_secret_load(spec, "test PIN", &s), err);
    assert_null(s);
    msg = prov_error_message();
    assert_non_null(msg);
    if (needle != NULL && strstr(msg, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", msg, needle);
    }
    if (absent != NULL && strstr(msg, absent) != NULL) {
        fail_msg("message \"%s\" must not contain \"%s\"", msg, absent);
    }
}

static void file_spec(const char *name, const char *content, size_t len, char *spec, size_t cap)
{
    char path[256];

    write_file(name, content, len, 0600, path, sizeof(path));
    snprintf(spec, cap, "file:%s", path);
}

static void test_file_newlines(void **state)
{
    char spec[300];

    (void)state;
    file_spec("plain", "1234", 4, spec, sizeof(spec));
    expect_secret(spec, "1234", 4);
    file_spec("lf", "1234\n", 5, spec, sizeof(spec));
    expect_secret(spec, "1234", 4);
    file_spec("crlf", "1234\r\n", 6, spec, sizeof(spec));
    expect_secret(spec, "1234", 4);
    /* only one newline is stripped; what is left is not a one-line PIN */
    file_spec("lflf", "1234\n\n", 6, spec, sizeof(spec));
    expect_error(spec, PROV_ERR_PIN_SOURCE, "more than one line", "1234");
    file_spec("two", "1234\n5678\n", 10, spec, sizeof(spec));
    expect_error(spec, PROV_ERR_PIN_SOURCE, "more than one line", "5678");
    /* spaces are part of the PIN */
    file_spec("space", " 12 \n", 5, spec, sizeof(spec));
    expect_secret(spec, " 12 ", 4);
}

static void test_file_errors(void **state)
{
    char spec[300];
    char path[256];
    char big[1100];

    (void)state;
    file_spec("empty", "", 0, spec, sizeof(spec));
    expect_error(spec, PROV_ERR_PIN_SOURCE, "empty", NULL);
    file_spec("nl", "\n", 1, spec, sizeof(spec));
    expect_error(spec, PROV_ERR_PIN_SOURCE, "empty", NULL);
    snprintf(spec, sizeof(spec), "file:%s/does-not-exist", tmpdir);
    expect_error(spec, PROV_ERR_PIN_SOURCE, "does-not-exist", NULL);
    snprintf(spec, sizeof(spec), "file:%s", tmpdir);
    expect_error(spec, PROV_ERR_PIN_SOURCE, tmpdir, NULL);

    memset(big, 'a', sizeof(big));
    file_spec("big", big, 1025, spec, sizeof(spec));
    expect_error(spec, PROV_ERR_PIN_SOURCE, "1024", NULL);
    file_spec("huge", big, sizeof(big), spec, sizeof(spec));
    expect_error(spec, PROV_ERR_PIN_SOURCE, "1024", NULL);
    file_spec("max", big, 1024, spec, sizeof(spec));
    expect_secret(spec, big, 1024);
    big[1024] = '\r';
    big[1025] = '\n';
    file_spec("maxcrlf", big, 1026, spec, sizeof(spec));
    expect_secret(spec, big, 1024);

    /* a symlink is not followed (someone could point it at another secret) */
    file_spec("target", "1234", 4, spec, sizeof(spec));
    snprintf(path, sizeof(path), "%s/link", tmpdir);
    assert_int_equal(symlink(spec + 5, path), 0);
    snprintf(spec, sizeof(spec), "file:%s", path);
    expect_error(spec, PROV_ERR_PIN_SOURCE, "link", NULL);
}

/* A group-readable PIN file works but warns, naming the file and never the PIN. */
static void test_file_permission_warning(void **state)
{
    char path[256];
    char spec[300];
    char log_path[256];
    char logged[1024] = "";
    int saved;
    int log_fd;
    ssize_t n;

    (void)state;
    write_file("shared", MARKER "\n", strlen(MARKER) + 1, 0644, path, sizeof(path));
    snprintf(spec, sizeof(spec), "file:%s", path);
    snprintf(log_path, sizeof(log_path), "%s/stderr.log", tmpdir);
    log_fd = open(log_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(log_fd >= 0);
    fflush(stderr);
    saved = dup(2);
    dup2(log_fd, 2);
    expect_secret(spec, MARKER, strlen(MARKER));
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    n = pread(log_fd, logged, sizeof(logged) - 1, 0);
    close(log_fd);
    assert_true(n > 0);
    logged[n] = '\0';
    assert_non_null(strstr(logged, path));
    assert_null(strstr(logged, MARKER));
}

static void test_env(void **state)
{
    (void)state;
    setenv("TEST_SECRET_PIN", "9876", 1);
    expect_secret("env:TEST_SECRET_PIN", "9876", 4);
    setenv("TEST_SECRET_PIN", "", 1);
    expect_error("env:TEST_SECRET_PIN", PROV_ERR_PIN_SOURCE, "TEST_SECRET_PIN", NULL);
    unsetenv("TEST_SECRET_PIN");
    expect_error("env:TEST_SECRET_PIN", PROV_ERR_PIN_SOURCE, "TEST_SECRET_PIN", NULL);
}

static void test_fd(void **state)
{
    int p[2];
    char spec[32];
    char rest[16] = "";

    (void)state;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "4242\nnext", 9), 9);
    close(p[1]);
    snprintf(spec, sizeof(spec), "fd:%d", p[0]);
    expect_secret(spec, "4242", 4);
    /* nothing after the newline was consumed */
    assert_int_equal(read(p[0], rest, sizeof(rest) - 1), 4);
    assert_string_equal(rest, "next");
    close(p[0]);

    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "no-newline", 10), 10);
    close(p[1]);
    snprintf(spec, sizeof(spec), "fd:%d", p[0]);
    expect_secret(spec, "no-newline", 10);
    close(p[0]);

    assert_int_equal(pipe(p), 0);
    close(p[1]);
    snprintf(spec, sizeof(spec), "fd:%d", p[0]);
    expect_error(spec, PROV_ERR_PIN_SOURCE, "empty", NULL);
    close(p[0]);

    expect_error("fd:999", PROV_ERR_PIN_SOURCE, "fd 999", NULL);
}

static void test_prompt_without_tty(void **state)
{
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY);

    (void)state;
    if (fd >= 0) {
        /* run from a terminal: prompting would wait for a human */
        close(fd);
        skip();
    }
    expect_error("prompt", PROV_ERR_PIN_SOURCE, "terminal", NULL);
}

/* Anything that is not a known scheme may be a PIN typed by mistake: shown as [****]. */
static void test_bad_specs_not_echoed(void **state)
{
    static const char *const secret_like[] = {"735911", "prompt ", "Prompt", "pkcs11:pin=1",
                                              "fiel:/x", "envX9"};

    (void)state;
    for (size_t i = 0; i < sizeof(secret_like) / sizeof(secret_like[0]); i++) {
        expect_error(secret_like[i], PROV_ERR_CONFIG, "\"[****]\"", secret_like[i]);
        assert_non_null(
            strstr(prov_error_message(), "expected file:PATH, env:VAR, fd:N or prompt"));
    }
    expect_error("", PROV_ERR_CONFIG, "expected file:PATH", NULL);
    expect_error(NULL, PROV_ERR_CONFIG, "expected file:PATH", NULL);
    expect_error("file:", PROV_ERR_CONFIG, "\"file:\"", NULL);
    expect_error("fd:x1", PROV_ERR_CONFIG, "\"fd:x1\"", NULL);
    expect_error("fd:-1", PROV_ERR_CONFIG, NULL, NULL);
    expect_error("env:", PROV_ERR_CONFIG, NULL, NULL);
}

static void test_parse_source(void **state)
{
    enum prov_secret_kind kind;
    const char *arg = NULL;

    (void)state;
    prov_error_clear();
    assert_int_equal(prov_secret_parse_source("file:/run/pin", &kind, &arg), 0);
    assert_int_equal(kind, PROV_SECRET_FILE);
    assert_string_equal(arg, "/run/pin");
    assert_int_equal(prov_secret_parse_source("env:PIN", &kind, &arg), 0);
    assert_int_equal(kind, PROV_SECRET_ENV);
    assert_string_equal(arg, "PIN");
    assert_int_equal(prov_secret_parse_source("fd:3", &kind, &arg), 0);
    assert_int_equal(kind, PROV_SECRET_FD);
    assert_string_equal(arg, "3");
    assert_int_equal(prov_secret_parse_source("prompt", &kind, &arg), 0);
    assert_int_equal(kind, PROV_SECRET_PROMPT);
    assert_null(arg);
    assert_int_equal(prov_secret_parse_source("1234", &kind, &arg), PROV_ERR_CONFIG);
    assert_int_equal(prov_secret_parse_source("fd:99999999999", &kind, &arg), PROV_ERR_CONFIG);
    /* a pure check: the caller words the message */
    assert_null(prov_error_message());
}

static void test_wiped_on_success_and_failure(void **state)
{
    struct prov_secret *s = NULL;
    char spec[300];

    (void)state;
    file_spec("marker", MARKER "\n", strlen(MARKER) + 1, spec, sizeof(spec));
    n_wiped_with_marker = 0;
    assert_int_equal(prov_secret_load(spec, "test PIN", &s), 0);
    /* the read buffer */
    assert_true(n_wiped_with_marker >= 1);
    n_wiped_with_marker = 0;
    prov_secret_free(s);
    /* the secret itself */
    assert_int_equal(n_wiped_with_marker, 1);

    file_spec("marker2", MARKER "\nx\n", strlen(MARKER) + 3, spec, sizeof(spec));
    n_wiped_with_marker = 0;
    prov_error_clear();
    assert_int_equal(prov_secret_load(spec, "test PIN", &s), PROV_ERR_PIN_SOURCE);
    assert_true(n_wiped_with_marker >= 1);

    assert_int_equal(prov_secret_from_buf(MARKER, strlen(MARKER), &s), 0);
    n_wiped_with_marker = 0;
    prov_secret_free(s);
    assert_int_equal(n_wiped_with_marker, 1);
    prov_secret_free(NULL);
}

static void test_protect_process(void **state)
{
    (void)state;
    prov_secret_protect_process();
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

/* Sends pin to token: the verdict when the guard lets it through, else the refusal. */
static int send(const struct prov_secret *pin, const char *token, enum prov_secret_verdict v)
{
    struct prov_secret_send send;
    int r;

    prov_error_clear();
    r = prov_secret_send_begin(pin, token, &send);
    if (r == 0) {
        prov_secret_send_end(pin, token, v, &send);
    }
    return r;
}

/*
 * One PIN source, many tokens: once a token rejected it, no other token gets it (nothing is
 * sent: the refusal names the token that rejected it); a source accepted by one token and
 * secrets without a source (fd:, from a buffer) are not held back.
 */
static void test_rejected_source_not_sent_again(void **state)
{
    struct prov_secret *good = NULL;
    struct prov_secret *bad = NULL;
    struct prov_secret *raw = NULL;
    char good_spec[300];
    char bad_spec[300];

    (void)state;
    file_spec("good-pin", "Good-PIN-1", 10, good_spec, sizeof(good_spec));
    file_spec("bad-pin", "Bad-PIN-1", 9, bad_spec, sizeof(bad_spec));
    assert_int_equal(prov_secret_load(good_spec, "device PIN", &good), 0);
    assert_int_equal(prov_secret_load(bad_spec, "device PIN", &bad), 0);
    assert_string_equal(bad->source, bad_spec);
    assert_int_equal(prov_secret_from_buf("Raw-PIN-1", 9, &raw), 0);
    assert_null(raw->source);

    assert_int_equal(send(good, "token t1", PROV_SECRET_ACCEPTED), 0);
    assert_int_equal(send(bad, "token t1", PROV_SECRET_UNKNOWN), 0); /* no verdict: try again */
    assert_int_equal(send(bad, "token t2", PROV_SECRET_REJECTED), 0);
    assert_int_equal(send(bad, "token t3", PROV_SECRET_ACCEPTED), PROV_ERR_PIN_LOCKED);
    assert_non_null(strstr(prov_error_message(), "token t3"));
    assert_non_null(strstr(prov_error_message(), "rejected by token t2"));
    assert_non_null(strstr(prov_error_message(), bad_spec));
    assert_null(strstr(prov_error_message(), "Bad-PIN-1"));
    assert_int_equal(send(good, "token t3", PROV_SECRET_ACCEPTED), 0);
    assert_int_equal(send(raw, "token t3", PROV_SECRET_REJECTED), 0);
    assert_int_equal(send(raw, "token t4", PROV_SECRET_ACCEPTED), 0);
    prov_secret_free(good);
    prov_secret_free(bad);
    prov_secret_free(raw);
}

/*
 * Persisted (stations): a rejection in one process leaves PREFIX.pin-rejected.source-HASH,
 * naming source and token, never the PIN; the next process refuses to send that source and
 * names the file; a fixed source gets through once the file is removed.
 */
static void test_rejection_persisted(void **state)
{
    struct prov_secret *pin = NULL;
    char spec[300];
    char prefix[300];
    char cmd[700];
    char line[512] = "";
    int status = 0;
    pid_t pid;
    FILE *f;

    (void)state;
    snprintf(prefix, sizeof(prefix), "%s/lot.journal.sqlite", tmpdir);
    prov_secret_rejections_persist(prefix);
    file_spec("station-pin", "Station-PIN-2", 13, spec, sizeof(spec));
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the first station: its token rejects the PIN */
        _exit(prov_secret_load(spec, "device PIN", &pin) == 0 &&
                      send(pin, "token s1", PROV_SECRET_REJECTED) == 0
                  ? 0
                  : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(cmd, sizeof(cmd), "cat %s.pin-rejected.source-*", prefix);
    f = popen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    pclose(f);
    assert_non_null(strstr(line, spec));
    assert_non_null(strstr(line, "token s1"));
    assert_null(strstr(line, "Station-PIN-2"));

    /* the next station: nothing sent, the marker named */
    assert_int_equal(prov_secret_load(spec, "device PIN", &pin), 0);
    assert_int_equal(send(pin, "token s2", PROV_SECRET_ACCEPTED), PROV_ERR_PIN_LOCKED);
    assert_non_null(strstr(prov_error_message(), "token s2: not tried"));
    assert_non_null(strstr(prov_error_message(), ".pin-rejected.source-"));
    assert_non_null(strstr(prov_error_message(), "token s1"));
    snprintf(cmd, sizeof(cmd), "rm %s.pin-rejected.source-*", prefix);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(send(pin, "token s2", PROV_SECRET_ACCEPTED), 0);
    prov_secret_free(pin);
    prov_secret_rejections_persist(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_newlines),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_file_permission_warning),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_fd),
        cmocka_unit_test(test_prompt_without_tty),
        cmocka_unit_test(test_bad_specs_not_echoed),
        cmocka_unit_test(test_parse_source),
        cmocka_unit_test(test_wiped_on_success_and_failure),
        cmocka_unit_test(test_protect_process),
        cmocka_unit_test(test_rejected_source_not_sent_again),
        cmocka_unit_test(test_rejection_persisted),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
