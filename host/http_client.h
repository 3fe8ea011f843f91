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

struct mh_origin;

struct mh_http_transfer {
  CURL *easy;
  void (*done)(mh_http_transfer *t, CURLcode result);
  /* owned by the client */
  int in_multi, queued;
  struct mh_origin *origin;
  mh_http_transfer *queue_next, *queue_prev;
};

/* Transfers in curl at once per origin (scheme://host:port); the excess
 * waits in the client's own FIFO, outside curl, so curl's per-connection
 * walks stay short however many requests are waiting. */
#define MH_HTTP_MAX_HOST_CONNECTIONS 64

/* The host's client, created on first use; NULL if curl cannot start. */
struct mh_http *mh_http_client(mh_host *host);
/* Starts a transfer to url (t->easy configured; CURLOPT_PRIVATE is set
 * here), or queues it behind its origin's cap. */
CURLMcode mh_http_start(struct mh_http *http, mh_http_transfer *t, const char *url);
/* Takes a transfer out of the queue or the multi handle before it finished. */
void mh_http_abort(struct mh_http *http, mh_http_transfer *t);
/* An easy handle from the client's pool (reset) or a new one; NULL on OOM. */
CURL *mh_http_easy_take(struct mh_http *http);
/* Gives an easy handle back to the pool (or cleans it up when the pool is full). */
void mh_http_easy_give(struct mh_http *http, CURL *easy);
/* Extra trusted CA bundle from MOONHIVE_CA_FILE (the host's setting, never a
 * script's), or NULL. */
const char *mh_http_ca_file(struct mh_http *http);
/* Sets the per-host connection cap (0 = unlimited); for benchmarks. */
void mh_http_set_host_connections(struct mh_http *http, long max);

#endif
