/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A CMP load generator for the CA service (bench/ca_service.sh, bench/README.md): K stations,
 * one thread each, each with its own identity (the certificate and key ca_service.sh made and
 * registered), send N certificate requests each through OpenSSL's CMP client
 * (OSSL_CMP_exec_certreq: an `ir`, or a `p10cr` with -p, then the `certConf` OpenSSL's client
 * sends), all at once, in one process: no process start, key read or TLS set-up per
 * certificate, so the figure is the service's rather than its clients'. Every new key (and
 * CSR) is made before the clock starts; every answer is checked after it stops: the
 * certificate is for the request's key and verifies up to ROOT through the chain the service
 * sent with it.
 *
 *   bench_cmp_client [-k K] [-n N] [-p] [-a] [-c PREFIX] [-t TLS_CA] [-i INTERMEDIATE]
 *                    HOST:PORT PATH STATION ROOT
 *
 * STATION: the stations' files STATION1.crt, STATION1.key ... STATIONK.crt, STATIONK.key (PEM).
 * -k K stations (default 8), -n N certificates each (default 25), -p p10cr instead of ir,
 * -c the devices' CN prefix (default C: C01-0001 ...; the service takes the CN as the serial).
 * -t TLS_CA: over TLS (the service's certificate must chain to TLS_CA and name HOST), else
 * plain HTTP. OpenSSL 3.0's CMP client opens a new connection for every transaction (its
 * request and certConf share it): a TLS handshake per certificate; -a keeps one connection per
 * station for all its transactions instead (HTTP keep-alive through OpenSSL's HTTP client, as
 * the EST figure's curl does).
 * -i INTERMEDIATE: the CA's intermediate, verified against ROOT once before the clock, is then
 * trusted for the answers' protection (a partial chain, as the service does for the stations'
 * messages, doc/ca-service.md "Measured"); without it each answer's chain is verified up to
 * ROOT.
 *
 * Prints a line for people and one for scripts:
 *   issued=I failures=F s=SECONDS cpu=SECONDS connections=C transport=tls|http
 * (cpu: this process's user + system over the timed part). Exit 1 when any certificate was not
 * issued or an answer fails its check, 2 on bad arguments.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/cmp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/http.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "bench_clock.h"

/* Generous: eight stations queue at a service that answers one request at a time. */
#define MSG_TIMEOUT 120
#define TOTAL_TIMEOUT 300

struct options {
    const char *host;
    const char *port;
    const char *path;
    const char *prefix;
    int k;
    int n;
    bool is_p10cr;
    bool is_kept_alive;
    SSL_CTX *tls; /* NULL: plain HTTP */
    X509 *root;
    X509 *intermediate; /* NULL: answers verified up to the root */
};

struct station {
    const struct options *o;
    int index; /* 1..K */
    X509 *cert;
    EVP_PKEY *key;
    X509_STORE *trust;      /* this thread's own: the answers' protection */
    EVP_PKEY **new_keys;    /* N, made before the clock */
    X509_REQ **csrs;        /* N with -p */
    X509 **issued;          /* N: what came back */
    STACK_OF(X509) **extra; /* N: the chain each answer carried */
    OSSL_HTTP_REQ_CTX *kept; /* -a: the station's connection */
    long connections;
    int failures;
    pthread_barrier_t *start;
};

static void cn_of(const struct options *o, int station, int i, char *out, size_t size)
{
    snprintf(out, size, "%s%02d-%04d", o->prefix, station, i + 1);
}

/*
 * OpenSSL 3.0's HTTP client writes a request's headers and its body separately: with Nagle's
 * algorithm the body waits for the service's delayed ACK of the headers (40 ms on Linux).
 */
static void nodelay(BIO *bio)
{
    int fd = -1;
    int one = 1;

    if (BIO_get_fd(bio, &fd) >= 0 && fd >= 0) {
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

/*
 * OpenSSL's HTTP client calls this when it has connected (connect = 1: the TLS BIO goes on top
 * of the socket's) and before it closes (connect = 0: the TLS BIO comes off again).
 */
static BIO *http_cb(BIO *bio, void *arg, int connect, int detail)
{
    struct station *st = arg;
    BIO *ssl_bio;
    BIO *under;
    SSL *ssl;

    (void)detail;
    if (connect) {
        st->connections++;
        nodelay(bio);
    }
    if (st->o->tls == NULL) {
        return bio;
    }
    if (connect) {
        ssl_bio = BIO_new(BIO_f_ssl());
        ssl = SSL_new(st->o->tls);
        if (ssl_bio == NULL || ssl == NULL) {
            BIO_free(ssl_bio);
            SSL_free(ssl);
            return NULL;
        }
        SSL_set_connect_state(ssl);
        BIO_set_ssl(ssl_bio, ssl, BIO_CLOSE);
        return BIO_push(ssl_bio, bio);
    }
    (void)ERR_set_mark();
    BIO_ssl_shutdown(bio);
    under = BIO_pop(bio);
    BIO_free(bio);
    (void)ERR_pop_to_mark();
    return under;
}

/*
 * -a: the message over the station's kept connection (opened at its first message, again
 * when the service closed it), through OpenSSL's HTTP client as its CMP client would send it.
 */
static OSSL_CMP_MSG *transfer_kept(OSSL_CMP_CTX *ctx, const OSSL_CMP_MSG *req)
{
    struct station *st = OSSL_CMP_CTX_get_transfer_cb_arg(ctx);
    const struct options *o = st->o;
    BIO *body = ASN1_item_i2d_mem_bio(ASN1_ITEM_rptr(OSSL_CMP_MSG), (const ASN1_VALUE *)req);
    BIO *answer;
    OSSL_CMP_MSG *rsp = NULL;

    if (body == NULL) {
        return NULL;
    }
    if (st->kept != NULL && !OSSL_HTTP_is_alive(st->kept)) {
        OSSL_HTTP_close(st->kept, 1);
        st->kept = NULL;
    }
    answer = OSSL_HTTP_transfer(&st->kept, o->host, o->port, o->path, o->tls != NULL, NULL,
                                NULL, NULL, NULL, http_cb, st, 0, NULL, "application/pkixcmp",
                                body, "application/pkixcmp", 1, OSSL_HTTP_DEFAULT_MAX_RESP_LEN,
                                MSG_TIMEOUT, 1);
    BIO_free(body);
    if (answer != NULL) {
        rsp = d2i_OSSL_CMP_MSG_bio(answer, NULL);
        BIO_free(answer);
    }
    if (rsp == NULL && st->kept != NULL) {
        OSSL_HTTP_close(st->kept, 0);
        st->kept = NULL;
    }
    return rsp;
}

/* A client context for one transaction of st's (OpenSSL's CMP context is single-use). */
static OSSL_CMP_CTX *client_ctx(struct station *st)
{
    const struct options *o = st->o;
    OSSL_CMP_CTX *ctx = OSSL_CMP_CTX_new(NULL, NULL);

    if (ctx == NULL || !OSSL_CMP_CTX_set1_server(ctx, o->host) ||
        !OSSL_CMP_CTX_set_serverPort(ctx, atoi(o->port)) ||
        !OSSL_CMP_CTX_set1_serverPath(ctx, o->path) || !OSSL_CMP_CTX_set1_cert(ctx, st->cert) ||
        !OSSL_CMP_CTX_set1_pkey(ctx, st->key) || !X509_STORE_up_ref(st->trust)) {
        OSSL_CMP_CTX_free(ctx);
        return NULL;
    }
    OSSL_CMP_CTX_set0_trustedStore(ctx, st->trust);
    /* quiet: a failure is reported once, by report_failure() */
    OSSL_CMP_CTX_set_log_verbosity(ctx, OSSL_CMP_LOG_EMERG);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_MSG_TIMEOUT, MSG_TIMEOUT);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_TOTAL_TIMEOUT, TOTAL_TIMEOUT);
    if (o->is_kept_alive) {
        OSSL_CMP_CTX_set_transfer_cb(ctx, transfer_kept);
        OSSL_CMP_CTX_set_transfer_cb_arg(ctx, st);
    } else {
        /* TLS when the callback's argument is set; a new connection per transaction (3.0) */
        OSSL_CMP_CTX_set_http_cb(ctx, http_cb);
        OSSL_CMP_CTX_set_http_cb_arg(ctx, o->tls != NULL ? st : NULL);
    }
    return ctx;
}

static void report_failure(struct station *st, OSSL_CMP_CTX *ctx, int i)
{
    char cn[64];
    char status[256] = "";
    char reason[256] = "no answer";
    unsigned long e = ERR_peek_last_error();

    cn_of(st->o, st->index, i, cn, sizeof(cn));
    if (e != 0) {
        ERR_error_string_n(e, reason, sizeof(reason));
    }
    if (ctx != NULL && OSSL_CMP_CTX_get_status(ctx) >= 0) {
        OSSL_CMP_CTX_snprint_PKIStatus(ctx, status, sizeof(status));
    }
    fprintf(stderr, "bench_cmp_client: station %d, certificate %s: not issued: %s%s%s\n",
            st->index, cn, reason, status[0] != '\0' ? "; the service said: " : "", status);
    ERR_clear_error();
}

/* One station: its N transactions one after another; it stops at its first failure. */
static void *station_run(void *arg)
{
    struct station *st = arg;
    const struct options *o = st->o;

    pthread_barrier_wait(st->start);
    for (int i = 0; i < o->n; i++) {
        OSSL_CMP_CTX *ctx = client_ctx(st);
        X509_NAME *subject = X509_NAME_new();
        X509 *cert = NULL;
        char cn[64];
        bool is_set;

        cn_of(o, st->index, i, cn, sizeof(cn));
        if (o->is_p10cr) {
            is_set = ctx != NULL && OSSL_CMP_CTX_set1_p10CSR(ctx, st->csrs[i]);
        } else {
            is_set = ctx != NULL && subject != NULL &&
                     X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                                (const unsigned char *)cn, -1, -1, 0) &&
                     OSSL_CMP_CTX_set1_subjectName(ctx, subject) &&
                     EVP_PKEY_up_ref(st->new_keys[i]);
            if (is_set && !OSSL_CMP_CTX_set0_newPkey(ctx, 1, st->new_keys[i])) {
                EVP_PKEY_free(st->new_keys[i]);
                is_set = false;
            }
        }
        X509_NAME_free(subject);
        if (is_set) {
            cert = OSSL_CMP_exec_certreq(ctx, o->is_p10cr ? OSSL_CMP_P10CR : OSSL_CMP_IR, NULL);
        }
        if (cert == NULL || !X509_up_ref(cert)) {
            report_failure(st, ctx, i);
            OSSL_CMP_CTX_free(ctx);
            st->failures = o->n - i;
            break;
        }
        st->issued[i] = cert;
        st->extra[i] = OSSL_CMP_CTX_get1_extraCertsIn(ctx);
        OSSL_CMP_CTX_free(ctx);
    }
    if (st->kept != NULL) {
        OSSL_HTTP_close(st->kept, 1);
        st->kept = NULL;
    }
    return NULL;
}

