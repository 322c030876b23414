/* SPDX-License-Identifier: Apache-2.0 */
#include "pkcs11.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/uri.h>

#include "error.h"
#include "log.h"
#include "pkcs11_internal.h"
#include "prov_build_config.h"

/*
 * Devices: open (find the token named by an RFC 7512 URI, exactly), login (token flags
 * first, a rejected PIN never sent twice), identity, close. Key operations are in
 * pkcs11_key.c, public key conversion in pkcs11_pub.c, the module cache in pkcs11_module.c.
 */

void prov_pkcs11_trim(const unsigned char *field, size_t field_len, char *buf, size_t len)
{
    size_t n = field_len < len - 1 ? field_len : len - 1;

    memcpy(buf, field, n);
    while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\0')) {
        n--;
    }
    buf[n] = '\0';
}

int prov_pkcs11_fail_rv(struct prov_device *dev, const char *fn, CK_RV rv)
{
    return prov_fail(prov_pkcs11_rv_to_err(rv), "%s: %s: %s (0x%08lx)", dev->name, fn,
                     prov_pkcs11_rv_name(rv), (unsigned long)rv);
}

const char *prov_pkcs11_shown_uri(const char *uri)
{
    if (uri != NULL && strstr(uri, "pin-value") != NULL) {
        return "(URI with pin-value, not shown)";
    }
    return uri ? uri : "";
}

static bool handles(const char *device_uri)
{
    return device_uri != NULL && strncmp(device_uri, "pkcs11:", 7) == 0;
}

/* What the URI asked for, for "not found" messages: token "x" serial y ... */
static void describe_wanted(const CK_TOKEN_INFO *want, char *buf, size_t len)
{
    char label[33], serial[17], manuf[33], model[17];

    prov_pkcs11_trim(want->label, sizeof(want->label), label, sizeof(label));
    prov_pkcs11_trim(want->serialNumber, sizeof(want->serialNumber), serial, sizeof(serial));
    prov_pkcs11_trim(want->manufacturerID, sizeof(want->manufacturerID), manuf, sizeof(manuf));
    prov_pkcs11_trim(want->model, sizeof(want->model), model, sizeof(model));
    snprintf(buf, len, "token%s%s%s%s%s%s%s%s%s", label[0] ? " \"" : "", label,
             label[0] ? "\"" : "", serial[0] ? " serial=" : "", serial,
             manuf[0] ? " manufacturer=" : "", manuf, model[0] ? " model=" : "", model);
}

static int get_slots(CK_FUNCTION_LIST *fl, const char *module, CK_SLOT_ID **out, CK_ULONG *n)
{
    CK_SLOT_ID *slots = NULL;
    CK_RV rv;
    int r = PROV_ERR_DEVICE;

    *out = NULL;
    /* The list can grow between the two calls (hotplug): retry a few times. */
    for (int tries = 0; tries < 4; tries++) {
        rv = fl->C_GetSlotList(CK_TRUE, NULL, n);
        if (rv != CKR_OK) {
            break;
        }
        free(slots);
        slots = calloc(*n + 1, sizeof(*slots));
        if (slots == NULL) {
            r = prov_fail(PROV_ERR_NOMEM, "out of memory listing slots");
            goto out;
        }
        rv = fl->C_GetSlotList(CK_TRUE, slots, n);
        if (rv != CKR_BUFFER_TOO_SMALL) {
            break;
        }
    }
    if (rv != CKR_OK) {
        r = prov_fail(prov_pkcs11_rv_to_err(rv), "PKCS#11 module %s: C_GetSlotList: %s (0x%08lx)",
                      module, prov_pkcs11_rv_name(rv), (unsigned long)rv);
        goto out;
    }
    *out = slots;
    slots = NULL;
    r = 0;
out:
    free(slots);
    return r;
}

static bool is_wanted(P11KitUri *uri, const CK_TOKEN_INFO *ti)
{
    return (ti->flags & CKF_TOKEN_INITIALIZED) && p11_kit_uri_match_token_info(uri, ti);
}

