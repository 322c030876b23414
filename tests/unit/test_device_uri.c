/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device strings as an operator names them (a manifest row, --device), through each
 * backend's validate entry: nothing is opened, every RFC 7512 attribute is honoured or
 * refused with its reason, a TPM needs a TCTI this system has. Also the URI check every
 * PKCS#11 URI passes (key URIs too): slot, library, PIN and unknown attributes refused.
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

static int setup(void **state)
{
    prov_backend_register(&prov_pkcs11_ops);
    prov_backend_register(&prov_tpm_ops);
    return 0;
}

/*
 * Strings every backend takes: what the README, the station and key.uri files use. TCTIs
 * that come with libtss2-dev only (the package build has no tabrmd TCTI).
 */
static void test_accepted(void **state)
{
    static const char *const good[] = {
        "pkcs11:token=dev-0001",
        "pkcs11:serial=5c2e0123;token=dev-0001",
        "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2;token=a",
        "pkcs11:serial=5c2e0123?module-path=/usr/lib/softhsm/libsofthsm2.so",
        "pkcs11:",
        "tpm2:device:/dev/tpmrm0",
        "tpm2:swtpm:host=127.0.0.1,port=2321",
        "tpm2:mssim:host=localhost,port=2321",
        /* a TPM by its EK digest: a station's manifest row */
        "tpm2:ek-sha256=40b64f9b1756781ccc78923caf1b466cbafe716c0c8a1d4952dee459652e0220",
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        prov_error_clear();
        if (prov_device_validate(good[i]) != 0) {
            fail_msg("%s refused: %s", good[i], prov_error_message());
        }
    }
}

/* Each refusal is a usage error whose one line names the string and the reason. */
static void test_refused(void **state)
{
    static const struct {
        const char *uri;
        const char *why;
    } bad[] = {
        {"pkcs11:token=x;id=%zz", "not a valid PKCS#11 URI"},
        {"pkcs11:slot-id=1", "slot-id is refused: slot ids"},
        {"pkcs11:token=x;slot-description=a", "slot-description is refused"},
        {"pkcs11:token=x;slot-manufacturer=a", "slot-manufacturer is refused"},
        {"pkcs11:library-description=x", "library-description is not supported"},
        {"pkcs11:token=x;library-manufacturer=x", "library-manufacturer is not supported"},
        {"pkcs11:token=x;library-version=1.2", "library-version is not supported"},
        {"pkcs11:token=x?module-name=softhsm2", "module-name is not supported"},
        {"pkcs11:token=x?pin-source=file:/dev/null", "pin-source is refused: a PIN never"},
        {"pkcs11:token=x;object=k", "object= names a key"},
        {"pkcs11:token=x;id=%01", "id= names a key"},
        {"pkcs11:token=x;type=private", "type= names a key"},
        {"pkcs11:token=x?bogus=1", "unknown query attribute \"bogus\""},
        {"pkcs11:token=x?x-vendor=1", "unknown query attribute \"x-vendor\""},
        {"pkcs11:token=x;bogus=1", "unknown attribute \"bogus\""},
        {"pkcs11:token=x;token=y", "attribute \"token\" given twice"},
        {"pkcs11:token=x?module-path=/a.so&module-path=/b.so", "\"module-path\" given twice"},
        {"pkcs11:token=x;module-path=/a.so", "module-path is a query attribute"},
        {"tpm2:", "no TCTI"},
        {"tpm2:ek-sha256=40b64f9b", "ek-sha256= takes the 64 hex digits"},
        {"tpm2:bogus-tcti:foo", "unknown TCTI \"bogus-tcti\""},
        {"tpm2:/nonexistent/libtss2-tcti-x.so:foo", "unknown TCTI"},
        {"tpm2:swtpm:port=2321;handle=0x81000101", ";handle= names a key"},
        {"tpm2:swtpm:port=2321;handle=0x01000000", "handle must be a persistent handle"},
        {"tpm2:swtpm:\nport=1", "control character"},
        {"tpm3:x", "unknown scheme"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *msg;
        int r;

        prov_error_clear();
        r = prov_device_validate(bad[i].uri);
        msg = prov_error_message();
        if (r != PROV_ERR_USAGE || msg == NULL || strstr(msg, bad[i].why) == NULL ||
            (strchr(bad[i].uri, '\n') == NULL && strstr(msg, bad[i].uri) == NULL)) {
            fail_msg("%s: r=%d \"%s\", want a usage error naming it and \"%s\"", bad[i].uri, r,
                     msg ? msg : "", bad[i].why);
        }
    }
}

/* A PIN in a URI is never echoed, not even in the refusal. */
static void test_pin_value_not_shown(void **state)
{
    const char *msg;

    prov_error_clear();
    assert_int_equal(prov_device_validate("pkcs11:token=x?pin-value=Secret-4711"), PROV_ERR_USAGE);
    msg = prov_error_message();
    assert_non_null(msg);
    assert_null(strstr(msg, "Secret-4711"));
    assert_non_null(strstr(msg, "pin-value"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_pin_value_not_shown),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
