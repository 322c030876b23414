/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TPM devices: open (TCTI loader, ESAPI, Startup), login, identity (EK digest), close, the
 * storage root key and the persistent-handle helpers. Keys are in tpm_key.c, the certificate
 * NV index in tpm_nv.c, TSS2_RC mapping and URI syntax in tpm_rc.c.
 */
#include "tpm.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "error.h"
#include "log.h"
#include "tpm_internal.h"

static pthread_once_t tss_log_once = PTHREAD_ONCE_INIT;

/*
 * tpm2-tss logs its own warnings to stderr (a refused connection alone gives three lines),
 * which would break "one line per error" (doc/exit-codes.md): every failure is reported once,
 * decoded, by this backend. TSS2_LOG set by the user, or PROVISIONER_DEBUG=tpm, keeps the
 * library's log.
 */
static void quiet_tss_log(void)
{
    if (!prov_log_debug_enabled("tpm")) {
        setenv("TSS2_LOG", "all+none", 0);
    }
}

/*
 * The TCTI loader looks a short name ("swtpm") up by trying several file names through the
 * library search path and loads and unloads the library on every open: about 1.5 ms per device
 * on these machines, half of an ESAPI key creation. The library of a short name is therefore
 * loaded once per process and kept (like a PKCS#11 module), and the loader is given its full
 * name, which it opens directly. Anything unusual (a path, a name that does not load) goes to
 * the loader unchanged, which then reports the failure.
 */
#define MAX_TCTI_LIBS 8
static pthread_mutex_t tcti_lock = PTHREAD_MUTEX_INITIALIZER;
static char *tcti_loaded[MAX_TCTI_LIBS];
static size_t n_tcti_loaded;

/*
 * The tabrmd TCTI logs through GLib (g_log), whose default handler writes "** CRITICAL **"
 * lines to stderr, for example when the resource manager's D-Bus is gone: a third-party line
 * beside the tool's own error, which already says the TPM is not reachable (doc/exit-codes.md:
 * one line). Once GLib is in the process (it comes with that TCTI), its messages go to the "tpm"
 * debug category instead. g_log_set_default_handler may be called at any time.
 */
typedef void (*glib_log_fn)(const char *domain, int level, const char *message, void *data);
typedef glib_log_fn (*glib_set_default_handler_fn)(glib_log_fn handler, void *data);

static void glib_log_to_debug(const char *domain, int level, const char *message, void *data)
{
    (void)data;
    prov_debug("tpm", "TCTI log (%s, level %d): %s", domain ? domain : "GLib", level,
               message ? message : "");
}

