/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the config parser (prov_config_parse: sections, keys, templates, profiles,
 * PIN source specs). Every parsed value is read back in full so that a bad pointer or a
 * missing terminator shows up under ASan; a failure must leave an error message.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"
#include "error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t len_of(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct prov_config *cfg = NULL;
    size_t sink = 0;
    int r;

    r = prov_config_parse((const char *)data, size, "fuzz.cnf", "/nonexistent", &cfg);
    if (r < 0) {
        if (cfg != NULL || prov_error_message() == NULL) {
            __builtin_trap(); /* a failure names its reason and hands nothing out */
        }
    } else {
        sink += len_of(cfg->pkcs11_module) + len_of(cfg->ca_dir) + len_of(cfg->ca_key) +
                len_of(cfg->ca_pin) + len_of(cfg->device_pin) + len_of(cfg->output_dir);
        for (size_t i = 0; i < cfg->n_profiles; i++) {
            sink += len_of(cfg->profiles[i].name);
            if (prov_config_profile(cfg, cfg->profiles[i].name) == NULL) {
                __builtin_trap(); /* every parsed profile can be found by its name */
            }
        }
    }
    prov_config_free(cfg);
    prov_error_clear();
    return sink == (size_t)-1;
}
