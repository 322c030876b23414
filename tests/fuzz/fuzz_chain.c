/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for `chain verify` input: a chain file (PEM or DER), loaded and checked by
 * every rule of doc/chains.md for each purpose; a file that yields no certificate must be explained
 * by exactly one finding on the file. The report's findings are read in full; a chain
 * that loads must either verify or explain itself with at least one finding.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/x509.h>

#include "chain.h"
#include "error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum prov_chain_purpose purposes[] = {PROV_PURPOSE_ANY, PROV_PURPOSE_CLIENT};
    STACK_OF(X509) *chain = NULL;
    struct prov_chain_report loaded;
    size_t sink = 0;

    memset(&loaded, 0, sizeof(loaded));
    if (prov_chain_load_any_buf(data, size, &chain, &loaded) != 0 &&
        (loaded.n != 1 || loaded.items[0].index != -1 || chain != NULL)) {
        __builtin_trap();
    }
    prov_chain_report_free(&loaded);
    prov_error_clear();
    if (chain != NULL) {
        for (size_t p = 0; p < sizeof(purposes) / sizeof(purposes[0]); p++) {
            struct prov_chain_report rep;
            int r;

            memset(&rep, 0, sizeof(rep));
            /* A fixed time: a finding must not depend on when the fuzzer ran. */
            r = prov_chain_verify(chain, NULL, purposes[p], 1767225600, &rep);
            if (r == PROV_ERR_VERIFY && rep.n == 0) {
                __builtin_trap();
            }
            for (size_t i = 0; i < rep.n; i++) {
                sink += strlen(rep.items[i].rule) + strlen(rep.items[i].detail) +
                        (rep.items[i].subject ? strlen(rep.items[i].subject) : 0);
            }
            prov_chain_report_free(&rep);
            prov_error_clear();
        }
    }
    sk_X509_pop_free(chain, X509_free);
    prov_error_clear();
    return sink == (size_t)-1;
}
