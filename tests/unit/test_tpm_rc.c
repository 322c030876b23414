/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <tss2/tss2_common.h>
#include <tss2/tss2_tpm2_types.h>

#include "error.h"
#include "tpm.h"

/* The TPM backend's edge without a TPM: TSS2_RC mapping and the tpm2: / key.uri syntax. */

static void test_rc_mapping(void **state)
{
    static const struct {
        uint32_t rc;
        int err;
    } cases[] = {
        {TSS2_RC_SUCCESS, 0},
        /* transport: the TPM went away */
        {TSS2_TCTI_RC_IO_ERROR, PROV_ERR_DEVICE_REMOVED},
        {TSS2_TCTI_RC_NO_CONNECTION, PROV_ERR_DEVICE_REMOVED},
        {TSS2_RESMGR_RC_LAYER | TSS2_BASE_RC_IO_ERROR, PROV_ERR_DEVICE_REMOVED},
        /* TPM format 0 */
        {TPM2_RC_LOCKOUT, PROV_ERR_PIN_LOCKED},
        {TPM2_RC_NV_DEFINED, PROV_ERR_ALREADY_ISSUED},
        {TPM2_RC_NV_SPACE, PROV_ERR_DEVICE},
        {TPM2_RC_NV_SIZE, PROV_ERR_UNSUPPORTED},
        {TPM2_RC_OBJECT_MEMORY, PROV_ERR_DEVICE},
        /* TPM format 1, with the handle/parameter/session number the TPM adds */
        {TPM2_RC_HANDLE | TPM2_RC_1, PROV_ERR_NOT_FOUND},
        {TPM2_RC_BAD_AUTH | TPM2_RC_S | TPM2_RC_1, PROV_ERR_PIN_INCORRECT},
        {TPM2_RC_AUTH_FAIL | TPM2_RC_S | TPM2_RC_2, PROV_ERR_PIN_INCORRECT},
        {TPM2_RC_CURVE | TPM2_RC_P | TPM2_RC_2, PROV_ERR_UNSUPPORTED},
        {TPM2_RC_ATTRIBUTES | TPM2_RC_P | TPM2_RC_2, PROV_ERR_DEVICE},
        /* ESAPI's own failures */
        {TSS2_ESYS_RC_MEMORY, PROV_ERR_NOMEM},
        {TSS2_ESYS_RC_MALFORMED_RESPONSE, PROV_ERR_DEVICE},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (prov_tpm_rc_to_err(cases[i].rc) != cases[i].err) {
            fail_msg("TSS2_RC 0x%08x: %d, expected %d", (unsigned)cases[i].rc,
                     prov_tpm_rc_to_err(cases[i].rc), cases[i].err);
        }
    }
}

static void test_uri_split(void **state)
{
    char *tcti = NULL;
    uint32_t handle = 1;

    assert_int_equal(prov_tpm_uri_split("tpm2:device:/dev/tpmrm0", &tcti, &handle), 0);
    assert_string_equal(tcti, "device:/dev/tpmrm0");
    assert_int_equal(handle, 0);
    free(tcti);

    assert_int_equal(
        prov_tpm_uri_split("tpm2:tabrmd:bus_type=session;handle=0x81000101", &tcti, &handle), 0);
    assert_string_equal(tcti, "tabrmd:bus_type=session");
    assert_int_equal(handle, 0x81000101);
    free(tcti);

    /* The default TCTI. */
    assert_int_equal(prov_tpm_uri_split("tpm2:;handle=0x81ffffff", &tcti, &handle), 0);
    assert_string_equal(tcti, "");
    assert_int_equal(handle, 0x81ffffff);
    free(tcti);
}

static void test_uri_split_refusals(void **state)
{
    static const char *bad[] = {
        "pkcs11:token=x",
        "tpm2:swtpm:port=1;handle=",
        "tpm2:swtpm:port=1;handle=0x",
        "tpm2:swtpm:port=1;handle=0x810001011",    /* 9 digits */
        "tpm2:swtpm:port=1;handle=0x80000001",     /* transient */
        "tpm2:swtpm:port=1;handle=0x81000101;x=1", /* junk after the handle */
        "tpm2:swtpm:port=1\n;handle=0x81000101",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *tcti = NULL;
        uint32_t handle = 7;

        prov_error_clear();
        if (prov_tpm_uri_split(bad[i], &tcti, &handle) != PROV_ERR_USAGE) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
        assert_null(tcti);
        assert_int_equal(handle, 0);
        assert_non_null(prov_error_message());
    }
    prov_error_clear();
}

static void test_key_uri_round_trip(void **state)
{
    char *uri = prov_tpm_key_uri("swtpm:host=127.0.0.1,port=2321", 0x81000101);
    char *tcti = NULL;
    uint32_t handle = 0;

    assert_string_equal(uri, "tpm2:swtpm:host=127.0.0.1,port=2321;handle=0x81000101");
    assert_int_equal(prov_tpm_uri_split(uri, &tcti, &handle), 0);
    assert_string_equal(tcti, "swtpm:host=127.0.0.1,port=2321");
    assert_int_equal(handle, 0x81000101);
    assert_true(prov_tpm_ops.handles(uri));
    assert_false(prov_tpm_ops.handles("pkcs11:object=tpm2"));
    free(tcti);
    free(uri);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rc_mapping),
        cmocka_unit_test(test_uri_split),
        cmocka_unit_test(test_uri_split_refusals),
        cmocka_unit_test(test_key_uri_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