static void route_glib_log(void)
{
    void *glib = dlopen("libglib-2.0.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    glib_set_default_handler_fn set_default;

    if (glib == NULL) {
        return; /* no GLib in the process: nothing can log through it */
    }
    set_default = (glib_set_default_handler_fn)dlsym(glib, "g_log_set_default_handler");
    if (set_default != NULL) {
        set_default(glib_log_to_debug, NULL);
    }
    dlclose(glib); /* the reference RTLD_NOLOAD took; the TCTI keeps GLib loaded */
}

/*
 * Loads (once) the library of the short TCTI name at the start of conf ("swtpm" of
 * "swtpm:host=..."), writing its file name into lib. False when conf does not start with a
 * short name or its library does not load.
 */
static bool load_tcti_lib(const char *conf, char *lib, size_t lib_cap)
{
    size_t name_len = strcspn(conf, ":");
    bool is_loaded = false;

    if (name_len == 0 || name_len > 40 ||
        strspn(conf, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
            name_len) {
        return false;
    }
    snprintf(lib, lib_cap, "libtss2-tcti-%.*s.so.0", (int)name_len, conf);
    pthread_mutex_lock(&tcti_lock);
    for (size_t i = 0; i < n_tcti_loaded && !is_loaded; i++) {
        is_loaded = strcmp(tcti_loaded[i], lib) == 0;
    }
    if (!is_loaded && n_tcti_loaded < MAX_TCTI_LIBS && dlopen(lib, RTLD_NOW | RTLD_LOCAL)) {
        /* Never closed: the handle stays valid for the life of the process. */
        tcti_loaded[n_tcti_loaded] = strdup(lib);
        is_loaded = tcti_loaded[n_tcti_loaded] != NULL;
        n_tcti_loaded += is_loaded ? 1 : 0;
        route_glib_log();
    }
    pthread_mutex_unlock(&tcti_lock);
    return is_loaded;
}

/* "swtpm:host=..." -> "libtss2-tcti-swtpm.so.0:host=..." when that library loads; else NULL. */
static char *resolve_tcti(const char *conf)
{
    char lib[96];
    char *out = NULL;

    if (load_tcti_lib(conf, lib, sizeof(lib)) &&
        asprintf(&out, "%s%s", lib, conf + strcspn(conf, ":")) < 0) {
        out = NULL;
    }
    return out;
}

/* The TCTI for t->tcti_conf ("" for the loader's default). */
static TSS2_RC load_tcti(struct tpm_dev *t)
{
    char *resolved = NULL;
    const char *conf = NULL;
    TSS2_RC rc;

    if (t->tcti_conf[0] != '\0') {
        resolved = resolve_tcti(t->tcti_conf);
        conf = resolved ? resolved : t->tcti_conf;
    } else {
        /* the loader's default tries tabrmd first: load it here so that its GLib is quiet */
        char lib[96];

        load_tcti_lib("tabrmd", lib, sizeof(lib));
    }
    rc = Tss2_TctiLdr_Initialize(conf, &t->tcti);
    free(resolved);
    return rc;
}

static bool handles(const char *device_uri)
{
    return device_uri != NULL && strncmp(device_uri, "tpm2:", 5) == 0;
}

/* A TCTI named by its library file ("libtss2-tcti-foo.so.0" or a path), as the loader takes. */
static bool is_loadable_tcti_file(const char *tcti, size_t name_len)
{
    char *file = strndup(tcti, name_len);
    void *h = NULL;

    if (file != NULL && (strchr(file, '/') != NULL || strstr(file, ".so") != NULL)) {
        h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    }
    if (h != NULL) {
        dlclose(h);
    }
    free(file);
    return h != NULL;
}

/*
 * A device as an operator names it: "tpm2:" and a TCTI whose library this system has, or
 * "tpm2:ek-sha256=HEX", a TPM by its identity (a station's manifest row). The
 * connection itself is not tried (that is open's job, and the TPM may not be there yet).
 * "tpm2:" alone would take the loader's default, whatever TPM (or resource manager) this host
 * happens to have, and a ";handle=" names a key, not a device: both are refused here.
 */
static int validate_tpm(const char *device_uri)
{
    uint32_t handle = 0;
    char *tcti = NULL;
    char lib[96];
    size_t name_len;
    int r;

    r = prov_tpm_uri_split(device_uri, &tcti, &handle);
    if (r < 0) {
        return r == PROV_ERR_NOMEM ? prov_fail(r, "out of memory") : r;
    }
    name_len = strcspn(tcti, ":");
    if (handle != 0) {
        r = prov_fail(PROV_ERR_USAGE,
                      "device \"%s\": ;handle= names a key, not a device (the device key's "
                      "handle is tpm_key_handle in the config)",
                      device_uri);
    } else if (strncmp(tcti, "ek-sha256=", 10) == 0) {
        /* a TPM named by its EK digest, which the station resolves to the TPM it serves */
        if (strlen(tcti + 10) != 64 || strspn(tcti + 10, "0123456789abcdefABCDEF") != 64) {
            r = prov_fail(PROV_ERR_USAGE,
                          "device \"%s\": ek-sha256= takes the 64 hex digits of the SHA-256 of "
                          "the TPM's endorsement key",
                          device_uri);
        }
    } else if (tcti[0] == '\0') {
        r = prov_fail(PROV_ERR_USAGE,
                      "device \"%s\": no TCTI: name the TPM, e.g. tpm2:device:/dev/tpmrm0, "
                      "tpm2:swtpm:host=127.0.0.1,port=2321 or tpm2:tabrmd:bus_type=session",
                      device_uri);
    } else if (!load_tcti_lib(tcti, lib, sizeof(lib)) && !is_loadable_tcti_file(tcti, name_len)) {
        r = prov_fail(PROV_ERR_USAGE,
                      "device \"%s\": unknown TCTI \"%.*s\" (no libtss2-tcti-%.*s.so.0 on this "
                      "system; e.g. device, swtpm, mssim, tabrmd)",
                      device_uri, (int)name_len, tcti, (int)name_len, tcti);
    }
    free(tcti);
    return r;
}

static int check_params(struct prov_device *dev, const struct prov_device_params *params)
{
    struct tpm_dev *t = tpm_dev(dev);

    t->srk_handle =
        params && params->tpm_srk_handle ? params->tpm_srk_handle : PROV_TPM_DEFAULT_SRK_HANDLE;
    t->key_handle =
        params && params->tpm_key_handle ? params->tpm_key_handle : PROV_TPM_DEFAULT_KEY_HANDLE;
    t->nv_index = params && params->tpm_nv_index ? params->tpm_nv_index : PROV_TPM_DEFAULT_NV_INDEX;
    if (!tpm_is_persistent(t->srk_handle) || !tpm_is_persistent(t->key_handle)) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: SRK handle 0x%08x and key handle 0x%08x must be persistent "
                         "handles (0x81000000-0x81ffffff)",
                         dev->name, (unsigned)t->srk_handle, (unsigned)t->key_handle);
    }
    if (t->srk_handle == t->key_handle) {
        return prov_fail(PROV_ERR_CONFIG, "%s: the key handle 0x%08x is the SRK handle", dev->name,
                         (unsigned)t->key_handle);
    }
    if ((t->nv_index >> 24) != TPM2_HT_NV_INDEX) {
        return prov_fail(PROV_ERR_CONFIG,
                         "%s: NV index 0x%08x is not an NV index (0x01000000-0x01ffffff)",
                         dev->name, (unsigned)t->nv_index);
    }
    return 0;
}

