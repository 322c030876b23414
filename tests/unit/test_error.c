/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/evperr.h>

#include "error.h"

/* doc/exit-codes.md: every code maps to the exit code a station acts on. */
static void test_exit_codes(void **state)
{
    static const struct {
        int err;
        int exit_code;
    } map[] = {
        {PROV_OK, PROV_EXIT_OK},
        {PROV_ERR_INTERNAL, PROV_EXIT_FAILED},
        {PROV_ERR_NOMEM, PROV_EXIT_FAILED},
        {PROV_ERR_USAGE, PROV_EXIT_USAGE},
        {PROV_ERR_CONFIG, PROV_EXIT_USAGE},
        {PROV_ERR_INPUT, PROV_EXIT_USAGE}, /* an input file: missing, a directory, garbage */
        {PROV_ERR_PIN_INCORRECT, PROV_EXIT_AUTH},
        {PROV_ERR_PIN_LOCKED, PROV_EXIT_AUTH},
        {PROV_ERR_PIN_SOURCE, PROV_EXIT_AUTH},
        {PROV_ERR_NOT_FOUND, PROV_EXIT_NOT_FOUND},
        {PROV_ERR_DEVICE_REMOVED, PROV_EXIT_NOT_FOUND},
        {PROV_ERR_UNSUPPORTED, PROV_EXIT_FAILED},
        {PROV_ERR_POLICY, PROV_EXIT_POLICY},
        {PROV_ERR_ALREADY_ISSUED, PROV_EXIT_POLICY},
        {PROV_ERR_STORAGE, PROV_EXIT_STORAGE},
        {PROV_ERR_JOURNAL, PROV_EXIT_STORAGE},
        {PROV_ERR_DEVICE, PROV_EXIT_FAILED},
        {PROV_ERR_CRYPTO, PROV_EXIT_FAILED},
        {PROV_ERR_VERIFY, PROV_EXIT_FAILED},
        {PROV_ERR_IO, PROV_EXIT_FAILED},
        {PROV_ERR_INTERRUPTED, PROV_EXIT_FAILED},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        assert_int_equal(prov_exit_code(map[i].err), map[i].exit_code);
    }
    assert_int_equal(prov_exit_code(-1000), PROV_EXIT_FAILED);
}

static void test_strerror_never_null(void **state)
{
    (void)state;
    for (int err = 0; err >= PROV_ERR_INTERRUPTED; err--) {
        assert_non_null(prov_strerror(err));
        assert_true(strlen(prov_strerror(err)) > 0);
    }
    assert_string_equal(prov_strerror(PROV_ERR_PIN_INCORRECT), "PIN incorrect");
    assert_string_equal(prov_strerror(12345), "unknown error");
}

static void test_first_message_wins(void **state)
{
    (void)state;
    prov_error_clear();
    assert_null(prov_error_message());
    assert_int_equal(prov_error_code(), 0);
    assert_int_equal(prov_fail(PROV_ERR_PIN_INCORRECT, "token %s: PIN incorrect", "dev-1"),
                     PROV_ERR_PIN_INCORRECT);
    /* A caller adding its own context does not hide the deeper reason. */
    assert_int_equal(prov_fail(PROV_ERR_DEVICE, "enroll failed"), PROV_ERR_DEVICE);
    assert_string_equal(prov_error_message(), "token dev-1: PIN incorrect");
    assert_int_equal(prov_error_code(), PROV_ERR_PIN_INCORRECT);
    prov_error_clear();
    assert_null(prov_error_message());
    assert_int_equal(prov_fail(PROV_ERR_IO, "second"), PROV_ERR_IO);
    assert_string_equal(prov_error_message(), "second");
    prov_error_clear();
}

static void test_message_is_one_line(void **state)
{
    (void)state;
    prov_error_clear();
    prov_fail(PROV_ERR_INPUT, "line one\nline two\r\nthree");
    assert_null(strchr(prov_error_message(), '\n'));
    assert_null(strchr(prov_error_message(), '\r'));
    assert_non_null(strstr(prov_error_message(), "line one"));
    assert_non_null(strstr(prov_error_message(), "three"));
    prov_error_clear();
}

static void test_fail_ossl_appends_and_clears_queue(void **state)
{
    (void)state;
    prov_error_clear();
    ERR_raise(ERR_LIB_EVP, EVP_R_UNSUPPORTED_ALGORITHM);
    assert_int_equal(prov_fail_ossl(PROV_ERR_CRYPTO, "file %s: bad", "x.pem"), PROV_ERR_CRYPTO);
    assert_non_null(strstr(prov_error_message(), "file x.pem: bad ("));
    assert_int_equal(ERR_peek_error(), 0);
    prov_error_clear();
    assert_int_equal(prov_fail_ossl(PROV_ERR_CRYPTO, "no queue"), PROV_ERR_CRYPTO);
    assert_string_equal(prov_error_message(), "no queue");
    prov_error_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_strerror_never_null),
        cmocka_unit_test(test_first_message_wins),
        cmocka_unit_test(test_message_is_one_line),
        cmocka_unit_test(test_fail_ossl_appends_and_clears_queue),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
