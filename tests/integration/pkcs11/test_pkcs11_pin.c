/* SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include <p11-kit/pkcs11.h>

#include "error.h"
#include "pkcs11.h"

/*
 * doc/keys.md, "Never lock a token": PIN flags are read before C_Login, and a
 * rejected PIN is never sent again in this process. The backend is driven through
 * shim_module.so, which forwards to SoftHSM2 but counts C_Login calls (the proof that no
 * second C_Login happens) and can add PIN flags SoftHSM2 itself never sets.
 */

static const char *shim_path;
static const char *softhsm;
static unsigned long *login_calls;
static CK_FLAGS *extra_flags;
static CK_FLAGS *real_flags;
static struct prov_secret *good_pin;
static struct prov_secret *bad_pin;

static int setup(void **state)
{
    void *dl;

    softhsm = getenv("PROV_TEST_MODULE");
    shim_path = getenv("PROV_TEST_SHIM");
    if (softhsm == NULL || shim_path == NULL || getenv("PROV_TEST_PIN") == NULL) {
        fprintf(stderr, "run through softhsm-env.sh with PROV_TEST_SHIM set\n");
        return -1;
    }
    setenv("SHIM_TARGET", softhsm, 1);
    /* The backend loads the shim by the same path: this is the same copy of it. */
    dl = dlopen(shim_path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        fprintf(stderr, "%s\n", dlerror());
        return -1;
    }
    login_calls = dlsym(dl, "shim_login_calls");
    extra_flags = dlsym(dl, "shim_extra_flags");
    real_flags = dlsym(dl, "shim_real_flags");
    if (login_calls == NULL || extra_flags == NULL || real_flags == NULL) {
        return -1;
    }
    if (prov_secret_from_buf(getenv("PROV_TEST_PIN"), strlen(getenv("PROV_TEST_PIN")), &good_pin) <
            0 ||
        prov_secret_from_buf("wrong-pin-777", 13, &bad_pin) < 0) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    prov_secret_free(good_pin);
    prov_secret_free(bad_pin);
    prov_pkcs11_unload_all();
    return 0;
}

static struct prov_device *open_token(const char *uri)
{
    struct prov_device_params params = {.module_path = shim_path};
    struct prov_device *dev = NULL;

    prov_error_clear();
    assert_int_equal(prov_pkcs11_ops.open(uri, &params, &dev), 0);
    return dev;
}

static void assert_message_has(const char *needle)
{
    const char *msg = prov_error_message();

    if (msg == NULL || strstr(msg, needle) == NULL) {
        fail_msg("error message \"%s\" lacks \"%s\"", msg ? msg : "(none)", needle);
    }
}

/* pkcs11-tool, in its own process, logs in to the token directly with the right PIN. */
static void assert_token_accepts_pin(const char *label)
{
    char cmd[512];
    int status;

    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module '%s' --token-label '%s' --login --pin '%s' --list-objects "
             ">/dev/null 2>&1",
             softhsm, label, getenv("PROV_TEST_PIN"));
    status = system(cmd);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_wrong_pin_never_resent(void **state)
{
    struct prov_device *dev = open_token("pkcs11:token=pin-1");
    unsigned long before = *login_calls;

    assert_int_equal(dev->ops->login(dev, bad_pin), PROV_ERR_PIN_INCORRECT);
    assert_int_equal(*login_calls, before + 1);
    assert_message_has("token pin-1: C_Login: CKR_PIN_INCORRECT (0x000000a0)");
    assert_null(strstr(prov_error_message(), "wrong-pin-777"));

    /* The same PIN again: refused before C_Login (the token flags are read first). */
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, bad_pin), PROV_ERR_PIN_INCORRECT);
    assert_message_has("not retried");
    assert_int_equal(*login_calls, before + 1);

    /* Those flags were pin-1's: SoftHSM2 2.6.1 only sets CKF_USER_PIN_COUNT_LOW. */
    assert_true(*real_flags & CKF_USER_PIN_COUNT_LOW);
    assert_false(*real_flags & (CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED));

    /* Nor the right PIN, nor through a new device object for the same token. */
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, good_pin), PROV_ERR_PIN_INCORRECT);
    prov_pkcs11_ops.close(dev);
    dev = open_token("pkcs11:token=pin-1");
    prov_error_clear();
    assert_int_equal(dev->ops->login(dev, good_pin), PROV_ERR_PIN_INCORRECT);
    assert_message_has("token pin-1");
    assert_int_equal(*login_calls, before + 1);
    prov_pkcs11_ops.close(dev);

    /* The token itself is fine: one failure only. */
    assert_token_accepts_pin("pin-1");
}

/* The remembered failure is per token: another token on the same module logs in. */
static void test_other_token_unaffected(void **state)
{
    struct prov_device *dev = open_token("pkcs11:token=pin-2"), *second;
    unsigned long before = *login_calls;

    assert_int_equal(dev->ops->login(dev, good_pin), 0);
    assert_int_equal(*login_calls, before + 1);

    /* Logged in through another open session already: no C_Login (each one rewrites
     * SoftHSM2's token.object). */
    second = open_token("pkcs11:token=pin-2");
    assert_int_equal(second->ops->login(second, good_pin), 0);
    assert_int_equal(*login_calls, before + 1);
    prov_pkcs11_ops.close(second);
    prov_pkcs11_ops.close(dev);

    /* Nor after every device on it was closed: the login is kept for the process. */
    dev = open_token("pkcs11:token=pin-2");
    assert_int_equal(dev->ops->login(dev, good_pin), 0);
    assert_int_equal(*login_calls, before + 1);
    prov_pkcs11_ops.close(dev);
}

static void test_pin_flags_refused(void **state)
{
    static const struct {
        CK_FLAGS flag;
        const char *name;
    } flags[] = {
        {CKF_USER_PIN_FINAL_TRY, "CKF_USER_PIN_FINAL_TRY"},
        {CKF_USER_PIN_LOCKED, "CKF_USER_PIN_LOCKED"},
        {CKF_USER_PIN_TO_BE_CHANGED, "CKF_USER_PIN_TO_BE_CHANGED"},
    };
    struct prov_device *dev = open_token("pkcs11:token=pin-3");
    unsigned long before = *login_calls;

    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        *extra_flags = flags[i].flag;
        prov_error_clear();
        assert_int_equal(dev->ops->login(dev, good_pin), PROV_ERR_PIN_LOCKED);
        assert_message_has("token pin-3");
        assert_message_has(flags[i].name);
        assert_int_equal(*login_calls, before);
    }
    /* The flags are read again at each login, not cached from open(). */
    *extra_flags = 0;
    assert_int_equal(dev->ops->login(dev, good_pin), 0);
    assert_int_equal(*login_calls, before + 1);
    prov_pkcs11_ops.close(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrong_pin_never_resent),
        cmocka_unit_test(test_other_token_unaffected),
        cmocka_unit_test(test_pin_flags_refused),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
