/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The callbacks OpenSSL's CMP server calls for a request of a transaction (cmp_server_int.h):
 * who signed it, what it asks, and the issue path (provisioner/pki/issue.c), the CA index's
 * registry (provisioner/pki/ca_registry.h) and revocation behind them.
 */
#include "cmp_server_int.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/cmp.h>
#include <openssl/cmperr.h>
#include <openssl/crmf.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ca_index.h"
#include "ca_registry.h"
#include "cmp_asn1.h"
#include "cmp_station_cache.h"
#include "config.h"
#include "crl_names.h"
#include "error.h"
#include "hex.h"
#include "issue.h"
#include "keytype.h"

/*
 * A CertReqMsg of RFC 4211 as far as its template's public key and the kind of its proof of
 * possession: OpenSSL 3.0 has no getter for either (publicKey came in 3.2), so the message is
 * re-read (i2d, then d2i) into this mirror of its ASN.1 type. The public key is read as its
 * two fields, not as an X509_PUBKEY, which OpenSSL 3.0 would decode through its decoders
 * (1.2 M instructions); prov_key_type_read_spki reads it (support/keytype.h).
 */
typedef struct {
    X509_ALGOR *algorithm;
    ASN1_BIT_STRING *public_key;
} SPKI_MIRROR;

ASN1_SEQUENCE(SPKI_MIRROR) = {
    ASN1_SIMPLE(SPKI_MIRROR, algorithm, X509_ALGOR),
    ASN1_SIMPLE(SPKI_MIRROR, public_key, ASN1_BIT_STRING),
} static_ASN1_SEQUENCE_END(SPKI_MIRROR)

typedef struct {
    ASN1_TIME *not_before;
    ASN1_TIME *not_after;
} TMPL_VALIDITY;

ASN1_SEQUENCE(TMPL_VALIDITY) = {
    ASN1_EXP_OPT(TMPL_VALIDITY, not_before, ASN1_TIME, 0),
    ASN1_EXP_OPT(TMPL_VALIDITY, not_after, ASN1_TIME, 1),
} static_ASN1_SEQUENCE_END(TMPL_VALIDITY)

typedef struct {
    ASN1_INTEGER *version;
    ASN1_INTEGER *serial;
    X509_ALGOR *signing_alg;
    X509_NAME *issuer;
    TMPL_VALIDITY *validity;
    X509_NAME *subject;
    SPKI_MIRROR *public_key;
    ASN1_BIT_STRING *issuer_uid;
    ASN1_BIT_STRING *subject_uid;
    STACK_OF(X509_EXTENSION) *extensions;
} TMPL_MIRROR;

ASN1_SEQUENCE(TMPL_MIRROR) = {
    ASN1_IMP_OPT(TMPL_MIRROR, version, ASN1_INTEGER, 0),
    ASN1_IMP_OPT(TMPL_MIRROR, serial, ASN1_INTEGER, 1),
    ASN1_IMP_OPT(TMPL_MIRROR, signing_alg, X509_ALGOR, 2),
    ASN1_EXP_OPT(TMPL_MIRROR, issuer, X509_NAME, 3),
    ASN1_IMP_OPT(TMPL_MIRROR, validity, TMPL_VALIDITY, 4),
    ASN1_EXP_OPT(TMPL_MIRROR, subject, X509_NAME, 5),
    ASN1_IMP_OPT(TMPL_MIRROR, public_key, SPKI_MIRROR, 6),
    ASN1_IMP_OPT(TMPL_MIRROR, issuer_uid, ASN1_BIT_STRING, 7),
    ASN1_IMP_OPT(TMPL_MIRROR, subject_uid, ASN1_BIT_STRING, 8),
    ASN1_IMP_SEQUENCE_OF_OPT(TMPL_MIRROR, extensions, X509_EXTENSION, 9),
} static_ASN1_SEQUENCE_END(TMPL_MIRROR)

typedef struct {
    ASN1_INTEGER *cert_req_id;
    TMPL_MIRROR *tmpl;
    STACK_OF(ASN1_TYPE) *controls;
} CERTREQ_MIRROR;

ASN1_SEQUENCE(CERTREQ_MIRROR) = {
    ASN1_SIMPLE(CERTREQ_MIRROR, cert_req_id, ASN1_INTEGER),
    ASN1_SIMPLE(CERTREQ_MIRROR, tmpl, TMPL_MIRROR),
    ASN1_SEQUENCE_OF_OPT(CERTREQ_MIRROR, controls, ASN1_ANY),
} static_ASN1_SEQUENCE_END(CERTREQ_MIRROR)

/* ProofOfPossession: its type is OSSL_CRMF_POPO_RAVERIFIED, _SIGNATURE, _KEYENC, _KEYAGREE. */
typedef struct {
    int type;
    union {
        ASN1_NULL *ra_verified;
        STACK_OF(ASN1_TYPE) *signature;
        ASN1_TYPE *key_encipherment;
        ASN1_TYPE *key_agreement;
    } value;
} POPO_MIRROR;

