/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_TEMPLATE_H
#define PROV_TEMPLATE_H

#include <stddef.h>

/*
 * Values a template may use: ${serial}, ${cn}, ${lot}, ${profile} and any ${x_NAME} column
 * of the manifest row. "$$" is a literal "$". Expansion is textual into one attribute value;
 * the result is never parsed again as a DN, so a cn of "x,O=evil" or "/CN=x" stays a value.
 * A "$" followed by anything but "{" or "$" is kept as written. Templates come from the config
 * unexpanded by NCONF (see config.h): users write ${cn} there, not \${cn} or {{cn}}.
 */
struct prov_vars {
    const char *serial;
    const char *cn;
    const char *lot;
    const char *profile;
    const char *const *x_names; /* "x_site", ... */
    const char *const *x_values;
    size_t n_x;
};

/*
 * Expands tmpl. Errors: PROV_ERR_CONFIG for an unknown variable, a used variable without a
 * value (NULL, or an x_NAME the row does not have) or an unterminated "${" (the text names the
 * template and the variable), PROV_ERR_NOMEM. *out is malloc'd; vars may be NULL.
 */
int prov_template_expand(const char *tmpl, const struct prov_vars *vars, char **out);

#endif