/*
 * The look-up from the token info the last full look-up kept (prov_pkcs11_scan_get), when
 * the module still shows the same slots: the one slot whose kept info matches the URI is
 * asked again, and only it. Opening a device then costs one C_GetTokenInfo instead of one
 * per slot: with 16 sockets each open asked 16 parts, and a module that answers a slot
 * query only between its part's commands made every open wait for every busy part.
 * false (nothing set) when no kept info, no match, more than one match, or the slot now
 * holds another token: the caller then asks every slot, which also gives the errors.
 * What this does not see: another slot of an unchanged slot list re-initialized, while the
 * process runs, with a label that makes the URI ambiguous (a rescan, or the next run, sees it).
 */
static bool find_kept_token(CK_FUNCTION_LIST *fl, P11KitUri *uri, const CK_SLOT_ID *slots,
                            CK_ULONG n, CK_TOKEN_INFO *kept, CK_SLOT_ID *slot, CK_TOKEN_INFO *info)
{
    CK_ULONG found = n;
    CK_TOKEN_INFO ti;

    if (!prov_pkcs11_scan_get(fl, slots, n, kept)) {
        return false;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        if (is_wanted(uri, &kept[i])) {
            if (found != n) {
                return false;
            }
            found = i;
        }
    }
    if (found == n || fl->C_GetTokenInfo(slots[found], &ti) != CKR_OK || !is_wanted(uri, &ti)) {
        return false;
    }
    *slot = slots[found];
    *info = ti;
    return true;
}

/*
 * The one initialized token whose label/serial/manufacturer/model equal the URI's (p11-kit
 * compares the padded fields whole: "dev-1" never matches "dev-10"). Slot ids are not used:
 * they change on re-init and hotplug (doc/platform.md, "Token labels match by prefix; slot ids
 * change").
 */
static int find_token(CK_FUNCTION_LIST *fl, const char *module, P11KitUri *uri, CK_SLOT_ID *slot,
                      CK_TOKEN_INFO *info)
{
    CK_SLOT_ID *slots = NULL;
    CK_TOKEN_INFO *kept = NULL;
    CK_ULONG n = 0, matches = 0, unreadable = 0;
    CK_RV unreadable_rv = CKR_OK;
    CK_TOKEN_INFO ti;
    char wanted[160];
    int r;

    r = get_slots(fl, module, &slots, &n);
    if (r < 0) {
        goto out;
    }
    kept = calloc(n + 1, sizeof(*kept));
    if (kept != NULL && find_kept_token(fl, uri, slots, n, kept, slot, info)) {
        goto out;
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_RV rv = fl->C_GetTokenInfo(slots[i], &ti);

        if (rv != CKR_OK) {
            prov_debug("pkcs11", "slot %lu: C_GetTokenInfo: %s; skipped", (unsigned long)slots[i],
                       prov_pkcs11_rv_name(rv));
            unreadable++;
            unreadable_rv = rv;
            continue;
        }
        if (kept != NULL) {
            kept[i] = ti;
        }
        if (!is_wanted(uri, &ti)) {
            continue;
        }
        if (matches++ == 0) {
            *slot = slots[i];
            *info = ti;
        }
    }
    if (kept != NULL && unreadable == 0) {
        prov_pkcs11_scan_put(fl, slots, n, kept);
    }
    describe_wanted(p11_kit_uri_get_token_info(uri), wanted, sizeof(wanted));
    if (matches == 0 && unreadable > 0) {
        /* the token may be in a slot that could not be read: say so, it is not just absent */
        r = prov_fail(PROV_ERR_NOT_FOUND, "%s not found (module %s; %lu slot%s unreadable: %s)",
                      wanted, module, (unsigned long)unreadable, unreadable == 1 ? "" : "s",
                      prov_pkcs11_rv_name(unreadable_rv));
    } else if (matches == 0) {
        r = prov_fail(PROV_ERR_NOT_FOUND, "%s not found (module %s)", wanted, module);
    } else if (matches > 1) {
        r = prov_fail(PROV_ERR_CONFIG,
                      "%s: %lu tokens match (module %s); add serial= to the URI to pick one",
                      wanted, (unsigned long)matches, module);
    }
out:
    free(kept);
    free(slots);
    return r;
}