ASN1_CHOICE(POPO_MIRROR) = {
    ASN1_IMP(POPO_MIRROR, value.ra_verified, ASN1_NULL, 0),
    ASN1_IMP_SEQUENCE_OF(POPO_MIRROR, value.signature, ASN1_ANY, 1),
    ASN1_EXP(POPO_MIRROR, value.key_encipherment, ASN1_ANY, 2),
    ASN1_EXP(POPO_MIRROR, value.key_agreement, ASN1_ANY, 3),
} static_ASN1_CHOICE_END(POPO_MIRROR)

typedef struct {
    CERTREQ_MIRROR *cert_req;
    POPO_MIRROR *popo;
    STACK_OF(ASN1_TYPE) *reg_info;
} CRM_MIRROR;

ASN1_SEQUENCE(CRM_MIRROR) = {
    ASN1_SIMPLE(CRM_MIRROR, cert_req, CERTREQ_MIRROR),
    ASN1_OPT(CRM_MIRROR, popo, POPO_MIRROR),
    ASN1_SEQUENCE_OF_OPT(CRM_MIRROR, reg_info, ASN1_ANY),
} static_ASN1_SEQUENCE_END(CRM_MIRROR)


/*
 * An rr's PKIMessage as far as its RevDetails (RFC 4210 section 5.3.9): OpenSSL 3.0's server
 * hands the callback the certificate's issuer and serial but not crlEntryDetails, where the
 * client puts the reason (a CRLReason extension), so the message is re-read into this mirror
 * whose body can only be an rr ([11] RevReqContent).
 */
typedef struct {
    ASN1_TYPE *cert_details; /* CertTemplate, read by OpenSSL's server */
    STACK_OF(X509_EXTENSION) *crl_entry_details;
} RR_DETAILS;

ASN1_SEQUENCE(RR_DETAILS) = {
    ASN1_SIMPLE(RR_DETAILS, cert_details, ASN1_ANY),
    ASN1_SEQUENCE_OF_OPT(RR_DETAILS, crl_entry_details, X509_EXTENSION),
} static_ASN1_SEQUENCE_END(RR_DETAILS)

typedef struct {
    ASN1_TYPE *header;
    STACK_OF(RR_DETAILS) *details;
    ASN1_BIT_STRING *protection;
    STACK_OF(X509) *extra_certs;
} RR_MIRROR;

DEFINE_STACK_OF(RR_DETAILS)

ASN1_SEQUENCE(RR_MIRROR) = {
    ASN1_SIMPLE(RR_MIRROR, header, ASN1_ANY),
    ASN1_EXP_SEQUENCE_OF(RR_MIRROR, details, RR_DETAILS, 11),
    ASN1_EXP_OPT(RR_MIRROR, protection, ASN1_BIT_STRING, 0),
    ASN1_EXP_SEQUENCE_OF_OPT(RR_MIRROR, extra_certs, X509, 1),
} static_ASN1_SEQUENCE_END(RR_MIRROR)

/* The CN of name into out ("-" when there is none or it is not printable). */
static void name_cn(const X509_NAME *name, char *out, size_t cap)
{
    int i = name != NULL ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    const ASN1_STRING *v;
    int n;

    snprintf(out, cap, "-");
    if (i < 0) {
        return;
    }
    v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    n = ASN1_STRING_length(v);
    if (n <= 0 || (size_t)n >= cap) {
        return;
    }
    for (int k = 0; k < n; k++) {
        unsigned char c = ASN1_STRING_get0_data(v)[k];

        if (c < 0x21 || c > 0x7e) {
            return;
        }
    }
    memcpy(out, ASN1_STRING_get0_data(v), (size_t)n);
    out[n] = '\0';
}

/*
 * Whether signer, the first certificate of req's extraCerts, verifies req's protection itself
 * and chains to this CA's root.
 */
static bool signed_by(struct prov_cmp_server *srv, const OSSL_CMP_MSG *req, X509 *signer)
{
    OSSL_CMP_CTX *check = OSSL_CMP_CTX_new(NULL, NULL);
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    bool ok = check != NULL && vc != NULL && OSSL_CMP_CTX_set1_srvCert(check, signer) &&
              OSSL_CMP_validate_msg(check, req) == 1 &&
              X509_STORE_CTX_init(vc, srv->trust, signer, srv->chain) &&
              X509_verify_cert(vc) == 1;

    X509_STORE_CTX_free(vc);
    OSSL_CMP_CTX_free(check);
    return ok;
}

/*
 * The station that signed req: the first certificate of its extraCerts (RFC 9483 section
 * 3.1: the protection certificate comes first), which must verify the protection itself and
 * chain to this CA's root. OpenSSL has checked that some certificate of the message does;
 * this pins it to the one whose name is recorded. A certificate prov_cmp_server_handle_lot
 * pinned is that one already: OpenSSL verified the protection with it alone, its chain
 * verified when it was cached and its validity period just now (cmp_station_cache.h).
 */
