/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prov_audit_hash, the one hash of every audit chain (the batch journal's and the CA index's):
 * known answers, so that a chain written by one version verifies with the next. The expected
 * values were computed apart from this code, with Python's hashlib over the documented
 * serialization (provisioner/support/audit_hash.h):
 *   sha256(bytes.fromhex(prev) + struct.pack('>Q', seq)
 *          + b''.join(struct.pack('>I', len(t)) + t for t in texts)).hexdigest()
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "audit_hash.h"
#include "error.h"

static const char *const zero =
    "0000000000000000000000000000000000000000000000000000000000000000";

static void test_known_answers(void **state)
{
    const char *const rec[PROV_AUDIT_FIELDS] = {"2026-12-05T16:00:00.000Z", "LOT-1", "SN-00001",
                                                "issued", "sha256=ab"};
    const char *const empty[PROV_AUDIT_FIELDS] = {"", "", "", "", ""};
    char ff[65];
    char out[65];

    (void)state;
    assert_int_equal(prov_audit_hash(zero, 1, rec, out), 0);
    assert_string_equal(out, "bd6761ec6892405bd998bdf6323d207d3a50f32cce7472ed3e3b50a600132518");
    memset(ff, 'f', 64);
    ff[64] = '\0';
    assert_int_equal(prov_audit_hash(ff, 2, empty, out), 0);
    assert_string_equal(out, "e7a2da075062b1a1f4915a5121b5f148c1526f6fd3c5d902bfec49c8903a3f20");
}

/* The length prefixes: moving a character from one field to the next changes the hash. */
static void test_fields_do_not_run_together(void **state)
{
    const char *const moved[PROV_AUDIT_FIELDS] = {"2026-12-05T16:00:00.000Z", "LOT-1", "SN-0000",
                                                  "1issued", "sha256=ab"};
    char out[65];

    (void)state;
    assert_int_equal(prov_audit_hash(zero, 1, moved, out), 0);
    assert_string_equal(out, "402d0f016cb5c168eb88a1d30bad88c42b59127c20f0664b4c826182e6c806a5");
}

/* A previous hash that is not 64 hex digits is a broken chain, not a hash input. */
static void test_bad_prev(void **state)
{
    const char *const empty[PROV_AUDIT_FIELDS] = {"", "", "", "", ""};
    char out[65];

    (void)state;
    assert_int_equal(prov_audit_hash("abc", 1, empty, out), PROV_ERR_VERIFY);
    assert_int_equal(
        prov_audit_hash("zz00000000000000000000000000000000000000000000000000000000000000", 1,
                        empty, out),
        PROV_ERR_VERIFY);
    prov_error_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_fields_do_not_run_together),
        cmocka_unit_test(test_bad_prev),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