static void device_free(struct prov_device *dev)
{
    struct p11_dev *d;

    if (dev == NULL) {
        return;
    }
    d = dev->priv;
    if (d != NULL) {
        for (size_t i = 0; i < d->n_spare; i++) {
            (void)d->fl->C_CloseSession(d->spare[i]);
        }
        if (d->session != CK_INVALID_HANDLE) {
            CK_RV rv = d->fl->C_CloseSession(d->session);

            if (rv != CKR_OK) {
                prov_debug("pkcs11", "%s: C_CloseSession: %s", dev->name ? dev->name : "token",
                           prov_pkcs11_rv_name(rv));
            }
        }
        prov_pkcs11_module_put(d->fl);
        pthread_cond_destroy(&d->sign_free);
        pthread_mutex_destroy(&d->sign_lock);
        free(d->module_path);
        free(d);
    }
    free(dev->name);
    free(dev);
}

/*
 * Every RFC 7512 attribute is honoured or refused with its reason, never ignored: p11-kit
 * parses slot and library attributes that nothing here would use, keeps an unknown query
 * attribute as a "vendor query", and lets a repeated attribute replace the first.
 */
#define SLOT_REFUSAL                                                                               \
    "is refused: slot ids and slot descriptions change on hotplug and re-init; name the token "  \
    "with token=, serial=, manufacturer= or model="
#define LIBRARY_REFUSAL                                                                            \
    "is not supported: name the module with module-path= (or pkcs11_module in the config)"
#define PIN_REFUSAL "is refused: a PIN never comes from a URI (give a PIN source instead)"

struct uri_attr_rule {
    const char *name;
    bool is_query;
    const char *refusal; /* NULL: honoured */
};

static const struct uri_attr_rule uri_attr_rules[] = {
    /* The token, matched exactly at open(). */
    {"token", false, NULL},
    {"manufacturer", false, NULL},
    {"serial", false, NULL},
    {"model", false, NULL},
    /* The key, matched by find_key (a device URI may not carry them: validate_uri). */
    {"object", false, NULL},
    {"id", false, NULL},
    {"type", false, NULL},
    {"slot-id", false, SLOT_REFUSAL},
    {"slot-description", false, SLOT_REFUSAL},
    {"slot-manufacturer", false, SLOT_REFUSAL},
    {"library-description", false, LIBRARY_REFUSAL},
    {"library-manufacturer", false, LIBRARY_REFUSAL},
    {"library-version", false, LIBRARY_REFUSAL},
    {"module-path", true, NULL},
    {"module-name", true, LIBRARY_REFUSAL},
    {"pin-source", true, PIN_REFUSAL},
};

/* Checks each attribute name of one part of the URI ("a=1;b=2" or "c=3&d=4"). */
static int check_attribute_names(const char *uri, const char *what, const char *part, size_t len,
                                 bool is_query)
{
    const char sep = is_query ? '&' : ';';
    char seen[16][24];
    size_t n_seen = 0;

    for (size_t i = 0; i < len;) {
        size_t end = i;
        size_t name_len;
        char name[24];
        const struct uri_attr_rule *rule = NULL;

        while (end < len && part[end] != sep) {
            end++;
        }
        name_len = strcspn(part + i, is_query ? "=&" : "=;?");
        name_len = name_len < end - i ? name_len : end - i;
        snprintf(name, sizeof(name), "%.*s", (int)name_len, part + i);
        i = end + 1;
        if (name_len == 0) {
            continue; /* "pkcs11:" alone, or a stray separator p11-kit accepted */
        }
        for (size_t k = 0; k < sizeof(uri_attr_rules) / sizeof(uri_attr_rules[0]); k++) {
            if (name_len == strlen(uri_attr_rules[k].name) &&
                strncmp(name, uri_attr_rules[k].name, name_len) == 0) {
                rule = &uri_attr_rules[k];
            }
        }
        if (rule == NULL || name_len >= sizeof(name)) {
            return prov_fail(PROV_ERR_USAGE, "%s \"%s\": unknown %sattribute \"%s\"", what, uri,
                             is_query ? "query " : "", name);
        }
        if (rule->is_query != is_query) {
            return prov_fail(PROV_ERR_USAGE, "%s \"%s\": %s is a %s attribute (write it %s)", what,
                             uri, name, rule->is_query ? "query" : "path",
                             rule->is_query ? "after '?'" : "before '?'");
        }
        if (rule->refusal != NULL) {
            return prov_fail(PROV_ERR_USAGE, "%s \"%s\": %s %s", what, uri, name, rule->refusal);
        }
        for (size_t k = 0; k < n_seen; k++) {
            if (strcmp(seen[k], name) == 0) {
                return prov_fail(PROV_ERR_USAGE, "%s \"%s\": attribute \"%s\" given twice", what,
                                 uri, name);
            }
        }
        if (n_seen < sizeof(seen) / sizeof(seen[0])) {
            memcpy(seen[n_seen++], name, sizeof(name));
        }
    }
    return 0;
}