/* After the clock: certificate i of st is for its request's key and verifies up to the root. */
static bool answer_is_good(struct station *st, X509_STORE *root_only, int i)
{
    EVP_PKEY *want = st->o->is_p10cr ? X509_REQ_get0_pubkey(st->csrs[i]) : st->new_keys[i];
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    char cn[64];
    const char *why = NULL;

    cn_of(st->o, st->index, i, cn, sizeof(cn));
    if (EVP_PKEY_eq(X509_get0_pubkey(st->issued[i]), want) != 1) {
        why = "not for the request's key";
    } else if (vc == NULL || !X509_STORE_CTX_init(vc, root_only, st->issued[i], st->extra[i]) ||
               X509_verify_cert(vc) != 1) {
        why = vc != NULL ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(vc))
                         : "out of memory";
    }
    if (why != NULL) {
        fprintf(stderr, "bench_cmp_client: station %d, certificate %s: %s\n", st->index, cn,
                why);
    }
    X509_STORE_CTX_free(vc);
    ERR_clear_error();
    return why == NULL;
}

static X509 *read_cert(const char *file)
{
    FILE *f = fopen(file, "r");
    X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

    if (f != NULL) {
        fclose(f);
    }
    if (x == NULL) {
        fprintf(stderr, "bench_cmp_client: %s: not a PEM certificate\n", file);
    }
    return x;
}