/* At open every transport failure means "no TPM there": PROV_ERR_NOT_FOUND (exit 4). */
static int fail_unreachable(struct prov_device *dev, TSS2_RC rc)
{
    int err = prov_tpm_rc_to_err(rc);

    if (err == PROV_ERR_DEVICE_REMOVED || err == PROV_ERR_UNSUPPORTED || err == PROV_ERR_DEVICE) {
        err = PROV_ERR_NOT_FOUND;
    }
    return prov_fail(err, "%s: not reachable (%s, TSS2_RC 0x%08x)", dev->name, Tss2_RC_Decode(rc),
                     (unsigned)rc);
}

static void close_tpm(struct prov_device *dev)
{
    struct tpm_dev *t;

    if (dev == NULL) {
        return;
    }
    t = tpm_dev(dev);
    if (t != NULL) {
        /* Esys_Finalize releases every ESYS_TR; the TPM objects stay (they are persistent). */
        if (t->esys != NULL) {
            Esys_Finalize(&t->esys);
        }
        if (t->tcti != NULL) {
            Tss2_TctiLdr_Finalize(&t->tcti);
        }
        free(t->tcti_conf);
        free(t->identity);
        free(t);
    }
    free(dev->name);
    free(dev);
}

static int open_tpm(const char *device_uri, const struct prov_device_params *params,
                    struct prov_device **out)
{
    struct prov_device *dev = NULL;
    struct tpm_dev *t = NULL;
    uint32_t ignored_handle = 0;
    TSS2_RC rc;
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    pthread_once(&tss_log_once, quiet_tss_log);
    dev = calloc(1, sizeof(*dev));
    t = calloc(1, sizeof(*t));
    if (dev == NULL || t == NULL) {
        free(dev);
        free(t);
        return PROV_ERR_NOMEM;
    }
    dev->ops = &prov_tpm_ops;
    dev->priv = t;
    t->srk = ESYS_TR_NONE;
    r = prov_tpm_uri_split(device_uri, &t->tcti_conf, &ignored_handle);
    if (r < 0) {
        goto out;
    }
    if (asprintf(&dev->name, "TPM %s", t->tcti_conf[0] ? t->tcti_conf : "(default TCTI)") < 0) {
        dev->name = NULL;
        r = PROV_ERR_NOMEM;
        goto out;
    }
    r = check_params(dev, params);
    if (r < 0) {
        goto out;
    }
    /* tpm2-tss itself, at the first TPM this process opens (tss2_api.h) */
    if (prov_tss2_load() < 0) {
        r = prov_fail(PROV_ERR_INTERNAL, "%s: %s", dev->name, prov_tss2_why());
        goto out;
    }
    rc = load_tcti(t);
    if (rc != TSS2_RC_SUCCESS) {
        r = fail_unreachable(dev, rc);
        goto out;
    }
    rc = Esys_Initialize(&t->esys, t->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        r = prov_tpm_fail(dev, "Esys_Initialize", rc);
        goto out;
    }
    /* A TPM behind a kernel or daemon resource manager has been started already. */
    rc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && prov_tpm_rc_base(rc) != TPM2_RC_INITIALIZE) {
        r = prov_tpm_rc_to_err(rc) == PROV_ERR_DEVICE_REMOVED ? fail_unreachable(dev, rc)
                                                              : prov_tpm_fail(dev, "Startup", rc);
        goto out;
    }
    prov_debug("tpm", "%s: open (SRK 0x%08x, key 0x%08x, NV 0x%08x)", dev->name,
               (unsigned)t->srk_handle, (unsigned)t->key_handle, (unsigned)t->nv_index);
    *out = dev;
    dev = NULL;
    r = 0;