static int check_attributes(const char *uri, const char *what)
{
    const char *path = uri + strlen("pkcs11:");
    const char *query = strchr(path, '?');
    size_t path_len = query ? (size_t)(query - path) : strlen(path);
    int r;

    r = check_attribute_names(uri, what, path, path_len, false);
    if (r == 0 && query != NULL) {
        r = check_attribute_names(uri, what, query + 1, strlen(query + 1), true);
    }
    return r;
}

int prov_pkcs11_parse_uri(const char *device_uri, const char *what, P11KitUri **out)
{
    P11KitUri *uri = p11_kit_uri_new();
    int rc;

    *out = NULL;
    if (uri == NULL) {
        return prov_fail(PROV_ERR_NOMEM, "out of memory parsing a PKCS#11 URI");
    }
    rc = p11_kit_uri_parse(device_uri, P11_KIT_URI_FOR_ANY, uri);
    if (rc != P11_KIT_URI_OK) {
        p11_kit_uri_free(uri);
        return prov_fail(PROV_ERR_USAGE, "%s \"%s\": not a valid PKCS#11 URI (%s)", what,
                         prov_pkcs11_shown_uri(device_uri), p11_kit_uri_message(rc));
    }
    if (p11_kit_uri_get_pin_value(uri) != NULL) {
        p11_kit_uri_free(uri);
        return prov_fail(PROV_ERR_USAGE,
                         "%s %s: PKCS#11 URIs must not carry pin-value "
                         "(give the PIN through a PIN source)",
                         what, prov_pkcs11_shown_uri(device_uri));
    }
    rc = check_attributes(device_uri, what);
    if (rc < 0) {
        p11_kit_uri_free(uri);
        return rc;
    }
    if (p11_kit_uri_any_unrecognized(uri)) {
        p11_kit_uri_free(uri);
        return prov_fail(PROV_ERR_USAGE, "%s \"%s\": unknown attribute in PKCS#11 URI", what,
                         prov_pkcs11_shown_uri(device_uri));
    }
    *out = uri;
    return 0;
}

/*
 * A device URI names a token: the key's id and label are the tool's choice (and the key is
 * found by its public key on install), so object=, id= and type= would be ignored there.
 */
static int validate_uri(const char *device_uri)
{
    static const CK_ATTRIBUTE_TYPE key_attrs[] = {CKA_LABEL, CKA_ID, CKA_CLASS};
    static const char *const key_names[] = {"object", "id", "type"};
    P11KitUri *uri = NULL;
    int r;

    r = prov_pkcs11_parse_uri(device_uri, "device", &uri);
    for (size_t i = 0; r == 0 && i < sizeof(key_attrs) / sizeof(key_attrs[0]); i++) {
        if (p11_kit_uri_get_attribute(uri, key_attrs[i]) != NULL) {
            r = prov_fail(PROV_ERR_USAGE,
                          "device \"%s\": %s= names a key: a device URI names a token (the tool "
                          "chooses the key's id and label)",
                          device_uri, key_names[i]);
        }
    }
    p11_kit_uri_free(uri);
    return r;
}