static EVP_PKEY *read_key(const char *file)
{
    FILE *f = fopen(file, "r");
    EVP_PKEY *k = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

    if (f != NULL) {
        fclose(f);
    }
    if (k == NULL) {
        fprintf(stderr, "bench_cmp_client: %s: not a PEM private key\n", file);
    }
    return k;
}

/* The store the answers' protection is checked against (its own per thread). */
static X509_STORE *trust_new(const struct options *o)
{
    X509_STORE *s = X509_STORE_new();

    if (s == NULL || !X509_STORE_add_cert(s, o->root) ||
        (o->intermediate != NULL && (!X509_STORE_add_cert(s, o->intermediate) ||
                                     !X509_STORE_set_flags(s, X509_V_FLAG_PARTIAL_CHAIN)))) {
        X509_STORE_free(s);
        return NULL;
    }
    return s;
}

/* Station s's identity, its new keys and (-p) CSRs: all before the clock. */
static int station_prepare(struct station *st, const char *prefix)
{
    const struct options *o = st->o;
    char file[4096];

    snprintf(file, sizeof(file), "%s%d.crt", prefix, st->index);
    st->cert = read_cert(file);
    snprintf(file, sizeof(file), "%s%d.key", prefix, st->index);
    st->key = read_key(file);
    st->trust = trust_new(o);
    st->new_keys = calloc((size_t)o->n, sizeof(*st->new_keys));
    st->csrs = calloc((size_t)o->n, sizeof(*st->csrs));
    st->issued = calloc((size_t)o->n, sizeof(*st->issued));
    st->extra = calloc((size_t)o->n, sizeof(*st->extra));
    if (st->cert == NULL || st->key == NULL || st->trust == NULL || st->new_keys == NULL ||
        st->csrs == NULL || st->issued == NULL || st->extra == NULL) {
        return -1;
    }
    for (int i = 0; i < o->n; i++) {
        X509_NAME *subject;
        char cn[64];

        st->new_keys[i] = EVP_EC_gen("P-256");
        if (st->new_keys[i] == NULL) {
            return -1;
        }
        if (!o->is_p10cr) {
            continue;
        }
        cn_of(o, st->index, i, cn, sizeof(cn));
        st->csrs[i] = X509_REQ_new();
        subject = st->csrs[i] != NULL ? X509_REQ_get_subject_name(st->csrs[i]) : NULL;
        if (subject == NULL ||
            !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                                        -1, -1, 0) ||
            !X509_REQ_set_pubkey(st->csrs[i], st->new_keys[i]) ||
            X509_REQ_sign(st->csrs[i], st->new_keys[i], EVP_sha256()) <= 0) {
            return -1;
        }
    }
    return 0;
}

