/* SPDX-License-Identifier: Apache-2.0 */
#include "template.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* A growing output string; the result of a template is short (one attribute value). */
struct strbuf {
    char *data;
    size_t len;
    size_t cap;
};

static bool strbuf_add(struct strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *grown;

        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        grown = realloc(b->data, cap);
        if (grown == NULL) {
            return false;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

/*
 * The value of a variable name (not NUL-terminated). *known tells an unknown name apart from
 * a known one without a value (NULL is returned for both).
 */
static const char *lookup(const struct prov_vars *vars, const char *name, size_t n, bool *known)
{
    static const struct {
        const char *name;
        size_t offset;
    } fixed[] = {
        {"serial", offsetof(struct prov_vars, serial)},
        {"cn", offsetof(struct prov_vars, cn)},
        {"lot", offsetof(struct prov_vars, lot)},
        {"profile", offsetof(struct prov_vars, profile)},
    };

    *known = false;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (strlen(fixed[i].name) == n && strncmp(name, fixed[i].name, n) == 0) {
            *known = true;
            return vars ? *(const char *const *)((const char *)vars + fixed[i].offset) : NULL;
        }
    }
    if (n < 3 || strncmp(name, "x_", 2) != 0 || vars == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < vars->n_x; i++) {
        const char *xn = vars->x_names ? vars->x_names[i] : NULL;

        if (xn != NULL && strlen(xn) == n && strncmp(name, xn, n) == 0) {
            *known = true;
            return vars->x_values ? vars->x_values[i] : NULL;
        }
    }
    return NULL;
}

int prov_template_expand(const char *tmpl, const struct prov_vars *vars, char **out)
{
    struct strbuf b = {0};
    const char *p = tmpl ? tmpl : "";
    int r = PROV_ERR_NOMEM;

    *out = NULL;
    if (!strbuf_add(&b, "", 0)) {
        prov_fail(r, "template \"%s\": out of memory", p);
        goto out;
    }
    while (*p != '\0') {
        const char *dollar = strchr(p, '$');
        const char *name;
        const char *close;
        const char *value;
        bool known;

        if (dollar == NULL) {
            dollar = p + strlen(p);
        }
        if (!strbuf_add(&b, p, (size_t)(dollar - p))) {
            prov_fail(r, "template \"%s\": out of memory", tmpl);
            goto out;
        }
        p = dollar;
        if (*p == '\0') {
            break;
        }
        if (p[1] != '{') {
            /* "$$" is a literal "$"; a "$" before anything else is kept as written. */
            if (!strbuf_add(&b, "$", 1)) {
                prov_fail(r, "template \"%s\": out of memory", tmpl);
                goto out;
            }
            p += p[1] == '$' ? 2 : 1;
            continue;
        }
        name = p + 2;
        close = strchr(name, '}');
        if (close == NULL) {
            r = prov_fail(PROV_ERR_CONFIG, "template \"%s\": unterminated \"${\"", tmpl);
            goto out;
        }
        value = lookup(vars, name, (size_t)(close - name), &known);
        if (!known && (close - name < 3 || strncmp(name, "x_", 2) != 0)) {
            r = prov_fail(PROV_ERR_CONFIG, "template \"%s\": unknown variable \"${%.*s}\" "
                          "(use ${serial} ${cn} ${lot} ${profile} ${x_NAME})", tmpl,
                          (int)(close - name), name);
            goto out;
        }
        if (value == NULL) {
            r = prov_fail(PROV_ERR_CONFIG, "template \"%s\": variable \"${%.*s}\" has no value",
                          tmpl, (int)(close - name), name);
            goto out;
        }
        if (!strbuf_add(&b, value, strlen(value))) {
            prov_fail(r, "template \"%s\": out of memory", tmpl);
            goto out;
        }
        p = close + 1;
    }
    *out = b.data;
    b.data = NULL;
    r = 0;
out:
    free(b.data);
    return r;
}