static int open_device(const char *device_uri, const struct prov_device_params *params,
                       struct prov_device **out)
{
    struct prov_device *dev = NULL;
    struct p11_dev *d = NULL;
    P11KitUri *uri = NULL;
    const char *module;
    CK_FLAGS flags = CKF_SERIAL_SESSION;
    CK_RV rv;
    int r;

    *out = NULL;
    r = prov_pkcs11_parse_uri(device_uri, "device", &uri);
    if (r < 0) {
        goto out;
    }
    r = PROV_ERR_NOMEM;
    dev = calloc(1, sizeof(*dev));
    d = calloc(1, sizeof(*d));
    if (dev == NULL || d == NULL) {
        free(d);
        goto out;
    }
    dev->ops = &prov_pkcs11_ops;
    dev->priv = d;
    d->session = CK_INVALID_HANDLE;
    pthread_mutex_init(&d->sign_lock, NULL);
    pthread_cond_init(&d->sign_free, NULL);
    module = p11_kit_uri_get_module_path(uri);
    d->is_module_from_uri = module != NULL;
    if (module == NULL) {
        module = params && params->module_path ? params->module_path : PROV_DEFAULT_PKCS11_MODULE;
    }
    d->module_path = strdup(module);
    if (d->module_path == NULL) {
        goto out;
    }
    if (params != NULL && params->rescan) {
        prov_pkcs11_module_forget(module);
    }
    r = prov_pkcs11_module_get(module, &d->fl);
    if (r < 0) {
        goto out;
    }
    r = find_token(d->fl, module, uri, &d->slot, &d->info);
    if (r < 0) {
        goto out;
    }
    prov_pkcs11_trim(d->info.label, sizeof(d->info.label), d->label, sizeof(d->label));
    prov_pkcs11_trim(d->info.serialNumber, sizeof(d->info.serialNumber), d->serial,
                     sizeof(d->serial));
    if (asprintf(&dev->name, "token %s", d->label) < 0) {
        dev->name = NULL;
        r = prov_fail(PROV_ERR_NOMEM, "out of memory");
        goto out;
    }
    d->is_read_only = params != NULL && params->read_only;
    if (!d->is_read_only) {
        flags |= CKF_RW_SESSION;
    }
    rv = d->fl->C_OpenSession(d->slot, flags, NULL, NULL, &d->session);
    if (rv != CKR_OK) {
        d->session = CK_INVALID_HANDLE;
        r = prov_pkcs11_fail_rv(dev, "C_OpenSession", rv);
        goto out;
    }
    prov_debug("pkcs11", "%s (serial %s, slot %lu, module %s): %s session open", dev->name,
               d->serial, (unsigned long)d->slot, module,
               flags & CKF_RW_SESSION ? "read-write" : "read-only");
    *out = dev;
    dev = NULL;
    r = 0;
out:
    if (r == PROV_ERR_NOMEM) {
        prov_fail(r, "out of memory opening %s", prov_pkcs11_shown_uri(device_uri));
    }
    device_free(dev);
    p11_kit_uri_free(uri);
    return r;
}

static void close_device(struct prov_device *dev)
{
    device_free(dev);
}

/* Refuses a login that could lock the token or that the token will not accept anyway. */
static int check_pin_flags(struct prov_device *dev, CK_FLAGS flags)
{
    static const struct {
        CK_FLAGS flag;
        const char *name;
        const char *what;
    } refused[] = {
        {CKF_USER_PIN_LOCKED, "CKF_USER_PIN_LOCKED", "the user PIN is locked"},
        {CKF_USER_PIN_FINAL_TRY, "CKF_USER_PIN_FINAL_TRY", "the user PIN is on its final try"},
        {CKF_USER_PIN_TO_BE_CHANGED, "CKF_USER_PIN_TO_BE_CHANGED",
         "the user PIN must be changed first"},
    };

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (flags & refused[i].flag) {
            return prov_fail(PROV_ERR_PIN_LOCKED, "%s: %s (%s); login refused, PIN not sent",
                             dev->name, refused[i].what, refused[i].name);
        }
    }
    return 0;
}

