/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Durable file I/O: a file is written to a temp file beside it, synced, read back and renamed
 * into place, and the directory that gains or loses an entry is synced too. Also the
 * directories of public files, the checks made before anything is written, and the bounded
 * read of a small file.
 */
#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "error.h"

/* Certificates and JSON are a few KiB; a bigger file is not what it claims to be. */
#define READ_MAX (4 * 1024 * 1024)

int prov_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = 0;

    if (fd < 0 || fsync(fd) != 0) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: cannot sync directory (%s)", dir, strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}

/*
 * The synced file read back and compared with buf, byte for byte (a short or changed write is
 * caught here, before anything is renamed into place). PROV_ERR_STORAGE naming path if not equal.
 */
static int check_read_back(int fd, const unsigned char *buf, size_t len, const char *path)
{
    unsigned char chunk[4096];
    size_t done = 0;

    for (;;) {
        ssize_t n = pread(fd, chunk, sizeof(chunk), (off_t)done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return prov_fail(PROV_ERR_STORAGE, "%s: cannot read back (%s)", path, strerror(errno));
        }
        if (n == 0) {
            break;
        }
        if ((size_t)n > len - done || memcmp(chunk, buf + done, (size_t)n) != 0) {
            return prov_fail(PROV_ERR_STORAGE, "%s: reads back different from what was written",
                             path);
        }
        done += (size_t)n;
    }
    if (done != len) {
        return prov_fail(PROV_ERR_STORAGE, "%s: reads back %zu of %zu bytes", path, done, len);
    }
    return 0;
}

/*
 * Creates "path.tmp.XXXXXX" exclusively (mkostemp) and gives it mode regardless of the umask:
 * *fd open on it, *tmp_out its name. On failure nothing is left behind.
 */
static int create_temp(const char *path, mode_t mode, char **tmp_out, int *fd)
{
    char *tmp = NULL;

    *tmp_out = NULL;
    *fd = -1;
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    *fd = mkostemp(tmp, O_CLOEXEC);
    if (*fd < 0) {
        free(tmp);
        return prov_fail(PROV_ERR_STORAGE, "%s: cannot create temp file (%s)", path,
                         strerror(errno));
    }
    if (fchmod(*fd, mode) != 0) {
        int r = prov_fail(PROV_ERR_STORAGE, "%s: cannot set mode (%s)", path, strerror(errno));

        close(*fd);
        *fd = -1;
        unlink(tmp);
        free(tmp);
        return r;
    }
    *tmp_out = tmp;
    return 0;
}

