/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_ENROLL_ATTEMPT_H
#define PROV_ENROLL_ATTEMPT_H

#include "enroll.h"

/*
 * `enroll` of one device as an attempt recorded in the issuer's record (the CA index,
 * is->ops->record): first the
 * interrupted attempts of this serial or on this device are settled (enroll_attempt.c), then
 * the attempt is recorded with its key id before prov_enroll generates the key, and finished
 * when the identity is stored or the enrollment failed. Same results and errors as
 * prov_enroll, plus PROV_ERR_POLICY when another enroll of the serial is running now, and
 * the error of settling an interrupted attempt (its device's PIN refused, ...). Without a
 * record on this machine it is prov_enroll. A batch has its journal instead and runs the
 * steps itself.
 */
int prov_enroll_attempt(const struct prov_config *cfg, struct prov_issuer *is,
                        const struct prov_enroll_params *p, struct prov_enroll_result *res);

#endif
