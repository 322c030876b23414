/* SPDX-License-Identifier: Apache-2.0 */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "error.h"
#include "interrupt.h"
#include "log.h"

/* PINs and passphrases are short; a longer source is the wrong file, not a secret. */
#define SECRET_MAX 1024
/* Room for the secret, a "\r\n" and one byte more to notice a source that is too long. */
#define READ_BUF (SECRET_MAX + 3)

/* Schemes whose prefix is safe to echo: a spec starting with one is not a PIN typo. */
static const char *const schemes[] = {"file:", "env:", "fd:"};

int prov_secret_parse_source(const char *spec, enum prov_secret_kind *kind, const char **arg)
{
    /* Records no error text: the caller knows which file/section/key the spec came from. */
    if (spec == NULL) {
        return PROV_ERR_CONFIG;
    }
    if (strncmp(spec, "file:", 5) == 0 && spec[5] != '\0') {
        *kind = PROV_SECRET_FILE;
        *arg = spec + 5;
        return 0;
    }
    if (strncmp(spec, "env:", 4) == 0 && spec[4] != '\0' && strchr(spec + 4, '=') == NULL) {
        *kind = PROV_SECRET_ENV;
        *arg = spec + 4;
        return 0;
    }
    if (strncmp(spec, "fd:", 3) == 0 && spec[3] != '\0' && strlen(spec + 3) <= 9 &&
        strspn(spec + 3, "0123456789") == strlen(spec + 3)) {
        *kind = PROV_SECRET_FD;
        *arg = spec + 3;
        return 0;
    }
    if (strcmp(spec, "prompt") == 0) {
        *kind = PROV_SECRET_PROMPT;
        *arg = NULL;
        return 0;
    }
    return PROV_ERR_CONFIG;
}

static bool has_scheme_prefix(const char *spec)
{
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        if (strncmp(spec, schemes[i], strlen(schemes[i])) == 0) {
            return true;
        }
    }
    return false;
}

int prov_secret_from_buf(const char *buf, size_t len, struct prov_secret **out)
{
    struct prov_secret *s;

    *out = NULL;
    if (len > SIZE_MAX - sizeof(*s) - 1) {
        return prov_fail(PROV_ERR_NOMEM, "secret of %zu bytes: too large", len);
    }
    s = malloc(sizeof(*s) + len + 1);
    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "secret: out of memory");
    }
    s->source = NULL;
    s->len = len;
    if (len > 0) {
        memcpy(s->data, buf, len);
    }
    s->data[len] = '\0';
    *out = s;
    return 0;
}

void prov_secret_free(struct prov_secret *s)
{
    if (s == NULL) {
        return;
    }
    free(s->source);
    OPENSSL_cleanse(s, sizeof(*s) + s->len + 1);
    free(s);
}

void prov_secret_protect_process(void)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        prov_warn("cannot mark the process non-dumpable: %s", strerror(errno));
    }
}

/*
 * Turns the bytes read into the secret: one trailing "\n" or "\r\n" is stripped (PIN files
 * are usually written by editors and `echo`). What remains must be one non-empty line without
 * NUL bytes, because a wrong PIN costs a login attempt on the token.
 */
static int finish(char *buf, size_t len, const char *what, const char *source,
                  struct prov_secret **out)
{
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r') {
            len--;
        }
    }
    if (len == 0) {
        return prov_fail(PROV_ERR_PIN_SOURCE, "%s: %s is empty", what, source);
    }
    if (len > SECRET_MAX) {
        return prov_fail(PROV_ERR_PIN_SOURCE, "%s: %s: longer than %d bytes", what, source,
                         SECRET_MAX);
    }
    if (memchr(buf, '\n', len) != NULL || memchr(buf, '\0', len) != NULL) {
        return prov_fail(PROV_ERR_PIN_SOURCE,
                         "%s: %s holds more than one line or a NUL byte", what, source);
    }
    return prov_secret_from_buf(buf, len, out);
}

