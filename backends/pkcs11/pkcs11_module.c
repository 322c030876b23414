/* SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>

#include "error.h"
#include "log.h"
#include "pkcs11.h"
#include "pkcs11_internal.h"

/*
 * Loaded modules. A module is loaded and C_Initialize'd once per path per process and stays
 * loaded (SoftHSM2 reads every object of every token at C_Initialize: reloading per device
 * would cost that each time). refs counts open devices so that unload_all never finalizes a
 * module under an open session.
 */
struct module {
    struct module *next;
    char *path;
    CK_FUNCTION_LIST *fl;
    void *proxy_dl; /* the p11-kit proxy, loaded with dlopen (load_proxy); else NULL */
    unsigned int refs;
    bool is_ours_to_finalize; /* false when someone else had initialized it already */
    /* The last full token look-up (prov_pkcs11_scan_put): slot ids and their token info. */
    CK_ULONG n_scanned;
    CK_SLOT_ID *scanned_slots;
    CK_TOKEN_INFO *scanned_infos;
};

/*
 * Tokens on which a PIN was rejected. Process-wide, because the token's retry counter is:
 * no later device object for the same token may send a PIN again (doc/keys.md, "PINs").
 */
struct failed_pin {
    struct failed_pin *next;
    char *module;
    char *serial;
    char *label;
};

/*
 * One extra session per token this process logged in to, kept open until unload_all: the
 * login state lives as long as any session of the application is open, so later devices on
 * the same token find it logged in and send no PIN (each C_Login also rewrites SoftHSM2's
 * token.object in place).
 */
struct login_anchor {
    struct login_anchor *next;
    CK_FUNCTION_LIST *fl;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE session;
};

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct login_anchor *anchors; /* guarded by modules_lock */
static struct module *modules;
static pthread_mutex_t failed_lock = PTHREAD_MUTEX_INITIALIZER;
static struct failed_pin *failed_pins;

/*
 * p11-kit refuses to load its own proxy module (p11-kit-proxy.so, the documented default
 * when neither a URI nor the config names a module) through p11_kit_module_load: "refusing
 * to load the p11-kit-proxy.so module as a registered module". The proxy is meant to be
 * loaded like any PKCS#11 library, with dlopen and C_GetFunctionList; it then loads every
 * module registered with p11-kit (pkcs11.conf(5)) and shows their slots as its own. It is
 * recognised by what only p11-kit's library exports, so a renamed or relocated proxy works
 * too. Returns NULL (no error recorded) when path is not the proxy.
 */
static CK_FUNCTION_LIST *load_proxy(const char *path, void **dl)
{
    CK_C_GetFunctionList get_list;
    CK_FUNCTION_LIST *fl = NULL;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);

    *dl = NULL;
    if (h == NULL) {
        return NULL;
    }
    get_list = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
    if (dlsym(h, "p11_kit_modules_load") == NULL || get_list == NULL ||
        get_list(&fl) != CKR_OK || fl == NULL) {
        dlclose(h);
        return NULL;
    }
    *dl = h;
    return fl;
}

static void forget_scan(struct module *m)
{
    free(m->scanned_slots);
    free(m->scanned_infos);
    m->scanned_slots = NULL;
    m->scanned_infos = NULL;
    m->n_scanned = 0;
}

static void release_module(struct module *m)
{
    forget_scan(m);
    if (m->proxy_dl != NULL) {
        dlclose(m->proxy_dl);
    } else if (m->fl != NULL) {
        p11_kit_module_release(m->fl);
    }
}

