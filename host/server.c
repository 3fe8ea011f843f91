/* server.c — the HTTP transport of `moonhive serve` (see server.h): accepts
 * connections on the loop, parses requests with http_parser, enforces the
 * limits and timeouts, hands each complete request to server_lua.c and
 * writes what the handler answers. One request per connection is handled
 * at a time; pipelined bytes wait in the connection until it is done.
 *
 * A connection moves through phases: IDLE (waiting for a request), HEAD and
 * BODY (reading one; the head's deadline counts from its first byte, the
 * body's from its last chunk), BUSY (a handler runs; reading continues
 * only to notice a hang-up, and stops once a little pipelined data waits)
 * and CLOSING. Its one timer serves whichever deadline the phase has. */
#include "server.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "log.h"
#include "membuf.h"
#include "server_conn.h"

#define READ_BUFFER (64u << 10)
#define PENDING_MAX (64u << 10)  /* pipelined bytes read ahead while a request runs */
#define REMOTE_LEN 64
#define LOG_PATH_MAX 200

typedef enum { PHASE_IDLE, PHASE_HEAD, PHASE_BODY, PHASE_BUSY, PHASE_CLOSING } conn_phase;

struct mh_server {
  mh_host *host;
  mh_server_limits limits;
  uv_tcp_t listener;
  uv_timer_t grace;           /* shutdown's grace period */
  uv_check_t log_flush;       /* writes the access log once per loop turn */
  int handles_open;           /* listener (once bound), grace, log_flush */
  int listening;
  int port;
  mh_conn *conns;             /* every open connection */
  unsigned nconns;
  int shutting_down;
  void (*on_closed)(void *);
  void *on_closed_ud;
  int access_log;             /* one JSON line per request on stderr */
  mh_membuf log;              /* lines waiting for the end of the loop turn */
  char read_buffer[READ_BUFFER]; /* every read lands here and is parsed at once */
  int read_buffer_busy;
  time_t date_at;             /* the second `date` was formatted for */
  char date[40];
};

struct mh_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  int handles_open;
  mh_server *s;
  mh_conn *prev, *next;
  http_parser parser;
  conn_phase phase;
  /* the request being read */
  mh_membuf url, headers, body;
  size_t head_bytes;
  unsigned nheaders;
  int header_state;           /* 0 before any header, 1 in a name, 2 in a value */
  int complete;               /* on_message_complete fired */
  int limit_status;           /* 413 or 431 when a limit stopped the parser */
  int keep_alive;
  int is_head;
  /* the request being handled */
  mh_exchange *ex;
  mh_membuf pending;          /* bytes read while the handler ran (pipelining) */
  int reading;
  int peer_closed;
  int close_when_flushed;
  size_t queued;              /* bytes handed to uv_write and not yet written */
  uint64_t started_ns;
  int status;
  size_t sent;
  char method[16];
  char path[LOG_PATH_MAX + 1];
  char remote[REMOTE_LEN];
};

typedef struct write_req {
  uv_write_t req;
  mh_conn *c;
  size_t len;
  char data[];
} write_req;

static http_parser_settings settings;
static void conn_close(mh_conn *c);
static void feed(mh_conn *c, const char *data, size_t len);
static void maybe_closed(mh_server *s);

/* ---- limits ---- */

static int env_number(const char *name, unsigned long long max, unsigned long long *out, char *err, size_t errlen) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0') return 0;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || *end != '\0' || v[0] == '-' || n > max) {
    snprintf(err, errlen, "%s=%s: expected a whole number up to %llu", name, v, max);
    return -1;
  }
  *out = n;
  return 0;
}

