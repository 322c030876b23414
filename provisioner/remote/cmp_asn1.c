/* SPDX-License-Identifier: Apache-2.0 */
/* The caCerts general message's value with OpenSSL's ASN.1 templates (cmp_asn1.h). */
#include "cmp_asn1.h"

#include <stdio.h>

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/objects.h>

typedef STACK_OF(X509) PROV_CACERTS;
ASN1_ITEM_TEMPLATE(PROV_CACERTS) =
    ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SEQUENCE_OF, 0, caCerts, X509)
static_ASN1_ITEM_TEMPLATE_END(PROV_CACERTS)

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
