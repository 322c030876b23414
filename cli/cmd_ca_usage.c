/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The help text of `provisioner ca` (init, show, crl, serve, station, lot): its own file, so that cmd_ca.c and
 * cmd_ca_crl.c both print it without calling into each other.
 */
#include <stdio.h>

#include "cli.h"

void cmd_ca_usage(FILE *f)
{
    fprintf(f, "Usage: provisioner ca init [--force] [--strict]\n"
               "       provisioner ca show [--json]\n"
               "       provisioner ca crl [--json]\n"
               "       provisioner ca serve [--listen HOST:PORT] [--path PATH] [--tls-cert FILE\n"
               "                            --tls-key FILE] [--max-body BYTES] [--profile NAME]\n"
               "                            [--workers N]\n"
               "       provisioner ca station add NAME --csr FILE --out FILE [--reissue]\n"
               "       provisioner ca station renew NAME --csr FILE --out FILE\n"
               "       provisioner ca station revoke NAME [--reason R]\n"
               "       provisioner ca station list [--json]\n"
               "       provisioner ca lot add NAME (--count N | --manifest FILE) --station S...\n"
               "                              [--profile P...] [--reissue] [--rate N]\n"
               "       provisioner ca lot list [--json]\n\n"
               "ca init creates the root CA (new, with its key in a PKCS#11 token or an encrypted\n"
               "PEM file, or imported from [ca] root_cert + root_key) and an intermediate CA whose\n"
               "key is generated inside the HSM token named by [ca] intermediate_key. It writes\n"
               "root.crt, intermediate.crt and chain.pem (intermediate then root) into [ca] dir.\n"
               "  --force   replace an existing CA directory and existing CA keys\n"
               "  --strict  refuse a root config that strict verifiers reject (exit 5)\n\n"
               "ca show prints the chain, the key locations, validity, lint findings and the CA\n"
               "index (<dir>/index.sqlite, or [ca] index): certificates issued, delivered,\n"
               "superseded and abandoned, and every one not delivered, by serial; it warns\n"
               "when a CRL is expired or within 48 hours (or half its lifetime) of its\n"
               "nextUpdate.\n"
               "  --json    machine-readable output\n\n"
               "ca crl signs the intermediate's CRL with its key in the HSM (every revocation\n"
               "in the index; nextUpdate [ca] crl_days ahead) and the root's CRL with the root\n"
               "key (root_crl_days), then writes intermediate.crl, root.crl (DER), their .pem\n"
               "forms and crl-chain.pem (both) into [ca] dir, each atomically. The CA token\n"
               "absent: exit 4, no file changed.\n"
               "  --json    machine-readable output\n\n"
               "ca serve runs the CA service over CMP on the host that holds the CA token\n"
               "(doc/ca-service.md; the options: provisioner ca serve --help). ca station add\n"
               "issues and registers a station's identity certificate (profile \"station\"),\n"
               "renew replaces it, revoke revokes it (the service refuses the station), list\n"
               "shows them (provisioner ca station --help); ca lot add registers a lot: its\n"
               "cap (or its manifest's devices), the stations that may issue for it, its\n"
               "profiles, whether it allows a reissue and each station's rate per minute\n"
               "(provisioner ca lot --help).\n");
}
