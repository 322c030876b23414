/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A measurement aid for bench/run.sh, never for production: preloaded (LD_PRELOAD) into one
 * benchmark run of the tool, it turns fsync, fdatasync, syncfs and sync_file_range into
 * counted no-ops, so that the run shows what the tool's durable writes (journal commits,
 * storage files and directories) cost on a store, measured beside the normal run. SoftHSM2
 * itself does not sync, so only the tool's syncs are removed. At exit it appends
 * "syncs=N\n" to the file named by $NOSYNC_COUNT (one write(2), O_APPEND).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned long syncs;

static int skipped(void)
{
    __atomic_add_fetch(&syncs, 1, __ATOMIC_RELAXED);
    return 0;
}

int fsync(int fd)
{
    (void)fd;
    return skipped();
}

int fdatasync(int fd)
{
    (void)fd;
    return skipped();
}

int syncfs(int fd)
{
    (void)fd;
    return skipped();
}

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags)
{
    (void)fd;
    (void)offset;
    (void)nbytes;
    (void)flags;
    return skipped();
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("NOSYNC_COUNT");
    char line[64];
    int n, fd;

    if (path == NULL || path[0] == '\0') {
        return;
    }
    n = snprintf(line, sizeof(line), "syncs=%lu\n", __atomic_load_n(&syncs, __ATOMIC_RELAXED));
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (n > 0 && write(fd, line, (size_t)n) < 0) {
            /* a count that cannot be written shows up as a missing line */
        }
        close(fd);
    }
}
