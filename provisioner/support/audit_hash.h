/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_AUDIT_HASH_H
#define PROV_AUDIT_HASH_H

/*
 * The hash that links an audit chain's records: the batch journal's (factory/journal_audit.c)
 * and the CA index's (provisioner/pki/ca_index_revoke.c) use this one function, so the two
 * chains are verified by the same rule (doc/journal.md, doc/revocation.md).
 */

#define PROV_AUDIT_FIELDS 5

/*
 * out = lower-case hex of SHA-256(prev || seq || for each of the PROV_AUDIT_FIELDS texts: its
 * length || the text), where prev is the previous record's hash (prev_hex, 64 hex digits;
 * the first record's is 64 zeros), seq an unsigned 64-bit big-endian number and each length
 * an unsigned 32-bit big-endian number of bytes: the prefixes keep two records from
 * serializing alike. PROV_ERR_VERIFY when prev_hex is not 64 hex digits (a broken chain),
 * PROV_ERR_CRYPTO when OpenSSL fails.
 */
int prov_audit_hash(const char *prev_hex, long long seq, const char *const text[PROV_AUDIT_FIELDS],
                    char out[65]);

#endif