static int load_file(const char *path, const char *what, struct prov_secret **out)
{
    char buf[READ_BUF];
    char source[PATH_MAX + 16];
    size_t len = 0;
    struct stat st;
    int fd = -1;
    int r = PROV_ERR_PIN_SOURCE;

    snprintf(source, sizeof(source), "PIN file %s", path);
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        prov_fail(r, "%s: %s: %s", what, source, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        prov_fail(r, "%s: %s: not a readable file", what, source);
        goto out;
    }
    if (S_ISREG(st.st_mode) && (st.st_mode & (S_IRGRP | S_IROTH)) != 0) {
        prov_warn("%s is readable by group or others (chmod 600 it)", source);
    }
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            prov_fail(r, "%s: %s: %s", what, source, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    r = finish(buf, len, what, source, out);
out:
    if (fd >= 0) {
        close(fd);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

static int load_env(const char *var, const char *what, struct prov_secret **out)
{
    char source[256];
    const char *v = getenv(var);
    size_t len;

    snprintf(source, sizeof(source), "environment variable %s", var);
    if (v == NULL) {
        return prov_fail(PROV_ERR_PIN_SOURCE, "%s: %s is not set", what, source);
    }
    len = strlen(v);
    if (len == 0) {
        return prov_fail(PROV_ERR_PIN_SOURCE, "%s: %s is empty", what, source);
    }
    if (len > SECRET_MAX) {
        return prov_fail(PROV_ERR_PIN_SOURCE, "%s: %s: longer than %d bytes", what, source,
                         SECRET_MAX);
    }
    return prov_secret_from_buf(v, len, out);
}

/*
 * Reads one line, a byte at a time so that nothing after the newline is consumed (a parent
 * may pass several secrets through one pipe). The newline is kept for finish(). Waiting for
 * input (a prompt, an fd: pipe) is the one wait SIGINT/SIGTERM must end: poll(2) returns
 * EINTR whatever SA_RESTART says (interrupt.h), and -EINTR is returned when a signal asked
 * the process to stop.
 */
static int read_line(int fd, char *buf, size_t cap, size_t *len)
{
    *len = 0;
    while (*len < cap) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
            if (prov_interrupt_signal() != 0) {
                return -EINTR;
            }
            continue;
        }
        n = read(fd, buf + *len, 1);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            break;
        }
        *len += 1;
        if (buf[*len - 1] == '\n') {
            break;
        }
    }
    return 0;
}

static int load_fd(const char *num, const char *what, struct prov_secret **out)
{
    char buf[READ_BUF];
    char source[32];
    size_t len = 0;
    int fd = atoi(num);
    int e;
    int r = PROV_ERR_PIN_SOURCE;

    snprintf(source, sizeof(source), "fd %d", fd);
    e = read_line(fd, buf, sizeof(buf), &len);
    if (e == -EINTR) {
        r = prov_interrupt_check(what, "it was read");
        goto out;
    }
    if (e < 0) {
        prov_fail(r, "%s: %s: %s", what, source, strerror(-e));
        goto out;
    }
    r = finish(buf, len, what, source, out);
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

static int load_prompt(const char *what, struct prov_secret **out)
{
    char buf[READ_BUF];
    char prompt[160];
    struct termios saved;
    struct termios quiet;
    bool restore = false;
    size_t len = 0;
    int fd;
    int e;
    int r = PROV_ERR_PIN_SOURCE;

    fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        prov_fail(r, "%s: prompt: no terminal (/dev/tty: %s); use file:, env: or fd:", what,
                  strerror(errno));
        goto out;
    }
    if (tcgetattr(fd, &saved) != 0) {
        prov_fail(r, "%s: prompt: /dev/tty: %s", what, strerror(errno));
        goto out;
    }
    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
        prov_fail(r, "%s: prompt: cannot turn echo off: %s", what, strerror(errno));
        goto out;
    }
    restore = true;
    snprintf(prompt, sizeof(prompt), "Enter %s: ", what);
    if (write(fd, prompt, strlen(prompt)) < 0) {
        prov_fail(r, "%s: prompt: /dev/tty: %s", what, strerror(errno));
        goto out;
    }
    e = read_line(fd, buf, sizeof(buf), &len);
    if (e == -EINTR) {
        r = prov_interrupt_check(what, "it was entered");
        goto out;
    }
    if (e < 0) {
        prov_fail(r, "%s: prompt: /dev/tty: %s", what, strerror(-e));
        goto out;
    }
    r = finish(buf, len, what, "the answer", out);