/* write(2) of all len bytes, through EINTR; -1 with errno on failure. */
static int write_all(int fd, const unsigned char *p, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, p + done, len - done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

/*
 * Writes buf into a new "path.tmp.XXXXXX" (created exclusively by mkostemp, then given mode
 * regardless of the umask), syncs it and reads it back. On success *tmp_out names the temp
 * file; on failure nothing is left behind.
 */
int prov_write_temp_file(const char *path, const void *buf, size_t len, mode_t mode,
                         char **tmp_out)
{
    const unsigned char *p = buf;
    char *tmp = NULL;
    int fd = -1;
    int r;

    *tmp_out = NULL;
    r = create_temp(path, mode, &tmp, &fd);
    if (r < 0) {
        return r;
    }
    r = PROV_ERR_STORAGE;
    if (write_all(fd, p, len) != 0) {
        prov_fail(r, "%s: write failed (%s)", path, strerror(errno));
        goto out;
    }
    if (fsync(fd) != 0) {
        prov_fail(r, "%s: fsync failed (%s)", path, strerror(errno));
        goto out;
    }
    if (check_read_back(fd, p, len, path) < 0) {
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        prov_fail(r, "%s: close failed (%s)", path, strerror(errno));
        goto out;
    }
    fd = -1;
    *tmp_out = tmp;
    tmp = NULL;
    r = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    return r;
}

/* Syncs the directory that holds path's last component ("." or "/" for a top-level one). */
static int fsync_parent(const char *path)
{
    char *parent = dir_of(path);
    int r;

    if (parent == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    r = prov_fsync_dir(parent);
    free(parent);
    return r;
}

int prov_storage_sync_parent(const char *path)
{
    return fsync_parent(path);
}

/* Renames the synced temp file over path (removing it when that fails), syncs the directory. */
static int put_in_place(const char *tmp, const char *path)
{
    if (rename(tmp, path) != 0) {
        int r = prov_fail(PROV_ERR_STORAGE, "%s: cannot rename into place (%s)", path,
                          strerror(errno));

        unlink(tmp);
        return r;
    }
    return fsync_parent(path);
}

int prov_atomic_write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
    char *tmp = NULL;
    int r;

    r = prov_write_temp_file(path, buf, len, mode, &tmp);
    if (r == 0) {
        r = put_in_place(tmp, path);
    }
    free(tmp);
    return r;
}

/* ---- a file written as a stream --------------------------------------------------------- */

struct prov_durable_stream {
    char *path;
    char *tmp;
    int fd;
    FILE *f;
    EVP_MD_CTX *md; /* SHA-256 of what reached the file */
    unsigned long long len;
    int write_errno; /* the first failed write's, 0 when none */
};

/* The stream's sink (fopencookie): the bytes go to the temp file and into the hash. */
static ssize_t stream_write(void *cookie, const char *buf, size_t size)
{
    struct prov_durable_stream *s = cookie;

    if (s->write_errno != 0) {
        errno = s->write_errno;
        return -1;
    }
    if (write_all(s->fd, (const unsigned char *)buf, size) != 0) {
        s->write_errno = errno;
        return -1;
    }
    if (EVP_DigestUpdate(s->md, buf, size) != 1) {
        s->write_errno = ENOMEM;
        errno = ENOMEM;
        return -1;
    }
    s->len += size;
    return (ssize_t)size;
}

int prov_durable_stream_open(const char *path, mode_t mode, struct prov_durable_stream **out)
{
    static const cookie_io_functions_t io = {.write = stream_write};
    struct prov_durable_stream *s = calloc(1, sizeof(*s));
    int r;

    *out = NULL;
    if (s == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    s->fd = -1;
    s->path = strdup(path);
    s->md = EVP_MD_CTX_new();
    if (s->path == NULL || s->md == NULL || EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1) {
        prov_durable_stream_abort(s);
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    r = create_temp(path, mode, &s->tmp, &s->fd);
    if (r < 0) {
        prov_durable_stream_abort(s);
        return r;
    }
    s->f = fopencookie(s, "w", io);
    if (s->f == NULL) {
        prov_durable_stream_abort(s);
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = s;
    return 0;
}

FILE *prov_durable_stream_file(struct prov_durable_stream *s)
{
    return s->f;
}

/* The synced file read back: its length and SHA-256 must be what was written. */
static int check_stream_read_back(struct prov_durable_stream *s)
{
    unsigned char chunk[65536];
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned char got[EVP_MAX_MD_SIZE];
    unsigned int n_want = 0;
    unsigned int n_got = 0;
    unsigned long long done = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int r = 0;

    if (md == NULL || EVP_DigestFinal_ex(s->md, want, &n_want) != 1 ||
        EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", s->path);
    }
    while (r == 0) {
        ssize_t n = pread(s->fd, chunk, sizeof(chunk), (off_t)done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = prov_fail(PROV_ERR_STORAGE, "%s: cannot read back (%s)", s->path,
                          strerror(errno));
        } else if (n == 0) {
            break;
        } else if (EVP_DigestUpdate(md, chunk, (size_t)n) != 1) {
            r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", s->path);
        }
        done += n > 0 ? (unsigned long long)n : 0;
    }
    if (r == 0 && EVP_DigestFinal_ex(md, got, &n_got) != 1) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", s->path);
    }
    if (r == 0 && done != s->len) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: reads back %llu of %llu bytes", s->path, done,
                      s->len);
    }
    if (r == 0 && (n_got != n_want || memcmp(got, want, n_got) != 0)) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: reads back different from what was written",
                      s->path);
    }
    EVP_MD_CTX_free(md);
    return r;
}

int prov_durable_stream_commit(struct prov_durable_stream *s)
{
    FILE *f = s->f;
    int r = PROV_ERR_STORAGE;

    s->f = NULL;
    if (fclose(f) != 0 || s->write_errno != 0) {
        prov_fail(r, "%s: write failed (%s)", s->path,
                  strerror(s->write_errno ? s->write_errno : errno));
        goto out;
    }
    if (fsync(s->fd) != 0) {
        prov_fail(r, "%s: fsync failed (%s)", s->path, strerror(errno));
        goto out;
    }
    r = check_stream_read_back(s);
    if (r < 0) {
        goto out;
    }
    r = close(s->fd);
    s->fd = -1;
    if (r != 0) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: close failed (%s)", s->path, strerror(errno));
        goto out;
    }
    r = put_in_place(s->tmp, s->path);
    free(s->tmp);
    s->tmp = NULL;
out:
    prov_durable_stream_abort(s);
    return r;
}