static int load_module(const char *path, struct module **out)
{
    CK_C_INITIALIZE_ARGS args;
    struct module *m = NULL;
    CK_RV rv;
    int r = PROV_ERR_NOMEM;

    m = calloc(1, sizeof(*m));
    if (m == NULL || (m->path = strdup(path)) == NULL) {
        goto out;
    }
    /*
     * p11-kit prints its own warnings on stderr (a registered module the proxy cannot load,
     * a config it cannot parse): third-party lines beside the tool's one error line. Its
     * reason still reaches our messages through p11_kit_message(); PROVISIONER_DEBUG=pkcs11
     * keeps p11-kit talking.
     */
    if (!prov_log_debug_enabled("pkcs11")) {
        p11_kit_be_quiet();
    }
    /* Managed (flags 0): p11-kit keeps the module's own init count sane if another library
     * in this process (libp11, the engine) loads the same module. */
    m->fl = p11_kit_module_load(path, 0);
    if (m->fl == NULL) {
        char *why = strdup(p11_kit_message() ? p11_kit_message() : "unknown reason");

        m->fl = load_proxy(path, &m->proxy_dl);
        if (m->fl == NULL) {
            r = prov_fail(PROV_ERR_CONFIG, "PKCS#11 module %s: cannot load (%s)", path,
                          why ? why : "unknown reason");
            free(why);
            goto out;
        }
        free(why);
        prov_debug("pkcs11", "module %s is the p11-kit proxy: its registered modules are used",
                   path);
    }
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = m->fl->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        r = prov_fail(prov_pkcs11_rv_to_err(rv), "PKCS#11 module %s: C_Initialize: %s (0x%08lx)",
                      path, prov_pkcs11_rv_name(rv), (unsigned long)rv);
        goto out;
    }
    m->is_ours_to_finalize = rv == CKR_OK;
    prov_debug("pkcs11", "module %s loaded and initialized", path);
    *out = m;
    m = NULL;
    r = 0;
out:
    if (m != NULL) {
        release_module(m);
        free(m->path);
        free(m);
    }
    return r;
}

int prov_pkcs11_module_get(const char *path, CK_FUNCTION_LIST **out)
{
    struct module *m;
    int r = 0;

    *out = NULL;
    pthread_mutex_lock(&modules_lock);
    for (m = modules; m != NULL; m = m->next) {
        if (strcmp(m->path, path) == 0) {
            break;
        }
    }
    if (m == NULL) {
        r = load_module(path, &m);
        if (r < 0) {
            goto out;
        }
        m->next = modules;
        modules = m;
    }
    m->refs++;
    *out = m->fl;
out:
    pthread_mutex_unlock(&modules_lock);
    return r;
}

void prov_pkcs11_module_put(CK_FUNCTION_LIST *fl)
{
    if (fl == NULL) {
        return;
    }
    pthread_mutex_lock(&modules_lock);
    for (struct module *m = modules; m != NULL; m = m->next) {
        if (m->fl == fl && m->refs > 0) {
            m->refs--;
            break;
        }
    }
    pthread_mutex_unlock(&modules_lock);
}

static struct module *module_of(CK_FUNCTION_LIST *fl)
{
    struct module *m = modules;

    while (m != NULL && m->fl != fl) {
        m = m->next;
    }
    return m;
}

bool prov_pkcs11_scan_get(CK_FUNCTION_LIST *fl, const CK_SLOT_ID *slots, CK_ULONG n,
                          CK_TOKEN_INFO *infos)
{
    struct module *m;
    bool found;

    pthread_mutex_lock(&modules_lock);
    m = module_of(fl);
    found = m != NULL && m->scanned_slots != NULL && m->n_scanned == n &&
            memcmp(m->scanned_slots, slots, n * sizeof(*slots)) == 0;
    if (found) {
        memcpy(infos, m->scanned_infos, n * sizeof(*infos));
    }
    pthread_mutex_unlock(&modules_lock);
    return found;
}

void prov_pkcs11_scan_put(CK_FUNCTION_LIST *fl, const CK_SLOT_ID *slots, CK_ULONG n,
                          const CK_TOKEN_INFO *infos)
{
    CK_SLOT_ID *s = calloc(n + 1, sizeof(*s));
    CK_TOKEN_INFO *ti = calloc(n + 1, sizeof(*ti));
    struct module *m;

    pthread_mutex_lock(&modules_lock);
    m = module_of(fl);
    if (m != NULL && s != NULL && ti != NULL) {
        memcpy(s, slots, n * sizeof(*s));
        memcpy(ti, infos, n * sizeof(*ti));
        forget_scan(m);
        m->scanned_slots = s;
        m->scanned_infos = ti;
        m->n_scanned = n;
        s = NULL;
        ti = NULL;
    }
    pthread_mutex_unlock(&modules_lock);
    free(s); /* only an optimisation: without it the next open asks every slot again */
    free(ti);
}