int mh_server_limits_init(mh_server_limits *l, char *err, size_t errlen) {
  *l = (mh_server_limits){.max_head_bytes = 16 << 10, .max_headers = 100, .max_body_bytes = 1 << 20,
                          .head_timeout_ms = 10000, .body_timeout_ms = 10000, .idle_timeout_ms = 5000,
                          .send_timeout_ms = 30000, .max_connections = 10000, .shutdown_grace_ms = 10000};
  struct {
    const char *name;
    unsigned long long max;
    void *field;
    int is_size;
  } opts[] = {
      {"MOONHIVE_HTTP_MAX_HEAD_BYTES", 1 << 20, &l->max_head_bytes, 1},
      {"MOONHIVE_HTTP_MAX_HEADERS", 10000, &l->max_headers, 0},
      {"MOONHIVE_HTTP_MAX_BODY_BYTES", 1ull << 32, &l->max_body_bytes, 1},
      {"MOONHIVE_HTTP_HEAD_TIMEOUT_MS", 3600000, &l->head_timeout_ms, 0},
      {"MOONHIVE_HTTP_BODY_TIMEOUT_MS", 3600000, &l->body_timeout_ms, 0},
      {"MOONHIVE_HTTP_IDLE_TIMEOUT_MS", 3600000, &l->idle_timeout_ms, 0},
      {"MOONHIVE_HTTP_SEND_TIMEOUT_MS", 3600000, &l->send_timeout_ms, 0},
      {"MOONHIVE_HTTP_MAX_CONNECTIONS", 1000000, &l->max_connections, 0},
      {"MOONHIVE_SHUTDOWN_GRACE_MS", 3600000, &l->shutdown_grace_ms, 0},
  };
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    unsigned long long n = 0;
    int set = getenv(opts[i].name) != NULL && *getenv(opts[i].name) != '\0';
    if (env_number(opts[i].name, opts[i].max, &n, err, errlen) != 0) return -1;
    if (!set) continue;
    if (opts[i].is_size) *(size_t *)opts[i].field = (size_t)n;
    else *(unsigned *)opts[i].field = (unsigned)n;
  }
  return 0;
}

/* ---- the access log ---- */

/* Appends s as the inside of a JSON string (client-controlled text). */
static void log_flush_now(mh_server *s) {
  size_t off = 0;
  while (off < s->log.len) {
    ssize_t n = write(STDERR_FILENO, s->log.data + off, s->log.len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* stderr is gone: drop the lines */
    off += (size_t)n;
  }
  s->log.len = 0;
}

static void log_flush_cb(uv_check_t *h) {
  mh_server *s = h->data;
  log_flush_now(s);
  uv_check_stop(h);
}

static void log_request(mh_conn *c) {
  mh_server *s = c->s;
  if (!s->access_log) return;
  char head[160];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(head, sizeof head, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"info\","
                   "\"event\":\"http\",\"method\":\"", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
  mh_membuf_append(&s->log, head, (size_t)n);
  mh_log_escape(&s->log, c->method, strlen(c->method));
  mh_membuf_append(&s->log, "\",\"path\":\"", 10);
  mh_log_escape(&s->log, c->path, strlen(c->path));
  double ms = c->started_ns ? (double)(uv_hrtime() - c->started_ns) / 1e6 : 0;
  n = snprintf(head, sizeof head, "\",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f,\"remote\":\"%s\"}\n", c->status,
               c->sent, ms, c->remote);
  mh_membuf_append(&s->log, head, (size_t)n);
  if (s->log.len > (64u << 10)) log_flush_now(s);
  else if (!uv_is_active((uv_handle_t *)&s->log_flush)) uv_check_start(&s->log_flush, log_flush_cb);
}

/* ---- writing ---- */

static void write_done(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  mh_conn *c = w->c;
  c->queued -= w->len;
  free(w);
  if (c->phase == PHASE_CLOSING) return;
  if (status < 0) { /* the client is gone */
    conn_close(c);
    return;
  }
  if (c->queued == 0) {
    if (c->close_when_flushed) {
      conn_close(c);
      return;
    }
    if (c->phase == PHASE_BUSY) uv_timer_stop(&c->timer); /* the send timeout */
  }
  if (c->ex && c->ex->streaming && c->queued < MH_STREAM_LOW_WATER) mh_exchange_drained(c->ex);
}

static void conn_timer(uv_timer_t *t);
static void conn_read_again(mh_conn *c);

/* Starts the connection's one timer for the phase's deadline (0: none). */
static void arm(mh_conn *c, unsigned ms) {
  if (ms) uv_timer_start(&c->timer, conn_timer, ms, 0);
  else uv_timer_stop(&c->timer);
}

/* Queues a copy of a then b. Returns 0, or -1 when the connection is gone. */
static int conn_write(mh_conn *c, const char *a, size_t alen, const char *b, size_t blen) {
  if (c->phase == PHASE_CLOSING) return -1;
  write_req *w = malloc(sizeof *w + alen + blen);
  if (w == NULL) {
    conn_close(c);
    return -1;
  }
  memcpy(w->data, a, alen);
  if (blen) memcpy(w->data + alen, b, blen);
  w->c = c;
  w->len = alen + blen;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_done) != 0) {
    free(w);
    conn_close(c);
    return -1;
  }
  if (c->queued == 0 && c->phase == PHASE_BUSY && c->s->limits.send_timeout_ms)
    uv_timer_start(&c->timer, conn_timer, c->s->limits.send_timeout_ms, 0);
  c->queued += w->len;
  c->sent += w->len;
  return 0;
}

