/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replays inputs through a fuzz target without libFuzzer, so that gcc builds run the seed
 * corpus as an ordinary test: each argument is a file or a directory of files (not
 * recursive); no argument reads one input from stdin.
 */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_BYTES (8 * 1024 * 1024)

static int replay_stream(FILE *f, const char *name)
{
    uint8_t *buf = malloc(REPLAY_MAX_BYTES);
    size_t n;

    if (buf == NULL) {
        return 1;
    }
    n = fread(buf, 1, REPLAY_MAX_BYTES, f);
    if (ferror(f)) {
        fprintf(stderr, "replay: %s: read error\n", name);
        free(buf);
        return 1;
    }
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    int r;

    if (f == NULL) {
        fprintf(stderr, "replay: %s: cannot open\n", path);
        return 1;
    }
    r = replay_stream(f, path);
    fclose(f);
    return r;
}

int main(int argc, char **argv)
{
    int failures = 0;
    int n = 0;

    if (argc < 2) {
        return replay_stream(stdin, "stdin");
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        DIR *d;
        struct dirent *ent;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: not found\n", argv[i]);
            failures++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failures += replay_file(argv[i]);
            n++;
            continue;
        }
        d = opendir(argv[i]);
        while (d != NULL && (ent = readdir(d)) != NULL) {
            char path[4096];

            if (ent->d_name[0] == '.') {
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s", argv[i], ent->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                failures += replay_file(path);
                n++;
            }
        }
        if (d != NULL) {
            closedir(d);
        }
    }
    printf("replayed %d inputs, %d failures\n", n, failures);
    return failures ? 1 : 0;
}
