/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The string set behind the manifest's uniqueness checks and the batch's device groups
 * (factory/strset.h): exact over many keys (values kept, nothing lost across the table's and
 * the buffers' growth), the first spelling kept in a case-folded set, keys that differ only
 * past a shared prefix or only in case (when not folded) are distinct, and free leaves it
 * reusable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "strset.h"

static void test_many_keys(void **state)
{
    struct prov_strset s = {0};
    const unsigned long n = 200000; /* past several doublings of the table and buffers */
    char key[32];
    unsigned long v;
    bool is_new;

    (void)state;
    for (unsigned long i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "SN-%07lu", i);
        assert_int_equal(prov_strset_add(&s, key, i + 1, &v, &is_new), 0);
        assert_true(is_new);
        assert_int_equal(v, i + 1);
    }
    assert_int_equal(s.n, n);
    for (unsigned long i = 0; i < n; i += 997) {
        snprintf(key, sizeof(key), "SN-%07lu", i);
        assert_true(prov_strset_get(&s, key, &v));
        assert_int_equal(v, i + 1);
        /* a second add finds the first value and adds nothing */
        assert_int_equal(prov_strset_add(&s, key, 7, &v, &is_new), 0);
        assert_false(is_new);
        assert_int_equal(v, i + 1);
        assert_string_equal(prov_strset_key(&s, key), key);
    }
    assert_int_equal(s.n, n);
    assert_false(prov_strset_get(&s, "SN-0200000", NULL));
    assert_false(prov_strset_get(&s, "SN-000000", NULL)); /* a prefix of a key */
    assert_false(prov_strset_get(&s, "", NULL));
    assert_null(prov_strset_key(&s, "SN-9999999"));
    prov_strset_free(&s);
    assert_int_equal(s.n, 0);
    assert_false(prov_strset_get(&s, "SN-0000001", NULL));
    assert_int_equal(prov_strset_add(&s, "again", 3, NULL, &is_new), 0);
    assert_true(is_new);
    assert_true(prov_strset_get(&s, "again", &v));
    assert_int_equal(v, 3);
    prov_strset_free(&s);
}

static void test_case(void **state)
{
    struct prov_strset exact = {0};
    struct prov_strset folded = {.is_case_folded = true};
    unsigned long v;
    bool is_new;

    (void)state;
    assert_int_equal(prov_strset_add(&exact, "Dev-A", 1, NULL, &is_new), 0);
    assert_int_equal(prov_strset_add(&exact, "dev-a", 2, &v, &is_new), 0);
    assert_true(is_new);
    assert_int_equal(v, 2);

    assert_int_equal(prov_strset_add(&folded, "Dev-A", 1, NULL, &is_new), 0);
    assert_int_equal(prov_strset_add(&folded, "dEV-a", 2, &v, &is_new), 0);
    assert_false(is_new);
    assert_int_equal(v, 1);
    assert_string_equal(prov_strset_key(&folded, "DEV-A"), "Dev-A");
    /* only ASCII letters fold */
    assert_int_equal(prov_strset_add(&folded, "dev_a", 3, NULL, &is_new), 0);
    assert_true(is_new);
    assert_int_equal(prov_strset_add(&folded, "", 4, NULL, &is_new), 0);
    assert_true(is_new);
    assert_true(prov_strset_get(&folded, "", &v));
    assert_int_equal(v, 4);
    prov_strset_free(&exact);
    prov_strset_free(&folded);
    assert_true(folded.is_case_folded); /* kept for the reuse */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_case),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