out:
    if (restore) {
        tcsetattr(fd, TCSAFLUSH, &saved);
    }
    if (fd >= 0) {
        close(fd);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

int prov_secret_load(const char *spec, const char *what, struct prov_secret **out)
{
    enum prov_secret_kind kind;
    const char *arg = NULL;
    int r;

    *out = NULL;
    what = what ? what : "secret";
    /*
     * From the first secret on, the process is not dumpable: no core file and no ptrace or
     * /proc/PID/mem access by other users while a PIN is in memory (it stays so until exit;
     * wiped copies may linger in freed pages).
     */
    prov_secret_protect_process();
    if (prov_secret_parse_source(spec, &kind, &arg) < 0) {
        /* Echoed only when the text is clearly a malformed source, never a possible PIN. */
        bool safe = spec == NULL || spec[0] == '\0' || has_scheme_prefix(spec);

        return prov_fail(PROV_ERR_CONFIG,
                         "%s: PIN source \"%s\": expected file:PATH, env:VAR, fd:N or prompt",
                         what, safe ? (spec ? spec : "") : "[****]");
    }
    switch (kind) {
    case PROV_SECRET_FILE:
    case PROV_SECRET_ENV:
        r = kind == PROV_SECRET_FILE ? load_file(arg, what, out) : load_env(arg, what, out);
        /* the same source again gives the same PIN: it is what prov_secret_send_* key on */
        if (r == 0 && ((*out)->source = strdup(spec)) == NULL) {
            prov_secret_free(*out);
            *out = NULL;
            r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", what);
        }
        return r;
    case PROV_SECRET_FD:
        return load_fd(arg, what, out);
    case PROV_SECRET_PROMPT:
        return load_prompt(what, out);
    }
    return prov_fail(PROV_ERR_INTERNAL, "%s: unhandled PIN source", what);
}

/* ---- one rejection per PIN source ---------------------------------------------------------- */

/* A source some token answered: accepted, or rejected (by rejected_by). */
struct sent_source {
    struct sent_source *next;
    char *source;
    char *rejected_by;
    bool is_accepted;
};

static pthread_mutex_t sources_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sent_source *sources;          /* guarded by sources_lock */
static pthread_mutex_t first_send = PTHREAD_MUTEX_INITIALIZER;
static char *persist_prefix;                 /* set before any thread starts */

void prov_secret_rejections_persist(const char *prefix)
{
    free(persist_prefix);
    persist_prefix = prefix != NULL ? strdup(prefix) : NULL;
}

/* The entry of source (created when is_create), or NULL. Called with sources_lock held. */
static struct sent_source *find_source(const char *source, bool is_create)
{
    struct sent_source *e;

    for (e = sources; e != NULL; e = e->next) {
        if (strcmp(e->source, source) == 0) {
            return e;
        }
    }
    if (!is_create || (e = calloc(1, sizeof(*e))) == NULL) {
        return NULL;
    }
    if ((e->source = strdup(source)) == NULL) {
        free(e);
        return NULL;
    }
    e->next = sources;
    sources = e;
    return e;
}

/* The rejection refusal when source was rejected in this process; 0 otherwise. */
static int refuse_if_rejected(const char *source, const char *token)
{
    struct sent_source *e;
    int r = 0;

    pthread_mutex_lock(&sources_lock);
    e = find_source(source, false);
    if (e != NULL && e->rejected_by != NULL) {
        r = prov_fail(PROV_ERR_PIN_LOCKED,
                      "%s: PIN from %s rejected by %s; not tried on the others (fix the PIN "
                      "source and run again)",
                      token, source, e->rejected_by);
    }
    pthread_mutex_unlock(&sources_lock);
    return r;
}

/*
 * PREFIX.pin-rejected.source-HASH, HASH the hex of the first 8 bytes of SHA-256(source): a
 * name of fixed length for any source text (the file names the source itself). malloc'd,
 * NULL on NOMEM.
 */
static char *persist_path(const char *source)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[17];
    char *path = NULL;

    SHA256((const unsigned char *)source, strlen(source), md);
    for (int i = 0; i < 8; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    if (asprintf(&path, "%s.pin-rejected.source-%s", persist_prefix, hex) < 0) {
        return NULL;
    }
    return path;
}

/* Under PREFIX.pin.lock: refuses when an earlier process recorded source as rejected. */
static int persisted_lock_and_check(const char *source, const char *token, int *lock_fd)
{
    char *lock_path = NULL;
    char *marker = NULL;
    char line[512] = "";
    FILE *f;
    int r = 0;

    *lock_fd = -1;
    if (asprintf(&lock_path, "%s.pin.lock", persist_prefix) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", token);
    }
    *lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX) != 0) {
        r = prov_fail(PROV_ERR_JOURNAL, "%s: %s", lock_path, strerror(errno));
    }
    free(lock_path);
    marker = r == 0 ? persist_path(source) : NULL;
    if (r == 0 && marker == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", token);
    }
    if (r == 0 && (f = fopen(marker, "re")) != NULL) {
        if (fgets(line, sizeof(line), f) != NULL) {
            line[strcspn(line, "\n")] = '\0';
        }
        fclose(f);
        r = prov_fail(PROV_ERR_PIN_LOCKED,
                      "%s: not tried: %s (%s); fix the PIN source, then remove that file", token,
                      line[0] ? line : "the PIN source was rejected in an earlier run", marker);
    }
    free(marker);
    return r;
}

