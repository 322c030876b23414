/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device strings without a token: what a PKCS#11 URI says about the token it names (serial,
 * module), a URI built from those parts with RFC 7512 percent-encoding, whether a URI names
 * the token of a given serial, and the label and id a key URI gives. Parsing is p11-kit's;
 * nothing here loads a module.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "error.h"
#include "pkcs11_internal.h"

/* p11-kit parses without the tool's attribute rules (prov_pkcs11_parse_uri adds those). */
static P11KitUri *parse_plain(const char *uri, P11KitUriType what)
{
    P11KitUri *u = p11_kit_uri_new();

    if (u != NULL && p11_kit_uri_parse(uri, what, u) != P11_KIT_URI_OK) {
        p11_kit_uri_free(u);
        u = NULL;
    }
    return u;
}

/* The token serial a parsed URI gives, without PKCS#11 space padding; "" when none. */
static void uri_serial(P11KitUri *u, char serial[17])
{
    const CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(u);

    prov_pkcs11_trim(ti->serialNumber, sizeof(ti->serialNumber), serial, 17);
}

int prov_pkcs11_parse_name(const char *device_uri, struct prov_device_name *out)
{
    P11KitUri *u = NULL;
    char serial[17];
    const char *module;
    int r;

    memset(out, 0, sizeof(*out));
    r = prov_pkcs11_parse_uri(device_uri, "device", &u);
    if (r < 0) {
        return r;
    }
    uri_serial(u, serial);
    module = p11_kit_uri_get_module_path(u);
    out->identity = serial[0] != '\0' ? strdup(serial) : NULL;
    out->module_path = module != NULL ? strdup(module) : NULL;
    p11_kit_uri_free(u);
    if ((serial[0] != '\0' && out->identity == NULL) || (module != NULL && !out->module_path)) {
        prov_device_name_clear(out);
        return prov_fail(PROV_ERR_NOMEM, "out of memory parsing a PKCS#11 URI");
    }
    return 0;
}

/*
 * Appends value percent-encoded: unreserved characters (RFC 3986) stay, and '/' in a query
 * value (a module path reads as one); every other byte becomes %XX.
 */
static int append_encoded(char **buf, size_t *len, size_t *cap, const char *value, bool is_query)
{
    static const char unreserved[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789-._~";
    size_t need = *len + strlen(value) * 3 + 1;

    if (need > *cap) {
        char *b = realloc(*buf, need);

        if (b == NULL) {
            return PROV_ERR_NOMEM;
        }
        *buf = b;
        *cap = need;
    }
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        if (strchr(unreserved, *p) != NULL || (is_query && *p == '/')) {
            (*buf)[(*len)++] = (char)*p;
        } else {
            *len += (size_t)snprintf(*buf + *len, 4, "%%%02X", *p);
        }
    }
    (*buf)[*len] = '\0';
    return 0;
}

static int append_raw(char **buf, size_t *len, size_t *cap, const char *text)
{
    size_t n = strlen(text);

    if (*len + n + 1 > *cap) {
        char *b = realloc(*buf, *len + n + 1);

        if (b == NULL) {
            return PROV_ERR_NOMEM;
        }
        *buf = b;
        *cap = *len + n + 1;
    }
    memcpy(*buf + *len, text, n + 1);
    *len += n;
    return 0;
}

int prov_pkcs11_build_uri(const struct prov_device_name *name, char **out)
{
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    int r;

    *out = NULL;
    if (name->tcti != NULL) {
        return prov_fail(PROV_ERR_USAGE, "a PKCS#11 URI names no TCTI (\"%s\")", name->tcti);
    }
    r = append_raw(&buf, &len, &cap, "pkcs11:");
    if (r == 0 && name->identity != NULL) {
        r = append_raw(&buf, &len, &cap, "serial=");
        r = r ? r : append_encoded(&buf, &len, &cap, name->identity, false);
    }
    if (r == 0 && name->module_path != NULL) {
        r = append_raw(&buf, &len, &cap, "?module-path=");
        r = r ? r : append_encoded(&buf, &len, &cap, name->module_path, true);
    }
    if (r < 0) {
        free(buf);
        return prov_fail(r, "out of memory building a PKCS#11 URI");
    }
    *out = buf;
    return 0;
}

bool prov_pkcs11_names_identity(const char *device_uri, const char *identity)
{
    P11KitUri *u = parse_plain(device_uri, P11_KIT_URI_FOR_TOKEN);
    char serial[17];
    bool is_named;

    if (u == NULL) {
        return false;
    }
    uri_serial(u, serial);
    is_named = serial[0] != '\0' && identity != NULL && strcmp(serial, identity) == 0;
    p11_kit_uri_free(u);
    return is_named;
}

int prov_pkcs11_key_uri_label_id(const char *key_uri, char **label, unsigned char *id,
                                 size_t *id_len)
{
    P11KitUri *u = parse_plain(key_uri, P11_KIT_URI_FOR_ANY);
    CK_ATTRIBUTE *a;
    size_t cap = *id_len;

    *label = NULL;
    *id_len = 0;
    if (u == NULL) {
        return prov_fail(PROV_ERR_CONFIG, "key URI \"%s\": not a valid PKCS#11 URI", key_uri);
    }
    a = p11_kit_uri_get_attribute(u, CKA_LABEL);
    if (a != NULL && a->ulValueLen > 0) {
        *label = strndup(a->pValue, a->ulValueLen);
        if (*label == NULL) {
            p11_kit_uri_free(u);
            return prov_fail(PROV_ERR_NOMEM, "out of memory parsing a PKCS#11 URI");
        }
    }
    a = p11_kit_uri_get_attribute(u, CKA_ID);
    if (a != NULL && a->ulValueLen > 0 && a->ulValueLen <= cap) {
        memcpy(id, a->pValue, a->ulValueLen);
        *id_len = a->ulValueLen;
    }
    p11_kit_uri_free(u);
    return 0;
}
