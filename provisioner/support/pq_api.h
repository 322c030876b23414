/* SPDX-License-Identifier: Apache-2.0 */
#ifndef PROV_PQ_API_H
#define PROV_PQ_API_H

/*
 * libpq, loaded at the first PostgreSQL connection (lazy_lib.h says why). Include this header
 * instead of <libpq-fe.h>: the PQ functions the tool calls go through the table below under
 * their own names, with libpq's own prototypes. prov_pg_connect (pg_conn.h) loads it, and
 * every other call needs a connection or a result made after that; PQclear, PQfinish and
 * PQfreemem also take NULL before anything was loaded, as cleanup paths call them.
 *
 * A function the tool starts to call must be added to the table, or the build fails on its
 * use (libpq is not linked). tests/integration/batch/test_batch_lot.sh runs a lot where libpq
 * cannot be loaded: a binary that linked it would not start.
 */
#include <libpq-fe.h>

#define PROV_PQ_SONAME "libpq.so.5"

#define PROV_PQ_FUNCTIONS(X)                                                                \
    X(PQbackendPID) X(PQclear) X(PQcmdStatus) X(PQcmdTuples) X(PQconnectdbParams)           \
    X(PQenterPipelineMode) X(PQerrorMessage) X(PQexec) X(PQexecParams) X(PQexecPrepared)    \
    X(PQexitPipelineMode) X(PQfinish) X(PQfreemem) X(PQgetResult) X(PQgetisnull)            \
    X(PQgetvalue) X(PQnfields) X(PQntuples) X(PQpipelineSync) X(PQprepare) X(PQreset)       \
    X(PQresultErrorField) X(PQresultErrorMessage) X(PQresultStatus) X(PQsendPrepare)        \
    X(PQsendQueryParams) X(PQsendQueryPrepared) X(PQsetNoticeProcessor) X(PQstatus)         \
    X(PQtransactionStatus) X(PQunescapeBytea)

struct prov_pq_api {
#define PROV_PQ_SLOT(f) __typeof__(f) *f;
    PROV_PQ_FUNCTIONS(PROV_PQ_SLOT)
#undef PROV_PQ_SLOT
};

extern struct prov_pq_api prov_pq;

/* Loads libpq: 0, or -1 with prov_pq_why() saying why not. */
int prov_pq_load(void);

/* Why libpq could not be loaded, on one line ("" when it was). */
const char *prov_pq_why(void);

static inline void prov_pq_clear(PGresult *res)
{
    if (res != NULL) {
        prov_pq.PQclear(res);
    }
}

static inline void prov_pq_finish(PGconn *conn)
{
    if (conn != NULL) {
        prov_pq.PQfinish(conn);
    }
}

static inline void prov_pq_freemem(void *p)
{
    if (p != NULL) {
        prov_pq.PQfreemem(p);
    }
}

#ifndef PROV_PQ_API_TABLE
#define PQbackendPID prov_pq.PQbackendPID
#define PQclear prov_pq_clear
#define PQcmdStatus prov_pq.PQcmdStatus
#define PQcmdTuples prov_pq.PQcmdTuples
#define PQconnectdbParams prov_pq.PQconnectdbParams
#define PQenterPipelineMode prov_pq.PQenterPipelineMode
#define PQerrorMessage prov_pq.PQerrorMessage
#define PQexec prov_pq.PQexec
#define PQexecParams prov_pq.PQexecParams
#define PQexecPrepared prov_pq.PQexecPrepared
#define PQexitPipelineMode prov_pq.PQexitPipelineMode
#define PQfinish prov_pq_finish
#define PQfreemem prov_pq_freemem
#define PQgetResult prov_pq.PQgetResult
#define PQgetisnull prov_pq.PQgetisnull
#define PQgetvalue prov_pq.PQgetvalue
#define PQnfields prov_pq.PQnfields
#define PQntuples prov_pq.PQntuples
#define PQpipelineSync prov_pq.PQpipelineSync
#define PQprepare prov_pq.PQprepare
#define PQreset prov_pq.PQreset
#define PQresultErrorField prov_pq.PQresultErrorField
#define PQresultErrorMessage prov_pq.PQresultErrorMessage
#define PQresultStatus prov_pq.PQresultStatus
#define PQsendPrepare prov_pq.PQsendPrepare
#define PQsendQueryParams prov_pq.PQsendQueryParams
#define PQsendQueryPrepared prov_pq.PQsendQueryPrepared
#define PQsetNoticeProcessor prov_pq.PQsetNoticeProcessor
#define PQstatus prov_pq.PQstatus
#define PQtransactionStatus prov_pq.PQtransactionStatus
#define PQunescapeBytea prov_pq.PQunescapeBytea
#endif

#endif