static void station_free(struct station *st)
{
    for (int i = 0; st->new_keys != NULL && i < st->o->n; i++) {
        EVP_PKEY_free(st->new_keys[i]);
        X509_REQ_free(st->csrs[i]);
        X509_free(st->issued[i]);
        sk_X509_pop_free(st->extra[i], X509_free);
    }
    free(st->new_keys);
    free(st->csrs);
    free(st->issued);
    free(st->extra);
    X509_STORE_free(st->trust);
    X509_free(st->cert);
    EVP_PKEY_free(st->key);
}

/* The TLS client context: the service's certificate must chain to ca_file and name host. */
static SSL_CTX *tls_new(const char *ca_file, const char *host)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_VERIFY_PARAM *vpm = ctx != NULL ? SSL_CTX_get0_param(ctx) : NULL;

    if (vpm == NULL || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1 ||
        (X509_VERIFY_PARAM_set1_ip_asc(vpm, host) != 1 &&
         X509_VERIFY_PARAM_set1_host(vpm, host, 0) != 1)) {
        fprintf(stderr, "bench_cmp_client: %s: cannot use it as the TLS trust anchor\n",
                ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

/* -i: the intermediate is trusted only after it verified against the root. */
static bool intermediate_is_good(const struct options *o)
{
    X509_STORE *s = X509_STORE_new();
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    bool ok = s != NULL && vc != NULL && X509_STORE_add_cert(s, o->root) &&
              X509_STORE_CTX_init(vc, s, o->intermediate, NULL) && X509_verify_cert(vc) == 1;

    X509_STORE_CTX_free(vc);
    X509_STORE_free(s);
    return ok;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_cmp_client [-k K] [-n N] [-p] [-a] [-c PREFIX] [-t TLS_CA] "
                    "[-i INTERMEDIATE] HOST:PORT PATH STATION ROOT\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct options o = {.k = 8, .n = 25, .prefix = "C"};
    const char *tls_ca = NULL;
    const char *intermediate = NULL;
    struct station *st;
    pthread_t *threads;
    pthread_barrier_t start;
    X509_STORE *root_only;
    char hostport[256];
    char *colon;
    int issued = 0;
    int failures = 0;
    long connections = 0;
    double t0, c0, t1, c1;
    int c;

    /* a service that closes the connection is a failed request, not the end of the process */
    signal(SIGPIPE, SIG_IGN);
    while ((c = getopt(argc, argv, "k:n:pac:t:i:")) != -1) {
        switch (c) {
        case 'k': o.k = atoi(optarg); break;
        case 'n': o.n = atoi(optarg); break;
        case 'p': o.is_p10cr = true; break;
        case 'a': o.is_kept_alive = true; break;
        case 'c': o.prefix = optarg; break;
        case 't': tls_ca = optarg; break;
        case 'i': intermediate = optarg; break;
        default: return usage();
        }
    }
    if (argc - optind != 4 || o.k < 1 || o.k > 99 || o.n < 1 || o.n > 9999 ||
        strlen(argv[optind]) >= sizeof(hostport)) {
        return usage();
    }
    snprintf(hostport, sizeof(hostport), "%s", argv[optind]);
    colon = strrchr(hostport, ':');
    if (colon == NULL || colon == hostport || atoi(colon + 1) < 1 || atoi(colon + 1) > 65535) {
        fprintf(stderr, "bench_cmp_client: %s: expected HOST:PORT\n", argv[optind]);
        return 2;
    }
    *colon = '\0';
    o.host = hostport;
    o.port = colon + 1;
    o.path = argv[optind + 1];
    o.root = read_cert(argv[optind + 3]);
    if (o.root == NULL) {
        return 2;
    }
    if (intermediate != NULL &&
        ((o.intermediate = read_cert(intermediate)) == NULL || !intermediate_is_good(&o))) {
        fprintf(stderr, "bench_cmp_client: %s: does not verify against %s\n", intermediate,
                argv[optind + 3]);
        return 2;
    }
    if (tls_ca != NULL && (o.tls = tls_new(tls_ca, o.host)) == NULL) {
        return 2;
    }
    root_only = X509_STORE_new();
    st = calloc((size_t)o.k, sizeof(*st));
    threads = calloc((size_t)o.k, sizeof(*threads));
    if (root_only == NULL || st == NULL || threads == NULL ||
        !X509_STORE_add_cert(root_only, o.root) ||
        pthread_barrier_init(&start, NULL, (unsigned)o.k + 1) != 0) {
        fprintf(stderr, "bench_cmp_client: out of memory\n");
        return 1;
    }
    for (int s = 0; s < o.k; s++) {
        st[s].o = &o;
        st[s].index = s + 1;
        st[s].start = &start;
        if (station_prepare(&st[s], argv[optind + 2]) < 0) {
            fprintf(stderr, "bench_cmp_client: station %d: cannot prepare its requests\n", s + 1);
            return 2;
        }
    }
    for (int s = 0; s < o.k; s++) {
        if (pthread_create(&threads[s], NULL, station_run, &st[s]) != 0) {
            fprintf(stderr, "bench_cmp_client: cannot start station %d's thread\n", s + 1);
            return 1;
        }
    }
    /* the clock: from every station's start to the last one's end */
    pthread_barrier_wait(&start);
    t0 = bench_now_s();
    c0 = bench_cpu_s();
    for (int s = 0; s < o.k; s++) {
        pthread_join(threads[s], NULL);
    }
    t1 = bench_now_s();
    c1 = bench_cpu_s();
    for (int s = 0; s < o.k; s++) {
        for (int i = 0; i < o.n; i++) {
            if (st[s].issued[i] == NULL) {
                continue;
            }
            if (answer_is_good(&st[s], root_only, i)) {
                issued++;
            } else {
                failures++;
            }
        }
        failures += st[s].failures;
        connections += st[s].connections;
    }
    printf("CMP %s + certConf, %d stations x %d: %d certificates, %d failures, %.2f s, %.1f "
           "certificates/s, over %s (%ld connections), client CPU %.2f ms per certificate\n",
           o.is_p10cr ? "p10cr" : "ir", o.k, o.n, issued, failures, t1 - t0,
           (double)issued / (t1 - t0), o.tls != NULL ? "TLS" : "plain HTTP", connections,
           issued > 0 ? (c1 - c0) * 1000 / issued : 0.0);
    printf("issued=%d failures=%d s=%.3f cpu=%.3f connections=%ld transport=%s\n", issued,
           failures, t1 - t0, c1 - c0, connections, o.tls != NULL ? "tls" : "http");
    for (int s = 0; s < o.k; s++) {
        station_free(&st[s]);
    }
    pthread_barrier_destroy(&start);
    free(st);
    free(threads);
    X509_STORE_free(root_only);
    X509_free(o.root);
    X509_free(o.intermediate);
    SSL_CTX_free(o.tls);
    return failures == 0 && issued == o.k * o.n ? 0 : 1;
}
