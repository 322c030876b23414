/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_BACKEND_H
#define PROV_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "keytype.h"
#include "secret.h"

/*
 * The interface between the core and a key store (PKCS#11 token, TPM). The core never
 * includes a backend header: it gets a const ops table from the registry (prov_backend_for)
 * and calls through it. Every entry takes the device first so that a wrapper (tracing,
 * fault injection) can stack on a real backend.
 *
 * All entries return 0 or a negative PROV_ERR_* and record the reason with prov_fail(),
 * naming the token or TPM and keeping the raw backend code (CK_RV, TSS2_RC) in the text.
 */

struct prov_backend_ops;

/* Where and how to open a device. Strings are borrowed for the duration of open(). */
struct prov_device_params {
    const char *module_path;  /* PKCS#11 module if the URI has no module-path; may be NULL */
    bool read_only;           /* open a read-only session (ca show, check) */
    uint32_t tpm_srk_handle;  /* TPM: persistent storage root key handle; 0 = default */
    uint32_t tpm_key_handle;  /* TPM: persistent handle of the device key; 0 = default */
    uint32_t tpm_nv_index;    /* TPM: NV index for the DER certificate; 0 = default */
    /*
     * Look for devices attached since the last open (a station waiting for a reader that
     * the system has not attached yet): a PKCS#11 module that no open device uses is
     * initialized again, since many modules (SoftHSM2 among them) fix their slot list at
     * C_Initialize.
     */
    bool rescan;
};

/* An open device (token or TPM). Owned by whoever opened it; freed by ops->close. */
struct prov_device {
    const struct prov_backend_ops *ops;
    char *name;  /* for messages: "token dev-0001" or "TPM swtpm:port=2321" */
    void *priv;  /* backend state */
};

/* A key on a device. Freed with ops->free_key; the key object on the device stays. */
struct prov_key {
    struct prov_device *dev;
    enum prov_key_type type;
    unsigned char id[64];  /* CKA_ID, or the TPM persistent handle big-endian */
    size_t id_len;
    char *label;           /* CKA_LABEL or NULL */
    EVP_PKEY *pub;         /* the public key as read from the device (owned) */
    char *uri;             /* where the key lives, without any PIN: the content of key.uri */
    void *priv;            /* backend state (object handles, TPM handle) */
};

/* What generate_key makes. */
struct prov_keygen_params {
    enum prov_key_type type;
    const char *label;           /* CKA_LABEL / name; usually the device serial */
    const unsigned char *id;     /* unique CKA_ID chosen by the caller (recorded first) */
    size_t id_len;
    uint32_t tpm_handle;         /* TPM persistent handle; 0 = backend default */
    bool replace;                /* evict a key (and its certificate) already in that place */
    /*
     * With replace, what is known of the identity being certified again: the public key of
     * its current certificate (NULL when unknown) and the subject about to be issued. A key
     * in that place is replaced only when it is that key, when the certificate the device
     * keeps for it has that subject, or when no certificate on the device names it (an
     * attempt that never became an identity); the key of another identity is refused
     * (PROV_ERR_POLICY) and stays.
     */
    EVP_PKEY *replaceable_pub;
    const X509_NAME *replaceable_subject;
};

/* The properties the core insists on before it certifies or signs with a key. */
struct prov_key_props {
    bool is_private_token_object; /* CKA_TOKEN && CKA_PRIVATE / TPM persistent */
    bool is_sensitive;            /* CKA_SENSITIVE / TPM: fixedTPM && sensitiveDataOrigin */
    bool is_extractable;          /* CKA_EXTRACTABLE / TPM: !fixedTPM || !fixedParent */
    bool is_never_extractable;    /* CKA_NEVER_EXTRACTABLE / TPM: fixedTPM && fixedParent */
    bool is_local;                /* CKA_LOCAL / TPM: sensitiveDataOrigin */
    bool can_sign;
    bool can_decrypt;             /* decrypt, unwrap or derive allowed */
};

