/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_FACTORY_MANIFEST_VALUE_H
#define PROV_FACTORY_MANIFEST_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

/*
 * The first character of valid UTF-8 text s that has no place in a name or a path: C0/C1
 * controls, DEL, line/paragraph separators and bidirectional controls; 0 when there is none.
 */
uint32_t prov_manifest_find_control(const char *s);

/* One subjectAltName entry of the column's kind (DNS name, URI, e-mail address, IP). */
bool prov_manifest_san_entry_is_valid(enum prov_manifest_col col, const char *entry);

/*
 * Normalizes a storage path relative to output_dir into out ("a//./b/" is "a/b"). False,
 * with *why, for an absolute path, a ".." component or a path naming output_dir itself.
 */
bool prov_manifest_storage_normalize(const char *in, char *out, size_t cap, const char **why);

/* [A-Za-z0-9_.-]{1,64}: what a [profile_NAME] section can be called. */
bool prov_manifest_is_profile_name(const char *s);

/*
 * NULL when v is a PIN source a row may name (file:PATH or env:VAR), else why not. The
 * reason never repeats v: a value that is no source may be a PIN typed in by mistake.
 */
const char *prov_manifest_pin_source_problem(const char *v);

/* One of the key type names of doc/keys.md. */
bool prov_manifest_is_key_type(const char *s);

#endif
