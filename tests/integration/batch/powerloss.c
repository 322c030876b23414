/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A test aid, never for production: preloaded (LD_PRELOAD) into one run of the tool, it makes
 * the process's end by _exit (the crash hooks, PROVISIONER_TEST_CRASH_AT and the CA index's)
 * look like a power cut to the SQLite write-ahead logs: every "*-wal" file the process synced
 * loses what was appended to it after its last fsync/fdatasync, as a disk with a volatile
 * write cache may lose it. A commit that did not sync its WAL (synchronous=NORMAL) is then
 * gone, and one that did is kept: test_batch_powerloss.sh shows that
 * the journal resumes from what such a cut leaves, and that nothing the disk keeps is ahead
 * of a record it lost.
 *
 * The model holds for a WAL that only grows between syncs (SQLite appends frames and rewrites
 * the file from its start only after a checkpoint, which a small lot does not reach); a WAL
 * found shorter than its synced size at the cut is reported (POWERLOSS_LOG) as not modelled.
 * Every cut is logged to $POWERLOSS_LOG as "cut PATH SYNCED_SIZE SIZE_BEFORE".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_WALS 16

struct wal {
    char path[4096];
    off_t synced;
};

static struct wal wals[MAX_WALS];
static int n_wals;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* After a successful sync of fd: a WAL's size is what survives a cut from now on. */
static void note_synced(int fd)
{
    char link[64];
    char path[4096];
    struct stat st;
    ssize_t n;
    size_t len;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0 || fstat(fd, &st) != 0) {
        return;
    }
    path[n] = '\0';
    len = (size_t)n;
    if (len < 4 || strcmp(path + len - 4, "-wal") != 0) {
        return;
    }
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_wals; i++) {
        if (strcmp(wals[i].path, path) == 0) {
            wals[i].synced = st.st_size;
            pthread_mutex_unlock(&lock);
            return;
        }
    }
    if (n_wals < MAX_WALS) {
        memcpy(wals[n_wals].path, path, len + 1);
        wals[n_wals].synced = st.st_size;
        n_wals++;
    }
    pthread_mutex_unlock(&lock);
}

/* The real NAME (looked up once into *real) on fd; what it synced noted when it succeeds. */
static int sync_and_note(int (**real)(int), const char *name, int fd)
{
    int r;

    if (*real == NULL) {
        *real = (int (*)(int))dlsym(RTLD_NEXT, name);
    }
    r = (*real)(fd);
    if (r == 0) {
        note_synced(fd);
    }
    return r;
}

int fsync(int fd)
{
    static int (*real)(int);

    return sync_and_note(&real, "fsync", fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);

    return sync_and_note(&real, "fdatasync", fd);
}

static void log_line(const char *line)
{
    const char *path = getenv("POWERLOSS_LOG");
    int fd;

    if (path == NULL || path[0] == '\0') {
        return;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, line, strlen(line)) < 0) {
            /* a missing line fails the test that reads the log */
        }
        close(fd);
    }
}

/* The cut: each WAL back to its synced size (the other threads are stopped with it). */
void _exit(int status)
{
    static void (*real)(int);
    char line[4200];
    const char *path;
    struct stat st;

    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_wals; i++) {
        path = wals[i].path;
        if (stat(path, &st) != 0) {
            continue;
        }
        if (st.st_size < wals[i].synced) {
            snprintf(line, sizeof(line), "not-modelled %.4095s %lld %lld\n", path,
                     (long long)wals[i].synced, (long long)st.st_size);
        } else {
            snprintf(line, sizeof(line), "cut %.4095s %lld %lld\n", path,
                     (long long)wals[i].synced, (long long)st.st_size);
            if (truncate(path, wals[i].synced) != 0) {
                snprintf(line, sizeof(line), "not-modelled %.4095s: truncate failed\n", path);
            }
        }
        log_line(line);
    }
    real = (void (*)(int))dlsym(RTLD_NEXT, "_exit");
    real(status);
    abort(); /* not reached: _exit does not return */
}