/*
 * One object on a device as list_objects reports it (borrowed for the callback). kind is
 * "private-key", "public-key", "certificate", "data", "secret-key", "other", or "unknown"
 * for an object whose class cannot be read (what an interrupted key generation can leave).
 */
struct prov_device_object {
    unsigned long handle;    /* the backend's handle for it (PKCS#11 CK_OBJECT_HANDLE) */
    const char *kind;
    const unsigned char *id; /* CKA_ID; NULL when the object has none (or an empty one) */
    size_t id_len;
    const char *label;       /* CKA_LABEL; NULL when none */
};

/* Signature mechanisms the core asks for. */
enum prov_sig_mech {
    PROV_SIG_ECDSA,     /* in: message digest; out: DER ECDSA-Sig-Value */
    PROV_SIG_RSA_PKCS1, /* in: DER DigestInfo; out: PKCS#1 v1.5 signature */
    PROV_SIG_RSA_RAW,   /* in: modulus-size block already padded (PSS); out: raw RSA */
};

/*
 * What a device string says about the device it names, as far as the core and the factory need
 * to know it (parse_uri fills it, build_uri makes a device string from it). Fields are NULL
 * when the string does not give them; parse_uri's are malloc'd (prov_device_name_clear).
 */
struct prov_device_name {
    char *identity;    /* what identity() of that device returns: PKCS#11 token serial,
                        * TPM EK SHA-256 (hex) */
    char *module_path; /* PKCS#11 module; NULL: the configured default */
    char *tcti;        /* TPM: the TCTI configuration, as the TCTI loader takes it */
};

struct prov_backend_ops {
    const char *name;   /* "pkcs11", "tpm2" */
    const char *scheme; /* what its device strings start with: "pkcs11:", "tpm2:" */

    /* Does this backend handle the device string ("pkcs11:...", "tpm2:...")? */
    bool (*handles)(const char *device_uri);

    /*
     * Checks a device string as an operator names a device (a manifest row, --device)
     * without opening or loading anything for it: the syntax, every attribute either
     * honoured or refused with its reason, a TCTI this system has. PROV_ERR_USAGE recorded
     * with prov_fail, naming the string. NULL: nothing is checked before open().
     */
    int (*validate)(const char *device_uri);

    /* Finds the token / connects to the TPM. PROV_ERR_NOT_FOUND when absent. */
    int (*open)(const char *device_uri, const struct prov_device_params *params,
                struct prov_device **out);
    void (*close)(struct prov_device *dev);

    /*
     * Logs in with pin (may be NULL when the device needs none). Reads the token flags
     * first and refuses (PROV_ERR_PIN_LOCKED) when the PIN is locked, on its final try or
     * must be changed. Never resubmits a PIN that failed: after PROV_ERR_PIN_INCORRECT the
     * device refuses further login attempts for the life of this object.
     */
    int (*login)(struct prov_device *dev, const struct prov_secret *pin);

    /* A stable identity of the device (token serial, TPM EK digest) for station matching. */
    int (*identity)(struct prov_device *dev, char *buf, size_t len);

    /*
     * Optional (NULL: no). Whether a second worker of a batch may work this device beside the
     * first, each with its own read-write session and the device's operations still one at
     * a time under its lock (factory/batch.c, partner_group): the device says it allows
     * that many sessions. A TPM has none: swtpm serves one connection at a time.
     */
    bool (*may_share)(struct prov_device *dev);

    /*
     * Optional (NULL: a device is opened anew for each use). Whether a device opened earlier
     * is still as open() and login() left it: its session answers, on the same slot holding
     * the same token, read-write as opened, logged in when the token asks for a login. A
     * batch worker keeps its device open from one row to the next on the same token only
     * with this answering true (factory/batch_row.c, kept_device_serves); a token pulled and
     * put back in between has lost the session, and the row opens it again. A session that
     * answers as another one (its handle given out again) is forgotten, not closed. Asked
     * without the token's batch lock, beside another worker's session on the same token
     * (only a device with may_share is kept): it may ask the token, never change it.
     */
    bool (*is_open)(struct prov_device *dev);

