/* http_client.c — curl multi on libuv, in the shape of curl's multi-uv.c:
 * CURLMOPT_SOCKETFUNCTION opens/updates/closes one uv_poll per socket (bound
 * with curl_multi_assign), CURLMOPT_TIMERFUNCTION arms one uv_timer, poll
 * errors become CURL_CSELECT_ERR, and curl_multi_info_read is drained after
 * every curl_multi_socket_action. Context travels through SOCKETDATA and
 * TIMERDATA; nothing is global, and no libcurl call is made from inside a
 * libcurl callback. */
#include "http_client.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "mod_http.h"

typedef struct mh_http {
  mh_host *host;
  CURLM *multi;
  uv_timer_t timer;
  struct socket_watch *watches; /* every open uv_poll */
  CURL *pool[256];              /* easy handles kept for reuse */
  int pooled;
  long per_origin;              /* transfers in curl per origin; 0 = no cap */
  char *ca_file;                /* MOONHIVE_CA_FILE, or NULL */
  struct mh_origin *origins[64];/* hash chains of origins with work */
} mh_http;

/* Requests to one scheme://host:port: how many are in curl, and the FIFO of
 * those waiting their turn. Freed when it has neither. */
typedef struct mh_origin {
  struct mh_origin *next;
  unsigned hash;
  long active;
  mh_http_transfer *head, *tail;
  char key[];
} mh_origin;

typedef struct socket_watch {
  uv_poll_t poll;
  curl_socket_t fd;
  mh_http *http;
  struct socket_watch *prev, *next;
} socket_watch;

/* The one release point of a socket watcher: unlink, stop, close; the
 * memory goes in the close callback. */
static void watch_closed(uv_handle_t *handle) { free(handle->data); }

static void watch_release(mh_http *http, socket_watch *w) {
  if (w->prev) w->prev->next = w->next;
  else http->watches = w->next;
  if (w->next) w->next->prev = w->prev;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watch_closed);
}

/* ---- per-origin queueing ---- */

/* Writes "scheme://authority" of url into key (lower-cased); returns its length. */
static size_t origin_key(const char *url, char *key, size_t cap) {
  const char *p = strstr(url, "://");
  const char *start = p ? p + 3 : url;
  const char *end = start + strcspn(start, "/?#");
  const char *at = memchr(start, '@', (size_t)(end - start));
  size_t scheme_len = p ? (size_t)(p - url) + 3 : 0, n = 0;
  for (size_t i = 0; i < scheme_len && n + 1 < cap; i++) key[n++] = (char)(url[i] | 0x20);
  for (const char *q = at ? at + 1 : start; q < end && n + 1 < cap; q++)
    key[n++] = (*q >= 'A' && *q <= 'Z') ? (char)(*q | 0x20) : *q;
  key[n] = '\0';
  return n;
}

static mh_origin *origin_find(mh_http *http, const char *url) {
  char key[512];
  size_t len = origin_key(url, key, sizeof key);
  unsigned h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
  mh_origin **chain = &http->origins[h % 64];
  for (mh_origin *o = *chain; o; o = o->next)
    if (o->hash == h && strcmp(o->key, key) == 0) return o;
  mh_origin *o = calloc(1, sizeof *o + len + 1);
  if (o == NULL) return NULL;
  o->hash = h;
  memcpy(o->key, key, len + 1);
  o->next = *chain;
  *chain = o;
  return o;
}

static void origin_release_if_idle(mh_http *http, mh_origin *o) {
  if (o->active > 0 || o->head) return;
  for (mh_origin **p = &http->origins[o->hash % 64]; *p; p = &(*p)->next)
    if (*p == o) {
      *p = o->next;
      free(o);
      return;
    }
}

static CURLMcode enter_multi(mh_http *http, mh_http_transfer *t) {
  CURLMcode rc = curl_multi_add_handle(http->multi, t->easy);
  if (rc == CURLM_OK) {
    t->in_multi = 1;
    t->origin->active++;
  }
  return rc;
}

