/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The value rules of the manifest columns, apart from the CSV machine (manifest_csv.c). The SAN
 * rules are the ones issue.c applies when it builds the certificate: checking them while the
 * manifest is validated means a bad entry stops the lot before anything is issued.
 */
#include "manifest_value.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "keytype.h"
#include "secret.h"

/* Decodes one code point of valid UTF-8 (the decoder let only valid text through). */
static uint32_t next_cp(const char **s)
{
    const unsigned char *u = (const unsigned char *)*s;
    uint32_t cp;
    int n;

    if (u[0] < 0x80) {
        cp = u[0];
        n = 1;
    } else if (u[0] < 0xe0) {
        cp = ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
        n = 2;
    } else if (u[0] < 0xf0) {
        cp = ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
        n = 3;
    } else {
        cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
             ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
        n = 4;
    }
    *s += n;
    return cp;
}

/*
 * Characters that have no business in a name or a path: C0 and C1 controls, DEL, the line
 * and paragraph separators, and the bidirectional overrides that make a value display as
 * something else than it is (CVE-2021-42574). Returns the first one, or 0.
 */
uint32_t prov_manifest_find_control(const char *s)
{
    while (*s) {
        uint32_t cp = next_cp(&s);

        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
            (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
            cp == 0x200f || cp == 0x061c) {
            return cp;
        }
    }
    return 0;
}

static bool is_visible_ascii(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* LDH labels (RFC 1123), an optional leading "*." wildcard label. */
static bool is_dns_name(const char *s)
{
    size_t label = 0;

    if (strlen(s) > 253) {
        return false;
    }
    if (strncmp(s, "*.", 2) == 0) {
        s += 2;
    }
    if (*s == '\0') {
        return false;
    }
    for (const char *c = s;; c++) {
        if (*c == '.' || *c == '\0') {
            if (label == 0 || label > 63 || c[-1] == '-') {
                return false;
            }
            if (*c == '\0') {
                return true;
            }
            label = 0;
            continue;
        }
        if (!(isascii((unsigned char)*c) && isalnum((unsigned char)*c)) &&
            !(*c == '-' && label > 0)) {
            return false;
        }
        label++;
    }
}

static bool is_email(const char *s)
{
    const char *at = strchr(s, '@');

    return is_visible_ascii(s) && at != NULL && at != s && strchr(at + 1, '@') == NULL &&
           at[1] != '\0';
}

static bool is_uri(const char *s)
{
    const char *c = s;

    if (!is_visible_ascii(s) || !(isascii((unsigned char)*c) && isalpha((unsigned char)*c))) {
        return false;
    }
    while (isascii((unsigned char)*c) &&
           (isalnum((unsigned char)*c) || *c == '+' || *c == '-' || *c == '.')) {
        c++;
    }
    return *c == ':' && c[1] != '\0';
}

static bool is_ip(const char *s)
{
    unsigned char addr[16];

    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

bool prov_manifest_san_entry_is_valid(enum prov_manifest_col col, const char *entry)
{
    switch (col) {
    case PROV_COL_SAN_DNS: return is_dns_name(entry);
    case PROV_COL_SAN_URI: return is_uri(entry);
    case PROV_COL_SAN_EMAIL: return is_email(entry);
    case PROV_COL_SAN_IP: return is_ip(entry);
    default: return false;
    }
}

/*
 * The storage directory relative to output_dir, normalized ("a//./b/" is "a/b") so that two
 * spellings of one directory are caught as a duplicate. Returns false for an absolute path,
 * a ".." component or a path that names output_dir itself.
 */
bool prov_manifest_storage_normalize(const char *in, char *out, size_t cap, const char **why)
{
    size_t n = 0;

    *why = NULL;
    if (in[0] == '/') {
        *why = "an absolute path (storage is relative to output_dir)";
        return false;
    }
    for (const char *s = in; *s;) {
        const char *end = strchr(s, '/');
        size_t len = end ? (size_t)(end - s) : strlen(s);

        if (len == 2 && s[0] == '.' && s[1] == '.') {
            *why = "a \"..\" component (storage must stay inside output_dir)";
            return false;
        }
        if (len > 0 && !(len == 1 && s[0] == '.')) {
            if (n + len + 2 > cap) {
                *why = "too long";
                return false;
            }
            if (n > 0) {
                out[n++] = '/';
            }
            memcpy(out + n, s, len);
            n += len;
        }
        s += len;
        if (*s == '/') {
            s++;
        }
    }
    out[n] = '\0';
    if (n == 0) {
        *why = "the output directory itself (name a directory below it)";
        return false;
    }
    return true;
}

bool prov_manifest_is_profile_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64) {
        return false;
    }
    for (; *s; s++) {
        if (!(isascii((unsigned char)*s) && isalnum((unsigned char)*s)) && *s != '_' && *s != '-' &&
            *s != '.') {
            return false;
        }
    }
    return true;
}

/*
 * A batch reads a device's PIN each time it opens the device (the fresh enrollment and
 * every resume path load the source again), so only sources that can be read again and
 * again serve a row: a descriptor is empty after its first read, and a prompt would ask per
 * device.
 */
const char *prov_manifest_pin_source_problem(const char *v)
{
    enum prov_secret_kind kind;
    const char *arg;

    if (prov_secret_parse_source(v, &kind, &arg) < 0) {
        return "not a PIN source (file:PATH or env:VAR; a manifest never holds a PIN)";
    }
    switch (kind) {
    case PROV_SECRET_FILE:
    case PROV_SECRET_ENV: return NULL;
    case PROV_SECRET_FD:
        return "fd: is refused in a manifest: the PIN is read each time the device is opened "
               "and a descriptor can be read once; use file:PATH or env:VAR";
    case PROV_SECRET_PROMPT:
        return "prompt cannot serve a lot (it would ask for every device); use file:PATH or "
               "env:VAR";
    }
    return "not a PIN source";
}

bool prov_manifest_is_key_type(const char *s)
{
    for (int t = PROV_KEY_EC_P256; t <= PROV_KEY_RSA_3072; t++) {
        if (strcmp(s, prov_key_type_name((enum prov_key_type)t)) == 0) {
            return true;
        }
    }
    return false;
}