    /*
     * Optional (NULL: cannot tell). Whether two device strings of this backend name the same
     * device as far as the strings alone show: for PKCS#11, the same module (default_module
     * for a URI without module-path) and no token attribute that both give differs, with at
     * least one given by both. Used to refuse the CA's own token as a device before anything
     * is opened; the opened devices' identities decide the rest.
     */
    bool (*names_same_device)(const char *a, const char *b, const char *default_module);

    /*
     * The device string's identity, module and TCTI, unescaped (struct prov_device_name).
     * PROV_ERR_USAGE, recorded, for a string this backend cannot parse. Nothing is opened.
     */
    int (*parse_uri)(const char *device_uri, struct prov_device_name *out);

    /*
     * A device string from its parts, every value escaped as the backend's syntax wants
     * (RFC 7512 percent-encoding for PKCS#11), so parse_uri gives the same parts back.
     * *out is malloc'd. PROV_ERR_USAGE for parts this backend cannot name.
     */
    int (*build_uri)(const struct prov_device_name *name, char **out);

    /*
     * Whether the device string names the device whose identity() is identity, from the
     * string alone: a PKCS#11 URI by its serial attribute, a TPM by "tpm2:ek-sha256=HEX"
     * (hex digits in either case). False for a string that names no identity.
     */
    bool (*names_identity)(const char *device_uri, const char *identity);

    /*
     * Optional (NULL: the backend's key URIs name no label or id). The label and id a key URI
     * names (PKCS#11 object= and id=), unescaped: *label malloc'd or NULL when none; id gets at
     * most *id_len bytes (in) and *id_len is their number, 0 when none (out).
     * PROV_ERR_CONFIG, recorded, for a string that is not a key URI of this backend.
     */
    int (*key_uri_label_id)(const char *key_uri, char **label, unsigned char *id,
                            size_t *id_len);

    /* Generates a signing-only, non-extractable key on the device (doc/keys.md). */
    int (*generate_key)(struct prov_device *dev, const struct prov_keygen_params *params,
                        struct prov_key **out);

    /*
     * Finds an existing private key by URI (a key.uri, or the CA key URI, which may carry
     * id= and/or object=). PROV_ERR_NOT_FOUND when no key matches; PROV_ERR_CONFIG when more
     * than one does.
     */
    int (*find_key)(struct prov_device *dev, const char *key_uri, struct prov_key **out);

    /* Finds a key by exact id; PROV_ERR_NOT_FOUND when absent. Used to resume and clean up. */
    int (*find_key_by_id)(struct prov_device *dev, const unsigned char *id, size_t id_len,
                          struct prov_key **out);

    /*
     * Finds the private key whose public key equals pub (install: the certificate names the
     * key by its public key). PROV_ERR_NOT_FOUND when absent.
     */
    int (*find_key_by_public)(struct prov_device *dev, EVP_PKEY *pub, struct prov_key **out);

    /* Reads back the key's protection attributes. */
    int (*key_props)(struct prov_device *dev, struct prov_key *key, struct prov_key_props *out);

    /* Signs with the key; *sig_len is the buffer size in, the signature size out. */
    int (*sign)(struct prov_device *dev, struct prov_key *key, enum prov_sig_mech mech,
                const unsigned char *in, size_t in_len, unsigned char *sig, size_t *sig_len);
    /*
     * Whether sign (and key_props) may be called on one device from several threads at
     * once, the backend keeping them apart itself (PKCS#11: a session per signing thread,
     * struct p11_dev). false: the
     * caller keeps every call on the device to one thread at a time (a TPM's ESAPI context).
     */
    bool signs_from_threads;