/* Lets the next waiting transfers of o into curl while o has room. */
static void origin_admit(mh_http *http, mh_origin *o) {
  while (o->head && (http->per_origin <= 0 || o->active < http->per_origin)) {
    mh_http_transfer *t = o->head;
    o->head = t->queue_next;
    if (o->head) o->head->queue_prev = NULL;
    else o->tail = NULL;
    t->queued = 0;
    t->queue_next = t->queue_prev = NULL;
    if (enter_multi(http, t) != CURLM_OK) {
      t->origin = NULL;
      t->done(t, CURLE_OUT_OF_MEMORY);
    }
  }
}

/* A transfer left curl: free its slot, admit the next, forget the origin if idle. */
static void origin_leave(mh_http *http, mh_http_transfer *t) {
  mh_origin *o = t->origin;
  t->origin = NULL;
  if (o == NULL) return;
  o->active--;
  origin_admit(http, o);
  origin_release_if_idle(http, o);
}

static void drain_messages(mh_http *http) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(http->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode result = msg->data.result;
    mh_http_transfer *t = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    curl_multi_remove_handle(http->multi, easy);
    if (t) {
      t->in_multi = 0;
      origin_leave(http, t);
      t->done(t, result);
    }
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  socket_watch *w = handle->data;
  mh_http *http = w->http;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(http->multi, w->fd, flags, &running);
  drain_messages(http);
}

static void on_timer(uv_timer_t *timer) {
  mh_http *http = timer->data;
  int running;
  curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_messages(http);
}

