/* server.h — the HTTP server behind `moonhive serve`: libuv TCP with
 * http_parser (never hand-parsed), keep-alive and pipelining, limits on the
 * head and the body, timeouts for slow clients, a cap on connections, one
 * JSON access-log line per request and a graceful shutdown.
 *
 * Every request runs as a run of the trusted runtime: lua/moonhive/service
 * `handle(request, response)` (server_lua.c builds both). Transport errors
 * (malformed HTTP, too large, too slow) are answered here with the same JSON
 * error shape the handlers use: {"error":{"status":N,"message":"..."}}. */
#ifndef MH_SERVER_H
#define MH_SERVER_H

#include <stddef.h>

#include "host.h"

typedef struct mh_server_limits {
  size_t max_head_bytes;        /* request line and headers: 431 beyond */
  unsigned max_headers;         /* header lines: 431 beyond */
  size_t max_body_bytes;        /* 413 beyond */
  unsigned head_timeout_ms;     /* the whole head must arrive within this: 408 */
  unsigned body_timeout_ms;     /* longest pause while the body arrives: 408 */
  unsigned idle_timeout_ms;     /* a keep-alive connection with nothing to do is closed */
  unsigned send_timeout_ms;     /* a client that reads nothing of its response for this long is dropped */
  unsigned max_connections;     /* more are answered 503 and closed */
  unsigned shutdown_grace_ms;   /* on shutdown, requests still running after this are cancelled */
} mh_server_limits;

typedef struct mh_server mh_server;

/* Defaults, then the environment's MOONHIVE_HTTP_* overrides (see docs/service.md).
 * Returns 0, or -1 with err filled for a malformed value. */
int mh_server_limits_init(mh_server_limits *limits, char *err, size_t errlen);

/* A server on host's loop; NULL when out of memory. */
mh_server *mh_server_new(mh_host *host, const mh_server_limits *limits);
/* Binds and listens (port 0 picks a free port). Returns 0, or -1 with err filled. */
int mh_server_listen(mh_server *s, const char *ip, int port, char *err, size_t errlen);
/* The port listened on (useful after port 0). */
int mh_server_port(const mh_server *s);
/* Stops accepting, closes idle connections, lets requests in flight finish
 * (cancelling those still running after the grace period), then calls done
 * once every connection is closed. */
void mh_server_shutdown(mh_server *s, void (*done)(void *ud), void *ud);
/* Frees a server whose shutdown has completed (or that never listened). */
void mh_server_free(mh_server *s);

#endif
