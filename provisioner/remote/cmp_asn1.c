/* SPDX-License-Identifier: Apache-2.0 */
/* The CMP types OpenSSL 3.0 has no helper for, with OpenSSL's ASN.1 templates (cmp_asn1.h). */
#include "cmp_asn1.h"

#include <stdio.h>

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

typedef STACK_OF(X509) PROV_CACERTS;
ASN1_ITEM_TEMPLATE(PROV_CACERTS) =
    ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SEQUENCE_OF, 0, caCerts, X509)
static_ASN1_ITEM_TEMPLATE_END(PROV_CACERTS)

/*
 * PKIMessage (RFC 4210 section 5.1) as far as its protection and extraCerts: OpenSSL 3.0 has
 * no getter for either, so a message is re-read into this mirror (header and body left
 * undecoded).
 */
typedef struct {
    ASN1_TYPE *header;
    ASN1_TYPE *body;
    ASN1_BIT_STRING *protection;
    STACK_OF(X509) *extra_certs;
} PROV_MSG_MIRROR;

ASN1_SEQUENCE(PROV_MSG_MIRROR) = {
    ASN1_SIMPLE(PROV_MSG_MIRROR, header, ASN1_ANY),
    ASN1_SIMPLE(PROV_MSG_MIRROR, body, ASN1_ANY),
    ASN1_EXP_OPT(PROV_MSG_MIRROR, protection, ASN1_BIT_STRING, 0),
    ASN1_EXP_SEQUENCE_OF_OPT(PROV_MSG_MIRROR, extra_certs, X509, 1),
} static_ASN1_SEQUENCE_END(PROV_MSG_MIRROR)

static PROV_MSG_MIRROR *msg_mirror(const OSSL_CMP_MSG *msg)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = msg != NULL ? i2d_OSSL_CMP_MSG(msg, &der) : -1;
    PROV_MSG_MIRROR *m = NULL;

    p = der;
    if (len > 0) {
        m = (PROV_MSG_MIRROR *)ASN1_item_d2i(NULL, &p, len, ASN1_ITEM_rptr(PROV_MSG_MIRROR));
    }
    OPENSSL_free(der);
    ERR_clear_error();
    return m;
}

STACK_OF(X509) *prov_cmp_msg_extra_certs(const OSSL_CMP_MSG *msg)
{
    PROV_MSG_MIRROR *m = msg_mirror(msg);
    STACK_OF(X509) *certs = NULL;

    if (m != NULL) {
        certs = m->extra_certs;
        m->extra_certs = NULL;
    }
    ASN1_item_free((ASN1_VALUE *)m, ASN1_ITEM_rptr(PROV_MSG_MIRROR));
    return certs;
}

int prov_cmp_msg_is_protected(const OSSL_CMP_MSG *msg)
{
    PROV_MSG_MIRROR *m = msg_mirror(msg);
    int is = m != NULL && m->protection != NULL && ASN1_STRING_length(m->protection) > 0;

    ASN1_item_free((ASN1_VALUE *)m, ASN1_ITEM_rptr(PROV_MSG_MIRROR));
    return is;
}

int prov_cmp_is_cacerts(const OSSL_CMP_ITAV *itav)
{
    ASN1_OBJECT *oid = OBJ_txt2obj(PROV_CMP_OID_CACERTS, 1);
    int is = oid != NULL && itav != NULL && OBJ_cmp(OSSL_CMP_ITAV_get0_type(itav), oid) == 0;

    ASN1_OBJECT_free(oid);
    return is;
}

OSSL_CMP_ITAV *prov_cmp_cacerts_itav(STACK_OF(X509) *certs)
{
    ASN1_TYPE *value = ASN1_TYPE_new();
    ASN1_STRING *seq = ASN1_item_pack(certs, ASN1_ITEM_rptr(PROV_CACERTS), NULL);
    ASN1_OBJECT *type = OBJ_txt2obj(PROV_CMP_OID_CACERTS, 1);
    OSSL_CMP_ITAV *itav = NULL;

    if (value != NULL && seq != NULL && type != NULL) {
        ASN1_TYPE_set(value, V_ASN1_SEQUENCE, seq);
        seq = NULL;
        itav = OSSL_CMP_ITAV_create(type, value);
    }
    if (itav == NULL) {
        ASN1_STRING_free(seq);
        ASN1_TYPE_free(value);
        ASN1_OBJECT_free(type);
    }
    return itav;
}

STACK_OF(X509) *prov_cmp_cacerts_of(const OSSL_CMP_ITAV *itav)
{
    ASN1_TYPE *value = prov_cmp_is_cacerts(itav) ? OSSL_CMP_ITAV_get0_value(itav) : NULL;

    if (value == NULL || ASN1_TYPE_get(value) != V_ASN1_SEQUENCE) {
        return NULL;
    }
    return ASN1_item_unpack(value->value.sequence, ASN1_ITEM_rptr(PROV_CACERTS));
}

int prov_cmp_log_nothing(const char *func, const char *file, int line, OSSL_CMP_severity level,
                         const char *msg)
{
    (void)func;
    (void)file;
    (void)line;
    (void)level;
    (void)msg;
    return 1;
}

X509 *prov_cmp_read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *cert = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

    if (f != NULL) {
        fclose(f);
    }
    ERR_clear_error();
    return cert;
}

int prov_cmp_is_signer_cert(X509 *cert)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(cert, NID_ext_key_usage, NULL, NULL);
    int found = 0;

    for (int i = 0; i < sk_ASN1_OBJECT_num(eku) && !found; i++) {
        found = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == NID_cmcCA;
    }
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    return found;
}
