/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <p11-kit/pkcs11.h>

#include "error.h"
#include "pkcs11.h"

/* The codes a station acts on (doc/keys.md): a wrong PIN is never retried, a lock stops. */
static void test_rv_to_err(void **state)
{
    static const struct {
        CK_RV rv;
        int err;
    } map[] = {
        {CKR_OK, PROV_OK},
        {CKR_PIN_INCORRECT, PROV_ERR_PIN_INCORRECT},
        {CKR_PIN_INVALID, PROV_ERR_PIN_INCORRECT},
        {CKR_PIN_LEN_RANGE, PROV_ERR_PIN_INCORRECT},
        {CKR_PIN_LOCKED, PROV_ERR_PIN_LOCKED},
        {CKR_PIN_EXPIRED, PROV_ERR_PIN_LOCKED},
        {CKR_DEVICE_REMOVED, PROV_ERR_DEVICE_REMOVED},
        {CKR_TOKEN_NOT_PRESENT, PROV_ERR_DEVICE_REMOVED},
        {CKR_SESSION_HANDLE_INVALID, PROV_ERR_DEVICE_REMOVED},
        {CKR_SESSION_CLOSED, PROV_ERR_DEVICE_REMOVED},
        {CKR_TOKEN_NOT_RECOGNIZED, PROV_ERR_NOT_FOUND},
        {CKR_SLOT_ID_INVALID, PROV_ERR_NOT_FOUND},
        {CKR_MECHANISM_INVALID, PROV_ERR_UNSUPPORTED},
        {CKR_MECHANISM_PARAM_INVALID, PROV_ERR_UNSUPPORTED},
        {CKR_DOMAIN_PARAMS_INVALID, PROV_ERR_UNSUPPORTED},
        {CKR_CURVE_NOT_SUPPORTED, PROV_ERR_UNSUPPORTED},
        {CKR_KEY_SIZE_RANGE, PROV_ERR_UNSUPPORTED},
        {CKR_TEMPLATE_INCONSISTENT, PROV_ERR_UNSUPPORTED},
        {CKR_ATTRIBUTE_VALUE_INVALID, PROV_ERR_UNSUPPORTED},
        {CKR_DEVICE_MEMORY, PROV_ERR_DEVICE},
        {CKR_DEVICE_ERROR, PROV_ERR_DEVICE},
        {CKR_GENERAL_ERROR, PROV_ERR_DEVICE},
        {CKR_HOST_MEMORY, PROV_ERR_DEVICE},
        {CKR_USER_NOT_LOGGED_IN, PROV_ERR_DEVICE},
        {CKR_VENDOR_DEFINED | 7, PROV_ERR_DEVICE},
        {0x7777, PROV_ERR_DEVICE},
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        int got = prov_pkcs11_rv_to_err(map[i].rv);

        if (got != map[i].err) {
            fail_msg("%s: got %d, want %d", prov_pkcs11_rv_name(map[i].rv), got, map[i].err);
        }
    }
}

static void test_rv_names(void **state)
{
    static const struct {
        CK_RV rv;
        const char *name;
    } names[] = {
        {CKR_OK, "CKR_OK"},
        {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
        {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
        {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
        {CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED"},
        {CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED"},
        {0x203, "CKR_KEY_EXHAUSTED"},
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_string_equal(prov_pkcs11_rv_name(names[i].rv), names[i].name);
    }
    assert_string_equal(prov_pkcs11_rv_name(0x7777), "CKR_0x00007777");
    assert_string_equal(prov_pkcs11_rv_name(CKR_VENDOR_DEFINED | 1), "CKR_0x80000001");
}

/* Every value from CKR_OK to CKR_FUNCTION_REJECTED that has a name has the right prefix. */
static void test_rv_names_all_prefixed(void **state)
{
    unsigned int named = 0;

    for (CK_RV rv = 0; rv <= 0x210; rv++) {
        const char *name = prov_pkcs11_rv_name(rv);

        assert_non_null(name);
        assert_true(strncmp(name, "CKR_", 4) == 0);
        if (strncmp(name, "CKR_0x", 6) != 0) {
            named++;
        }
    }
    /* PKCS#11 3.0 defines 97 return values below CKR_VENDOR_DEFINED. */
    assert_true(named >= 95);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rv_to_err),
        cmocka_unit_test(test_rv_names),
        cmocka_unit_test(test_rv_names_all_prefixed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
