/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A test tool that makes a token-resident EC P-256 key pair with exactly the attributes a test
 * asks for, through the module's own function list:
 *
 *   pkcs11-make-key MODULE TOKEN-LABEL PIN-FILE ID-HEX LABEL [FLAW...]
 *
 * Without a FLAW the key is what the tool itself generates (doc/keys.md): token, private,
 * sensitive, not extractable, sign only. Each FLAW changes one thing:
 *   derive           CKA_DERIVE true (decrypt and unwrap stay false)
 *   was-extractable  generated with CKA_EXTRACTABLE true, then set to false: the key is not
 *                    extractable now, but CKA_NEVER_EXTRACTABLE stays false
 *
 * pkcs11-tool cannot make these keys: its --usage-sign still allows decrypt and unwrap
 * (tests/integration/README.md), so a key with derive would be refused for decrypt anyway,
 * and it has no way to clear CKA_EXTRACTABLE afterwards. Exit 0, or 1 with one line on stderr.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static CK_BBOOL yes = CK_TRUE;
static CK_BBOOL no = CK_FALSE;
/* DER OID of prime256v1 */
static CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

static int fail(const char *what, CK_RV rv)
{
    fprintf(stderr, "pkcs11-make-key: %s: CK_RV 0x%08lx\n", what, (unsigned long)rv);
    return 1;
}

static bool parse_hex(const char *s, CK_BYTE *out, size_t cap, size_t *len)
{
    size_t n = strlen(s);

    if (n == 0 || n % 2 != 0 || n / 2 > cap) {
        return false;
    }
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;

        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return false;
        }
        out[i] = (CK_BYTE)v;
    }
    *len = n / 2;
    return true;
}

static bool read_pin(const char *path, char *pin, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        return false;
    }
    n = fread(pin, 1, cap - 1, f);
    fclose(f);
    pin[n] = '\0';
    pin[strcspn(pin, "\r\n")] = '\0';
    return n > 0;
}

static int find_slot(CK_FUNCTION_LIST *fl, const char *label, CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    CK_RV rv = fl->C_GetSlotList(CK_TRUE, slots, &n);

    if (rv != CKR_OK) {
        return fail("C_GetSlotList", rv);
    }
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        size_t len = strlen(label);

        if (fl->C_GetTokenInfo(slots[i], &info) != CKR_OK || len > sizeof(info.label)) {
            continue;
        }
        /* The label is blank-padded to 32 bytes: exact match, not prefix. */
        if (memcmp(info.label, label, len) == 0 &&
            (len == sizeof(info.label) || info.label[len] == ' ')) {
            *out = slots[i];
            return 0;
        }
    }
    fprintf(stderr, "pkcs11-make-key: no token labelled \"%s\"\n", label);
    return 1;
}

int main(int argc, char **argv)
{
    CK_FUNCTION_LIST *fl = NULL;
    CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE pub, priv;
    CK_SLOT_ID slot;
    CK_BYTE id[64];
    size_t id_len = 0;
    char pin[256];
    bool derive = false, was_extractable = false;
    void *dl;
    CK_RV rv;

    if (argc < 6) {
        fprintf(stderr, "usage: pkcs11-make-key MODULE TOKEN PIN-FILE ID-HEX LABEL "
                        "[derive] [was-extractable]\n");
        return 2;
    }
    for (int i = 6; i < argc; i++) {
        if (strcmp(argv[i], "derive") == 0) {
            derive = true;
        } else if (strcmp(argv[i], "was-extractable") == 0) {
            was_extractable = true;
        } else {
            fprintf(stderr, "pkcs11-make-key: unknown flaw \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (!parse_hex(argv[4], id, sizeof(id), &id_len) || !read_pin(argv[3], pin, sizeof(pin))) {
        fprintf(stderr, "pkcs11-make-key: bad id \"%s\" or unreadable PIN file\n", argv[4]);
        return 2;
    }
    dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    get_list = dl ? (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(dl, "C_GetFunctionList") : NULL;
    if (get_list == NULL || get_list(&fl) != CKR_OK) {
        fprintf(stderr, "pkcs11-make-key: cannot load %s\n", argv[1]);
        return 1;
    }
    rv = fl->C_Initialize(NULL);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        return fail("C_Initialize", rv);
    }
    if (find_slot(fl, argv[2], &slot) != 0) {
        return 1;
    }
    rv = fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) {
        return fail("C_OpenSession", rv);
    }
    rv = fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
    memset(pin, 0, sizeof(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        return fail("C_Login", rv);
    }
    {
        CK_ATTRIBUTE pub_tmpl[] = {
            {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &no, sizeof(no)},
            {CKA_VERIFY, &yes, sizeof(yes)},    {CKA_ENCRYPT, &no, sizeof(no)},
            {CKA_WRAP, &no, sizeof(no)},        {CKA_DERIVE, derive ? &yes : &no, 1},
            {CKA_ID, id, id_len},               {CKA_EC_PARAMS, p256, sizeof(p256)},
            {CKA_LABEL, argv[5], strlen(argv[5])},
        };
        CK_ATTRIBUTE priv_tmpl[] = {
            {CKA_TOKEN, &yes, sizeof(yes)},
            {CKA_PRIVATE, &yes, sizeof(yes)},
            {CKA_SENSITIVE, &yes, sizeof(yes)},
            {CKA_EXTRACTABLE, was_extractable ? &yes : &no, 1},
            {CKA_SIGN, &yes, sizeof(yes)},
            {CKA_DECRYPT, &no, sizeof(no)},
            {CKA_UNWRAP, &no, sizeof(no)},
            {CKA_DERIVE, derive ? &yes : &no, 1},
            {CKA_ID, id, id_len},
            {CKA_LABEL, argv[5], strlen(argv[5])},
        };

        rv = fl->C_GenerateKeyPair(s, &mech, pub_tmpl, sizeof(pub_tmpl) / sizeof(pub_tmpl[0]),
                                   priv_tmpl, sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), &pub,
                                   &priv);
        if (rv != CKR_OK) {
            return fail("C_GenerateKeyPair", rv);
        }
    }
    if (was_extractable) {
        /* true -> false is always allowed; CKA_NEVER_EXTRACTABLE keeps the history. */
        CK_ATTRIBUTE set[] = {{CKA_EXTRACTABLE, &no, sizeof(no)}};

        rv = fl->C_SetAttributeValue(s, priv, set, 1);
        if (rv != CKR_OK) {
            return fail("C_SetAttributeValue(CKA_EXTRACTABLE false)", rv);
        }
    }
    fl->C_CloseSession(s);
    fl->C_Finalize(NULL);
    return 0;
}