out:
    close_tpm(dev);
    return r;
}

/* TPM keys carry an empty authorization: there is nothing to log in to (see tpm.h). */
static int login_tpm(struct prov_device *dev, const struct prov_secret *pin)
{
    if (pin != NULL && pin->len > 0) {
        prov_debug("tpm", "%s: keys have no PIN; the PIN given is not used", dev->name);
    }
    return 0;
}

int prov_tpm_open_handle(struct prov_device *dev, uint32_t handle, ESYS_TR *tr, TPM2B_PUBLIC **pub)
{
    struct tpm_dev *t = tpm_dev(dev);
    TSS2_RC rc;
    char what[64];

    *tr = ESYS_TR_NONE;
    if (pub != NULL) {
        *pub = NULL;
    }
    rc = Esys_TR_FromTPMPublic(t->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);
    if (rc != TSS2_RC_SUCCESS) {
        *tr = ESYS_TR_NONE;
        if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TPM_RC_LAYER &&
            prov_tpm_rc_base(rc) == TPM2_RC_HANDLE) {
            return 0; /* nothing there */
        }
        snprintf(what, sizeof(what), "reading handle 0x%08x", (unsigned)handle);
        return prov_tpm_fail(dev, what, rc);
    }
    if (pub == NULL) {
        return 0;
    }
    rc = Esys_ReadPublic(t->esys, *tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, pub, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        Esys_TR_Close(t->esys, tr);
        *tr = ESYS_TR_NONE;
        snprintf(what, sizeof(what), "ReadPublic of 0x%08x", (unsigned)handle);
        return prov_tpm_fail(dev, what, rc);
    }
    return 0;
}

int prov_tpm_list_persistent(struct prov_device *dev, uint32_t first, uint32_t last, uint32_t **out,
                             size_t *n)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = TPM2_YES;
    uint32_t *list = NULL;
    uint32_t next = first;
    size_t len = 0;
    TSS2_RC rc;
    int r = 0;

    *out = NULL;
    *n = 0;
    while (more == TPM2_YES && r == 0) {
        rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                                next, TPM2_MAX_CAP_HANDLES, &more, &cap);
        if (rc != TSS2_RC_SUCCESS) {
            r = prov_tpm_fail(dev, "GetCapability(handles)", rc);
            break;
        }
        for (UINT32 i = 0; i < cap->data.handles.count; i++) {
            uint32_t h = cap->data.handles.handle[i];
            uint32_t *grown;

            if (h > last || h < next) {
                more = TPM2_NO;
                break;
            }
            grown = realloc(list, (len + 1) * sizeof(*list));
            if (grown == NULL) {
                r = PROV_ERR_NOMEM;
                break;
            }
            list = grown;
            list[len++] = h;
            next = h + 1;
        }
        if (cap->data.handles.count == 0) {
            more = TPM2_NO;
        }
        Esys_Free(cap);
        cap = NULL;
    }
    if (r < 0) {
        free(list);
        return r;
    }
    *out = list;
    *n = len;
    return 0;
}