int prov_cmp_request_station(struct txn *t, const OSSL_CMP_MSG *req, char *name, size_t cap,
                             X509 **cert_out)
{
    STACK_OF(X509) *extra = NULL;
    X509 *signer = t->pinned;
    int r = PROV_ERR_VERIFY;

    snprintf(name, cap, "-");
    *cert_out = NULL;
    if (signer != NULL && t->is_pin_new) {
        /* OpenSSL verified the message with it before any callback: worth remembering now */
        prov_cmp_station_cache_keep(t->owner->stations, signer);
        t->is_pin_new = false;
    }
    if (signer == NULL) {
        extra = prov_cmp_msg_extra_certs(req);
        signer = sk_X509_value(extra, 0);
        if (signer == NULL || !signed_by(t->owner, req, signer)) {
            goto out;
        }
    }
    name_cn(X509_get_subject_name(signer), name, cap);
    r = strcmp(name, "-") != 0 && X509_up_ref(signer) ? 0 : PROV_ERR_VERIFY;
    *cert_out = r == 0 ? signer : NULL;
    if (r == 0) {
        int days = 0;
        int secs = 0;

        /* a replay of this transaction fails verification once the signer has expired */
        if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(signer))) {
            t->signer_expires = time(NULL) + (time_t)days * 86400 + secs;
        }
    }
out:
    ERR_clear_error();
    x509s_free(extra);
    return r;
}

/* t as "YYYY-MM-DD HH:MM:SS GMT", or "?" */
static void time_text(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1 || strftime(out, cap, "%Y-%m-%d %H:%M:%S GMT", &tm) == 0) {
        snprintf(out, cap, "?");
    }
}

/*
 * What a sender whose certificate is this CA's but out of date is told (prov_cmp_claimed_sender):
 * verify_err and depth from the chain's verification; only the end certificate's own period.
 */
static void out_of_date(X509 *cert, const char *name, const char *hex, int verify_err,
                        int depth, char *tell, size_t cap)
{
    char when[40];

    if (depth != 0) {
        return;
    }
    if (verify_err == X509_V_ERR_CERT_HAS_EXPIRED) {
        time_text(X509_get0_notAfter(cert), when, sizeof(when));
        snprintf(tell, cap,
                 "the protection certificate of %s (serial %s) expired on %s: a station renews "
                 "it on the CA host (ca station renew %s)",
                 name, hex, when, name);
    } else if (verify_err == X509_V_ERR_CERT_NOT_YET_VALID) {
        time_text(X509_get0_notBefore(cert), when, sizeof(when));
        snprintf(tell, cap,
                 "the protection certificate of %s (serial %s) is not valid before %s: check "
                 "the clocks of the station and the CA host",
                 name, hex, when);
    }
}

/*
 * Who a request that OpenSSL refused before any callback claims to be, for the log line and
 * the audit record: the CN of the first certificate of its extraCerts (RFC 9483 section 3.1:
 * the protection certificate), and why that certificate does not do (OpenSSL drops an expired
 * one from its search without a word). Taken from the message unverified: it names the claim,
 * never authorizes anything. "" when the message carries no certificate.
 */
void prov_cmp_claimed_sender(struct prov_cmp_server *srv, const OSSL_CMP_MSG *req, char *out,
                             size_t cap, char *tell, size_t tell_cap)
{
    STACK_OF(X509) *extra = prov_cmp_msg_extra_certs(req);
    X509 *cert = sk_X509_value(extra, 0);
    X509_STORE_CTX *vc = NULL;
    const char *why = "its protection does not verify with it";
    char name[65];
    char hex[72] = "-";

    out[0] = '\0';
    tell[0] = '\0';
    if (cert != NULL) {
        const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);

        name_cn(X509_get_subject_name(cert), name, sizeof(name));
        if ((size_t)ASN1_STRING_length(sn) * 2 < sizeof(hex)) {
            prov_hex_encode(ASN1_STRING_get0_data(sn), (size_t)ASN1_STRING_length(sn), hex);
        }
        vc = X509_STORE_CTX_new();
        if (vc != NULL && X509_STORE_CTX_init(vc, srv->trust, cert, srv->chain) &&
            X509_verify_cert(vc) != 1) {
            /*
             * OpenSSL checks each certificate's signature before its period, from the root
             * down: an expired end certificate reported here was signed by this CA.
             */
            why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(vc));
            out_of_date(cert, name, hex, X509_STORE_CTX_get_error(vc),
                        X509_STORE_CTX_get_error_depth(vc), tell, tell_cap);
        }
        snprintf(out, cap, "claimed station %s, certificate %s: %s", name, hex, why);
    }
    ERR_clear_error();
    X509_STORE_CTX_free(vc);
    x509s_free(extra);
}

#define NOT_A_STATION "the protection certificate is not a station of this CA"

/* prov_cmp_request_station for a callback: the station's name into the outcome, or the refusal. */
static int station_of(struct txn *t, const OSSL_CMP_MSG *req, X509 **station)
{
    int r = prov_cmp_request_station(t, req, t->station, sizeof(t->station), station);

    snprintf(t->oc->station, sizeof(t->oc->station), "%s", t->station);
    if (r < 0) {
        outcome_set(t->oc, "refused: " NOT_A_STATION);
    }
    return r;
}