/* CURLMOPT_SOCKETFUNCTION */
static int on_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp) {
  (void)easy;
  mh_http *http = userp;
  socket_watch *w = socketp;
  if (action == CURL_POLL_REMOVE) {
    if (w) {
      curl_multi_assign(http->multi, fd, NULL);
      watch_release(http, w);
    }
    return 0;
  }
  if (w == NULL) {
    w = malloc(sizeof *w);
    if (w == NULL) return -1;
    if (uv_poll_init_socket(http->host->loop, &w->poll, fd) != 0) {
      free(w);
      return -1;
    }
    w->fd = fd;
    w->http = http;
    w->poll.data = w;
    w->prev = NULL;
    w->next = http->watches;
    if (http->watches) http->watches->prev = w;
    http->watches = w;
    curl_multi_assign(http->multi, fd, w);
  }
  int events = 0;
  if (action != CURL_POLL_OUT) events |= UV_READABLE;
  if (action != CURL_POLL_IN) events |= UV_WRITABLE;
  uv_poll_start(&w->poll, events, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION */
static int on_timeout_change(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  mh_http *http = userp;
  if (timeout_ms < 0) uv_timer_stop(&http->timer);
  else uv_timer_start(&http->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* Requests on the wire at once per origin: MOONHIVE_HTTP_HOST_CONNECTIONS
 * (0 = no cap; a local model server handling thousands of calls at once),
 * else MH_HTTP_MAX_HOST_CONNECTIONS. */
static long host_connections_setting(void) {
  const char *v = getenv("MOONHIVE_HTTP_HOST_CONNECTIONS");
  if (v == NULL || *v == '\0') return MH_HTTP_MAX_HOST_CONNECTIONS;
  char *end;
  long n = strtol(v, &end, 10);
  if (*end != '\0' || n < 0 || n > 1000000) {
    mh_log(MH_LOG_WARN, "MOONHIVE_HTTP_HOST_CONNECTIONS=%s is not a number from 0 to 1000000; using %d", v,
           MH_HTTP_MAX_HOST_CONNECTIONS);
    return MH_HTTP_MAX_HOST_CONNECTIONS;
  }
  return n;
}

mh_http *mh_http_client(mh_host *host) {
  if (host->http) return host->http;
  static int curl_ready = 0;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
    curl_ready = 1;
  }
  mh_http *http = calloc(1, sizeof *http);
  if (http == NULL) return NULL;
  http->host = host;
  http->multi = curl_multi_init();
  if (http->multi == NULL) {
    free(http);
    return NULL;
  }
  uv_timer_init(host->loop, &http->timer);
  http->timer.data = http;
  curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
  curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, on_timeout_change);
  curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
  curl_multi_setopt(http->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  mh_http_set_host_connections(http, host_connections_setting());
  const char *ca = getenv("MOONHIVE_CA_FILE");
  if (ca && *ca) http->ca_file = strdup(ca);
  host->http = http;
  return http;
}

void mh_http_set_host_connections(mh_http *http, long max) {
  http->per_origin = max;
  curl_multi_setopt(http->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max);
  /* Keep at least as many idle connections as may be open, so they are reused. */
  curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, max > 0 ? max * 4 : 16384L);
}

CURLMcode mh_http_start(mh_http *http, mh_http_transfer *t, const char *url) {
  curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (char *)t);
  t->origin = origin_find(http, url);
  if (t->origin == NULL) return CURLM_OUT_OF_MEMORY;
  mh_origin *o = t->origin;
  if (http->per_origin <= 0 || (o->active < http->per_origin && o->head == NULL)) {
    CURLMcode rc = enter_multi(http, t);
    if (rc != CURLM_OK) {
      t->origin = NULL;
      origin_release_if_idle(http, o);
    }
    return rc;
  }
  t->queued = 1;
  t->queue_next = NULL;
  t->queue_prev = o->tail;
  if (o->tail) o->tail->queue_next = t;
  else o->head = t;
  o->tail = t;
  return CURLM_OK;
}

void mh_http_abort(mh_http *http, mh_http_transfer *t) {
  if (t->queued) {
    mh_origin *o = t->origin;
    if (t->queue_prev) t->queue_prev->queue_next = t->queue_next;
    else o->head = t->queue_next;
    if (t->queue_next) t->queue_next->queue_prev = t->queue_prev;
    else o->tail = t->queue_prev;
    t->queued = 0;
    t->queue_next = t->queue_prev = NULL;
    t->origin = NULL;
    origin_release_if_idle(http, o);
    return;
  }
  if (!t->in_multi) return;
  curl_multi_remove_handle(http->multi, t->easy);
  t->in_multi = 0;
  origin_leave(http, t);
}

const char *mh_http_ca_file(mh_http *http) { return http->ca_file; }

CURL *mh_http_easy_take(mh_http *http) {
  if (http->pooled > 0) {
    CURL *easy = http->pool[--http->pooled];
    curl_easy_reset(easy);
    return easy;
  }
  return curl_easy_init();
}

void mh_http_easy_give(mh_http *http, CURL *easy) {
  if (http->pooled < (int)(sizeof http->pool / sizeof http->pool[0])) http->pool[http->pooled++] = easy;
  else curl_easy_cleanup(easy);
}

static void client_closed(uv_handle_t *handle) { free(handle->data); }

void mh_http_shutdown(mh_http *http) {
  /* Transfers belong to runs, which have ended; this closes cached
   * connections (curl reports their sockets removed) and the timer. */
  while (http->pooled > 0) curl_easy_cleanup(http->pool[--http->pooled]);
  for (int i = 0; i < 64; i++) /* idle by now; free what is left regardless */
    while (http->origins[i]) {
      mh_origin *o = http->origins[i];
      http->origins[i] = o->next;
      free(o);
    }
  curl_multi_cleanup(http->multi);
  http->multi = NULL;
  free(http->ca_file);
  http->ca_file = NULL;
  while (http->watches) watch_release(http, http->watches);
  uv_timer_stop(&http->timer);
  uv_close((uv_handle_t *)&http->timer, client_closed);
}
