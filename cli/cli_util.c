/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "backend.h"
#include "cli.h"
#include "connect.h"
#include "enroll.h"
#include "error.h"

int cli_load_config(struct prov_config **out)
{
    int r;

    prov_error_clear();
    r = prov_issue_load_config(prov_cli.config_path, out);
    if (r < 0) {
        return cli_fail(r, prov_cli.config_path);
    }
    return 0;
}

void cli_error_text(int err, const char *what, char *buf, size_t len)
{
    const char *msg = prov_error_message();

    if (msg != NULL && what != NULL && strstr(msg, what) == NULL) {
        /* The one error line must name the object it is about (the device serial, the
         * file...): low layers describe the failure, the command knows what it was doing. */
        snprintf(buf, len, "%s: %s", what, msg);
    } else if (msg != NULL) {
        snprintf(buf, len, "%s", msg);
    } else {
        snprintf(buf, len, "%s: %s", what ? what : "error", prov_strerror(err));
    }
}

int cli_fail(int err, const char *what)
{
    char line[1536];

    cli_error_text(err, what, line, sizeof(line));
    fprintf(stderr, "provisioner: %s\n", line);
    return prov_exit_code(err);
}

int cli_check_input(const char *path, bool is_dir)
{
    struct stat st;
    const char *why = NULL;

    if (stat(path, &st) != 0 || access(path, is_dir ? R_OK | X_OK : R_OK) != 0) {
        why = strerror(errno);
    } else if (is_dir && !S_ISDIR(st.st_mode)) {
        why = strerror(ENOTDIR);
    } else if (!is_dir && S_ISDIR(st.st_mode)) {
        why = strerror(EISDIR);
    }
    if (why != NULL) {
        fprintf(stderr, "provisioner: %s: cannot read: %s\n", path, why);
        return PROV_EXIT_USAGE;
    }
    return 0;
}

int cli_check_device(const char *uri)
{
    int r;

    prov_error_clear();
    r = prov_device_validate(uri);
    return r < 0 ? cli_fail(r, "--device") : 0;
}

bool cli_request_opt(struct cli_request *rq, int c, const char *arg)
{
    switch (c) {
    case OPT_SERIAL: rq->serial = arg; return true;
    case OPT_PROFILE: rq->profile = arg; return true;
    case OPT_KEY: rq->key = arg; return true;
    case OPT_CN: rq->cn = arg; return true;
    case OPT_SAN_DNS: rq->san_dns = arg; return true;
    case OPT_SAN_URI: rq->san_uri = arg; return true;
    case OPT_SAN_EMAIL: rq->san_email = arg; return true;
    case OPT_SAN_IP: rq->san_ip = arg; return true;
    default: return false;
    }
}

int cli_request_build(const struct prov_config *cfg, const struct cli_request *in,
                      struct prov_request *out, enum prov_key_type *key_type)
{
    const char *profile = in->profile ? in->profile : "device";

    memset(out, 0, sizeof(*out));
    *key_type = PROV_KEY_NONE;
    if (in->serial == NULL) {
        fprintf(stderr, "provisioner: --serial is required\n");
        return PROV_EXIT_USAGE;
    }
    if (!prov_serial_is_valid(in->serial)) {
        fprintf(stderr, "provisioner: serial \"%s\": must match " PROV_SERIAL_RULE "\n",
                in->serial);
        return PROV_EXIT_USAGE;
    }
    out->profile = prov_config_profile(cfg, profile);
    if (out->profile == NULL) {
        fprintf(stderr, "provisioner: profile \"%s\": not in %s (no [profile_%s] section)\n",
                profile, cfg->path, profile);
        return PROV_EXIT_USAGE;
    }
    if (in->key != NULL && prov_key_type_parse(in->key, key_type) < 0) {
        return cli_fail(PROV_ERR_USAGE, "--key");
    }
    out->serial = in->serial;
    out->cn = in->cn;
    out->san_dns = in->san_dns;
    out->san_uri = in->san_uri;
    out->san_email = in->san_email;
    out->san_ip = in->san_ip;
    out->lot = cfg->lot;
    return 0;
}

void cli_print_json(struct json_object *o)
{
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

json_object *cli_connect_json(const struct prov_connect_result *c)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "url", json_object_new_string(c->url));
    json_object_object_add(o, "ok", json_object_new_boolean(c->outcome == PROV_CONNECT_OK));
    json_object_object_add(o, "outcome",
                           json_object_new_string(prov_connect_outcome_name(c->outcome)));
    json_object_object_add(o, "tls_version",
                           c->tls_version[0] ? json_object_new_string(c->tls_version) : NULL);
    json_object_object_add(o, "status", c->app_status >= 0 ? json_object_new_int(c->app_status)
                                                           : NULL);
    json_object_object_add(o, "detail", json_object_new_string(c->detail));
    return o;
}

static json_object *string_or_empty(const char *s)
{
    return json_object_new_string(s != NULL ? s : "");
}

void cli_print_identity_json(const char *serial, const char *status,
                             const struct prov_enroll_result *res, bool with_proof,
                             const char *error, int exit_code)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "serial", string_or_empty(serial));
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "cert_serial", json_object_new_string(res->facts.serial_hex));
    json_object_object_add(o, "sha256", json_object_new_string(res->facts.sha256_hex));
    json_object_object_add(o, "not_before", json_object_new_string(res->facts.not_before));
    json_object_object_add(o, "not_after", json_object_new_string(res->facts.not_after));
    json_object_object_add(o, "subject", json_object_new_string(res->facts.subject));
    json_object_object_add(o, "key_type",
                           string_or_empty(res->key_type != PROV_KEY_NONE
                                               ? prov_key_type_name(res->key_type)
                                               : NULL));
    json_object_object_add(o, "key_uri", string_or_empty(res->key_uri));
    json_object_object_add(o, "storage", string_or_empty(res->storage_dir));
    if (with_proof) {
        json_object_object_add(o, "proof",
                               res->is_proof_run ? cli_connect_json(&res->proof) : NULL);
    }
    json_object_object_add(o, "error", error ? json_object_new_string(error) : NULL);
    json_object_object_add(o, "exit", json_object_new_int(exit_code));
    cli_print_json(o);
}

int cli_identity_failed(const char *serial, const struct prov_enroll_result *res, int err,
                        const char *what, bool with_proof, bool as_json)
{
    char line[1536];

    cli_error_text(err, what, line, sizeof(line));
    if (as_json) {
        cli_print_identity_json(serial, "failed", res, with_proof, line, prov_exit_code(err));
    }
    fprintf(stderr, "provisioner: %s\n", line);
    return prov_exit_code(err);
}

int cli_fail_json(int err, const char *what, bool as_json, struct json_object *o)
{
    char line[1536];

    cli_error_text(err, what, line, sizeof(line));
    if (as_json && o != NULL) {
        json_object_object_add(o, "error", json_object_new_string(line));
        json_object_object_add(o, "exit", json_object_new_int(prov_exit_code(err)));
        cli_print_json(o);
    } else {
        json_object_put(o);
    }
    fprintf(stderr, "provisioner: %s\n", line);
    return prov_exit_code(err);
}