/* TCG storage root key template: ECC P-256, AES-128-CFB, restricted decryption, noDA. */
static void srk_template(TPM2B_PUBLIC *tmpl)
{
    memset(tmpl, 0, sizeof(*tmpl));
    tmpl->publicArea.type = TPM2_ALG_ECC;
    tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
    tmpl->publicArea.objectAttributes =
        TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
        TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    tmpl->publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    tmpl->publicArea.parameters.eccDetail.symmetric.keyBits.aes = 128;
    tmpl->publicArea.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    tmpl->publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    tmpl->publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    tmpl->publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
}

/* Creates the SRK primary in the owner hierarchy and makes it persistent at srk_handle. */
static int create_srk(struct prov_device *dev)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside = {.size = 0};
    TPML_PCR_SELECTION pcrs = {.count = 0};
    ESYS_TR primary = ESYS_TR_NONE;
    ESYS_TR persistent = ESYS_TR_NONE;
    TSS2_RC rc;
    int r = PROV_ERR_DEVICE;

    memset(&sens, 0, sizeof(sens));
    srk_template(&tmpl);
    rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                            &sens, &tmpl, &outside, &pcrs, &primary, NULL, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        r = prov_tpm_fail(dev, "CreatePrimary of the SRK (owner hierarchy)", rc);
        goto out;
    }
    rc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, t->srk_handle, &persistent);
    if (rc != TSS2_RC_SUCCESS && prov_tpm_rc_base(rc) != TPM2_RC_NV_DEFINED) {
        r = prov_tpm_fail(dev, "EvictControl of the SRK", rc);
        goto out;
    }
    /* NV_DEFINED: another process made it persistent meanwhile; the caller reads it back. */
    if (persistent != ESYS_TR_NONE) {
        Esys_TR_Close(t->esys, &persistent);
    }
    prov_debug("tpm", "%s: created the storage root key at 0x%08x", dev->name,
               (unsigned)t->srk_handle);
    r = 0;
out:
    if (primary != ESYS_TR_NONE) {
        Esys_FlushContext(t->esys, primary); /* 3 slots without an RM: doc/platform.md */
    }
    return r;
}

int prov_tpm_srk(struct prov_device *dev, ESYS_TR *out)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    TPMA_OBJECT attrs;
    int r;

    *out = ESYS_TR_NONE;
    if (t->srk != ESYS_TR_NONE) {
        *out = t->srk;
        return 0;
    }
    r = prov_tpm_open_handle(dev, t->srk_handle, &tr, &pub);
    if (r == 0 && tr == ESYS_TR_NONE) {
        r = create_srk(dev);
        if (r == 0) {
            r = prov_tpm_open_handle(dev, t->srk_handle, &tr, &pub);
        }
        if (r == 0 && tr == ESYS_TR_NONE) {
            r = prov_fail(PROV_ERR_DEVICE, "%s: the SRK at 0x%08x vanished after creation",
                          dev->name, (unsigned)t->srk_handle);
        }
    }
    if (r < 0) {
        goto out;
    }
    attrs = pub->publicArea.objectAttributes;
    if (!(attrs & TPMA_OBJECT_RESTRICTED) || !(attrs & TPMA_OBJECT_DECRYPT) ||
        (attrs & TPMA_OBJECT_SIGN_ENCRYPT)) {
        r = prov_fail(PROV_ERR_CONFIG,
                      "%s: persistent handle 0x%08x holds a key that is not a storage key "
                      "(restricted decrypt, attributes 0x%08x); configure another SRK handle",
                      dev->name, (unsigned)t->srk_handle, (unsigned)attrs);
        goto out;
    }
    t->srk = tr;
    tr = ESYS_TR_NONE;
    *out = t->srk;
    r = 0;
out:
    if (tr != ESYS_TR_NONE) {
        Esys_TR_Close(t->esys, &tr);
    }
    Esys_Free(pub);
    return r;
}

/* TCG EK Credential Profile, template L-2: the ECC P-256 endorsement key. */
static void ek_template(TPM2B_PUBLIC *tmpl)
{
    /* PolicySecret(TPM_RH_ENDORSEMENT): the EK's standard authPolicy. */
    static const BYTE ek_policy[32] = {
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
        0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
        0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
    };

    memset(tmpl, 0, sizeof(*tmpl));
    tmpl->publicArea.type = TPM2_ALG_ECC;
    tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
    tmpl->publicArea.objectAttributes =
        TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
        TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    tmpl->publicArea.authPolicy.size = sizeof(ek_policy);
    memcpy(tmpl->publicArea.authPolicy.buffer, ek_policy, sizeof(ek_policy));
    tmpl->publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    tmpl->publicArea.parameters.eccDetail.symmetric.keyBits.aes = 128;
    tmpl->publicArea.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    tmpl->publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    tmpl->publicArea.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    tmpl->publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    tmpl->publicArea.unique.ecc.x.size = 32;
    tmpl->publicArea.unique.ecc.y.size = 32;
}

/* Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of pkey. */
static int spki_sha256_hex(struct prov_device *dev, EVP_PKEY *pkey, char **out)
{
    unsigned char *der = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int len = i2d_PUBKEY(pkey, &der);
    int r = PROV_ERR_CRYPTO;

    *out = NULL;
    if (len <= 0 || EVP_Digest(der, (size_t)len, md, &md_len, EVP_sha256(), NULL) != 1) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "%s: cannot hash the EK public key", dev->name);
        goto out;
    }
    *out = malloc(2 * md_len + 1);
    if (*out == NULL) {
        r = PROV_ERR_NOMEM;
        goto out;
    }
    for (unsigned int i = 0; i < md_len; i++) {
        snprintf(*out + 2 * i, 3, "%02x", md[i]);
    }
    r = 0;
out:
    OPENSSL_free(der);
    return r;
}

/*
 * The SHA-256 of the ECC EK's public key (SubjectPublicKeyInfo DER), lowercase hex: the same
 * for every open of one TPM, and what `tpm2_createek -G ecc -f pem` then
 * `openssl pkey -pubin -outform DER | sha256sum` gives. The EK primary is derived from the
 * endorsement seed (empty endorsement authorization), read and flushed; nothing is stored.
 */
static int identity_tpm(struct prov_device *dev, char *buf, size_t len)
{
    struct tpm_dev *t = tpm_dev(dev);
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside = {.size = 0};
    TPML_PCR_SELECTION pcrs = {.count = 0};
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR ek = ESYS_TR_NONE;
    EVP_PKEY *pkey = NULL;
    enum prov_key_type type;
    TSS2_RC rc;
    int r = PROV_ERR_DEVICE;

    if (t->identity == NULL) {
        memset(&sens, 0, sizeof(sens));
        ek_template(&tmpl);
        rc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &sens, &tmpl, &outside, &pcrs, &ek, &pub, NULL, NULL,
                                NULL);
        if (rc != TSS2_RC_SUCCESS) {
            r = prov_tpm_fail(dev, "CreatePrimary of the EK (endorsement hierarchy)", rc);
            goto out;
        }
        r = prov_tpm_public_to_pkey(dev, &pub->publicArea, &pkey, &type);
        if (r == 0) {
            r = spki_sha256_hex(dev, pkey, &t->identity);
        }
        if (r < 0) {
            goto out;
        }
    }
    if (strlen(t->identity) >= len) {
        r = prov_fail(PROV_ERR_INTERNAL, "%s: identity buffer too small", dev->name);
        goto out;
    }
    memcpy(buf, t->identity, strlen(t->identity) + 1);
    r = 0;
out:
    if (ek != ESYS_TR_NONE) {
        Esys_FlushContext(t->esys, ek);
    }
    EVP_PKEY_free(pkey);
    Esys_Free(pub);
    return r;
}

const struct prov_backend_ops prov_tpm_ops = {
    .name = "tpm2",
    .scheme = "tpm2:",
    .handles = handles,
    .validate = validate_tpm,
    .open = open_tpm,
    .close = close_tpm,
    .login = login_tpm,
    .identity = identity_tpm,
    .parse_uri = prov_tpm_parse_name,
    .build_uri = prov_tpm_build_uri,
    .names_identity = prov_tpm_names_identity,
    .generate_key = prov_tpm_generate_key,
    .find_key = prov_tpm_find_key,
    .find_key_by_id = prov_tpm_find_key_by_id,
    .find_key_by_public = prov_tpm_find_key_by_public,
    .key_props = prov_tpm_key_props,
    .sign = prov_tpm_sign,
    .store_certificate = prov_tpm_store_certificate,
    .delete_key = prov_tpm_delete_key,
    .free_key = prov_tpm_free_key,
};
