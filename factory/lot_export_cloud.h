/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_LOT_EXPORT_CLOUD_H
#define PROV_FACTORY_LOT_EXPORT_CLOUD_H

#include "lot_bundle.h"

/*
 * The cloud registries' formats (lot_export_cloud.c, doc/export.md): each builds its files
 * into b from the lot's devices, or refuses the lot (PROV_ERR_POLICY) before adding any.
 */
int lot_build_aws(const struct lot_input *in, struct prov_lot_bundle *b);
int lot_build_azure_dps(const struct lot_input *in, struct prov_lot_bundle *b);

#endif