void prov_durable_stream_abort(struct prov_durable_stream *s)
{
    if (s == NULL) {
        return;
    }
    if (s->f != NULL) {
        fclose(s->f);
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    if (s->tmp != NULL) {
        unlink(s->tmp);
        free(s->tmp);
    }
    EVP_MD_CTX_free(s->md);
    free(s->path);
    free(s);
}

/*
 * Makes dir: 1 when it already exists, 0 when made (and its parent synced), < 0 on error;
 * PROV_ERR_NOT_FOUND, with nothing recorded, for a missing parent when is_quiet_if_no_parent.
 */
static int make_one(const char *dir, bool is_quiet_if_no_parent)
{
    if (prov_mkdir_public(dir) == 0) {
        return fsync_parent(dir);
    }
    if (errno == EEXIST) {
        return 1;
    }
    if (errno == ENOENT && is_quiet_if_no_parent) {
        return PROV_ERR_NOT_FOUND;
    }
    return prov_fail(PROV_ERR_STORAGE, "%s: cannot create directory (%s)", dir, strerror(errno));
}

/* Makes every component of dir from the root down (make_one each). */
static int make_each(const char *dir)
{
    char *p = strdup(dir);
    int r = 0;

    if (p == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s: out of memory", dir);
    }
    for (char *s = p + 1; r >= 0; s++) {
        bool end = *s == '\0';

        if (*s != '/' && !end) {
            continue;
        }
        *s = '\0';
        r = make_one(p, false);
        if (end) {
            break;
        }
        *s = '/';
    }
    free(p);
    return r;
}

/*
 * Creates dir and its missing parents (0755). Each directory that gains an entry is synced,
 * so that what is created here survives a power cut together with the files written into it
 * (the journal records "stored" only after prov_storage_write returns).
 */
int prov_storage_mkdirs(const char *dir)
{
    size_t n = strlen(dir);
    bool is_walk = n <= 1 || dir[n - 1] == '/';
    struct stat st;
    int r = 0;

    /*
     * Once a batch's first device has made the parents, only dir is new: one mkdir. A missing
     * parent, or a path that ends in a slash, takes the walk from the root.
     */
    if (!is_walk) {
        r = make_one(dir, true);
        is_walk = r == PROV_ERR_NOT_FOUND;
    }
    if (is_walk) {
        r = make_each(dir);
    }
    if (r >= 0 && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: not a directory", dir);
    }
    return r < 0 ? r : 0;
}

/*
 * access() rather than a probe file: it sees what the kernel would refuse (a read-only file
 * system, an immutable directory, even for root), and leaves nothing behind if killed.
 */
static int check_writable_dir(const char *dir, const char *what, const char *path)
{
    struct stat st;

    if (stat(dir, &st) != 0) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: directory %s: %s", what, path, dir,
                         strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: %s is not a directory", what, path, dir);
    }
    if (access(dir, W_OK | X_OK) != 0) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: directory %s is not writable: %s", what,
                         path, dir, strerror(errno));
    }
    return 0;
}

int prov_storage_check_output_file(const char *path, const char *what)
{
    const char *slash = strrchr(path, '/');
    struct stat st;
    char *dir;
    int r;

    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        return prov_fail(PROV_ERR_STORAGE, "%s %s: is a directory", what, path);
    }
    dir = slash == NULL ? strdup(".") : slash == path ? strdup("/")
                                                      : strndup(path, (size_t)(slash - path));
    if (dir == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s %s: out of memory", what, path);
    }
    r = check_writable_dir(dir, what, path);
    free(dir);
    return r;
}

int prov_storage_check_output_dir(const char *dir, const char *what)
{
    char *probe = strdup(dir);
    struct stat st;
    int r;

    if (probe == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "%s %s: out of memory", what, dir);
    }
    /* the nearest ancestor that exists decides whether the rest can be made */
    for (;;) {
        char *slash;

        if (stat(probe, &st) == 0 || errno != ENOENT) {
            break;
        }
        slash = strrchr(probe, '/');
        while (slash != NULL && slash > probe && slash[-1] == '/') {
            slash--;
        }
        if (slash == NULL) {
            strcpy(probe, ".");
        } else if (slash == probe) {
            probe[1] = '\0';
        } else {
            *slash = '\0';
        }
    }
    r = check_writable_dir(probe, what, dir);
    free(probe);
    return r;
}

/* Reads a whole small file; err is the code for a missing or unreadable file. */
int prov_read_small_file(const char *path, int err, unsigned char **out, size_t *out_len)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    int fd;
    int r = err;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return prov_fail(err, "%s: %s", path, strerror(errno));
    }
    for (;;) {
        ssize_t n;

        if (len == cap) {
            unsigned char *grown;

            if (cap >= READ_MAX) {
                prov_fail(err, "%s: larger than %d bytes", path, READ_MAX);
                goto out;
            }
            cap = cap ? cap * 2 : 4096;
            grown = realloc(buf, cap + 1);
            if (grown == NULL) {
                r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = grown;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            prov_fail(err, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    if (buf == NULL && (buf = malloc(1)) == NULL) {
        r = prov_fail(PROV_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
    r = 0;
out:
    close(fd);
    free(buf);
    return r;
}

int prov_mkdir_public(const char *path)
{
    if (mkdir(path, 0755) != 0) {
        return -1;
    }
    /* Only a directory this call created: an existing one keeps the mode its owner chose. */
    return chmod(path, 0755);
}
