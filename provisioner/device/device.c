/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening a device with the config's parameters, the login, and the key checks every
 * backend's keys pass (device.h).
 */
#include "device.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "error.h"
#include "keytype.h"
#include "secret.h"
#include "signer.h"

void prov_device_params_from_config(const struct prov_config *cfg, bool read_only,
                                    struct prov_device_params *out)
{
    memset(out, 0, sizeof(*out));
    out->read_only = read_only;
    if (cfg != NULL) {
        out->module_path = cfg->pkcs11_module;
        out->tpm_srk_handle = cfg->tpm_srk_handle;
        out->tpm_key_handle = cfg->tpm_key_handle;
        out->tpm_nv_index = cfg->tpm_nv_index;
    }
}

int prov_device_login(struct prov_device *dev, const char *pin_spec, const char *pin_what)
{
    struct prov_secret *pin = NULL;
    int r = 0;

    if (pin_spec != NULL) {
        r = prov_secret_load(pin_spec, pin_what, &pin);
    }
    if (r == 0) {
        r = dev->ops->login(dev, pin);
    }
    prov_secret_free(pin);
    return r;
}

int prov_device_open_login(const struct prov_config *cfg, const char *uri, const char *pin_spec,
                           const char *pin_what, bool read_only, struct prov_device **out)
{
    struct prov_device_params params;
    struct prov_device *dev = NULL;
    int r;

    *out = NULL;
    prov_device_params_from_config(cfg, read_only, &params);
    r = prov_device_open(uri, &params, &dev);
    if (r == 0) {
        r = prov_device_login(dev, pin_spec, pin_what);
    }
    if (r == 0) {
        *out = dev;
        dev = NULL;
    }
    prov_device_close(dev);
    return r;
}

int prov_check_key_protection(struct prov_key *key, const char *what)
{
    struct prov_key_props pr;
    int r;

    memset(&pr, 0, sizeof(pr));
    r = key->dev->ops->key_props(key->dev, key, &pr);
    if (r < 0) {
        return r;
    }
    if (!pr.is_private_token_object) {
        return prov_fail(PROV_ERR_POLICY, "%s on %s: not a private token object", what,
                         key->dev->name);
    }
    if (!pr.is_sensitive || pr.is_extractable) {
        return prov_fail(PROV_ERR_POLICY, "%s on %s: key is %s", what, key->dev->name,
                         pr.is_extractable ? "extractable" : "not sensitive");
    }
    if (!pr.is_never_extractable || !pr.is_local) {
        return prov_fail(PROV_ERR_POLICY,
                         "%s on %s: key was not generated on the device (%s is false)", what,
                         key->dev->name, pr.is_local ? "CKA_NEVER_EXTRACTABLE" : "CKA_LOCAL");
    }
    if (!pr.can_sign) {
        return prov_fail(PROV_ERR_POLICY, "%s on %s: key cannot sign", what, key->dev->name);
    }
    if (pr.can_decrypt) {
        return prov_fail(PROV_ERR_POLICY, "%s on %s: key also allows decrypt, unwrap or derive",
                         what, key->dev->name);
    }
    return 0;
}

int prov_proof_sign(struct prov_key *key, struct prov_proof *out)
{
    const EVP_MD *md = prov_key_type_digest(key->type);
    EVP_PKEY *signer = NULL;
    EVP_MD_CTX *ctx = NULL;
    int r;

    memset(out, 0, sizeof(*out));
    out->type = key->type;
    out->device = key->dev->name;
    out->sig_len = sizeof(out->sig);
    if (RAND_bytes(out->challenge, sizeof(out->challenge)) != 1) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "proof: no randomness");
    }
    r = prov_signer_pkey(key, &signer);
    if (r < 0) {
        goto out;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, md, NULL, signer) != 1 ||
        EVP_DigestSign(ctx, out->sig, &out->sig_len, out->challenge, sizeof(out->challenge)) !=
            1) {
        r = prov_fail_ossl(PROV_ERR_DEVICE, "proof: %s could not sign the challenge",
                           key->dev->name);
        /* The device's own reason (and code: removed, PIN...) wins when it gave one. */
        r = prov_error_code() < 0 ? prov_error_code() : r;
    }
out:
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(signer);
    return r;
}

int prov_proof_check(const struct prov_proof *proof, X509 *cert)
{
    EVP_PKEY *cert_pub = X509_get0_pubkey(cert);
    EVP_MD_CTX *ctx = NULL;
    int r = 0;

    if (cert_pub == NULL) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "proof: no certificate key");
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL ||
        EVP_DigestVerifyInit(ctx, NULL, prov_key_type_digest(proof->type), NULL, cert_pub) != 1 ||
        EVP_DigestVerify(ctx, proof->sig, proof->sig_len, proof->challenge,
                         sizeof(proof->challenge)) != 1) {
        r = prov_fail_ossl(PROV_ERR_VERIFY,
                           "proof: the challenge signed on %s does not verify with the "
                           "certificate's public key",
                           proof->device);
    }
    EVP_MD_CTX_free(ctx);
    return r;
}

int prov_prove_key(struct prov_key *key, X509 *cert)
{
    struct prov_proof proof;
    int r;

    if (X509_get0_pubkey(cert) == NULL) {
        return prov_fail_ossl(PROV_ERR_CRYPTO, "proof: no certificate key");
    }
    r = prov_proof_sign(key, &proof);
    return r < 0 ? r : prov_proof_check(&proof, cert);
}