static int login(struct prov_device *dev, const struct prov_secret *pin)
{
    struct p11_dev *d = dev->priv;
    CK_TOKEN_INFO ti;
    CK_SESSION_INFO si;
    CK_RV rv;
    int r;

    rv = d->fl->C_GetTokenInfo(d->slot, &ti);
    if (rv != CKR_OK) {
        return prov_pkcs11_fail_rv(dev, "C_GetTokenInfo", rv);
    }
    r = check_pin_flags(dev, ti.flags);
    if (r < 0) {
        return r;
    }
    if (prov_pkcs11_pin_has_failed(d->module_path, d->serial, d->label)) {
        return prov_fail(PROV_ERR_PIN_INCORRECT,
                         "%s: a PIN was already rejected in this process; not retried", dev->name);
    }
    if (!(ti.flags & CKF_LOGIN_REQUIRED)) {
        prov_debug("pkcs11", "%s: no login required", dev->name);
        return 0;
    }
    /*
     * Login state is per application and token: another open session may have logged in
     * already. Skipping C_Login then is not only cheaper: SoftHSM2 2.6.1 rewrites its
     * token.object in place on every successful C_Login, and a kill during that write
     * leaves the token truncated and gone.
     */
    if (d->fl->C_GetSessionInfo(d->session, &si) == CKR_OK &&
        (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS)) {
        prov_debug("pkcs11", "%s: already logged in", dev->name);
        return 0;
    }
    if (ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH) {
        prov_debug("pkcs11", "%s: PIN entered on the reader (protected authentication path)",
                   dev->name);
        rv = d->fl->C_Login(d->session, CKU_USER, NULL, 0);
    } else if (pin == NULL) {
        return prov_fail(PROV_ERR_PIN_SOURCE, "%s: a user PIN is required and none was given",
                         dev->name);
    } else {
        /* a PIN source another token rejected in this run is not sent here either */
        struct prov_secret_send send;
        enum prov_secret_verdict verdict = PROV_SECRET_UNKNOWN;

        r = prov_secret_send_begin(pin, dev->name, &send);
        if (r < 0) {
            return r;
        }
        rv = d->fl->C_Login(d->session, CKU_USER, (CK_UTF8CHAR_PTR)pin->data, pin->len);
        if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE) {
            verdict = PROV_SECRET_REJECTED;
        } else if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
            verdict = PROV_SECRET_ACCEPTED;
        }
        prov_secret_send_end(pin, dev->name, verdict, &send);
    }
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
        prov_debug("pkcs11", "%s: logged in", dev->name);
        prov_pkcs11_keep_login(d->fl, d->slot);
        return 0;
    }
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE) {
        r = prov_pkcs11_pin_mark_failed(d->module_path, d->serial, d->label);
        if (r < 0) {
            return r;
        }
        return prov_fail(PROV_ERR_PIN_INCORRECT,
                         "%s: C_Login: %s (0x%08lx); the PIN will not be tried again", dev->name,
                         prov_pkcs11_rv_name(rv), (unsigned long)rv);
    }
    return prov_pkcs11_fail_rv(dev, "C_Login", rv);
}

static int identity(struct prov_device *dev, char *buf, size_t len)
{
    struct p11_dev *d = dev->priv;

    if (buf == NULL || strlen(d->serial) >= len) {
        return prov_fail(PROV_ERR_INTERNAL, "%s: identity buffer too small", dev->name);
    }
    memcpy(buf, d->serial, strlen(d->serial) + 1);
    return 0;
}

/* A token attribute of a URI: given when its field is not all zero bytes (p11-kit's unset). */
static bool field_given(const unsigned char *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (f[i] != 0) {
            return true;
        }
    }
    return false;
}