/*
 * What a CRMF request (an ir, cr or kur) asks for beyond OpenSSL 3.0's getters: the public
 * key of its template (*pub, NULL when it has none) and the kind of its proof of possession
 * (OSSL_CRMF_POPO_NONE when it has none). OpenSSL's server has verified a signature before
 * the callback runs (it accepts raVerified too: service/cmp_server.c), so a request whose proof
 * is OSSL_CRMF_POPO_SIGNATURE proved possession of *pub; its signature is not checked again.
 */
static void read_request(const OSSL_CRMF_MSG *crm, EVP_PKEY **pub, int *popo)
{
    unsigned char *der = NULL, *spki = NULL;
    const unsigned char *p;
    CRM_MIRROR *m = NULL;
    int len = crm != NULL ? i2d_OSSL_CRMF_MSG(crm, &der) : -1;
    int spki_len = -1;

    *pub = NULL;
    *popo = OSSL_CRMF_POPO_NONE;
    p = der;
    if (len > 0) {
        m = (CRM_MIRROR *)ASN1_item_d2i(NULL, &p, len, ASN1_ITEM_rptr(CRM_MIRROR));
    }
    if (m != NULL && m->popo != NULL) {
        *popo = m->popo->type;
    }
    if (m != NULL && m->cert_req->tmpl->public_key != NULL) {
        spki_len = ASN1_item_i2d((ASN1_VALUE *)m->cert_req->tmpl->public_key, &spki,
                                 ASN1_ITEM_rptr(SPKI_MIRROR));
    }
    if (spki_len > 0) {
        *pub = prov_key_type_read_spki(spki, spki_len);
    }
    ERR_clear_error();
    OPENSSL_free(spki);
    ASN1_item_free((ASN1_VALUE *)m, ASN1_ITEM_rptr(CRM_MIRROR));
    OPENSSL_free(der);
}

/* The PKIFailureInfo bit for a refusal of the issue path. */
static int fail_bit_of(int err)
{
    switch (err) {
    case PROV_ERR_POLICY: return OSSL_CMP_PKIFAILUREINFO_badCertTemplate;
    case PROV_ERR_ALREADY_ISSUED: return OSSL_CMP_PKIFAILUREINFO_duplicateCertReq;
    case PROV_ERR_DEVICE_REMOVED:
    case PROV_ERR_DEVICE:
    case PROV_ERR_NOT_FOUND: return OSSL_CMP_PKIFAILUREINFO_systemUnavail;
    default: return OSSL_CMP_PKIFAILUREINFO_systemFailure;
    }
}

/* Whether an error of the issue path or a revocation may be the CA token's (cmp_outcome.h). */
static bool is_ca_suspect(int err)
{
    return err != PROV_ERR_POLICY && err != PROV_ERR_ALREADY_ISSUED;
}

/* The answer with cert (taken over): the chain goes along, certConf is awaited. */
static OSSL_CMP_PKISI *answer_cert(struct txn *t, X509 *cert, STACK_OF(X509) **chain_out,
                                   X509 **cert_out, const char *outcome)
{
    ASN1_INTEGER *sn = X509_get_serialNumber(cert);

    *chain_out = X509_chain_up_ref(t->owner->chain);
    if (*chain_out == NULL || !X509_up_ref(cert)) {
        x509s_free(*chain_out);
        *chain_out = NULL;
        X509_free(cert);
        outcome_set(t->oc, "failed: out of memory");
        return rejection(OSSL_CMP_PKIFAILUREINFO_systemFailure, "out of memory");
    }
    X509_free(t->issued);
    t->issued = cert;
    *cert_out = cert;
    if ((size_t)ASN1_STRING_length(sn) * 2 < sizeof(t->oc->cert_serial)) {
        prov_hex_encode(ASN1_STRING_get0_data(sn), (size_t)ASN1_STRING_length(sn),
                        t->oc->cert_serial);
    }
    outcome_set(t->oc, "%s", outcome);
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, NULL);
}

/*
 * prov_ca_record.also for a request that issues (ca_index.h): t's transactionID remembered in
 * the commit that records its certificate (ca_replay.h), so that a crash right after it cannot
 * leave the ID forgotten and the message sent again answered as a new transaction.
 */
static int remember_with_issue(struct prov_ca_index *ix, void *arg)
{
    struct txn *t = arg;
    int r;

    if (t->signer_expires <= t->last) {
        return 0; /* nothing to remember: a replay fails its protection check */
    }
    r = prov_ca_replay_remember_in(ix, t->id, t->id_len, t->last, t->signer_expires);
    t->is_remembered = r == 0;
    return r;
}

/* rq records its certificate with t's transactionID (remember_with_issue). */
static void record_with(struct prov_request *rq, struct txn *t)
{
    rq->record.also = remember_with_issue;
    rq->record.also_arg = t;
}