const char *mh_http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

static const char *http_date(mh_server *s) {
  time_t now = time(NULL);
  if (now != s->date_at) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    s->date_at = now;
  }
  return s->date;
}

/* Formats the status line and the standard headers into out (NUL-terminated). */
static int format_head(mh_conn *c, char *out, size_t outlen, int status, const char *framing) {
  int keep = c->keep_alive && !c->s->shutting_down;
  if (!keep) c->close_when_flushed = 1;
  c->status = status;
  return snprintf(out, outlen, "HTTP/1.1 %d %s\r\nServer: moonhive/" MH_VERSION "\r\nDate: %s\r\n%s%s",
                  status, mh_http_reason(status), http_date(c->s), framing,
                  keep ? "" : "Connection: close\r\n");
}

/* The current request is answered: log it and move on to the next one. */
static void request_finished(mh_conn *c) {
  log_request(c);
  mh_exchange *ex = c->ex;
  c->ex = NULL;
  if (ex) {
    ex->conn = NULL;
    ex->conn_holds = 0;
    mh_exchange_release(ex);
  }
  if (c->phase == PHASE_CLOSING) return;
  if (c->close_when_flushed || c->peer_closed || c->s->shutting_down) {
    c->close_when_flushed = 1;
    if (c->queued == 0) conn_close(c);
    return;
  }
  /* Next request: what was read ahead is parsed from the timer (not from
   * inside the handler's completion); otherwise wait for it, idle. */
  c->phase = PHASE_IDLE;
  c->complete = 0;
  http_parser_pause(&c->parser, 0);
  conn_read_again(c);
  if (c->pending.len) uv_timer_start(&c->timer, conn_timer, 0, 0);
  else arm(c, c->s->limits.idle_timeout_ms);
}

/* Writes a, b and a CRLF (a head and its extra header lines, or a chunk's
 * size line and its data), then body. Returns 0, or -1 when the connection
 * is gone (closed here when memory runs out). */
static int send_framed(mh_conn *c, const char *a, size_t alen, const char *b, size_t blen, const char *body,
                       size_t bodylen) {
  mh_membuf all = {0};
  if (mh_membuf_append(&all, a, alen) != 0 || (blen && mh_membuf_append(&all, b, blen) != 0) ||
      mh_membuf_append(&all, "\r\n", 2) != 0) {
    mh_membuf_free(&all);
    conn_close(c);
    return -1;
  }
  int rc = conn_write(c, all.data, all.len, body, bodylen);
  mh_membuf_free(&all);
  return rc;
}

static int respond_with(mh_conn *c, int status, const char *headers, size_t hlen, const char *body,
                        size_t blen) {
  if (c->phase == PHASE_CLOSING) return -1;
  char framing[48];
  snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", blen);
  char head[512];
  int n = format_head(c, head, sizeof head, status, framing);
  return send_framed(c, head, (size_t)n, headers, hlen, body, c->is_head ? 0 : blen);
}

int mh_conn_respond(mh_conn *c, int status, const char *headers, size_t hlen, const char *body, size_t blen) {
  int rc = respond_with(c, status, headers, hlen, body, blen);
  request_finished(c);
  return rc;
}

