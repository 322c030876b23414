/* SPDX-License-Identifier: Apache-2.0 */
/* prov_template_expand: every variable, "$$", and the errors that must name the variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "template.h"

static const char *const x_names[] = {"x_site", "x_line"};
static const char *const x_values[] = {"berlin", NULL};

static const struct prov_vars vars = {
    .serial = "SN-0001",
    .cn = "dev,O=evil/CN=x",
    .lot = "lot-7",
    .profile = "device",
    .x_names = x_names,
    .x_values = x_values,
    .n_x = 2,
};

static void expect_ok(const char *tmpl, const struct prov_vars *v, const char *want)
{
    char *out = NULL;

    prov_error_clear();
    assert_int_equal(prov_template_expand(tmpl, v, &out), 0);
    assert_string_equal(out, want);
    free(out);
}

static void expect_fail(const char *tmpl, const struct prov_vars *v, const char *needle)
{
    char *out = (char *)"sentinel";

    prov_error_clear();
    assert_int_equal(prov_template_expand(tmpl, v, &out), PROV_ERR_CONFIG);
    assert_null(out);
    assert_non_null(prov_error_message());
    assert_non_null(strstr(prov_error_message(), needle));
}

static void test_all_variables(void **state)
{
    (void)state;
    expect_ok("${serial}|${cn}|${lot}|${profile}|${x_site}", &vars,
              "SN-0001|dev,O=evil/CN=x|lot-7|device|berlin");
}

static void test_plain_and_empty(void **state)
{
    (void)state;
    expect_ok("", &vars, "");
    expect_ok("no variables here", &vars, "no variables here");
    expect_ok("urn:dev:${serial}:end", &vars, "urn:dev:SN-0001:end");
    expect_ok("${serial}${serial}", &vars, "SN-0001SN-0001");
}

static void test_dollar(void **state)
{
    (void)state;
    expect_ok("$$", &vars, "$");
    expect_ok("a$$b$${serial}", &vars, "a$b${serial}");
    expect_ok("price $5", &vars, "price $5");
    expect_ok("end$", &vars, "end$");
}

static void test_unknown_variable(void **state)
{
    (void)state;
    expect_fail("CN=${serail}", &vars, "${serail}");
    expect_fail("CN=${serail}", &vars, "CN=${serail}");
    expect_fail("${}", &vars, "unknown variable");
    expect_fail("${x_}", &vars, "unknown variable");
}

static void test_missing_value(void **state)
{
    struct prov_vars none = {.serial = "SN"};

    (void)state;
    expect_fail("${lot}", &none, "${lot}");
    expect_fail("${x_line}", &vars, "${x_line}");
    /* a manifest without that column */
    expect_fail("${x_room}", &vars, "${x_room}");
    expect_fail("${serial}", NULL, "${serial}");
}

static void test_unterminated(void **state)
{
    (void)state;
    expect_fail("CN=${serial", &vars, "unterminated");
    expect_fail("CN=${serial", &vars, "CN=${serial");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_variables),   cmocka_unit_test(test_plain_and_empty),
        cmocka_unit_test(test_dollar),          cmocka_unit_test(test_unknown_variable),
        cmocka_unit_test(test_missing_value),   cmocka_unit_test(test_unterminated),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