static bool names_same_device(const char *a, const char *b, const char *default_module)
{
    P11KitUri *ua = p11_kit_uri_new();
    P11KitUri *ub = p11_kit_uri_new();
    const char *ma;
    const char *mb;
    bool same = false;

    if (ua == NULL || ub == NULL ||
        p11_kit_uri_parse(a, P11_KIT_URI_FOR_ANY, ua) != P11_KIT_URI_OK ||
        p11_kit_uri_parse(b, P11_KIT_URI_FOR_ANY, ub) != P11_KIT_URI_OK) {
        goto out;
    }
    ma = p11_kit_uri_get_module_path(ua);
    mb = p11_kit_uri_get_module_path(ub);
    ma = ma ? ma : default_module ? default_module : PROV_DEFAULT_PKCS11_MODULE;
    mb = mb ? mb : default_module ? default_module : PROV_DEFAULT_PKCS11_MODULE;
    if (strcmp(ma, mb) == 0) {
        const CK_TOKEN_INFO *ta = p11_kit_uri_get_token_info(ua);
        const CK_TOKEN_INFO *tb = p11_kit_uri_get_token_info(ub);
        const struct {
            const unsigned char *a, *b;
            size_t n;
        } fields[] = {
            {ta->label, tb->label, sizeof(ta->label)},
            {ta->serialNumber, tb->serialNumber, sizeof(ta->serialNumber)},
            {ta->manufacturerID, tb->manufacturerID, sizeof(ta->manufacturerID)},
            {ta->model, tb->model, sizeof(ta->model)},
        };
        int n_compared = 0;
        bool differs = false;

        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            if (field_given(fields[i].a, fields[i].n) && field_given(fields[i].b, fields[i].n)) {
                n_compared++;
                differs = differs || memcmp(fields[i].a, fields[i].b, fields[i].n) != 0;
            }
        }
        same = n_compared > 0 && !differs;
    }
out:
    p11_kit_uri_free(ua);
    p11_kit_uri_free(ub);
    return same;
}

/* A session limit that leaves room for need (CK_EFFECTIVELY_INFINITE is no limit). */
static bool has_room(CK_ULONG max, CK_ULONG need)
{
    return max == CK_EFFECTIVELY_INFINITE || (max != CK_UNAVAILABLE_INFORMATION && max >= need);
}

CK_SESSION_HANDLE prov_pkcs11_session_take(struct p11_dev *d)
{
    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;

    pthread_mutex_lock(&d->sign_lock);
    while (h == CK_INVALID_HANDLE) {
        if (!d->is_session_taken) {
            d->is_session_taken = true;
            h = d->session;
            break;
        }
        for (size_t i = 0; i < d->n_spare && h == CK_INVALID_HANDLE; i++) {
            if (!d->is_spare_taken[i]) {
                d->is_spare_taken[i] = true;
                h = d->spare[i];
            }
        }
        if (h != CK_INVALID_HANDLE) {
            break;
        }
        if (d->n_spare < P11_SIGN_SESSIONS && !d->has_no_more_sessions) {
            CK_RV rv = d->fl->C_OpenSession(d->slot, CKF_SERIAL_SESSION, NULL, NULL, &h);

            if (rv == CKR_OK) {
                d->is_spare_taken[d->n_spare] = true;
                d->spare[d->n_spare++] = h;
                prov_debug("pkcs11", "token %s: signing session %zu opened", d->label,
                           d->n_spare + 1);
                break;
            }
            h = CK_INVALID_HANDLE;
            if (rv == CKR_SESSION_COUNT || rv == CKR_SESSION_PARALLEL_NOT_SUPPORTED) {
                d->has_no_more_sessions = true; /* the token's limit: wait for one from now on */
                prov_debug("pkcs11", "token %s: no more sessions (%s): signatures wait for one",
                           d->label, prov_pkcs11_rv_name(rv));
                continue;
            }
            /* anything else (the token gone, say): wait for a session this time */
        }
        pthread_cond_wait(&d->sign_free, &d->sign_lock);
    }
    pthread_mutex_unlock(&d->sign_lock);
    return h;
}