int mh_conn_stream_head(mh_conn *c, int status, const char *headers, size_t hlen) {
  if (c->phase == PHASE_CLOSING) return -1;
  char head[512];
  int n = format_head(c, head, sizeof head, status, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
  return send_framed(c, head, (size_t)n, headers, hlen, NULL, 0);
}

long mh_conn_stream_chunk(mh_conn *c, const char *data, size_t len) {
  if (c->phase == PHASE_CLOSING) return -1;
  if (len == 0 || c->is_head) return (long)c->queued;
  char size[24];
  int n = snprintf(size, sizeof size, "%zx\r\n", len);
  return send_framed(c, size, (size_t)n, data, len, NULL, 0) == 0 ? (long)c->queued : -1;
}

void mh_conn_stream_end(mh_conn *c) {
  if (c->phase != PHASE_CLOSING && !c->is_head) conn_write(c, "0\r\n\r\n", 5, NULL, 0);
  request_finished(c);
}

/* A transport error: a JSON error response, then the connection closes. */
static void respond_error(mh_conn *c, int status, const char *message) {
  char body[320];
  mh_membuf esc = {0};
  mh_log_escape(&esc, message, strlen(message));
  int n = snprintf(body, sizeof body, "{\"error\":{\"status\":%d,\"message\":\"%.*s\"}}\n", status,
                   (int)(esc.len > 256 ? 256 : esc.len), esc.data ? esc.data : "");
  mh_membuf_free(&esc);
  c->keep_alive = 0;
  if (!c->started_ns) c->started_ns = uv_hrtime();
  if (!c->method[0] && c->url.len)
    snprintf(c->method, sizeof c->method, "%s", http_method_str(c->parser.method));
  if (!c->path[0] && c->url.len) { /* without the query, which may carry tokens */
    const char *q = memchr(c->url.data, '?', c->url.len);
    size_t plen = q ? (size_t)(q - c->url.data) : c->url.len;
    snprintf(c->path, sizeof c->path, "%.*s", (int)(plen > LOG_PATH_MAX ? LOG_PATH_MAX : plen), c->url.data);
  }
  respond_with(c, status, "Content-Type: application/json\r\n", 32, body, (size_t)n);
  c->close_when_flushed = 1;
  request_finished(c);
}

/* ---- timers ---- */

static void send_timed_out(mh_conn *c) {
  mh_log(MH_LOG_WARN, "serve: %s stopped reading its response; closing the connection", c->remote);
  conn_close(c);
}

static void conn_timer(uv_timer_t *t) {
  mh_conn *c = t->data;
  switch (c->phase) {
    case PHASE_IDLE:
      if (c->pending.len) { /* the next pipelined request */
        mh_membuf next = c->pending;
        c->pending = (mh_membuf){0};
        feed(c, next.data, next.len);
        mh_membuf_free(&next);
        conn_read_again(c);
      } else {
        conn_close(c); /* keep-alive idle timeout */
      }
      break;
    case PHASE_HEAD:
    case PHASE_BODY:
      respond_error(c, 408, c->phase == PHASE_HEAD ? "the request head did not arrive in time"
                                                   : "the request body stopped arriving");
      break;
    case PHASE_BUSY: send_timed_out(c); break;
    case PHASE_CLOSING: break;
  }
}

/* ---- parsing ---- */

static mh_conn *conn_of(http_parser *p) { return p->data; }

/* Counts head bytes; a head over the limit stops the parser (431). */
static int head_grew(mh_conn *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->s->limits.max_head_bytes) {
    c->limit_status = 431;
    return -1;
  }
  return 0;
}

/* NUL bytes would cut the "name\0value\0" pairs short: refused (400). */
static int has_nul(mh_conn *c, const char *at, size_t len) {
  if (memchr(at, '\0', len) == NULL) return 0;
  c->limit_status = 400;
  return 1;
}

