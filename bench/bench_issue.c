/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-process issue floor of the CA service (bench/ca_service.sh, bench/README.md): the CA
 * opened once with its key in the HSM, then for each CSR exactly the issue path `ca serve`
 * runs for a request (provisioner/pki/issue.c: the CSR's signature and policy, the CA index's
 * rules, the certificate built, signed in the HSM and recorded in the index before it is
 * returned) in one process, one after another, with nothing over the network. The CSRs are
 * read before the clock starts; each one's CN is its device serial, as the service takes it.
 *   bench_issue CONFIG CSR...   (DER or PEM)
 * Prints one line: "issued N s=SECONDS cpu=SECONDS" (wall clock and user+system CPU of the
 * loop, to the microsecond: bench/run.sh divides 5 certificates' time with --quick). Exit 1
 * when a certificate is not issued.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "backend.h"
#include "bench_clock.h"
#include "ca.h"
#include "config.h"
#include "csr.h"
#include "error.h"
#include "issue.h"
#include "pkcs11.h"

int main(int argc, char **argv)
{
    struct prov_config *cfg = NULL;
    struct prov_ca *ca = NULL;
    X509_REQ **reqs;
    char(*serials)[65];
    int n = argc - 2;
    double t0;
    double c0;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_issue CONFIG CSR...\n");
        return 2;
    }
    prov_backend_register(&prov_pkcs11_ops);
    reqs = calloc((size_t)n, sizeof(*reqs));
    serials = calloc((size_t)n, sizeof(*serials));
    if (reqs == NULL || serials == NULL) {
        return 1;
    }
    for (int i = 0; i < n; i++) {
        X509_NAME *subj;

        if (prov_csr_read(argv[i + 2], &reqs[i]) < 0) {
            fprintf(stderr, "bench_issue: %s\n", prov_error_message());
            return 1;
        }
        subj = X509_REQ_get_subject_name(reqs[i]);
        if (X509_NAME_get_text_by_NID(subj, NID_commonName, serials[i], sizeof(serials[i])) <= 0) {
            fprintf(stderr, "bench_issue: %s: no CN\n", argv[i + 2]);
            return 1;
        }
    }
    if (prov_issue_load_config(argv[1], &cfg) < 0 || prov_ca_open(cfg, true, &ca) < 0) {
        fprintf(stderr, "bench_issue: %s\n", prov_error_message());
        return 1;
    }
    t0 = bench_now_s();
    c0 = bench_cpu_s();
    for (int i = 0; i < n; i++) {
        struct prov_request rq;
        X509 *cert = NULL;

        memset(&rq, 0, sizeof(rq));
        rq.serial = serials[i];
        rq.profile = prov_config_profile(cfg, "device");
        rq.record.issued_by = "bench";
        prov_error_clear();
        if (prov_issue_certificate(cfg, ca, reqs[i], &rq, &cert) < 0) {
            fprintf(stderr, "bench_issue: %s: %s\n", serials[i], prov_error_message());
            return 1;
        }
        X509_free(cert);
    }
    printf("issued %d s=%.6f cpu=%.6f\n", n, bench_now_s() - t0, bench_cpu_s() - c0);
    for (int i = 0; i < n; i++) {
        X509_REQ_free(reqs[i]);
    }
    free(reqs);
    free(serials);
    prov_ca_close(ca);
    prov_config_free(cfg);
    return 0;
}