/*
 * kur: a device renews its own certificate in the field, the request signed with its current
 * one (which must chain to this CA, be its serial's current certificate in the index and not
 * be revoked). The new key's certificate supersedes it (a reissue of that serial), under
 * the service's profile; no lot's cap counts it.
 */
static OSSL_CMP_PKISI *key_update(struct txn *t, const OSSL_CMP_MSG *req,
                                  const OSSL_CRMF_MSG *crm, X509 **cert_out,
                                  STACK_OF(X509) **chain_out)
{
    struct prov_cmp_server *srv = t->owner;
    struct prov_request rq;
    X509 *current = NULL;
    EVP_PKEY *pub = NULL;
    X509 *cert = NULL;
    int popo;
    int r;

    if (prov_cmp_request_station(t, req, t->station, sizeof(t->station), &current) < 0) {
        outcome_set(t->oc, "refused: kur: the protection certificate is not this CA's");
        return rejection(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                         "kur: the protection certificate is not this CA's");
    }
    snprintf(t->station, sizeof(t->station), "kur");
    snprintf(t->oc->station, sizeof(t->oc->station), "kur");
    read_request(crm, &pub, &popo);
    if (popo != OSSL_CRMF_POPO_SIGNATURE) {
        EVP_PKEY_free(pub);
        X509_free(current);
        outcome_set(t->oc, "refused: kur: no proof of possession of the new key");
        return rejection(OSSL_CMP_PKIFAILUREINFO_badPOP,
                         "kur: the request must prove possession of the new key (a signature)");
    }
    prov_error_clear();
    r = prov_ca_registry_renewable(srv->ca->index, current, t->serial, sizeof(t->serial));
    if (r < 0) {
        prov_cmp_station_cache_drop(srv->stations, current);
    }
    X509_free(current);
    snprintf(t->oc->serial, sizeof(t->oc->serial), "%s", r == 0 ? t->serial : "-");
    if (r == 0 && pub == NULL) {
        r = prov_fail(PROV_ERR_POLICY, "kur: the certificate template has no public key");
    }
    if (r == 0) {
        memset(&rq, 0, sizeof(rq));
        rq.serial = t->serial;
        rq.profile = t->profile;
        rq.record.issued_by = "cmp:kur";
        rq.record.is_reissue = true;
        rq.is_signed_unlocked = true;
        record_with(&rq, t);
        prov_error_clear();
        r = prov_issue_certificate_for_key(t->cfg, srv->ca, pub, &rq, &cert);
    }
    EVP_PKEY_free(pub);
    if (r < 0) {
        outcome_set(t->oc, "refused: %s", prov_error_message());
        t->oc->is_ca_suspect = is_ca_suspect(r);
        return rejection(r == PROV_ERR_POLICY ? OSSL_CMP_PKIFAILUREINFO_notAuthorized
                                              : fail_bit_of(r),
                         prov_error_message());
    }
    return answer_cert(t, cert, chain_out, cert_out, "renewed");
}