static int on_message_begin(http_parser *p) {
  mh_conn *c = conn_of(p);
  c->url.len = c->headers.len = c->body.len = 0;
  c->head_bytes = 0;
  c->nheaders = 0;
  c->header_state = 0;
  c->limit_status = 0;
  c->status = 0;
  c->sent = 0;
  c->method[0] = c->path[0] = '\0';
  c->started_ns = uv_hrtime();
  c->phase = PHASE_HEAD;
  arm(c, c->s->limits.head_timeout_ms); /* the whole head, however slowly it trickles */
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  mh_conn *c = conn_of(p);
  if (head_grew(c, len) != 0 || has_nul(c, at, len)) return -1;
  return mh_membuf_append(&c->url, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  mh_conn *c = conn_of(p);
  if (head_grew(c, len + 4) != 0 || has_nul(c, at, len)) return -1;
  if (c->header_state != 1) {
    if (c->header_state == 2 && mh_membuf_append(&c->headers, "", 1) != 0) return -1; /* ends the value */
    if (++c->nheaders > c->s->limits.max_headers) {
      c->limit_status = 431;
      return -1;
    }
    c->header_state = 1;
  }
  size_t start = c->headers.len;
  if (mh_membuf_append(&c->headers, at, len) != 0) return -1;
  for (size_t i = start; i < c->headers.len; i++)
    if (c->headers.data[i] >= 'A' && c->headers.data[i] <= 'Z') c->headers.data[i] += 'a' - 'A';
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  mh_conn *c = conn_of(p);
  if (head_grew(c, len) != 0 || has_nul(c, at, len)) return -1;
  if (c->header_state != 2) {
    if (mh_membuf_append(&c->headers, "", 1) != 0) return -1; /* ends the name */
    c->header_state = 2;
  }
  return mh_membuf_append(&c->headers, at, len);
}

/* The value of header `name` (lower-case) in the pairs, or NULL. */
static const char *header_value(const mh_membuf *h, const char *name) {
  size_t off = 0;
  while (off < h->len) {
    const char *n = h->data + off;
    const char *v = n + strlen(n) + 1;
    if (strcmp(n, name) == 0) return v;
    off = (size_t)(v - h->data) + strlen(v) + 1;
  }
  return NULL;
}

static int on_headers_complete(http_parser *p) {
  mh_conn *c = conn_of(p);
  if (c->header_state == 2 && mh_membuf_append(&c->headers, "", 1) != 0) return -1;
  c->header_state = 0;
  if (p->content_length != ULLONG_MAX && p->content_length > c->s->limits.max_body_bytes) {
    c->limit_status = 413;
    return -1;
  }
  const char *expect = header_value(&c->headers, "expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1)
    conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0);
  c->phase = PHASE_BODY;
  arm(c, c->s->limits.body_timeout_ms);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  mh_conn *c = conn_of(p);
  if (c->body.len + len > c->s->limits.max_body_bytes) {
    c->limit_status = 413;
    return -1;
  }
  arm(c, c->s->limits.body_timeout_ms); /* counts from the last piece */
  return mh_membuf_append(&c->body, at, len);
}

static int on_message_complete(http_parser *p) {
  mh_conn *c = conn_of(p);
  c->complete = 1;
  c->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1); /* one request at a time: the rest waits in `pending` */
  return 0;
}

/* Copies the peer's address into c->remote. */
static void read_remote(mh_conn *c) {
  struct sockaddr_storage sa;
  int len = sizeof sa;
  snprintf(c->remote, sizeof c->remote, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) != 0) return;
  char ip[48] = "?";
  int port = 0;
  if (sa.ss_family == AF_INET) {
    uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
  } else if (sa.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof ip);
    port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
  }
  snprintf(c->remote, sizeof c->remote, "%s:%d", ip, port);
}

/* A complete request: hand it to the runtime's handler. */
static void dispatch(mh_conn *c) {
  c->phase = PHASE_BUSY;
  uv_timer_stop(&c->timer);
  c->is_head = c->parser.method == HTTP_HEAD;
  snprintf(c->method, sizeof c->method, "%s", http_method_str(c->parser.method));
  mh_membuf_append(&c->url, "", 1);
  if (mh_membuf_append(&c->body, "", 1) != 0) { /* NUL-terminated, not counted */
    respond_error(c, 500, "out of memory");
    return;
  }
  c->body.len--;
  struct http_parser_url u;
  http_parser_url_init(&u);
  const char *url = c->url.data;
  size_t url_len = c->url.len - 1;
  if (url_len == 0 || url[0] != '/' || http_parser_parse_url(url, url_len, 0, &u) != 0) {
    snprintf(c->path, sizeof c->path, "%.*s", (int)(url_len > LOG_PATH_MAX ? LOG_PATH_MAX : url_len), url);
    respond_error(c, 400, "malformed request target: expected a path such as /v1/runs");
    return;
  }
  mh_request_view req = {.method = c->method, .headers = c->headers.data ? c->headers.data : "",
                         .headers_len = c->headers.len, .body = c->body.data, .body_len = c->body.len,
                         .remote = c->remote};
  req.path = url + u.field_data[UF_PATH].off;
  req.path_len = u.field_data[UF_PATH].len;
  if (u.field_set & (1 << UF_QUERY)) {
    req.query = url + u.field_data[UF_QUERY].off;
    req.query_len = u.field_data[UF_QUERY].len;
  }
  snprintf(c->path, sizeof c->path, "%.*s", (int)(req.path_len > LOG_PATH_MAX ? LOG_PATH_MAX : req.path_len),
           req.path);
  char err[256];
  mh_exchange *ex = mh_server_dispatch(c->s, c->s->host, c, &req, err, sizeof err);
  if (ex == NULL) {
    mh_log(MH_LOG_ERROR, "serve: cannot handle %s %s: %s", c->method, c->path, err);
    respond_error(c, 500, "the server could not start handling the request");
    return;
  }
  c->ex = ex;
}

