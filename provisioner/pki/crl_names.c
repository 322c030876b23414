/* SPDX-License-Identifier: Apache-2.0 */
/* CRL reason codes by name, and the distribution point a certificate names (crl_names.h). */
#include "crl_names.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "error.h"

static const struct {
    int code;
    const char *name;
    bool is_for_devices; /* offered by `revoke` */
} reasons[] = {
    {PROV_CRL_REASON_UNSPECIFIED, "unspecified", true},
    {PROV_CRL_REASON_KEY_COMPROMISE, "keyCompromise", true},
    {PROV_CRL_REASON_CA_COMPROMISE, "cACompromise", false},
    {PROV_CRL_REASON_AFFILIATION_CHANGED, "affiliationChanged", true},
    {PROV_CRL_REASON_SUPERSEDED, "superseded", true},
    {PROV_CRL_REASON_CESSATION_OF_OPERATION, "cessationOfOperation", true},
    {PROV_CRL_REASON_CERTIFICATE_HOLD, "certificateHold", false},
    {PROV_CRL_REASON_REMOVE_FROM_CRL, "removeFromCRL", false},
    {PROV_CRL_REASON_PRIVILEGE_WITHDRAWN, "privilegeWithdrawn", true},
    {PROV_CRL_REASON_AA_COMPROMISE, "aACompromise", false},
};

#define N_REASONS (sizeof(reasons) / sizeof(reasons[0]))

const char *prov_crl_reason_name(int code)
{
    for (size_t i = 0; i < N_REASONS; i++) {
        if (reasons[i].code == code) {
            return reasons[i].name;
        }
    }
    return "unknown";
}

const char *prov_crl_reason_names(void)
{
    return "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, "
           "privilegeWithdrawn";
}

int prov_crl_reason_parse(const char *name, int *code)
{
    for (size_t i = 0; name != NULL && i < N_REASONS; i++) {
        if (reasons[i].is_for_devices && strcmp(reasons[i].name, name) == 0) {
            *code = reasons[i].code;
            return 0;
        }
    }
    return prov_fail(PROV_ERR_USAGE, "--reason \"%s\": expected one of %s", name ? name : "",
                     prov_crl_reason_names());
}

static bool looks_like_uri(const char *s)
{
    const char *p = s;

    for (const char *q = s; *q != '\0'; q++) {
        if (*q <= ' ' || *q > '~') {
            return false;
        }
    }
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
        return false;
    }
    while (*p != '\0' && strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.",
                                *p) != NULL) {
        p++;
    }
    return *p == ':' && p[1] != '\0';
}

int prov_crl_add_distribution_point(X509 *cert, const char *url, const char *profile)
{
    CRL_DIST_POINTS *points = NULL;
    DIST_POINT *dp = NULL;
    GENERAL_NAME *name = NULL;
    ASN1_IA5STRING *ia5 = NULL;
    int r = PROV_ERR_CRYPTO;

    if (!looks_like_uri(url)) {
        return prov_fail(PROV_ERR_CONFIG, "profile %s: crl_url \"%s\": not a URI", profile, url);
    }
    points = sk_DIST_POINT_new_null();
    dp = DIST_POINT_new();
    name = GENERAL_NAME_new();
    ia5 = ASN1_IA5STRING_new();
    if (points == NULL || dp == NULL || name == NULL || ia5 == NULL ||
        ASN1_STRING_set(ia5, url, (int)strlen(url)) != 1) {
        goto out;
    }
    GENERAL_NAME_set0_value(name, GEN_URI, ia5);
    ia5 = NULL;
    dp->distpoint = DIST_POINT_NAME_new();
    if (dp->distpoint == NULL || (dp->distpoint->name.fullname = GENERAL_NAMES_new()) == NULL) {
        goto out;
    }
    dp->distpoint->type = 0; /* fullName */
    if (sk_GENERAL_NAME_push(dp->distpoint->name.fullname, name) <= 0) {
        goto out;
    }
    name = NULL;
    if (sk_DIST_POINT_push(points, dp) <= 0) {
        goto out;
    }
    dp = NULL;
    if (X509_add1_ext_i2d(cert, NID_crl_distribution_points, points, 0, X509V3_ADD_REPLACE) ==
        1) {
        r = 0;
    }
out:
    if (r < 0) {
        r = prov_fail_ossl(PROV_ERR_CRYPTO, "profile %s: cannot add the CRL distribution point",
                           profile);
    }
    CRL_DIST_POINTS_free(points);
    DIST_POINT_free(dp);
    GENERAL_NAME_free(name);
    ASN1_IA5STRING_free(ia5);
    return r;
}