static OSSL_CMP_PKISI *cb_cert_request(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req,
                                       int cert_req_id, const OSSL_CRMF_MSG *crm,
                                       const X509_REQ *p10cr, X509 **cert_out,
                                       STACK_OF(X509) **chain_out, STACK_OF(X509) **ca_pubs)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);
    struct prov_cmp_server *srv = t->owner;
    struct prov_request rq;
    const X509_NAME *subject;
    EVP_PKEY *pub = NULL;
    X509 *station = NULL;
    struct prov_ca_ask ask;
    char by[80];
    char spki[65];
    X509 *cert = NULL;
    bool station_refused = false;
    int popo = OSSL_CRMF_POPO_NONE;
    int r;

    (void)cert_req_id;
    (void)ca_pubs;
    *cert_out = NULL;
    *chain_out = NULL;
    if (OSSL_CMP_MSG_get_bodytype(req) == BODY_KUR) {
        return key_update(t, req, crm, cert_out, chain_out);
    }
    if (station_of(t, req, &station) < 0) {
        return rejection(OSSL_CMP_PKIFAILUREINFO_notAuthorized, NOT_A_STATION);
    }
    if (p10cr != NULL) {
        subject = X509_REQ_get_subject_name(p10cr);
    } else {
        subject = OSSL_CRMF_CERTTEMPLATE_get0_subject(OSSL_CRMF_MSG_get0_tmpl(crm));
    }
    name_cn(subject, t->serial, sizeof(t->serial));
    snprintf(t->oc->serial, sizeof(t->oc->serial), "%s", t->serial);
    if (!prov_serial_is_valid(t->serial)) {
        X509_free(station);
        outcome_set(t->oc, "refused: the subject's CN is not a device serial");
        return rejection(OSSL_CMP_PKIFAILUREINFO_badCertTemplate,
                         "the subject's CN must be the device serial, " PROV_SERIAL_RULE);
    }
    if (p10cr == NULL) {
        read_request(crm, &pub, &popo);
    }
    if (p10cr == NULL && OSSL_CMP_MSG_get_bodytype(req) != BODY_CR &&
        popo != OSSL_CRMF_POPO_SIGNATURE) {
        /* raVerified only for a station's reissue (doc/ca-service.md); an ir proves its key */
        EVP_PKEY_free(pub);
        X509_free(station);
        outcome_set(t->oc, "refused: ir: no proof of possession of the key");
        return rejection(OSSL_CMP_PKIFAILUREINFO_badPOP,
                         "ir: the request must prove possession of its key (a signature)");
    }
    if (p10cr == NULL) {
        if (pub == NULL) {
            X509_free(station);
            outcome_set(t->oc, "refused: the certificate template has no public key");
            return rejection(OSSL_CMP_PKIFAILUREINFO_badCertTemplate,
                             "the certificate template has no public key");
        }
    }
    snprintf(by, sizeof(by), "cmp:%s", t->station);
    /*
     * The station first (registered, its certificate not revoked); then a retry gets the
     * certificate it was already given; only a new one needs a lot that admits it (the CA's
     * data: the lot the path names, else the oldest). A cr asks for a reissue.
     */
    memset(&ask, 0, sizeof(ask));
    ask.serial = t->serial;
    ask.lot = t->lot[0] != '\0' ? t->lot : NULL;
    ask.profile = t->profile->name;
    ask.is_reissue = OSSL_CMP_MSG_get_bodytype(req) == BODY_CR;
    prov_error_clear();
    r = prov_ca_registry_admit(srv->ca->index, t->station, station,
                               pub != NULL ? pub : X509_REQ_get0_pubkey((X509_REQ *)p10cr), by,
                               &ask, spki, &cert, &station_refused);
    if (station_refused) {
        /* renewed or revoked: the index says so on every request; the cache keeps it no more */
        prov_cmp_station_cache_drop(srv->stations, station);
    }
    X509_free(station);
    if (r < 0) {
        EVP_PKEY_free(pub);
        outcome_set(t->oc, "refused: %s", prov_error_message());
        /* over the station's rate: a transient refusal, the reason says when to retry */
        return rejection(ask.retry_after > 0      ? OSSL_CMP_PKIFAILUREINFO_systemUnavail
                         : r == PROV_ERR_POLICY ? OSSL_CMP_PKIFAILUREINFO_notAuthorized
                                                : OSSL_CMP_PKIFAILUREINFO_systemFailure,
                         prov_error_message());
    }
    if (cert != NULL) {
        EVP_PKEY_free(pub);
        return answer_cert(t, cert, chain_out, cert_out, "issued before (a retry)");
    }
    prov_ca_registry_request(&ask, t->profile, by, spki, &rq);
    rq.is_signed_unlocked = true; /* workers sign at once (issue.h) */
    record_with(&rq, t);
    prov_error_clear();
    if (p10cr != NULL) {
        r = prov_issue_certificate(t->cfg, srv->ca, (X509_REQ *)p10cr, &rq, &cert);
    } else {
        r = prov_issue_certificate_for_key(t->cfg, srv->ca, pub, &rq, &cert);
    }
    EVP_PKEY_free(pub);
    if (r == PROV_ERR_ALREADY_ISSUED && rq.is_signed_unlocked) {
        /*
         * Signed, then refused: another transaction certified this key for this serial and
         * station while this one was signing (the same request sent again before its answer
         * came): a retry, answered with that certificate.
         */
        X509 *before = NULL;

        if (prov_ca_registry_retry(srv->ca->index, t->serial, by, spki, &before) == 0 &&
            before != NULL) {
            prov_error_clear();
            return answer_cert(t, before, chain_out, cert_out, "issued before (a retry)");
        }
    }
    if (r < 0) {
        outcome_set(t->oc, "refused: %s", prov_error_message());
        t->oc->is_ca_suspect = is_ca_suspect(r);
        if (r == PROV_ERR_POLICY || r == PROV_ERR_ALREADY_ISSUED) {
            /* the CSR policy or the CA index refused the station's request: audited too */
            prov_ca_registry_refused(srv->ca->index, t->serial, t->oc->result);
        }
        return rejection(fail_bit_of(r), t->oc->result + strlen("refused: "));
    }
    return answer_cert(t, cert, chain_out, cert_out, ask.is_reissue ? "reissued" : "issued");
}

/*
 * The reason an rr asks for (RFC 4210 section 5.3.9: a CRLReason extension in the first
 * RevDetails' crlEntryDetails; none is unspecified), read from the request with the mirror
 * above. PROV_ERR_POLICY for a reason a device certificate may not be revoked with
 * (crl_names.h: the CA reasons, certificateHold, removeFromCRL) or one that does not decode.
 */