/* Parses bytes read in phases IDLE, HEAD and BODY. */
static void feed(mh_conn *c, const char *data, size_t len) {
  size_t parsed = http_parser_execute(&c->parser, &settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->complete) {
    if (parsed < len && mh_membuf_append(&c->pending, data + parsed, len - parsed) != 0) {
      respond_error(c, 500, "out of memory");
      return;
    }
    if (c->pending.len > PENDING_MAX) {
      uv_read_stop((uv_stream_t *)&c->tcp);
      c->reading = 0;
    }
    dispatch(c);
    return;
  }
  if (e == HPE_OK && parsed == len) {
    if (c->phase == PHASE_IDLE) arm(c, c->s->limits.idle_timeout_ms);
    return;
  }
  if (c->limit_status == 413) respond_error(c, 413, "the request body is larger than the server accepts");
  else if (c->limit_status == 431) respond_error(c, 431, "the request head (headers) is larger than the server accepts");
  else if (c->limit_status == 400) respond_error(c, 400, "malformed HTTP request: a NUL byte in the head");
  else if (e == HPE_CB_url || e == HPE_CB_header_field || e == HPE_CB_header_value || e == HPE_CB_body ||
           e == HPE_CB_headers_complete)
    respond_error(c, 500, "out of memory");
  else {
    char msg[160];
    snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
    respond_error(c, 400, msg);
  }
}

/* ---- connections ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  mh_conn *c = h->data;
  mh_server *s = c->s;
  if (s->read_buffer_busy) { /* never: reads are parsed before the next one */
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  s->read_buffer_busy = 1;
  *buf = uv_buf_init(s->read_buffer, sizeof s->read_buffer);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  mh_conn *c = stream->data;
  c->s->read_buffer_busy = 0;
  if (nread == 0) return;
  if (nread < 0) { /* EOF or an error: the client will send nothing more */
    c->peer_closed = 1;
    uv_read_stop(stream);
    c->reading = 0;
    if (c->phase == PHASE_BUSY) {
      /* Let the handler answer (a client may half-close after its request),
       * but a stream to nobody stops. */
      if (nread != UV_EOF || (c->ex && c->ex->streaming)) conn_close(c);
    } else if (c->phase == PHASE_HEAD || c->phase == PHASE_BODY) {
      conn_close(c);
    } else if (c->queued == 0) {
      conn_close(c);
    } else {
      c->close_when_flushed = 1;
    }
    return;
  }
  if (c->phase == PHASE_BUSY || c->pending.len) { /* pipelined: wait for the current request */
    if (mh_membuf_append(&c->pending, buf->base, (size_t)nread) != 0) {
      conn_close(c);
      return;
    }
    if (c->pending.len > PENDING_MAX) {
      uv_read_stop(stream);
      c->reading = 0;
    }
    return;
  }
  feed(c, buf->base, (size_t)nread);
}

static void conn_read_again(mh_conn *c) {
  if (c->reading || c->peer_closed || c->phase == PHASE_CLOSING || c->pending.len > PENDING_MAX) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0) c->reading = 1;
}

static void conn_handle_closed(uv_handle_t *h) {
  mh_conn *c = h->data;
  if (--c->handles_open > 0) return;
  mh_server *s = c->s;
  mh_membuf_free(&c->url);
  mh_membuf_free(&c->headers);
  mh_membuf_free(&c->body);
  mh_membuf_free(&c->pending);
  free(c);
  s->nconns--;
  maybe_closed(s);
}

/* The one release point of a connection: its exchange lets go, its handles
 * close, and the memory goes once both have. */