    /* Stores the certificate next to the key (CKO_CERTIFICATE with the key's id and label,
     * or the TPM NV index). Replaces an earlier certificate for the same key; a certificate
     * of another key is refused (PROV_ERR_INPUT) and the stored one stays. */
    int (*store_certificate)(struct prov_device *dev, struct prov_key *key, X509 *cert);

    /* Destroys the key (and its public half) on the device: cleanup after a failure. */
    int (*delete_key)(struct prov_device *dev, struct prov_key *key);

    void (*free_key)(struct prov_device *dev, struct prov_key *key);

    /*
     * Calls fn for every object the device shows this session: public objects without a
     * login, private ones too after it. fn returning < 0 stops the walk with that value.
     * NULL in a backend that cannot list its objects (TPM).
     */
    int (*list_objects)(struct prov_device *dev,
                        int (*fn)(void *ctx, const struct prov_device_object *obj), void *ctx);
};

/* The backend for a device string, or NULL (the caller reports the unknown scheme). */
const struct prov_backend_ops *prov_backend_for(const char *device_uri);

/*
 * Registers a backend. The binary registers the real backends at start-up (cli/main.c);
 * tests may register a mock instead. At most 8.
 */
void prov_backend_register(const struct prov_backend_ops *ops);

/* The registered backend of that name ("pkcs11", "tpm2"), or NULL. */
const struct prov_backend_ops *prov_backend_named(const char *name);

/*
 * The schemes a device string may start with, one per registered backend in the order they
 * were registered, written into buf as "pkcs11: or tpm2:" (for messages). Returns buf.
 */
const char *prov_backend_schemes(char *buf, size_t len);

/* Whether the device string starts with the scheme of a registered backend. */
bool prov_backend_scheme_known(const char *device_uri);

/* Frees a prov_device_name's fields and zeroes it; accepts NULL. */
void prov_device_name_clear(struct prov_device_name *name);

/*
 * Parses a device string with its backend's parse_uri. PROV_ERR_USAGE for an unknown scheme
 * or a backend that cannot parse it.
 */
int prov_device_uri_parse(const char *device_uri, struct prov_device_name *out);

/*
 * Builds a device string for the named backend ("pkcs11", "tpm2") with its build_uri.
 * PROV_ERR_USAGE for a backend not registered or one that cannot build.
 */
int prov_device_uri_build(const char *backend, const struct prov_device_name *name, char **out);

/*
 * The device string naming exactly the device whose identity is identity, reached as
 * device_uri names it: device_uri parsed, its identity replaced, built again (a station pins
 * an "any token of this module" string to the token it found).
 */
int prov_device_uri_pin(const char *device_uri, const char *identity, char **out);

/*
 * Whether two device strings name the same device as far as the strings show: equal, or
 * equal by their backend's names_same_device (a PKCS#11 URI without module-path names
 * default_module's token). False when that cannot be told.
 */
bool prov_device_uri_same(const char *a, const char *b, const char *default_module);

/*
 * Whether the device string names the device of that backend ("pkcs11", "tpm2") with that
 * identity (the backend's names_identity); false for a string of another backend.
 */
bool prov_device_names_identity(const char *device_uri, const char *backend,
                                const char *identity);

/*
 * The label and id a key URI names, through its backend's key_uri_label_id (see above).
 * PROV_ERR_CONFIG for an unknown scheme or a backend whose key URIs name neither.
 */
int prov_key_uri_label_id(const char *key_uri, char **label, unsigned char *id, size_t *id_len);

/*
 * Checks a device string with the matching backend's validate (see above). PROV_ERR_USAGE
 * for an unknown scheme or a string the backend refuses.
 */
int prov_device_validate(const char *uri);

/* Opens the device named by uri with the matching backend. */
int prov_device_open(const char *uri, const struct prov_device_params *params,
                     struct prov_device **out);

/* Closes and frees; accepts NULL. */
void prov_device_close(struct prov_device *dev);

/* Frees a key handle through its device's backend; accepts NULL. */
void prov_key_free(struct prov_key *key);

#endif
