/* server_conn.h — private to the server: what the transport (server.c) and
 * the handler side (server_lua.c, requests as runs of the runtime) share.
 *
 * One exchange per request, held by three: the connection (until the
 * response is sent or the client hangs up), the handler's run (until it
 * ends) and the Lua response object (until it is collected). Any may go
 * first, so each clears its hold and the last one out frees the exchange
 * (mh_exchange_release). */
#ifndef MH_SERVER_CONN_H
#define MH_SERVER_CONN_H

#include <stddef.h>

#include "scheduler.h"
#include "server.h"

typedef struct mh_conn mh_conn;

typedef struct mh_exchange {
  mh_conn *conn;           /* NULL once the connection is gone */
  mh_server *server;
  mh_run *run;             /* the handler's run; NULL once it has ended */
  int lua_holds;           /* the response userdata is alive */
  int conn_holds;          /* the connection still points here */
  int answered;            /* a whole response, or a stream's head, was sent */
  int streaming;           /* chunked response in progress */
  struct write_wait *waiter; /* response:write waiting for the client to read, or NULL */
} mh_exchange;

/* What the transport parsed; valid only during mh_server_dispatch. */
typedef struct mh_request_view {
  const char *method;
  const char *path;         /* the URL's path, still percent-encoded */
  size_t path_len;
  const char *query;        /* raw query string without '?', or NULL */
  size_t query_len;
  const char *headers;      /* "name\0value\0" pairs, names lower-case */
  size_t headers_len;
  const char *body;
  size_t body_len;
  const char *remote;       /* peer address "ip:port" */
} mh_request_view;

/* ---- server_lua.c, called by the transport ---- */

/* Starts the runtime's handler for a request; returns its exchange (held
 * by the connection), or NULL with err filled (the transport answers 500). */
mh_exchange *mh_server_dispatch(mh_server *s, mh_host *host, mh_conn *c, const mh_request_view *req,
                                char *err, size_t errlen);
/* The connection is closing: the exchange forgets it (a waiting write wakes
 * and fails; a stream's handler run is cancelled). */
void mh_exchange_conn_gone(mh_exchange *ex);
/* The client read enough of a stream: a waiting write continues. */
void mh_exchange_drained(mh_exchange *ex);
/* Shutdown's grace period ran out: cancels the handler's run. */
void mh_exchange_cancel(mh_exchange *ex);
/* Frees the exchange once neither side holds it. */
void mh_exchange_release(mh_exchange *ex);

/* ---- server.c, called by the handler side ---- */

/* Sends a whole response: status line, Content-Length, Connection and the
 * extra header lines in `headers` ("Name: value\r\n" each), then the body
 * (not for HEAD). Returns 0, or -1 when the connection is gone. */
int mh_conn_respond(mh_conn *c, int status, const char *headers, size_t hlen, const char *body, size_t blen);
/* Starts a chunked response (Server-Sent Events and other streams). */
int mh_conn_stream_head(mh_conn *c, int status, const char *headers, size_t hlen);
/* Sends one chunk; returns the bytes the client has not read yet, or -1
 * when the connection is gone. */
long mh_conn_stream_chunk(mh_conn *c, const char *data, size_t len);
/* Ends a chunked response. */
void mh_conn_stream_end(mh_conn *c);
/* Bytes above which a stream's writer waits for the client, and below
 * which it continues. */
#define MH_STREAM_HIGH_WATER (256u << 10)
#define MH_STREAM_LOW_WATER (64u << 10)
/* The reason phrase of a status code. */
const char *mh_http_reason(int status);

#endif