static void conn_close(mh_conn *c) {
  if (c->phase == PHASE_CLOSING) return;
  if (c->ex && c->status == 0 && !c->ex->answered) c->status = 499; /* logged: the client left first */
  if (c->ex) log_request(c);
  c->phase = PHASE_CLOSING;
  mh_exchange *ex = c->ex;
  c->ex = NULL;
  if (ex) {
    ex->conn_holds = 0;
    mh_exchange_conn_gone(ex);
    mh_exchange_release(ex);
  }
  mh_server *s = c->s;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_connection(uv_stream_t *listener, int status) {
  mh_server *s = listener->data;
  if (status < 0) {
    mh_log(MH_LOG_WARN, "serve: accept failed: %s", uv_strerror(status));
    return;
  }
  mh_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  c->s = s;
  uv_tcp_init(s->host->loop, &c->tcp);
  uv_timer_init(s->host->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles_open = 2;
  c->parser.data = c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  read_remote(c);
  if (s->nconns > s->limits.max_connections || s->shutting_down) {
    snprintf(c->method, sizeof c->method, "-");
    respond_error(c, 503, s->shutting_down ? "the server is shutting down" : "too many connections; try again");
    return;
  }
  c->phase = PHASE_IDLE;
  conn_read_again(c);
  arm(c, s->limits.head_timeout_ms);
}

/* ---- the server ---- */

mh_server *mh_server_new(mh_host *host, const mh_server_limits *limits) {
  mh_server *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->host = host;
  s->limits = *limits;
  const char *log = getenv("MOONHIVE_ACCESS_LOG");
  s->access_log = !(log && (strcmp(log, "off") == 0 || strcmp(log, "0") == 0));
  settings = (http_parser_settings){.on_message_begin = on_message_begin, .on_url = on_url,
                                    .on_header_field = on_header_field, .on_header_value = on_header_value,
                                    .on_headers_complete = on_headers_complete, .on_body = on_body,
                                    .on_message_complete = on_message_complete};
  uv_timer_init(host->loop, &s->grace);
  uv_check_init(host->loop, &s->log_flush);
  s->grace.data = s->log_flush.data = s;
  s->handles_open = 2;
  return s;
}

int mh_server_listen(mh_server *s, const char *ip, int port, char *err, size_t errlen) {
  struct sockaddr_storage addr;
  int rc = strchr(ip, ':') ? uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&addr)
                           : uv_ip4_addr(ip, port, (struct sockaddr_in *)&addr);
  if (rc != 0) {
    snprintf(err, errlen, "'%s' is not an IP address", ip);
    return -1;
  }
  uv_tcp_init(s->host->loop, &s->listener);
  s->listener.data = s;
  s->handles_open++;
  s->listening = 1;
  if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)) != 0) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", ip, port, uv_strerror(rc));
    return -1;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  return 0;
}

int mh_server_port(const mh_server *s) { return s->port; }

static void server_handle_closed(uv_handle_t *h) {
  mh_server *s = h->data;
  s->handles_open--;
  maybe_closed(s);
}

static void maybe_closed(mh_server *s) {
  if (!s->shutting_down) return;
  if (s->nconns == 0 && !uv_is_closing((uv_handle_t *)&s->grace)) {
    uv_close((uv_handle_t *)&s->grace, server_handle_closed);
    log_flush_now(s);
    uv_close((uv_handle_t *)&s->log_flush, server_handle_closed);
    return;
  }
  if (s->nconns == 0 && s->handles_open == 0 && s->on_closed) {
    void (*done)(void *) = s->on_closed;
    s->on_closed = NULL;
    done(s->on_closed_ud);
  }
}

static void grace_over(uv_timer_t *t) {
  mh_server *s = t->data;
  for (mh_conn *c = s->conns; c; c = c->next)
    if (c->ex) {
      mh_log(MH_LOG_WARN, "serve: %s %s still running after the grace period; cancelling it", c->method, c->path);
      mh_exchange_cancel(c->ex);
    }
}

void mh_server_shutdown(mh_server *s, void (*done)(void *ud), void *ud) {
  if (s->shutting_down) return;
  s->shutting_down = 1;
  s->on_closed = done;
  s->on_closed_ud = ud;
  if (s->listening) {
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
  }
  mh_conn *next;
  for (mh_conn *c = s->conns; c; c = next) {
    next = c->next;
    if (c->phase == PHASE_BUSY) c->keep_alive = 0; /* answered, then closed */
    else if (c->queued) c->close_when_flushed = 1;
    else conn_close(c);
  }
  uv_timer_start(&s->grace, grace_over, s->limits.shutdown_grace_ms, 0);
  maybe_closed(s);
}

void mh_server_free(mh_server *s) {
  if (s == NULL) return;
  mh_membuf_free(&s->log);
  free(s);
}
