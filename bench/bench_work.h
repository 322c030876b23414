/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The work floor's side of bench_p11 (bench_work.c): what the batch must do per device
 * beside the token's work, done the leanest way, on the threads a lean tool would use.
 * bench_p11.c's token loop and CA thread call these; bench/README.md, "What each figure is".
 */
#ifndef BENCH_WORK_H
#define BENCH_WORK_H

#include <stddef.h>

/*
 * Opens the work floor in dir (made): the journal and the CA index (SQLite, WAL,
 * synchronous=FULL, as the tool has them), the storage root dir/devices, the chain
 * (chain_pem: the intermediate, then the root) and the device certificate (DER) whose
 * bytes every device's files carry; starts the storage and the intents' threads. n: the
 * run's devices; id_of: device i's CKA_ID, recorded with its intent.
 */
int work_open(const char *dir, const char *chain_pem, const unsigned char *cert_der,
              size_t cert_len, unsigned long n, void (*id_of)(unsigned long i, unsigned char id[16]));
/* Before device i's key (the token's thread): waits until its intent, one journal
   transaction of the intents' thread with id_of(i), is recorded. */
int work_wait_intent(unsigned long i);
/* Device i's public point (CKA_EC_POINT) and its two raw signatures (r || s) over the
   digests bench_p11 signs: kept for the CA thread's checks. */
int work_signed(unsigned long i, const unsigned char *point, size_t point_len,
                const unsigned char *sig_csr, size_t csr_len, const unsigned char *sig_proof,
                size_t proof_len);
/* The CA thread, once the CA has signed device i: the CSR's signature checked, the CA
   index's record and the journal's issued (a transaction each), the proof checked. */
int work_issue(unsigned long i);
/* The token's thread waits until device i is issued (its certificate object comes next). */
int work_wait_issued(unsigned long i);
/* The token's thread: device i's certificate object is stored; its storage may go. */
int work_certified(unsigned long i);
/* Any thread's step failed: every thread waiting for another stops waiting. */
void work_fail(void);
/* Waits for the storage's last device; 0 when every step of every device worked. */
int work_wait_done(void);
/* The databases closed (their last checkpoint), everything freed: after the clock. */
void work_close(void);

#endif