void prov_pkcs11_session_put(struct p11_dev *d, CK_SESSION_HANDLE h, CK_RV rv)
{
    bool is_dead = rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;

    pthread_mutex_lock(&d->sign_lock);
    if (h == d->session) {
        d->is_session_taken = false; /* the device's own: a dead one is the keeper's to see */
    }
    for (size_t i = 0; i < d->n_spare; i++) {
        if (d->spare[i] != h) {
            continue;
        }
        if (is_dead) {
            /* a spare the token let go (a network HSM's idle timeout): out of the pool */
            (void)d->fl->C_CloseSession(h);
            d->n_spare--;
            d->spare[i] = d->spare[d->n_spare];
            d->is_spare_taken[i] = d->is_spare_taken[d->n_spare];
        } else {
            d->is_spare_taken[i] = false;
        }
        break;
    }
    pthread_cond_signal(&d->sign_free);
    pthread_mutex_unlock(&d->sign_lock);
}

/*
 * Two workers' read-write sessions, and the read-only session that keeps the login
 * (pkcs11_module.c, "login_anchor"): as the token said at open.
 */
static bool may_share(struct prov_device *dev)
{
    const struct p11_dev *d = dev->priv;

    return has_room(d->info.ulMaxRwSessionCount, 2) && has_room(d->info.ulMaxSessionCount, 3);
}

/*
 * backend.h, is_open: the session answers as the one open_device opened (its slot,
 * read-write unless opened read-only, logged in when the token wants a login) and the slot
 * still holds the token it was opened on (serial and label; modules answer both calls
 * without the token). A handle that answers as something else may be another session's by
 * now (a module may give a closed handle out again): it is forgotten, not closed.
 */
static bool is_open(struct prov_device *dev)
{
    struct p11_dev *d = dev->priv;
    CK_SESSION_INFO si;
    CK_TOKEN_INFO ti;
    bool is_rw;
    bool is_user;

    if (d->session == CK_INVALID_HANDLE || d->fl->C_GetSessionInfo(d->session, &si) != CKR_OK) {
        return false;
    }
    is_rw = si.state == CKS_RW_PUBLIC_SESSION || si.state == CKS_RW_USER_FUNCTIONS ||
            si.state == CKS_RW_SO_FUNCTIONS;
    is_user = si.state == CKS_RW_USER_FUNCTIONS || si.state == CKS_RO_USER_FUNCTIONS;
    if (si.slotID != d->slot || is_rw == d->is_read_only ||
        d->fl->C_GetTokenInfo(d->slot, &ti) != CKR_OK ||
        memcmp(ti.serialNumber, d->info.serialNumber, sizeof(ti.serialNumber)) != 0 ||
        memcmp(ti.label, d->info.label, sizeof(ti.label)) != 0) {
        d->session = CK_INVALID_HANDLE;
        return false;
    }
    return is_user || !(ti.flags & CKF_LOGIN_REQUIRED);
}

const struct prov_backend_ops prov_pkcs11_ops = {
    .name = "pkcs11",
    .scheme = "pkcs11:",
    .handles = handles,
    .validate = validate_uri,
    .open = open_device,
    .close = close_device,
    .login = login,
    .identity = identity,
    .may_share = may_share,
    .is_open = is_open,
    .names_same_device = names_same_device,
    .parse_uri = prov_pkcs11_parse_name,
    .build_uri = prov_pkcs11_build_uri,
    .names_identity = prov_pkcs11_names_identity,
    .key_uri_label_id = prov_pkcs11_key_uri_label_id,
    .generate_key = prov_pkcs11_generate_key,
    .find_key = prov_pkcs11_find_key,
    .find_key_by_id = prov_pkcs11_find_key_by_id,
    .find_key_by_public = prov_pkcs11_find_key_by_public,
    .key_props = prov_pkcs11_key_props,
    .sign = prov_pkcs11_sign,
    .signs_from_threads = true,
    .store_certificate = prov_pkcs11_store_certificate,
    .delete_key = prov_pkcs11_delete_key,
    .free_key = prov_pkcs11_free_key,
    .list_objects = prov_pkcs11_list_objects,
};