/* Records a rejection for later processes (file: "PIN from SOURCE rejected by TOKEN"). */
static void persist_rejection(const char *source, const char *token)
{
    char *marker = persist_path(source);
    int fd = marker ? open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)
                    : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

    if (f != NULL) {
        fprintf(f, "PIN from %s rejected by %s in an earlier run\n", source, token);
        fclose(f);
    } else if (fd >= 0) {
        close(fd);
    } else if (marker != NULL && errno != EEXIST) {
        prov_warn("%s: cannot record the rejected PIN source: %s", marker, strerror(errno));
    }
    free(marker);
}

int prov_secret_send_begin(const struct prov_secret *pin, const char *token,
                           struct prov_secret_send *send)
{
    struct sent_source *e;
    bool is_accepted;
    int r;

    send->is_exclusive = false;
    send->lock_fd = -1;
    if (pin == NULL || pin->source == NULL) {
        return 0;
    }
    r = refuse_if_rejected(pin->source, token);
    if (r < 0) {
        return r;
    }
    pthread_mutex_lock(&sources_lock);
    e = find_source(pin->source, false);
    is_accepted = e != NULL && e->is_accepted;
    pthread_mutex_unlock(&sources_lock);
    if (!is_accepted) {
        /* the first try of a source is alone: the others wait for its verdict */
        pthread_mutex_lock(&first_send);
        send->is_exclusive = true;
        r = refuse_if_rejected(pin->source, token);
    }
    if (r == 0 && persist_prefix != NULL) {
        r = persisted_lock_and_check(pin->source, token, &send->lock_fd);
    }
    if (r < 0) {
        prov_secret_send_end(pin, token, PROV_SECRET_UNKNOWN, send);
    }
    return r;
}

void prov_secret_send_end(const struct prov_secret *pin, const char *token,
                          enum prov_secret_verdict verdict, struct prov_secret_send *send)
{
    struct sent_source *e;

    if (pin != NULL && pin->source != NULL && verdict != PROV_SECRET_UNKNOWN) {
        pthread_mutex_lock(&sources_lock);
        e = find_source(pin->source, true);
        if (e != NULL && verdict == PROV_SECRET_ACCEPTED) {
            e->is_accepted = true;
        } else if (e != NULL && e->rejected_by == NULL) {
            e->rejected_by = strdup(token);
        }
        pthread_mutex_unlock(&sources_lock);
        if (verdict == PROV_SECRET_REJECTED && persist_prefix != NULL) {
            persist_rejection(pin->source, token);
        }
    }
    if (send->lock_fd >= 0) {
        close(send->lock_fd); /* releases the flock */
        send->lock_fd = -1;
    }
    if (send->is_exclusive) {
        send->is_exclusive = false;
        pthread_mutex_unlock(&first_send);
    }
}