void prov_pkcs11_keep_login(CK_FUNCTION_LIST *fl, CK_SLOT_ID slot)
{
    struct login_anchor *a;
    CK_SESSION_INFO si;

    pthread_mutex_lock(&modules_lock);
    for (a = anchors; a != NULL; a = a->next) {
        if (a->fl == fl && a->slot == slot) {
            break;
        }
    }
    if (a != NULL && fl->C_GetSessionInfo(a->session, &si) == CKR_OK) {
        goto out; /* still open (hotplug would have invalidated it) */
    }
    if (a == NULL) {
        a = calloc(1, sizeof(*a));
        if (a == NULL) {
            goto out; /* only an optimisation: the next device logs in again */
        }
        a->fl = fl;
        a->slot = slot;
        a->next = anchors;
        anchors = a;
    }
    if (fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &a->session) != CKR_OK) {
        a->session = CK_INVALID_HANDLE;
    }
out:
    pthread_mutex_unlock(&modules_lock);
}

static void drop_anchors(CK_FUNCTION_LIST *fl)
{
    struct login_anchor **pa = &anchors;

    while (*pa != NULL) {
        struct login_anchor *a = *pa;

        if (a->fl != fl) {
            pa = &a->next;
            continue;
        }
        *pa = a->next;
        if (a->session != CK_INVALID_HANDLE) {
            fl->C_CloseSession(a->session);
        }
        free(a);
    }
}

/* Unloads the modules (path NULL: every one) that no open device uses; modules_lock held. */
static void unload_idle(const char *path)
{
    struct module **pm = &modules;

    while (*pm != NULL) {
        struct module *m = *pm;

        if (path != NULL && strcmp(m->path, path) != 0) {
            pm = &m->next;
            continue;
        }
        if (m->refs > 0) {
            /* Finalizing would pull the session from under an open device. */
            prov_debug("pkcs11", "module %s still has %u open device(s); left loaded", m->path,
                       m->refs);
            pm = &m->next;
            continue;
        }
        *pm = m->next;
        drop_anchors(m->fl);
        if (m->is_ours_to_finalize) {
            m->fl->C_Finalize(NULL);
        }
        release_module(m);
        prov_debug("pkcs11", "module %s finalized", m->path);
        free(m->path);
        free(m);
    }
}

void prov_pkcs11_unload_all(void)
{
    pthread_mutex_lock(&modules_lock);
    unload_idle(NULL);
    pthread_mutex_unlock(&modules_lock);
}

void prov_pkcs11_module_forget(const char *path)
{
    pthread_mutex_lock(&modules_lock);
    unload_idle(path);
    pthread_mutex_unlock(&modules_lock);
}

static bool same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

bool prov_pkcs11_pin_has_failed(const char *module, const char *serial, const char *label)
{
    bool found = false;

    pthread_mutex_lock(&failed_lock);
    for (struct failed_pin *f = failed_pins; f != NULL && !found; f = f->next) {
        found = same(f->module, module) && same(f->serial, serial) && same(f->label, label);
    }
    pthread_mutex_unlock(&failed_lock);
    return found;
}

int prov_pkcs11_pin_mark_failed(const char *module, const char *serial, const char *label)
{
    struct failed_pin *f;

    if (prov_pkcs11_pin_has_failed(module, serial, label)) {
        return 0;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL || (f->module = strdup(module ? module : "")) == NULL ||
        (f->serial = strdup(serial ? serial : "")) == NULL ||
        (f->label = strdup(label ? label : "")) == NULL) {
        if (f != NULL) {
            free(f->module);
            free(f->serial);
            free(f);
        }
        return prov_fail(PROV_ERR_NOMEM, "out of memory recording a rejected PIN");
    }
    pthread_mutex_lock(&failed_lock);
    f->next = failed_pins;
    failed_pins = f;
    pthread_mutex_unlock(&failed_lock);
    return 0;
}
