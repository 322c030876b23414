/* SPDX-License-Identifier: Apache-2.0 */
/* provisioner/support/timestamp.c: the one form the journal and the CA index write times in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "timestamp.h"

static void test_parse_known(void **state)
{
    time_t t = 0;

    (void)state;
    assert_int_equal(prov_timestamp_parse("2026-12-05T16:34:32.123Z", &t), 0);
    assert_int_equal((long long)t, 1796488472LL);
    assert_int_equal(prov_timestamp_parse("1970-01-01T00:00:00.000Z", &t), 0);
    assert_int_equal((long long)t, 0);
}

static void test_parse_refuses_other_forms(void **state)
{
    const char *bad[] = {"", "2026-12-05", "2026-12-05T16:34:32Z", "2026-12-05 16:34:32.123Z",
                         "2026-12-05T16:34:32.123+01:00", "yesterday"};
    time_t t = 42;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(prov_timestamp_parse(bad[i], &t), -1);
    }
    assert_int_equal(prov_timestamp_parse(NULL, &t), -1);
    assert_int_equal((long long)t, 42);
}

/* now and "ago" in the same form, so that they order as text as they do in time */
static void test_ago_orders_as_text(void **state)
{
    char now[40];
    char ago[40];
    time_t t_now = 0;
    time_t t_ago = 0;

    (void)state;
    prov_timestamp_now(now, sizeof(now));
    prov_timestamp_ago(60, ago, sizeof(ago));
    assert_int_equal(strlen(now), 24);
    assert_int_equal(strlen(ago), 24);
    assert_true(strcmp(ago, now) < 0);
    assert_int_equal(prov_timestamp_parse(now, &t_now), 0);
    assert_int_equal(prov_timestamp_parse(ago, &t_ago), 0);
    assert_true(t_now - t_ago >= 59 && t_now - t_ago <= 61);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_known),
        cmocka_unit_test(test_parse_refuses_other_forms),
        cmocka_unit_test(test_ago_orders_as_text),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
