/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The station's configuration: the [station] section of the config file, the device table
 * (USB vendor:product -> PKCS#11 module) and the instance name -> device string mapping.
 * The table format is described in udev/README.md; udev/gen-rules.sh makes the udev rules
 * from the same file, so the rules and the station always agree on what a token is.
 */
#include "station.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/conf.h>
#include <openssl/err.h>

#include "backend.h"
#include "error.h"

#define TABLE_LINE_MAX 1024

static const char *const station_keys[] = {
    "manifest", "journal", "mode",        "device_table", "tpm_tcti",
    "prove",    "exclude", "device_wait", "name",     NULL,
};

void prov_station_config_clear(struct prov_station_config *sc)
{
    free(sc->manifest);
    free(sc->journal);
    free(sc->mode);
    free(sc->device_table);
    free(sc->tpm_tcti);
    free(sc->prove);
    free(sc->exclude);
    memset(sc, 0, sizeof(*sc));
}

static bool is_known(const char *name)
{
    for (size_t i = 0; station_keys[i] != NULL; i++) {
        if (strcmp(station_keys[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* One value; paths resolved against the config's directory. */
static int take(const struct prov_config *cfg, const char *name, bool is_path, char **out)
{
    const char *v = NCONF_get_string(cfg->conf, "station", name);

    ERR_clear_error();
    if (v == NULL || v[0] == '\0') {
        return 0;
    }
    *out = is_path ? prov_config_path(cfg, v) : strdup(v);
    return *out ? 0 : PROV_ERR_NOMEM;
}

/* device_wait: whole seconds, 0 (do not wait) to PROV_STATION_DEVICE_WAIT_MAX. */
static int take_wait(const struct prov_config *cfg, long *out)
{
    const char *v = NCONF_get_string(cfg->conf, "station", "device_wait");
    char *end = NULL;
    long n;

    ERR_clear_error();
    *out = PROV_STATION_DEVICE_WAIT;
    if (v == NULL || v[0] == '\0') {
        return 0;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || !isdigit((unsigned char)v[0]) ||
        n > PROV_STATION_DEVICE_WAIT_MAX) {
        return prov_fail(PROV_ERR_CONFIG, "%s: [station] device_wait \"%s\": seconds from 0 to %d",
                         cfg->path, v, PROV_STATION_DEVICE_WAIT_MAX);
    }
    *out = n;
    return 0;
}

int prov_station_config_load(const struct prov_config *cfg, struct prov_station_config *out)
{
    STACK_OF(CONF_VALUE) *values = cfg->conf ? NCONF_get_section(cfg->conf, "station") : NULL;
    int r = 0;

    memset(out, 0, sizeof(*out));
    out->device_wait = PROV_STATION_DEVICE_WAIT;
    ERR_clear_error();
    for (int i = 0; values != NULL && i < sk_CONF_VALUE_num(values); i++) {
        const CONF_VALUE *v = sk_CONF_VALUE_value(values, i);

        if (!is_known(v->name)) {
            return prov_fail(PROV_ERR_CONFIG, "%s: [station] key \"%s\": unknown key", cfg->path,
                             v->name);
        }
    }
    if (values == NULL) {
        return 0;
    }
    r = take(cfg, "manifest", true, &out->manifest);
    r = r ? r : take(cfg, "journal", true, &out->journal);
    r = r ? r : take(cfg, "mode", false, &out->mode);
    r = r ? r : take(cfg, "device_table", true, &out->device_table);
    r = r ? r : take(cfg, "tpm_tcti", false, &out->tpm_tcti);
    r = r ? r : take(cfg, "prove", false, &out->prove);
    r = r ? r : take(cfg, "exclude", false, &out->exclude);
    r = r ? r : take_wait(cfg, &out->device_wait);
    if (r < 0) {
        prov_station_config_clear(out);
    }
    return r;
}

/* ---- the device table ------------------------------------------------------------------- */

/* One table entry; strings point into the caller's line buffer. */
struct table_entry {
    const char *vid_pid;
    const char *module;
    const char *match;
};

static char *next_field(char **p)
{
    char *s = *p;
    char *start;

    while (*s == ' ' || *s == '\t') {
        s++;
    }
    if (*s == '\0' || *s == '#' || *s == '\n' || *s == '\r') {
        *p = s;
        return NULL;
    }
    start = s;
    while (*s != '\0' && !isspace((unsigned char)*s)) {
        s++;
    }
    if (*s != '\0') {
        *s++ = '\0';
    }
    *p = s;
    return start;
}

static bool is_vid_pid(const char *s)
{
    if (strlen(s) != 9 || s[4] != ':') {
        return false;
    }
    for (int i = 0; i < 9; i++) {
        if (i != 4 && !isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/*
 * "VVVV:PPPP MODULE [MATCH [NAME...]]" per line, '#' comments. Finds vid_pid; on a hit
 * *module and *match are malloc'd. A malformed line is an error naming FILE:LINE.
 */
static int table_lookup(const char *path, const char *vid_pid, char **module, char **match)
{
    FILE *f = fopen(path, "re");
    char line[TABLE_LINE_MAX];
    unsigned long n = 0;
    int r = 0;

    *module = NULL;
    *match = NULL;
    if (f == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "device table %s: %s", path, strerror(errno));
    }
    while (r == 0 && *module == NULL && fgets(line, sizeof(line), f) != NULL) {
        char *p = line;
        struct table_entry e;

        n++;
        e.vid_pid = next_field(&p);
        if (e.vid_pid == NULL) {
            continue;
        }
        e.module = next_field(&p);
        e.match = next_field(&p);
        if (!is_vid_pid(e.vid_pid) || e.module == NULL ||
            (e.match != NULL && strcmp(e.match, "usb-serial") != 0 &&
             strcmp(e.match, "only-token") != 0)) {
            r = prov_fail(PROV_ERR_CONFIG,
                          "%s:%lu: expected \"VVVV:PPPP MODULE [usb-serial|only-token] [NAME]\"",
                          path, n);
        } else if (strcasecmp(e.vid_pid, vid_pid) == 0) {
            *module = strdup(e.module);
            *match = strdup(e.match ? e.match : "usb-serial");
            r = *module && *match ? 0 : PROV_ERR_NOMEM;
        }
    }
    fclose(f);
    if (r == 0 && *module == NULL) {
        r = prov_fail(PROV_ERR_CONFIG, "device table %s: %s is not listed", path, vid_pid);
    }
    if (r < 0) {
        free(*module);
        free(*match);
        *module = NULL;
        *match = NULL;
    }
    return r;
}

/* ---- instance names --------------------------------------------------------------------- */

static bool is_serial_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

static bool is_number(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!isdigit((unsigned char)*s)) {
            return false;
        }
    }
    return true;
}

/* "tpm2:" and the TCTI template with %i replaced by the instance name (tpmrmN). */
static int tpm_device(const struct prov_station_config *sc, const char *instance, char **out)
{
    const char *tmpl = sc->tpm_tcti ? sc->tpm_tcti : "device:/dev/%i";
    size_t cap = strlen(tmpl) + strlen(instance) * 4 + 8;
    struct prov_device_name name = {.tcti = malloc(cap)};
    size_t o = 0;
    int r;

    if (name.tcti == NULL) {
        return PROV_ERR_NOMEM;
    }
    for (const char *p = tmpl; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 'i') {
            o += (size_t)snprintf(name.tcti + o, cap - o, "%s", instance);
            p++;
        } else {
            name.tcti[o++] = *p;
        }
    }
    name.tcti[o] = '\0';
    r = prov_device_uri_build("tpm2", &name, out);
    prov_device_name_clear(&name);
    return r;
}

int prov_station_device_for(const struct prov_config *cfg, const struct prov_station_config *sc,
                            const char *instance, char **device_uri, bool *is_pkcs11_any)
{
    char vid_pid[10];
    const char *usb_serial;
    char *module = NULL;
    char *match = NULL;
    int r;

    *device_uri = NULL;
    *is_pkcs11_any = false;
    if (strncmp(instance, "tpmrm", 5) == 0 && is_number(instance + 5)) {
        return tpm_device(sc, instance, device_uri);
    }
    if (strncmp(instance, "usb-", 4) != 0 || strlen(instance) < 15 || instance[13] != '-') {
        return prov_fail(PROV_ERR_USAGE,
                         "instance %s: expected tpmrmN or usb-VVVV:PPPP-SERIAL (the name udev "
                         "gives the unit)",
                         instance);
    }
    memcpy(vid_pid, instance + 4, 9);
    vid_pid[9] = '\0';
    usb_serial = instance + 14;
    for (const char *p = usb_serial; *p != '\0'; p++) {
        if (!is_serial_char(*p)) {
            return prov_fail(PROV_ERR_USAGE, "instance %s: the USB serial has a character outside "
                             "[A-Za-z0-9._-]", instance);
        }
    }
    if (!is_vid_pid(vid_pid)) {
        return prov_fail(PROV_ERR_USAGE, "instance %s: \"%s\" is not VVVV:PPPP (hex)", instance,
                         vid_pid);
    }
    if (sc->device_table == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "instance %s: no [station] device_table in %s", instance,
                         cfg->path);
    }
    r = table_lookup(sc->device_table, vid_pid, &module, &match);
    if (r == 0) {
        /* only-token: whichever token the module shows; else the token with the USB serial */
        const struct prov_device_name name = {
            .identity = strcmp(match, "only-token") == 0 ? NULL : (char *)usb_serial,
            .module_path = module,
        };

        *is_pkcs11_any = name.identity == NULL;
        r = prov_device_uri_build("pkcs11", &name, device_uri);
    }
    free(module);
    free(match);
    return r;
}

/* ---- manifest rows ---------------------------------------------------------------------- */

bool prov_station_row_names(const char *row_device, const char *backend, const char *identity)
{
    return prov_device_names_identity(row_device, backend, identity);
}

bool prov_station_is_excluded(const struct prov_station_config *sc, const char *identity)
{
    const char *p = sc->exclude;
    size_t n = identity != NULL ? strlen(identity) : 0;

    while (p != NULL && n > 0 && *p != '\0') {
        size_t len;

        p += strspn(p, " \t,");
        len = strcspn(p, " \t,");
        if (len == n && strncmp(p, identity, n) == 0) {
            return true;
        }
        p += len;
    }
    return false;
}
