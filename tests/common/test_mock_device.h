/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_TEST_MOCK_DEVICE_H
#define PROV_TEST_MOCK_DEVICE_H

/*
 * A device behind the backend ops table, with software keys: URIs "mock:NAME". What it is
 * told to do, and what it saw, are in test_mock (zeroed by test_mock_device_reset). Every
 * call is appended to test_mock.log, one word each ("open login generate props sign ..."),
 * so that a test can assert the order the pipeline's steps ran in.
 */

#include <stdbool.h>

#include <openssl/evp.h>

#include "backend.h"

struct test_mock_device {
    bool is_extractable;      /* report the generated key as extractable */
    bool is_not_local;
    bool was_extractable;     /* not extractable now, but CKA_NEVER_EXTRACTABLE false */
    bool can_decrypt;         /* the backend reports decrypt, unwrap or derive allowed */
    int fail_store_cert;      /* error returned by store_certificate, 0 = ok */
    int fail_login;
    bool sign_with_other_key; /* the device signs with a different key than it reports */
    int n_opens;
    int n_generated;
    int n_deleted;
    int n_stored;
    int n_logins;
    EVP_PKEY *last_key;       /* the key generated last; find_key_by_public finds it */
    char log[512];
};

extern struct test_mock_device test_mock;
extern const struct prov_backend_ops test_mock_ops;

/* Zeroes test_mock (freeing its key) and registers test_mock_ops. */
void test_mock_device_reset(void);

#endif