static int rr_reason(const OSSL_CMP_MSG *req, int *reason)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_OSSL_CMP_MSG(req, &der);
    RR_MIRROR *m = NULL;
    RR_DETAILS *d;
    ASN1_ENUMERATED *e = NULL;
    int code = PROV_CRL_REASON_UNSPECIFIED;
    int i = -1;
    int r = 0;

    *reason = PROV_CRL_REASON_UNSPECIFIED;
    p = der;
    if (len > 0) {
        m = (RR_MIRROR *)ASN1_item_d2i(NULL, &p, len, ASN1_ITEM_rptr(RR_MIRROR));
    }
    d = m != NULL ? sk_RR_DETAILS_value(m->details, 0) : NULL;
    if (d == NULL) {
        r = prov_fail(PROV_ERR_POLICY, "rr: no RevDetails");
    } else if (d->crl_entry_details != NULL) {
        i = X509v3_get_ext_by_NID(d->crl_entry_details, NID_crl_reason, -1);
    }
    if (i >= 0) {
        e = X509V3_EXT_d2i(X509v3_get_ext(d->crl_entry_details, i));
        code = e != NULL ? (int)ASN1_ENUMERATED_get(e) : -1;
        if (e == NULL) {
            r = prov_fail(PROV_ERR_POLICY, "rr: its CRLReason does not decode");
        } else if (prov_crl_reason_parse(prov_crl_reason_name(code), reason) < 0) {
            prov_error_clear(); /* the parser's words are for a command line */
            r = prov_fail(PROV_ERR_POLICY, "rr: reason %d (%s) is not one a device "
                          "certificate is revoked with (%s)", code, prov_crl_reason_name(code),
                          prov_crl_reason_names());
        }
    }
    ASN1_ENUMERATED_free(e);
    ASN1_item_free((ASN1_VALUE *)m, ASN1_ITEM_rptr(RR_MIRROR));
    OPENSSL_free(der);
    ERR_clear_error();
    return r;
}

/*
 * rr: a station revokes a certificate it asked for (issued_by cmp:<station>), recorded in
 * the CA index's revocation table like `provisioner revoke`, with the reason the request
 * carries (rr_reason: OpenSSL 3.0 does not hand it to the callback).
 */
static OSSL_CMP_PKISI *cb_rr(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req,
                             const X509_NAME *issuer, const ASN1_INTEGER *serial)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);
    struct prov_ca_index *ix = t->owner->ca->index;
    struct prov_ca_revocation rv;
    X509 *station = NULL;
    char hex[72] = "";
    char owner[80];
    char by[80];
    bool is_new = false;
    int reason = PROV_CRL_REASON_UNSPECIFIED;
    bool authorized;
    int r;

    if (station_of(t, req, &station) < 0) {
        return rejection(OSSL_CMP_PKIFAILUREINFO_notAuthorized, NOT_A_STATION);
    }
    prov_error_clear();
    r = prov_ca_registry_authorize(ix, t->station, station);
    if (r < 0) {
        prov_cmp_station_cache_drop(t->owner->stations, station);
    }
    X509_free(station);
    authorized = r == 0;
    if (r == 0) {
        r = rr_reason(req, &reason);
    }
    if (r == 0 && (issuer == NULL || serial == NULL ||
                   X509_NAME_cmp(issuer, X509_get_subject_name(t->owner->ca->cert)) != 0 ||
                   (size_t)ASN1_STRING_length(serial) * 2 >= sizeof(hex))) {
        r = prov_fail(PROV_ERR_POLICY, "not a certificate of this CA");
    }
    if (r == 0) {
        prov_hex_encode(ASN1_STRING_get0_data(serial), (size_t)ASN1_STRING_length(serial), hex);
        r = prov_ca_registry_cert_owner(ix, hex, t->serial, sizeof(t->serial), owner,
                                        sizeof(owner));
    }
    snprintf(by, sizeof(by), "cmp:%s", t->station);
    if (r == 0 && strcmp(owner, by) != 0) {
        r = prov_fail(PROV_ERR_POLICY, "certificate %s was not issued to station %s", hex,
                      t->station);
    }
    snprintf(t->oc->serial, sizeof(t->oc->serial), "%s", t->serial);
    if (r == 0) {
        r = prov_ca_index_revoke(ix, t->serial, hex, reason, NULL, by, &rv, &is_new);
    }
    if (r < 0 && authorized) {
        /* the station's own refusal is audited by prov_ca_registry_authorize */
        snprintf(by, sizeof(by), "rr %s", hex[0] != '\0' ? hex : "-");
        prov_ca_registry_refused(ix, by, prov_error_message());
    }
    if (r < 0) {
        outcome_set(t->oc, "refused: %s", prov_error_message());
        t->oc->is_ca_suspect = is_ca_suspect(r);
        return rejection(r == PROV_ERR_POLICY || r == PROV_ERR_ALREADY_ISSUED
                             ? OSSL_CMP_PKIFAILUREINFO_badCertId
                             : OSSL_CMP_PKIFAILUREINFO_systemFailure,
                         prov_error_message());
    }
    snprintf(t->oc->cert_serial, sizeof(t->oc->cert_serial), "%s", hex);
    outcome_set(t->oc, "%s (%s)", is_new ? "revoked" : "revoked before",
                prov_crl_reason_name(rv.reason));
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, NULL);
}

