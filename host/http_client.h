/* http_client.h — libcurl's multi interface driven by the libuv loop.
 *
 * One client per host (host->http), created on first use: one multi handle,
 * one one-shot uv_timer for curl's timeouts, one uv_poll per socket curl asks
 * about. It knows nothing of Lua: a transfer is an easy handle plus a `done`
 * callback, called from the loop (never from inside libcurl) once curl has
 * finished with it and it has left the multi handle. */
#ifndef MH_HTTP_CLIENT_H
#define MH_HTTP_CLIENT_H

#include <curl/curl.h>

#include "host.h"

typedef struct mh_http_transfer mh_http_transfer;

struct mh_http_transfer {
  CURL *easy;
  int in_multi;
  void (*done)(mh_http_transfer *t, CURLcode result);
};

/* Connections kept per host; excess transfers queue inside curl. */
#define MH_HTTP_MAX_HOST_CONNECTIONS 64

/* The host's client, created on first use; NULL if curl cannot start. */
struct mh_http *mh_http_client(mh_host *host);
/* Starts a transfer (t->easy configured; CURLOPT_PRIVATE is set here). */
CURLMcode mh_http_start(struct mh_http *http, mh_http_transfer *t);
/* Takes a transfer out of the multi handle before it finished. */
void mh_http_abort(struct mh_http *http, mh_http_transfer *t);
/* Sets the per-host connection cap (0 = unlimited); for benchmarks. */
void mh_http_set_host_connections(struct mh_http *http, long max);

#endif
