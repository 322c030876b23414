/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the backend registry says about device strings without opening anything: the schemes
 * a manifest row may use, device strings parsed and built by their backend (a built string
 * parses back to the same parts, however odd the token serial or module path), which string
 * names the device of an identity (a station's row-by-identity match), a station's
 * "any token of this module" string pinned to the token found, and the label and id of a CA
 * key URI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "error.h"
#include "pkcs11.h"
#include "tpm.h"

static int register_backends(void **state)
{
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    return 0;
}

static void assert_fails_with(int r, int want, const char *why)
{
    assert_int_equal(r, want);
    if (strstr(prov_error_message(), why) == NULL) {
        fail_msg("\"%s\" does not say \"%s\"", prov_error_message(), why);
    }
    prov_error_clear();
}

/* The schemes come from the registered backends, in the order they were registered. */
static void test_schemes(void **state)
{
    char buf[64];

    assert_string_equal(prov_backend_schemes(buf, sizeof(buf)), "pkcs11: or tpm2:");
    assert_true(prov_backend_scheme_known("pkcs11:token=dev-0001"));
    assert_true(prov_backend_scheme_known("pkcs11:"));
    assert_true(prov_backend_scheme_known("tpm2:device:/dev/tpmrm0"));
    assert_false(prov_backend_scheme_known("tpm3:x"));
    assert_false(prov_backend_scheme_known("PKCS11:token=x"));
    assert_false(prov_backend_scheme_known("pkcs11"));
    assert_false(prov_backend_scheme_known(""));
    assert_false(prov_backend_scheme_known(NULL));
    assert_ptr_equal(prov_backend_named("pkcs11"), &prov_pkcs11_ops);
    assert_ptr_equal(prov_backend_named("tpm2"), &prov_tpm_ops);
    assert_null(prov_backend_named("tpm"));
    assert_null(prov_backend_named(NULL));
    /* a buffer too small for the list holds what fits, terminated */
    assert_string_equal(prov_backend_schemes(buf, 10), "pkcs11:");
    assert_fails_with(prov_device_validate("tpm3:x"), PROV_ERR_USAGE,
                      "unknown scheme (expected pkcs11: or tpm2:)");
}

/*
 * Token serials and module paths with every character RFC 7512 reserves or leaves out, and
 * bytes outside ASCII: built, validated as a device string, parsed back to the same values,
 * built again to the same string.
 */
static void test_pkcs11_round_trip(void **state)
{
    static const char *const serials[] = {
        "AB12",        "0123456789ABCDEF", "A B",  "a;b", "x?y",       "50%",     "s/lash",
        "q=&|#",       "~._-",             "\xc3\xa9t\xc3\xa9", "[]@!$'()*+,", "\"<>\\^`{}",
        "tab\there",   NULL,
    };
    static const char *const modules[] = {
        "/usr/lib/softhsm/libsofthsm2.so",
        "/opt/my modules/lib p11;v2?.so",
        "/a&b=c%d#e.so",
        "relative/\xe2\x82\xac.so",
        NULL,
    };

    for (size_t i = 0; i < sizeof(serials) / sizeof(serials[0]); i++) {
        for (size_t k = 0; k < sizeof(modules) / sizeof(modules[0]); k++) {
            struct prov_device_name name = {.identity = (char *)serials[i],
                                            .module_path = (char *)modules[k]};
            struct prov_device_name back;
            char *uri = NULL;
            char *again = NULL;

            assert_int_equal(prov_device_uri_build("pkcs11", &name, &uri), 0);
            assert_true(strncmp(uri, "pkcs11:", 7) == 0);
            /* nothing outside what RFC 7512 lets a value hold unencoded */
            assert_int_equal(strcspn(uri, " \t\"<>\\^`{}|#[]@!$'()*+,"), strlen(uri));
            if (prov_device_validate(uri) != 0) {
                fail_msg("%s refused: %s", uri, prov_error_message());
            }
            assert_int_equal(prov_device_uri_parse(uri, &back), 0);
            if (serials[i] != NULL) {
                assert_non_null(back.identity);
                assert_string_equal(back.identity, serials[i]);
                assert_true(prov_device_names_identity(uri, "pkcs11", serials[i]));
            } else {
                assert_null(back.identity);
            }
            if (modules[k] != NULL) {
                assert_non_null(back.module_path);
                assert_string_equal(back.module_path, modules[k]);
            } else {
                assert_null(back.module_path);
            }
            assert_null(back.tcti);
            assert_int_equal(prov_device_uri_build("pkcs11", &back, &again), 0);
            assert_string_equal(again, uri);
            prov_device_name_clear(&back);
            free(again);
            free(uri);
        }
    }
}

/* The strings a station builds are the ones it always built for plain serials and paths. */
static void test_pkcs11_build(void **state)
{
    const struct prov_device_name usb = {.identity = "AB12", .module_path = "/m/one.so"};
    const struct prov_device_name any = {.module_path = "/m/two.so"};
    const struct prov_device_name odd = {.identity = "A B;C%"};
    const struct prov_device_name tcti = {.tcti = "device:/dev/tpmrm0"};
    char *uri = NULL;

    assert_int_equal(prov_device_uri_build("pkcs11", &usb, &uri), 0);
    assert_string_equal(uri, "pkcs11:serial=AB12?module-path=/m/one.so");
    free(uri);
    assert_int_equal(prov_device_uri_build("pkcs11", &any, &uri), 0);
    assert_string_equal(uri, "pkcs11:?module-path=/m/two.so");
    free(uri);
    assert_int_equal(prov_device_uri_build("pkcs11", &odd, &uri), 0);
    assert_string_equal(uri, "pkcs11:serial=A%20B%3BC%25");
    free(uri);
    assert_fails_with(prov_device_uri_build("pkcs11", &tcti, &uri), PROV_ERR_USAGE, "TCTI");
    assert_null(uri);
    assert_fails_with(prov_device_uri_build("smartcard", &usb, &uri), PROV_ERR_USAGE,
                      "no smartcard backend");
    assert_null(uri);
}

/* A TPM string: "tpm2:" and the TCTI as the loader takes it, or the EK digest. */
static void test_tpm_round_trip(void **state)
{
    static const char *const tctis[] = {
        "device:/dev/tpmrm0",
        "swtpm:host=127.0.0.1,port=2321",
        "tabrmd:bus_name=com.example.Tabrmd,bus_type=session",
        "cmd:tpm2-sim --flag; echo a=b",
        "",
    };
    static const char ek[] = "40b64f9b1756781ccc78923caf1b466cbafe716c0c8a1d4952dee459652e0220";
    struct prov_device_name by_ek = {.identity = (char *)ek};
    struct prov_device_name back;
    char *uri = NULL;

    for (size_t i = 0; i < sizeof(tctis) / sizeof(tctis[0]); i++) {
        struct prov_device_name name = {.tcti = (char *)tctis[i]};

        assert_int_equal(prov_device_uri_build("tpm2", &name, &uri), 0);
        assert_true(strncmp(uri, "tpm2:", 5) == 0);
        assert_string_equal(uri + 5, tctis[i]);
        assert_int_equal(prov_device_uri_parse(uri, &back), 0);
        assert_non_null(back.tcti);
        assert_string_equal(back.tcti, tctis[i]);
        assert_null(back.identity);
        assert_null(back.module_path);
        prov_device_name_clear(&back);
        free(uri);
    }
    assert_int_equal(prov_device_uri_build("tpm2", &by_ek, &uri), 0);
    assert_string_equal(uri, "tpm2:ek-sha256=40b64f9b1756781ccc78923caf1b466cbafe716c0c8a1d4952d"
                             "ee459652e0220");
    assert_int_equal(prov_device_uri_parse(uri, &back), 0);
    assert_string_equal(back.identity, ek);
    assert_null(back.tcti);
    prov_device_name_clear(&back);
    free(uri);
    /* a key URI parses to its device: the handle is the key's, not the TPM's */
    assert_int_equal(prov_device_uri_parse("tpm2:device:/dev/tpmrm0;handle=0x81000101", &back), 0);
    assert_string_equal(back.tcti, "device:/dev/tpmrm0");
    prov_device_name_clear(&back);
}

/* What a TPM string cannot carry is refused, not written so that it reads back otherwise. */
static void test_tpm_refused(void **state)
{
    const struct prov_device_name handle = {.tcti = "swtpm:port=2321;handle=0x81000101"};
    const struct prov_device_name control = {.tcti = "swtpm:port=2321\n"};
    const struct prov_device_name looks_like_ek = {.tcti = "ek-sha256=00"};
    const struct prov_device_name both = {.identity = "00", .tcti = "device:/dev/tpmrm0"};
    const struct prov_device_name neither = {0};
    const struct prov_device_name module = {.tcti = "device:/dev/tpmrm0", .module_path = "/m.so"};
    char *uri = NULL;

    assert_fails_with(prov_device_uri_build("tpm2", &handle, &uri), PROV_ERR_USAGE,
                      "does not read back as itself");
    assert_fails_with(prov_device_uri_build("tpm2", &control, &uri), PROV_ERR_USAGE,
                      "control character");
    assert_fails_with(prov_device_uri_build("tpm2", &looks_like_ek, &uri), PROV_ERR_USAGE,
                      "does not read back as itself");
    assert_fails_with(prov_device_uri_build("tpm2", &both, &uri), PROV_ERR_USAGE, "one of");
    assert_fails_with(prov_device_uri_build("tpm2", &neither, &uri), PROV_ERR_USAGE, "one of");
    assert_fails_with(prov_device_uri_build("tpm2", &module, &uri), PROV_ERR_USAGE, "one of");
    assert_null(uri);
}

/* Which strings name the device of an identity: by the unescaped serial, or the EK digest. */
static void test_names_identity(void **state)
{
    static const char ek[] = "40b64f9b1756781ccc78923caf1b466cbafe716c0c8a1d4952dee459652e0220";

    assert_true(prov_device_names_identity("pkcs11:serial=AB12", "pkcs11", "AB12"));
    assert_true(prov_device_names_identity("pkcs11:token=x;serial=A%20B?module-path=/m",
                                           "pkcs11", "A B"));
    assert_false(prov_device_names_identity("pkcs11:serial=A%20B", "pkcs11", "A%20B"));
    assert_false(prov_device_names_identity("pkcs11:serial=AB123", "pkcs11", "AB12"));
    assert_false(prov_device_names_identity("pkcs11:token=AB12", "pkcs11", "AB12"));
    assert_false(prov_device_names_identity("pkcs11:", "pkcs11", ""));
    assert_false(prov_device_names_identity("pkcs11:serial=AB%zz", "pkcs11", "AB"));
    assert_false(prov_device_names_identity("pkcs11:serial=AB12", "tpm2", "AB12"));
    assert_false(prov_device_names_identity("pkcs11:serial=AB12", "pkcs11", NULL));
    assert_true(prov_device_names_identity(
        "tpm2:ek-sha256=40B64F9B1756781CCC78923CAF1B466CBAFE716C0C8A1D4952DEE459652E0220", "tpm2",
        ek));
    assert_false(prov_device_names_identity("tpm2:device:/dev/tpmrm0", "tpm2", ek));
    assert_false(prov_device_names_identity("tpm2:ek-sha256=40b6", "tpm2", ek));
    assert_false(prov_device_names_identity("tpm3:ek-sha256=00", "tpm2", "00"));
    assert_false(prov_device_names_identity(NULL, "tpm2", "00"));
}

/* A station's only-token string becomes the string of the token it found; the module stays. */
static void test_pin(void **state)
{
    char *uri = NULL;

    assert_int_equal(prov_device_uri_pin("pkcs11:?module-path=/m/two.so", "SER 1;x", &uri), 0);
    assert_string_equal(uri, "pkcs11:serial=SER%201%3Bx?module-path=/m/two.so");
    assert_true(prov_device_names_identity(uri, "pkcs11", "SER 1;x"));
    free(uri);
    assert_int_equal(prov_device_uri_pin("pkcs11:?module-path=/opt/a%20b.so", "7", &uri), 0);
    assert_string_equal(uri, "pkcs11:serial=7?module-path=/opt/a%20b.so");
    free(uri);
    assert_int_equal(prov_device_uri_pin("pkcs11:", "AB12", &uri), 0);
    assert_string_equal(uri, "pkcs11:serial=AB12");
    free(uri);
    assert_fails_with(prov_device_uri_pin("pkcs11:id=%zz", "AB12", &uri), PROV_ERR_USAGE,
                      "not a valid PKCS#11 URI");
    assert_fails_with(prov_device_uri_pin("tpm2:device:/dev/tpmrm0", "00", &uri), PROV_ERR_USAGE,
                      "one of");
    assert_fails_with(prov_device_uri_pin("tpm3:x", "00", &uri), PROV_ERR_USAGE,
                      "unknown scheme");
    assert_null(uri);
}

/* The label and id of a CA key URI, unescaped; neither when the URI gives none. */
static void test_key_label_id(void **state)
{
    unsigned char id[64];
    size_t id_len = sizeof(id);
    char *label = NULL;

    assert_int_equal(prov_key_uri_label_id("pkcs11:token=ca;object=CA%20key%3B1;id=%01%02%ff",
                                           &label, id, &id_len),
                     0);
    assert_string_equal(label, "CA key;1");
    assert_int_equal(id_len, 3);
    assert_memory_equal(id, "\x01\x02\xff", 3);
    free(label);

    id_len = sizeof(id);
    assert_int_equal(prov_key_uri_label_id("pkcs11:token=ca;object=k", &label, id, &id_len), 0);
    assert_string_equal(label, "k");
    assert_int_equal(id_len, 0);
    free(label);

    id_len = sizeof(id);
    assert_int_equal(prov_key_uri_label_id("pkcs11:token=ca;id=%01", &label, id, &id_len), 0);
    assert_null(label);
    assert_int_equal(id_len, 1);

    /* an id longer than the caller's buffer is not taken */
    id_len = 2;
    assert_int_equal(prov_key_uri_label_id("pkcs11:object=k;id=%01%02%03", &label, id, &id_len),
                     0);
    assert_int_equal(id_len, 0);
    free(label);

    id_len = sizeof(id);
    assert_fails_with(prov_key_uri_label_id("pkcs11:token=ca;id=%zz", &label, id, &id_len),
                      PROV_ERR_CONFIG, "not a valid PKCS#11 URI");
    assert_null(label);
    id_len = sizeof(id);
    assert_fails_with(prov_key_uri_label_id("tpm2:device:/dev/tpmrm0;handle=0x81000101", &label,
                                            id, &id_len),
                      PROV_ERR_CONFIG, "no backend reads a key label or id");
    assert_null(label);
    assert_int_equal(id_len, 0);
}

/* A backend registered later adds its scheme to the list (run last: it stays registered). */
static bool mock_handles(const char *uri)
{
    return strncmp(uri, "mock:", 5) == 0;
}

static void test_schemes_follow_registry(void **state)
{
    static const struct prov_backend_ops mock = {
        .name = "mock", .scheme = "mock:", .handles = mock_handles};
    char buf[64];
    char *uri = NULL;
    const struct prov_device_name name = {.identity = "x"};

    prov_backend_register(&mock);
    assert_string_equal(prov_backend_schemes(buf, sizeof(buf)), "pkcs11:, tpm2: or mock:");
    assert_true(prov_backend_scheme_known("mock:a"));
    assert_fails_with(prov_device_uri_build("mock", &name, &uri), PROV_ERR_USAGE,
                      "no mock backend builds");
    assert_false(prov_device_names_identity("mock:x", "mock", "x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schemes),
        cmocka_unit_test(test_pkcs11_round_trip),
        cmocka_unit_test(test_pkcs11_build),
        cmocka_unit_test(test_tpm_round_trip),
        cmocka_unit_test(test_tpm_refused),
        cmocka_unit_test(test_names_identity),
        cmocka_unit_test(test_pin),
        cmocka_unit_test(test_key_label_id),
        cmocka_unit_test(test_schemes_follow_registry),
    };

    return cmocka_run_group_tests(tests, register_backends, NULL);
}
