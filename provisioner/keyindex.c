/* SPDX-License-Identifier: Apache-2.0 */
#include "keyindex.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <openssl/sha.h>
#include <openssl/x509.h>

#include "error.h"

struct prov_keyindex {
    FILE *f;
    char *path;
};

int prov_keyindex_open(const char *ca_dir, struct prov_keyindex **out)
{
    struct prov_keyindex *ix = calloc(1, sizeof(*ix));
    int fd = -1;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (ix == NULL || asprintf(&ix->path, "%s/issued-keys", ca_dir) < 0) {
        free(ix);
        return prov_fail(r, "issued-keys index: out of memory");
    }
    fd = open(ix->path, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0 || (ix->f = fdopen(fd, "a+")) == NULL) {
        r = prov_fail(PROV_ERR_STORAGE, "%s: %s", ix->path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        prov_keyindex_close(ix);
        return r;
    }
    *out = ix;
    return 0;
}

static int spki_sha256(EVP_PKEY *pub, char out[65])
{
    unsigned char *der = NULL;
    unsigned char md[SHA256_DIGEST_LENGTH];
    int len = i2d_PUBKEY(pub, &der);

    if (len <= 0) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "CSR public key: cannot encode");
    }
    SHA256(der, (size_t)len, md);
    OPENSSL_free(der);
    for (size_t i = 0; i < sizeof(md); i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
    return 0;
}

int prov_keyindex_check(struct prov_keyindex *ix, EVP_PKEY *pub)
{
    char hash[65];
    char line[512];
    int r = spki_sha256(pub, hash);

    if (r < 0) {
        return r;
    }
    rewind(ix->f);
    while (fgets(line, sizeof(line), ix->f) != NULL) {
        char *serial;

        if (strncmp(line, hash, 64) != 0 || line[64] != ' ') {
            continue;
        }
        /* "HASH CERT-SERIAL DEVICE-SERIAL": name the device the key was certified for. */
        serial = strrchr(line, ' ');
        serial[strcspn(serial, "\n")] = '\0';
        return prov_fail(PROV_ERR_ALREADY_ISSUED,
                         "CSR public key was already certified (for %s; %s)", serial + 1,
                         ix->path);
    }
    if (ferror(ix->f)) {
        return prov_fail(PROV_ERR_STORAGE, "%s: read error", ix->path);
    }
    return 0;
}

int prov_keyindex_add(struct prov_keyindex *ix, EVP_PKEY *pub, const char *cert_serial,
                      const char *serial)
{
    char hash[65];
    int r = spki_sha256(pub, hash);

    if (r < 0) {
        return r;
    }
    if (fprintf(ix->f, "%s %s %s\n", hash, cert_serial, serial) < 0 || fflush(ix->f) != 0 ||
        fsync(fileno(ix->f)) != 0) {
        return prov_fail(PROV_ERR_STORAGE, "%s: cannot record the certified key: %s", ix->path,
                         strerror(errno));
    }
    return 0;
}

void prov_keyindex_close(struct prov_keyindex *ix)
{
    if (ix == NULL) {
        return;
    }
    if (ix->f != NULL) {
        fclose(ix->f); /* closing the descriptor releases the lock */
    }
    free(ix->path);
    free(ix);
}
