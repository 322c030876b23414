/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cloud registries' formats of `lot export` (doc/export.md): AWS IoT bulk registration
 * (StartThingRegistrationTask's JSON-lines input file and its provisioning template, and the
 * RegisterCACertificate input for the intermediate) and Azure IoT Hub DPS (the enrollment
 * group of the intermediate and one individual enrollment per device, as the service API's
 * request bodies).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509.h>

#include "error.h"
#include "lot_export_cloud.h"

/* {"Ref": "NAME"}: a template parameter's value. */
static json_object *ref(const char *name)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "Ref", json_object_new_string(name));
    return o;
}

/*
 * The device template: a thing named by the serial and the device's existing certificate,
 * activated. The certificate is given by CertificatePem alone: its CA is registered first
 * (register-ca-certificate.json), and AWS IoT wants CACertificatePem only to choose between
 * several registered CAs with the same subject (doc/export.md).
 */
static json_object *aws_template(void)
{
    static const char *const params[] = {"ThingName", "SerialNumber", "CertificatePem"};
    json_object *t = json_object_new_object();
    json_object *p = json_object_new_object();
    json_object *res = json_object_new_object();
    json_object *thing = json_object_new_object();
    json_object *tprops = json_object_new_object();
    json_object *attrs = json_object_new_object();
    json_object *cert = json_object_new_object();
    json_object *cprops = json_object_new_object();

    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        json_object *d = json_object_new_object();

        json_object_object_add(d, "Type", json_object_new_string("String"));
        json_object_object_add(p, params[i], d);
    }
    json_object_object_add(tprops, "ThingName", ref("ThingName"));
    json_object_object_add(attrs, "serial", ref("SerialNumber"));
    json_object_object_add(tprops, "AttributePayload", attrs);
    json_object_object_add(thing, "Type", json_object_new_string("AWS::IoT::Thing"));
    json_object_object_add(thing, "Properties", tprops);
    json_object_object_add(cprops, "CertificatePem", ref("CertificatePem"));
    json_object_object_add(cprops, "Status", json_object_new_string("ACTIVE"));
    json_object_object_add(cert, "Type", json_object_new_string("AWS::IoT::Certificate"));
    json_object_object_add(cert, "Properties", cprops);
    json_object_object_add(res, "thing", thing);
    json_object_object_add(res, "certificate", cert);
    json_object_object_add(t, "Parameters", p);
    json_object_object_add(t, "Resources", res);
    return t;
}

/*
 * RegisterCACertificate as `aws iot register-ca-certificate --cli-input-json` takes it. SNI_ONLY
 * needs no verification certificate (DEFAULT mode needs one signed by the CA key over the
 * account's registration code, which only the customer's account can give).
 */
static json_object *aws_register_ca(const char *ca_pem)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "caCertificate", json_object_new_string(ca_pem));
    json_object_object_add(o, "certificateMode", json_object_new_string("SNI_ONLY"));
    json_object_object_add(o, "setAsActive", json_object_new_boolean(1));
    json_object_object_add(o, "allowAutoRegistration", json_object_new_boolean(0));
    return o;
}

/* An AWS IoT thing name (CreateThing): 1 to 128 of letters, digits, ':', '_' and '-'. */
static bool is_thing_name(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= 128 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-") == n;
}

int lot_build_aws(const struct lot_input *in, struct prov_lot_bundle *b)
{
    char *ca_pem = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = NULL;
    int r;

    /* Every thing name first: a refused lot builds nothing. */
    for (size_t i = 0; i < in->n; i++) {
        if (!is_thing_name(in->devices[i].serial)) {
            return prov_fail(PROV_ERR_POLICY,
                             "serial %s: not usable as an AWS IoT thing name (letters, digits, "
                             ": _ -, at most 128)",
                             in->devices[i].serial);
        }
    }
    r = lot_cert_pem(sk_X509_value(in->chain, 0), &ca_pem);
    if (r < 0) {
        return r;
    }
    f = open_memstream(&buf, &len);
    if (f == NULL) {
        free(ca_pem);
        return PROV_ERR_NOMEM;
    }
    /* One line per device: the template's parameter values (newline-delimited JSON), no more:
     * the CA goes to register-ca-certificate.json. */
    for (size_t i = 0; i < in->n; i++) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "ThingName", json_object_new_string(in->devices[i].serial));
        json_object_object_add(o, "SerialNumber", json_object_new_string(in->devices[i].serial));
        json_object_object_add(o, "CertificatePem", json_object_new_string(in->devices[i].pem));
        fprintf(f, "%s\n",
                json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    }
    r = fclose(f) == 0 ? 0 : PROV_ERR_NOMEM;
    if (r == 0) {
        r = lot_bundle_add(b, "bulk-registration.jsonl", buf, len);
    }
    if (r == 0) {
        r = lot_bundle_add_json(b, "provisioning-template.json", aws_template());
    }
    if (r == 0) {
        r = lot_bundle_add_json(b, "register-ca-certificate.json", aws_register_ca(ca_pem));
    }
    free(buf);
    free(ca_pem);
    return r;
}