/* OpenSSL 3.0 has no getter for a PKIStatusInfo's status: its printed form says it. */
static bool status_is_accepted(const OSSL_CMP_PKISI *si)
{
    static const char accepted[] = "PKIStatus: accepted";
    char text[256];

    return OSSL_CMP_snprint_PKIStatusInfo(si, text, sizeof(text)) != NULL &&
           strncmp(text, accepted, sizeof(accepted) - 1) == 0 &&
           (text[sizeof(accepted) - 1] == '\0' || text[sizeof(accepted) - 1] == ';');
}

static int cb_cert_conf(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req, int cert_req_id,
                        const ASN1_OCTET_STRING *cert_hash, const OSSL_CMP_PKISI *si)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);
    ASN1_OCTET_STRING *digest = NULL;
    int accepted;

    (void)req;
    (void)cert_req_id;
    snprintf(t->oc->station, sizeof(t->oc->station), "%s", t->station);
    snprintf(t->oc->serial, sizeof(t->oc->serial), "%s", t->serial);
    if (t->issued == NULL) {
        outcome_set(t->oc, "refused: no certificate to confirm");
        ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER,
                       "no certificate to confirm");
        return 0;
    }
    digest = X509_digest_sig(t->issued, NULL, NULL);
    if (cert_hash == NULL || digest == NULL || ASN1_OCTET_STRING_cmp(digest, cert_hash) != 0) {
        ASN1_OCTET_STRING_free(digest);
        outcome_set(t->oc, "refused: certHash does not match the certificate issued");
        ERR_raise(ERR_LIB_CMP, CMP_R_CERTHASH_UNMATCHED);
        return 0;
    }
    ASN1_OCTET_STRING_free(digest);
    accepted = si == NULL || status_is_accepted(si);
    if (accepted) {
        /* The station has it: in the index, issued -> delivered. */
        if (prov_ca_index_delivered(t->owner->ca->index, t->issued) < 0) {
            outcome_set(t->oc, "failed: %s", prov_error_message());
            ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER,
                           "the CA index cannot be written");
            return 0;
        }
        outcome_set(t->oc, "confirmed");
    } else {
        outcome_set(t->oc, "rejected by the station");
    }
    X509_free(t->issued);
    t->issued = NULL;
    return 1;
}

/* genm: caCerts (RFC 9483 section 4.3.1) with the chain; any other infoType gets nothing. */
static int cb_genm(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req,
                   const STACK_OF(OSSL_CMP_ITAV) *in, STACK_OF(OSSL_CMP_ITAV) **out)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);
    X509 *station = NULL;
    bool wants = false;
    int ok = 0;

    *out = sk_OSSL_CMP_ITAV_new_null();
    if (station_of(t, req, &station) < 0) {
        ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, NOT_A_STATION);
        goto out;
    }
    prov_error_clear();
    if (prov_ca_registry_authorize(t->owner->ca->index, t->station, station) < 0) {
        prov_cmp_station_cache_drop(t->owner->stations, station);
        outcome_set(t->oc, "refused: %s", prov_error_message());
        ERR_raise_data(ERR_LIB_CMP, CMP_R_REQUEST_REJECTED_BY_SERVER, "%s",
                       prov_error_message());
        goto out;
    }
    for (int i = 0; i < sk_OSSL_CMP_ITAV_num(in); i++) {
        wants |= prov_cmp_is_cacerts(sk_OSSL_CMP_ITAV_value(in, i));
    }
    if (*out == NULL) {
        goto out;
    }
    if (wants) {
        OSSL_CMP_ITAV *itav = prov_cmp_cacerts_itav(t->owner->chain);

        if (itav == NULL || !OSSL_CMP_ITAV_push0_stack_item(out, itav)) {
            OSSL_CMP_ITAV_free(itav);
            goto out;
        }
        outcome_set(t->oc, "caCerts");
    } else {
        outcome_set(t->oc, "genp (no infoType served)");
    }
    ok = 1;
out:
    X509_free(station);
    if (!ok) {
        sk_OSSL_CMP_ITAV_pop_free(*out, OSSL_CMP_ITAV_free);
        *out = NULL;
    }
    return ok;
}

static void cb_error(OSSL_CMP_SRV_CTX *sctx, const OSSL_CMP_MSG *req,
                     const OSSL_CMP_PKISI *si, const ASN1_INTEGER *code,
                     const OSSL_CMP_PKIFREETEXT *details)
{
    struct txn *t = OSSL_CMP_SRV_CTX_get0_custom_ctx(sctx);

    (void)req;
    (void)si;
    (void)code;
    (void)details;
    outcome_set(t->oc, "the station reported an error");
}

int prov_cmp_requests_attach(OSSL_CMP_SRV_CTX *sctx, struct txn *t)
{
    return OSSL_CMP_SRV_CTX_init(sctx, t, cb_cert_request, cb_rr, cb_genm, cb_error, cb_cert_conf,
                                 NULL);
}
