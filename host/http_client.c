/* http_client.c — curl multi on libuv, in the shape of curl's multi-uv.c:
 * CURLMOPT_SOCKETFUNCTION opens/updates/closes one uv_poll per socket (bound
 * with curl_multi_assign), CURLMOPT_TIMERFUNCTION arms one uv_timer, poll
 * errors become CURL_CSELECT_ERR, and curl_multi_info_read is drained after
 * every curl_multi_socket_action. Context travels through SOCKETDATA and
 * TIMERDATA; nothing is global, and no libcurl call is made from inside a
 * libcurl callback. */
#include "http_client.h"

#include <stdlib.h>

#include "log.h"
#include "mod_http.h"

typedef struct mh_http {
  mh_host *host;
  CURLM *multi;
  uv_timer_t timer;
  struct socket_watch *watches; /* every open uv_poll */
} mh_http;

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
  mh_http_set_host_connections(http, MH_HTTP_MAX_HOST_CONNECTIONS);
  host->http = http;
  return http;
}

void mh_http_set_host_connections(mh_http *http, long max) {
  curl_multi_setopt(http->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max);
  /* Keep at least as many idle connections as may be open, so they are reused. */
  curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, max > 0 ? max * 4 : 4096L);
}

CURLMcode mh_http_start(mh_http *http, mh_http_transfer *t) {
  curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (char *)t);
  CURLMcode rc = curl_multi_add_handle(http->multi, t->easy);
  if (rc == CURLM_OK) t->in_multi = 1;
  return rc;
}

void mh_http_abort(mh_http *http, mh_http_transfer *t) {
  if (!t->in_multi) return;
  curl_multi_remove_handle(http->multi, t->easy);
  t->in_multi = 0;
}

static void client_closed(uv_handle_t *handle) { free(handle->data); }

void mh_http_shutdown(mh_http *http) {
  /* Transfers belong to runs, which have ended; this closes cached
   * connections (curl reports their sockets removed) and the timer. */
  curl_multi_cleanup(http->multi);
  http->multi = NULL;
  while (http->watches) watch_release(http, http->watches);
  uv_timer_stop(&http->timer);
  uv_close((uv_handle_t *)&http->timer, client_closed);
}