/*
 * A DPS registration or enrollment group id: alphanumeric and - . _ :, at most 128, no special
 * character first or last (the service treats it case-insensitively; we keep the case).
 */
static bool is_dps_id(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 128 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1])) {
        return false;
    }
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:") == n;
}

static json_object *x509_attestation(const char *kind, const char *pem)
{
    json_object *att = json_object_new_object();
    json_object *x509 = json_object_new_object();
    json_object *certs = json_object_new_object();
    json_object *primary = json_object_new_object();

    json_object_object_add(primary, "certificate", json_object_new_string(pem));
    json_object_object_add(certs, "primary", primary);
    json_object_object_add(x509, kind, certs);
    json_object_object_add(att, "type", json_object_new_string("x509"));
    json_object_object_add(att, "x509", x509);
    return att;
}

/* The certificate's CN: DPS requires an X.509 registration id to equal it. */
static int subject_cn(const struct lot_device *d, char *buf, size_t len)
{
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(d->cert), NID_commonName, buf,
                                  (int)len) <= 0 ||
        !is_dps_id(buf)) {
        return prov_fail(PROV_ERR_POLICY,
                         "serial %s: its certificate's CN is no DPS registration id "
                         "(alphanumeric and - . _ :, at most 128)",
                         d->serial);
    }
    return 0;
}

struct dps_id {
    char cn[129];
    const char *serial;
};

static int dps_id_cmp(const void *a, const void *b)
{
    return strcasecmp(((const struct dps_id *)a)->cn, ((const struct dps_id *)b)->cn);
}

/*
 * Every device's registration id, in device order, after checking that each is one and that
 * no two devices share one (DPS compares ids without case, and each names a file).
 */
static int dps_ids(const struct lot_input *in, struct dps_id **out)
{
    struct dps_id *ids = calloc(in->n ? in->n : 1, sizeof(*ids));
    struct dps_id *sorted = calloc(in->n ? in->n : 1, sizeof(*sorted));
    int r = ids != NULL && sorted != NULL ? 0 : PROV_ERR_NOMEM;

    for (size_t i = 0; r == 0 && i < in->n; i++) {
        r = subject_cn(&in->devices[i], ids[i].cn, sizeof(ids[i].cn));
        ids[i].serial = in->devices[i].serial;
    }
    if (r == 0 && in->n > 1) {
        memcpy(sorted, ids, in->n * sizeof(*ids));
        qsort(sorted, in->n, sizeof(*sorted), dps_id_cmp);
        for (size_t i = 1; i < in->n; i++) {
            if (dps_id_cmp(&sorted[i - 1], &sorted[i]) == 0) {
                r = prov_fail(PROV_ERR_POLICY,
                              "serials %s and %s: one DPS registration id, their certificates' "
                              "CN %s (compared without case)",
                              sorted[i - 1].serial, sorted[i].serial, sorted[i].cn);
                break;
            }
        }
    }
    free(sorted);
    if (r < 0) {
        free(ids);
        ids = NULL;
    }
    *out = ids;
    return r;
}

int lot_build_azure_dps(const struct lot_input *in, struct prov_lot_bundle *b)
{
    struct dps_id *ids = NULL;
    json_object *g = NULL;
    char *ca_pem = NULL;
    char *name = NULL;
    int r;

    if (!is_dps_id(in->lot)) {
        return prov_fail(PROV_ERR_POLICY,
                         "lot %s: not usable as a DPS enrollment group id (alphanumeric and "
                         "- . _ :, at most 128)",
                         in->lot);
    }
    r = dps_ids(in, &ids);
    if (r == 0) {
        r = lot_cert_pem(sk_X509_value(in->chain, 0), &ca_pem);
    }
    if (r < 0) {
        free(ids);
        return r;
    }
    g = json_object_new_object();
    json_object_object_add(g, "enrollmentGroupId", json_object_new_string(in->lot));
    json_object_object_add(g, "attestation", x509_attestation("signingCertificates", ca_pem));
    json_object_object_add(g, "provisioningStatus", json_object_new_string("enabled"));
    r = lot_bundle_add_json(b, "enrollment-group.json", g);
    for (size_t i = 0; r == 0 && i < in->n; i++) {
        const struct lot_device *d = &in->devices[i];
        const char *cn = ids[i].cn;
        json_object *e;

        e = json_object_new_object();
        json_object_object_add(e, "registrationId", json_object_new_string(cn));
        json_object_object_add(e, "deviceId", json_object_new_string(d->serial));
        json_object_object_add(e, "attestation", x509_attestation("clientCertificates", d->pem));
        json_object_object_add(e, "provisioningStatus", json_object_new_string("enabled"));
        if (asprintf(&name, "enrollments/%s.json", cn) < 0) {
            json_object_put(e);
            r = PROV_ERR_NOMEM;
            break;
        }
        r = lot_bundle_add_json(b, name, e);
        free(name);
    }
    free(ids);
    free(ca_pem);
    return r;
}
