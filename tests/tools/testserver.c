/*
 * testserver — a small, fast HTTP/1.1 server for moonhive's tests and benchmarks.
 *
 * The end-to-end tests of the HTTP client module (and the benchmarks) run
 * against this server instead of the Internet. It is one C file on libuv and
 * http_parser (HTTP is never parsed by hand), single-threaded, built to keep
 * 1,000+ keep-alive connections busy at tens of thousands of requests per
 * second on one core: requests are parsed straight out of one shared read
 * buffer, small responses are formatted into one static buffer and sent with a
 * single uv_try_write (a heap copy is made only when the socket is full), and
 * large bodies are written in 64 KiB pieces from static fill buffers with
 * back-pressure.
 *
 * Usage: testserver [--port N] [--host ADDR] [--ignore-stdin]
 *   --port 0 (the default) picks a free port. Once listening, the server
 *   prints exactly one line "PORT <n>" on stdout and flushes it. It exits 0
 *   on SIGTERM or SIGINT, and when stdin reaches EOF if stdin is a pipe or a
 *   socket (so a parent that dies takes it along; a tty, a file or /dev/null
 *   on stdin is not watched; --ignore-stdin disables the watch).
 *
 * Protocol: keep-alive per HTTP/1.1 (Connection: close honoured; HTTP/1.0
 * closes unless it asks for keep-alive), pipelined requests are answered in
 * order, malformed requests get 400 and the connection is closed, request
 * bodies of any size are accepted (streamed; /echo keeps the first 1 MiB),
 * "Expect: 100-continue" gets an interim 100 response. Query parameters are
 * decimal integers; a bad value gets 400. Every endpoint ignores the method
 * except /echo (which reports it) and HEAD (headers only; HEAD on the timed or
 * broken endpoints gets 405). HTTP/1.0 requests get close-delimited bodies
 * instead of chunked ones.
 *
 * Endpoints:
 *   GET /hello                200 text/plain "hello world\n" (HEAD supported)
 *   GET /bytes/N              N bytes of 'x' with Content-Length, N <= 100 MiB
 *   GET /chunked?n=5&size=10&delay=0
 *                             chunked body: n chunks of `size` bytes, chunk i
 *                             filled with the digit i%10, `delay` ms between
 *                             chunks (n <= 1e6, 1 <= size <= 16 MiB)
 *   GET /slow?ms=N            waits N ms, then 200 "slow\n"
 *   GET /stall                Content-Length: 100, sends 10 bytes, then idles
 *                             until the client closes the connection
 *   GET /close-early          Content-Length: 100, sends 10 bytes, then closes
 *   GET /drop                 closes the connection without any response
 *   GET /sse?n=N&delay=MS     text/event-stream; byte stream documented at
 *                             sse_preamble below
 *   ANY /echo                 200 application/json
 *                             {"method":"GET","path":"/echo?x=1",
 *                              "headers":{"lowercased-name":"value",...},
 *                              "body":"<request body>"}
 *                             (repeated headers joined with ", "; invalid
 *                             UTF-8 bytes become U+FFFD; body truncated to
 *                             the first 1 MiB)
 *   GET /status/N             status N (200..599) with its reason phrase, body
 *                             "status N\n" (no body for 204 and 304);
 *                             429 and 503 add "Retry-After: 1"
 *   GET /headers              200, "X-Test: yes", "Set-Cookie: a=1",
 *                             "Set-Cookie: b=2", body "ok"
 *   GET /stats                {"connections":<accepted so far>,
 *                              "requests":<served so far, this one included>,
 *                              "open":<open now, this one included>}
 *   anything else             404 "not found"
 */

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define READ_BUF_SZ   (64 * 1024)
#define OUT_BUF_SZ    (64 * 1024)
#define FILL_SZ       (64 * 1024)
#define URL_MAX       4096
#define ECHO_BODY_MAX (1024 * 1024)
#define PENDING_MAX   (1024 * 1024)   /* stop reading while busy beyond this */
#define MAX_INFLIGHT  4               /* queued uv_writes before we wait */
#define READ_PAUSE_AT 64              /* queued writes that pause reading */
#define SYNC_BUDGET   (256 * 1024)    /* bytes per step before forcing a queue */
#define BYTES_MAX     (100ULL * 1024 * 1024)

enum kind { K_NONE, K_BYTES, K_CHUNKED, K_SLOW, K_STALL, K_SSE };

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shut;
    http_parser parser;
    struct conn *prev, *next;
    int handles;       /* libuv handles still to be closed before free */
    int inflight;      /* queued uv_write requests */
    int hstate;        /* echo header capture: 0 none, 1 field, 2 value */
    unsigned closing : 1, timer_init : 1, busy : 1, start_async : 1,
        keep_alive : 1, http10 : 1, close_after : 1, peer_eof : 1,
        read_stopped : 1, wait_drain : 1, in_drain : 1, url_done : 1,
        is_echo : 1, url_overflow : 1, chunked : 1, in_chunk : 1,
        delay_done : 1, stage : 1, expect_field : 1, expect_continue : 1;
    /* current asynchronous response */
    enum kind kind;
    uint64_t fill_left;
    int fill_idx;
    size_t budget;
    long long n, i, size, delay;
    /* bytes received while a response is in progress */
    char *pending;
    size_t pending_len, pending_cap;
    /* /echo capture */
    char *hbuf;
    size_t hlen, hcap;
    char *bbuf;
    size_t blen, bcap;
    /* request target */
    size_t url_len;
    char url[URL_MAX];
} conn;

typedef struct wreq {
    uv_write_t req;
    conn *c;
    char data[];
} wreq;

static uv_loop_t g_loop;
static uv_tcp_t g_server;
static uv_signal_t g_sigterm, g_sigint;
static uv_pipe_t g_stdin;
static int g_stdin_active;
static int g_stopping;
static conn *g_conns;
static http_parser_settings g_settings;
static unsigned long long g_stat_conns, g_stat_reqs, g_stat_open;

static char g_rbuf[READ_BUF_SZ];
static char g_out[OUT_BUF_SZ];
static char g_fill[11][FILL_SZ]; /* 0..9: digits, 10: 'x' */
#define FILL_X 10

static void resp_step(conn *c);
static void conn_drain(conn *c);
static void maybe_resume_read(conn *c);

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap *= 2;
    char *p = realloc(*buf, ncap);
    if (!p)
        return -1;
    *buf = p;
    *cap = ncap;
    return 0;
}

static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (grow(buf, cap, *len + n) != 0)
        return -1;
    if (n)
        memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

/* Strict decimal: non-empty, digits only, <= max. */
static int parse_num(const char *s, size_t len, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -1;
        v = v * 10 + (unsigned long long)(s[k] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

/* Looks `key` up in a query string "a=1&b=2". Missing -> def; malformed or
 * above max -> -1 returned. */
static int query_num(const char *q, size_t qlen, const char *key,
                     unsigned long long def, unsigned long long max, long long *out)
{
    size_t klen = strlen(key);
    const char *p = q, *end = q + qlen;
    *out = (long long)def;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq && (size_t)(eq - p) == klen && memcmp(p, key, klen) == 0) {
            unsigned long long v;
            if (parse_num(eq + 1, (size_t)(pe - eq - 1), max, &v) != 0)
                return -1;
            *out = (long long)v;
        }
        p = pe + 1;
    }
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:
        if (status < 300) return "Success";
        if (status < 400) return "Redirection";
        if (status < 500) return "Client Error";
        return "Server Error";
    }
}

/* JSON string body (no quotes). `out` needs room for 6 * len bytes. Valid
 * UTF-8 is copied as is, invalid bytes become \ufffd. */
static size_t json_escape(char *out, const unsigned char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    size_t k = 0;
    while (k < len) {
        unsigned char ch = s[k];
        if (ch < 0x80) {
            switch (ch) {
            case '"':  *o++ = '\\'; *o++ = '"'; break;
            case '\\': *o++ = '\\'; *o++ = '\\'; break;
            case '\b': *o++ = '\\'; *o++ = 'b'; break;
            case '\f': *o++ = '\\'; *o++ = 'f'; break;
            case '\n': *o++ = '\\'; *o++ = 'n'; break;
            case '\r': *o++ = '\\'; *o++ = 'r'; break;
            case '\t': *o++ = '\\'; *o++ = 't'; break;
            default:
                if (ch < 0x20) {
                    memcpy(o, "\\u00", 4);
                    o[4] = hex[ch >> 4];
                    o[5] = hex[ch & 15];
                    o += 6;
                } else {
                    *o++ = (char)ch;
                }
            }
            k++;
            continue;
        }
        /* multi-byte UTF-8: validate (no overlongs, no surrogates, <= U+10FFFF) */
        size_t need = 0;
        uint32_t cp = 0, min = 0;
        if (ch >= 0xC2 && ch <= 0xDF) { need = 1; cp = ch & 0x1F; min = 0x80; }
        else if (ch >= 0xE0 && ch <= 0xEF) { need = 2; cp = ch & 0x0F; min = 0x800; }
        else if (ch >= 0xF0 && ch <= 0xF4) { need = 3; cp = ch & 0x07; min = 0x10000; }
        int ok = need > 0;
        if (ok) {
            for (size_t j = 1; j <= need; j++) {
                if (k + j >= len || (s[k + j] & 0xC0) != 0x80) { ok = 0; break; }
                cp = (cp << 6) | (s[k + j] & 0x3F);
            }
        }
        if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
            ok = 0;
        if (ok) {
            memcpy(o, s + k, need + 1);
            o += need + 1;
            k += need + 1;
        } else {
            memcpy(o, "\\ufffd", 6);
            o += 6;
            k++;
        }
    }
    return (size_t)(o - out);
}

/* ------------------------------------------------------------------ */
/* connection lifetime                                                 */

static void on_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (h == (uv_handle_t *)&c->tcp)
        g_stat_open--;
    if (--c->handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->pending);
    free(c->hbuf);
    free(c->bbuf);
    free(c);
}

/* Close at once; queued writes are cancelled. */
static void conn_close_now(conn *c)
{
    c->closing = 1;
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    if (c->timer_init)
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close_now(req->data);
}

/* Close after everything queued so far has been written (FIN, then close). */
static void conn_close_graceful(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->timer_init)
        uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close_now(c);
}

/* ------------------------------------------------------------------ */
/* writing                                                             */

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;
    free(w);
    c->inflight--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close_now(c);
        return;
    }
    if (c->wait_drain && c->inflight < MAX_INFLIGHT) {
        c->wait_drain = 0;
        c->budget = 0;
        resp_step(c);
    }
    /* a pipelining client that does not read its responses was paused */
    if (c->read_stopped && !c->busy && c->inflight < READ_PAUSE_AT / 4)
        maybe_resume_read(c);
}

/* Sends data in order with everything sent before. copy != 0: data is copied
 * if it cannot be written at once; copy == 0: data must outlive the write
 * (static buffers). force_queue skips the synchronous attempt. */
static int conn_send_ex(conn *c, const char *data, size_t len, int copy, int force_queue)
{
    if (c->closing)
        return -1;
    if (len == 0)
        return 0;
    if (c->inflight == 0 && !force_queue) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r >= 0) {
            data += r;
            len -= (size_t)r;
            if (len == 0)
                return 0;
        } else if (r != UV_EAGAIN) {
            conn_close_now(c);
            return -1;
        }
    }
    wreq *w = malloc(sizeof *w + (copy ? len : 0));
    if (!w) {
        conn_close_now(c);
        return -1;
    }
    w->c = c;
    uv_buf_t b;
    if (copy) {
        memcpy(w->data, data, len);
        b = uv_buf_init(w->data, (unsigned)len);
    } else {
        b = uv_buf_init((char *)data, (unsigned)len);
    }
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w);
        conn_close_now(c);
        return -1;
    }
    c->inflight++;
    return 0;
}

static int conn_send(conn *c, const char *data, size_t len)
{
    return conn_send_ex(c, data, len, 1, 0);
}

/* Formats the status line and headers into buf. clen < 0: no Content-Length.
 * extra: additional header lines, each ending in \r\n (or NULL). */
static size_t fmt_head(conn *c, char *buf, size_t cap, int status, const char *ctype,
                       long long clen, const char *extra)
{
    int n = snprintf(buf, cap, "HTTP/1.1 %d %s\r\n%s%s%s", status, reason(status),
                     ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "");
    size_t len = (size_t)n;
    if (clen >= 0)
        len += (size_t)snprintf(buf + len, cap - len, "Content-Length: %lld\r\n", clen);
    if (c->chunked)
        len += (size_t)snprintf(buf + len, cap - len, "Transfer-Encoding: chunked\r\n");
    if (extra)
        len += (size_t)snprintf(buf + len, cap - len, "%s", extra);
    if (c->close_after)
        len += (size_t)snprintf(buf + len, cap - len, "Connection: close\r\n");
    else if (c->http10)
        len += (size_t)snprintf(buf + len, cap - len, "Connection: keep-alive\r\n");
    len += (size_t)snprintf(buf + len, cap - len, "\r\n");
    return len;
}

/* A complete small response in one write. Body omitted for HEAD. */
static void send_simple(conn *c, int status, const char *ctype, const char *extra,
                        const char *body, size_t blen)
{
    int nobody = status == 204 || status == 304;
    size_t len = fmt_head(c, g_out, sizeof g_out, status, nobody ? NULL : ctype,
                          nobody ? -1 : (long long)blen, extra);
    if (c->parser.method != HTTP_HEAD && !nobody && blen) {
        if (len + blen <= sizeof g_out) {
            memcpy(g_out + len, body, blen);
            len += blen;
        } else {
            conn_send(c, g_out, len);
            conn_send(c, body, blen);
            return;
        }
    }
    conn_send(c, g_out, len);
}

/* Sends a small piece of a streamed response. After SYNC_BUDGET bytes in one
 * step the write is queued instead of tried at once, so one fast stream cannot
 * starve the other connections: resp_step continues from on_write. */
static void step_send(conn *c, const char *data, size_t len)
{
    int force = c->budget >= SYNC_BUDGET;
    c->budget += len;
    conn_send_ex(c, data, len, 1, force);
}

/* Sends one chunk (or the raw data when the response is close-delimited). */
static void send_chunk(conn *c, const char *data, size_t len)
{
    if (!c->chunked) {
        step_send(c, data, len);
        return;
    }
    char buf[512];
    if (len + 32 > sizeof buf)
        return; /* callers only pass small pieces */
    int h = snprintf(buf, 32, "%zx\r\n", len);
    memcpy(buf + h, data, len);
    memcpy(buf + h + len, "\r\n", 2);
    step_send(c, buf, (size_t)h + len + 2);
}

static void send_fill(conn *c)
{
    size_t n = c->fill_left > FILL_SZ ? FILL_SZ : (size_t)c->fill_left;
    c->fill_left -= n;
    int force = c->budget >= SYNC_BUDGET;
    c->budget += n;
    conn_send_ex(c, g_fill[c->fill_idx], n, 0, force);
}

/* ------------------------------------------------------------------ */
/* asynchronous responses                                              */

static void finish_response(conn *c)
{
    c->busy = 0;
    c->kind = K_NONE;
    if (c->close_after) {
        conn_close_graceful(c);
        return;
    }
    conn_drain(c);
}

static void on_timer(uv_timer_t *t)
{
    conn *c = t->data;
    c->delay_done = 1;
    c->budget = 0;
    resp_step(c);
}

static void start_delay(conn *c, long long ms)
{
    if (!c->timer_init) {
        uv_timer_init(&g_loop, &c->timer);
        c->timer.data = c;
        c->timer_init = 1;
        c->handles++;
    }
    c->delay_done = 0;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

/*
 * SSE byte stream (the body, before any chunked framing; with HTTP/1.1
 * keep-alive it is sent with Transfer-Encoding: chunked, the preamble as one
 * chunk and each tick as one chunk; otherwise it is close-delimited):
 *
 *   ": hello\n"
 *   "event: greeting\n"
 *   "data: first line\n"
 *   "data: second line\n"
 *   "id: 1\n"
 *   "\n"
 *   "data: crlf\r\n"
 *   "\r\n"
 *   "retry: 1500\n"
 *   "\n"
 * then for i = 0 .. n-1, `delay` ms apart (the first one right after the
 * preamble, none after the last):
 *   "event: tick\n"
 *   "id: <i+2>\n"
 *   "data: {\"i\":<i>}\n"
 *   "\n"
 * then the response ends (terminal chunk, or close).
 * A compliant client therefore sees: event "greeting" with data
 * "first line\nsecond line" and last-event-id "1"; event "message" with data
 * "crlf" (last-event-id still "1"); reconnection time 1500 ms; then n events
 * "tick" with data {"i":i} and ids 2..n+1.
 */
static const char sse_preamble[] =
    ": hello\n"
    "event: greeting\n"
    "data: first line\n"
    "data: second line\n"
    "id: 1\n"
    "\n"
    "data: crlf\r\n"
    "\r\n"
    "retry: 1500\n"
    "\n";

static void resp_step(conn *c)
{
    char tmp[256];
    for (;;) {
        if (c->closing || !c->busy)
            return;
        if (c->inflight >= MAX_INFLIGHT) {
            c->wait_drain = 1;
            return;
        }
        if (c->fill_left) {
            send_fill(c);
            continue;
        }
        switch (c->kind) {
        case K_BYTES:
            finish_response(c);
            return;
        case K_SLOW:
            if (!c->delay_done && c->delay > 0) {
                start_delay(c, c->delay);
                return;
            }
            send_simple(c, 200, "text/plain", NULL, "slow\n", 5);
            finish_response(c);
            return;
        case K_STALL:
            return; /* idle until the client goes away */
        case K_CHUNKED:
            if (c->in_chunk) {
                c->in_chunk = 0;
                c->i++;
                c->delay_done = 0;
                if (c->chunked)
                    step_send(c, "\r\n", 2);
                continue;
            }
            if (c->i >= c->n) {
                if (c->chunked)
                    conn_send(c, "0\r\n\r\n", 5);
                finish_response(c);
                return;
            }
            if (c->i > 0 && c->delay > 0 && !c->delay_done) {
                start_delay(c, c->delay);
                return;
            }
            if (c->chunked) {
                int h = snprintf(tmp, sizeof tmp, "%llx\r\n", (unsigned long long)c->size);
                step_send(c, tmp, (size_t)h);
            }
            c->fill_left = (uint64_t)c->size;
            c->fill_idx = (int)(c->i % 10);
            c->in_chunk = 1;
            continue;
        case K_SSE:
            if (!c->stage) {
                c->stage = 1;
                send_chunk(c, sse_preamble, sizeof sse_preamble - 1);
                continue;
            }
            if (c->i >= c->n) {
                if (c->chunked)
                    conn_send(c, "0\r\n\r\n", 5);
                finish_response(c);
                return;
            }
            if (c->i > 0 && c->delay > 0 && !c->delay_done) {
                start_delay(c, c->delay);
                return;
            }
            {
                int l = snprintf(tmp, sizeof tmp, "event: tick\nid: %lld\ndata: {\"i\":%lld}\n\n",
                                 c->i + 2, c->i);
                c->i++;
                c->delay_done = 0;
                send_chunk(c, tmp, (size_t)l);
            }
            continue;
        case K_NONE:
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* request dispatch                                                    */

static void send_echo(conn *c)
{
    const char *method = http_method_str(c->parser.method);
    size_t mlen = strlen(method);
    size_t cap = 512 + 6 * (mlen + c->url_len + c->blen) + 14 * c->hlen;
    char *buf = malloc(cap);
    if (!buf) {
        conn_close_now(c);
        return;
    }
    const size_t off = 256; /* room for the response head in front */
    char *o = buf + off;
    o += sprintf(o, "{\"method\":\"");
    o += json_escape(o, (const unsigned char *)method, mlen);
    o += sprintf(o, "\",\"path\":\"");
    o += json_escape(o, (const unsigned char *)c->url, c->url_len);
    o += sprintf(o, "\",\"headers\":{");
    /* hbuf holds "name\0value\0" pairs */
    int first = 1;
    for (size_t p = 0; p < c->hlen;) {
        const char *name = c->hbuf + p;
        size_t nlen = strlen(name);
        const char *val = name + nlen + 1;
        size_t vlen = strlen(val);
        size_t next = p + nlen + 1 + vlen + 1;
        int seen = 0;
        for (size_t q = 0; q < p;) {
            const char *n2 = c->hbuf + q;
            size_t n2len = strlen(n2);
            const char *v2 = n2 + n2len + 1;
            if (n2len == nlen && strncasecmp(n2, name, nlen) == 0) {
                seen = 1;
                break;
            }
            q += n2len + 1 + strlen(v2) + 1;
        }
        if (!seen) {
            if (!first)
                *o++ = ',';
            first = 0;
            *o++ = '"';
            char *nstart = o;
            o += json_escape(o, (const unsigned char *)name, nlen);
            for (char *x = nstart; x < o; x++)
                *x = (char)tolower((unsigned char)*x);
            *o++ = '"';
            *o++ = ':';
            *o++ = '"';
            o += json_escape(o, (const unsigned char *)val, vlen);
            for (size_t q = next; q < c->hlen;) {
                const char *n2 = c->hbuf + q;
                size_t n2len = strlen(n2);
                const char *v2 = n2 + n2len + 1;
                size_t v2len = strlen(v2);
                if (n2len == nlen && strncasecmp(n2, name, nlen) == 0) {
                    *o++ = ',';
                    *o++ = ' ';
                    o += json_escape(o, (const unsigned char *)v2, v2len);
                }
                q += n2len + 1 + v2len + 1;
            }
            *o++ = '"';
        }
        p = next;
    }
    o += sprintf(o, "},\"body\":\"");
    o += json_escape(o, (const unsigned char *)c->bbuf, c->blen);
    *o++ = '"';
    *o++ = '}';
    size_t blen = (size_t)(o - (buf + off));
    char head[256];
    size_t hl = fmt_head(c, head, sizeof head, 200, "application/json", (long long)blen, NULL);
    if (c->parser.method == HTTP_HEAD) {
        conn_send(c, head, hl);
    } else {
        memcpy(buf + off - hl, head, hl);
        conn_send(c, buf + off - hl, hl + blen);
    }
    free(buf);
}

static void begin_async(conn *c, enum kind k)
{
    c->busy = 1;
    c->kind = k;
    c->start_async = 1;
    c->stage = 0;
    c->in_chunk = 0;
    c->delay_done = 0;
    c->fill_left = 0;
    c->i = 0;
}

static void bad_request(conn *c, int status, const char *msg)
{
    c->close_after = 1;
    c->chunked = 0;
    send_simple(c, status, "text/plain", NULL, msg, strlen(msg));
    conn_close_graceful(c);
}

/* Called at message complete. Either answers at once, or starts an
 * asynchronous response (busy), or closes. */
static void dispatch(conn *c)
{
    g_stat_reqs++;
    const char *url = c->url;
    size_t ulen = c->url_len;
    size_t plen = 0;
    while (plen < ulen && url[plen] != '?' && url[plen] != '#')
        plen++;
    const char *q = url + plen;
    size_t qlen = 0;
    if (plen < ulen && url[plen] == '?') {
        q++;
        while (q + qlen < url + ulen && q[qlen] != '#')
            qlen++;
    }
    int head = c->parser.method == HTTP_HEAD;
    c->chunked = 0;
    c->close_after = !c->keep_alive;
#define PATH_IS(s) (plen == sizeof(s) - 1 && memcmp(url, s, sizeof(s) - 1) == 0)
#define PATH_HAS_PREFIX(s) (plen > sizeof(s) - 1 && memcmp(url, s, sizeof(s) - 1) == 0)
#define NOT_FOR_HEAD()                                                            \
    do {                                                                          \
        if (head) {                                                               \
            send_simple(c, 405, "text/plain", "Allow: GET\r\n", "method not allowed\n", 19); \
            goto sent;                                                            \
        }                                                                         \
    } while (0)

    if (c->url_overflow) {
        bad_request(c, 414, "uri too long\n");
        return;
    }
    if (PATH_IS("/hello")) {
        send_simple(c, 200, "text/plain", NULL, "hello world\n", 12);
    } else if (PATH_IS("/echo")) {
        send_echo(c);
    } else if (PATH_HAS_PREFIX("/bytes/")) {
        unsigned long long n;
        if (parse_num(url + 7, plen - 7, BYTES_MAX, &n) != 0) {
            send_simple(c, 400, "text/plain", NULL, "bad size\n", 9);
            goto sent;
        }
        size_t hl = fmt_head(c, g_out, sizeof g_out, 200, "application/octet-stream",
                             (long long)n, NULL);
        if (head) {
            conn_send(c, g_out, hl);
        } else if (hl + n <= sizeof g_out) {
            memset(g_out + hl, 'x', (size_t)n);
            conn_send(c, g_out, hl + (size_t)n);
        } else {
            conn_send(c, g_out, hl);
            begin_async(c, K_BYTES);
            c->fill_left = n;
            c->fill_idx = FILL_X;
            return;
        }
    } else if (PATH_IS("/chunked")) {
        NOT_FOR_HEAD();
        long long n, size, delay;
        if (query_num(q, qlen, "n", 5, 1000000, &n) || query_num(q, qlen, "size", 10, 16 << 20, &size) ||
            query_num(q, qlen, "delay", 0, 600000, &delay) || size < 1) {
            send_simple(c, 400, "text/plain", NULL, "bad query\n", 10);
            goto sent;
        }
        if (c->http10)
            c->close_after = 1;
        else
            c->chunked = 1;
        size_t hl = fmt_head(c, g_out, sizeof g_out, 200, "text/plain", -1, NULL);
        conn_send(c, g_out, hl);
        begin_async(c, K_CHUNKED);
        c->n = n;
        c->size = size;
        c->delay = delay;
        return;
    } else if (PATH_IS("/slow")) {
        NOT_FOR_HEAD();
        long long ms;
        if (query_num(q, qlen, "ms", 0, 600000, &ms)) {
            send_simple(c, 400, "text/plain", NULL, "bad query\n", 10);
            goto sent;
        }
        begin_async(c, K_SLOW);
        c->delay = ms;
        return;
    } else if (PATH_IS("/stall") || PATH_IS("/close-early")) {
        NOT_FOR_HEAD();
        int stall = PATH_IS("/stall");
        if (!stall)
            c->close_after = 1;
        size_t hl = fmt_head(c, g_out, sizeof g_out, 200, "text/plain", 100, NULL);
        memset(g_out + hl, 'x', 10);
        conn_send(c, g_out, hl + 10);
        if (!stall) {
            conn_close_graceful(c);
            return;
        }
        begin_async(c, K_STALL);
        return;
    } else if (PATH_IS("/drop")) {
        NOT_FOR_HEAD();
        conn_close_graceful(c);
        return;
    } else if (PATH_IS("/sse")) {
        NOT_FOR_HEAD();
        long long n, delay;
        if (query_num(q, qlen, "n", 3, 1000000, &n) || query_num(q, qlen, "delay", 0, 600000, &delay)) {
            send_simple(c, 400, "text/plain", NULL, "bad query\n", 10);
            goto sent;
        }
        if (c->http10)
            c->close_after = 1;
        else
            c->chunked = 1;
        size_t hl = fmt_head(c, g_out, sizeof g_out, 200, "text/event-stream", -1,
                             "Cache-Control: no-cache\r\n");
        conn_send(c, g_out, hl);
        begin_async(c, K_SSE);
        c->n = n;
        c->delay = delay;
        return;
    } else if (PATH_HAS_PREFIX("/status/")) {
        unsigned long long st;
        if (parse_num(url + 8, plen - 8, 599, &st) != 0 || st < 200) {
            send_simple(c, 400, "text/plain", NULL, "bad status\n", 11);
            goto sent;
        }
        char body[32];
        int bl = snprintf(body, sizeof body, "status %llu\n", st);
        send_simple(c, (int)st, "text/plain", (st == 429 || st == 503) ? "Retry-After: 1\r\n" : NULL,
                    body, (size_t)bl);
    } else if (PATH_IS("/headers")) {
        send_simple(c, 200, "text/plain", "X-Test: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n", "ok", 2);
    } else if (PATH_IS("/stats")) {
        char body[160];
        int bl = snprintf(body, sizeof body, "{\"connections\":%llu,\"requests\":%llu,\"open\":%llu}",
                          g_stat_conns, g_stat_reqs, g_stat_open);
        send_simple(c, 200, "application/json", NULL, body, (size_t)bl);
    } else {
        send_simple(c, 404, "text/plain", NULL, "not found", 9);
    }
sent:
    if (c->close_after)
        conn_close_graceful(c);
#undef PATH_IS
#undef PATH_HAS_PREFIX
#undef NOT_FOR_HEAD
}

/* ------------------------------------------------------------------ */
/* http_parser callbacks                                               */

static void route_known(conn *c)
{
    if (c->url_done)
        return;
    c->url_done = 1;
    size_t plen = 0;
    while (plen < c->url_len && c->url[plen] != '?' && c->url[plen] != '#')
        plen++;
    c->is_echo = plen == 5 && memcmp(c->url, "/echo", 5) == 0;
}

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->url_len = 0;
    c->url_done = 0;
    c->is_echo = 0;
    c->url_overflow = 0;
    c->hlen = 0;
    c->hstate = 0;
    c->blen = 0;
    c->expect_field = 0;
    c->expect_continue = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->url_len + len > URL_MAX) {
        c->url_overflow = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    route_known(c);
    int new_field = c->hstate != 1;
    if (new_field)
        c->expect_field = len == 6 && strncasecmp(at, "expect", 6) == 0;
    if (!c->is_echo) {
        c->hstate = 1;
        return 0;
    }
    if (c->hstate == 2 && append(&c->hbuf, &c->hlen, &c->hcap, "", 1))
        return -1;
    c->hstate = 1;
    /* a NUL inside a name would corrupt the pair list; http_parser rejects it */
    return append(&c->hbuf, &c->hlen, &c->hcap, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->hstate == 1 && c->expect_field)
        c->expect_continue = len == 12 && strncasecmp(at, "100-continue", 12) == 0;
    if (!c->is_echo) {
        c->hstate = 2;
        return 0;
    }
    if (c->hstate == 1 && append(&c->hbuf, &c->hlen, &c->hcap, "", 1))
        return -1;
    c->hstate = 2;
    return append(&c->hbuf, &c->hlen, &c->hcap, at, len);
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    route_known(c);
    if (c->is_echo && c->hstate == 2 && append(&c->hbuf, &c->hlen, &c->hcap, "", 1))
        return -1;
    if (c->expect_continue && p->http_major == 1 && p->http_minor >= 1)
        conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (!c->is_echo || c->blen >= ECHO_BODY_MAX)
        return 0;
    if (len > ECHO_BODY_MAX - c->blen)
        len = ECHO_BODY_MAX - c->blen;
    return append(&c->bbuf, &c->blen, &c->bcap, at, len);
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    c->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    c->http10 = p->http_major == 1 && p->http_minor == 0;
    dispatch(c);
    if (c->busy || c->closing)
        http_parser_pause(p, 1);
    return 0;
}

/* Parses data; returns bytes consumed. Stops early when a response went
 * asynchronous (busy) or the connection is closing. */
static size_t feed(conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &g_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&c->parser, 0);
        return n;
    }
    if (e != HPE_OK) {
        if (!c->closing)
            bad_request(c, 400, "bad request\n");
        return len;
    }
    if (c->parser.upgrade && !c->closing && !c->busy) {
        /* the rest is another protocol we do not speak */
        conn_close_graceful(c);
        return len;
    }
    return n;
}

/* Parses what accumulated while a response was in progress. Re-entrant
 * calls (an async response finishing synchronously) just loop again. */
static void conn_drain(conn *c)
{
    if (c->in_drain)
        return;
    c->in_drain = 1;
    while (!c->closing && !c->busy && c->pending_len) {
        size_t n = feed(c, c->pending, c->pending_len);
        if (c->closing)
            break;
        memmove(c->pending, c->pending + n, c->pending_len - n);
        c->pending_len -= n;
        if (c->start_async) {
            c->start_async = 0;
            c->budget = 0;
            resp_step(c);
        }
    }
    c->in_drain = 0;
    if (c->closing || c->busy)
        return;
    if (c->peer_eof)
        conn_close_graceful(c);
    else
        maybe_resume_read(c);
}

/* ------------------------------------------------------------------ */
/* libuv callbacks                                                     */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    /* single-threaded: alloc and read callbacks always come in pairs */
    *buf = uv_buf_init(g_rbuf, sizeof g_rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (c->closing)
        return;
    if (nread > 0) {
        const char *data = buf->base;
        size_t len = (size_t)nread;
        if (!c->busy && c->pending_len == 0) {
            size_t n = feed(c, data, len);
            if (c->closing)
                return;
            data += n;
            len -= n;
        }
        if (len) {
            if (append(&c->pending, &c->pending_len, &c->pending_cap, data, len)) {
                conn_close_now(c);
                return;
            }
        }
        if (!c->read_stopped && (c->pending_len > PENDING_MAX || c->inflight >= READ_PAUSE_AT)) {
            uv_read_stop(s);
            c->read_stopped = 1;
        }
        if (c->start_async) {
            c->start_async = 0;
            c->budget = 0;
            resp_step(c); /* may finish at once and drain pending */
        }
    } else if (nread == UV_EOF) {
        c->peer_eof = 1;
        if (!c->busy)
            conn_close_graceful(c);
        else if (c->kind == K_STALL)
            conn_close_now(c);
        /* otherwise finish the response in progress, then close */
    } else if (nread < 0) {
        conn_close_now(c);
    }
}

static void maybe_resume_read(conn *c)
{
    if (c->read_stopped && !c->closing && !c->peer_eof) {
        c->read_stopped = 0;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
            conn_close_now(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0 || g_stopping)
        return;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(&g_loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    c->next = g_conns;
    if (g_conns)
        g_conns->prev = c;
    g_conns = c;
    g_stat_open++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close_now(c);
        return;
    }
    g_stat_conns++;
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close_now(c);
}

static void stop_all(void)
{
    if (g_stopping)
        return;
    g_stopping = 1;
    uv_close((uv_handle_t *)&g_server, NULL);
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
    if (g_stdin_active)
        uv_close((uv_handle_t *)&g_stdin, NULL);
    for (conn *c = g_conns; c; c = c->next)
        conn_close_now(c);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    stop_all();
}

static void on_stdin_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    (void)buf;
    if (nread < 0) /* EOF or error: the parent is gone */
        stop_all();
}

static void usage(FILE *f)
{
    fprintf(f, "usage: testserver [--port N] [--host ADDR] [--ignore-stdin]\n");
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, watch_stdin = 1;
    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--port") == 0 && k + 1 < argc) {
            unsigned long long v;
            const char *s = argv[++k];
            if (parse_num(s, strlen(s), 65535, &v) != 0) {
                usage(stderr);
                return 2;
            }
            port = (int)v;
        } else if (strcmp(argv[k], "--host") == 0 && k + 1 < argc) {
            host = argv[++k];
        } else if (strcmp(argv[k], "--ignore-stdin") == 0) {
            watch_stdin = 0;
        } else if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    for (int d = 0; d < 10; d++)
        memset(g_fill[d], '0' + d, FILL_SZ);
    memset(g_fill[FILL_X], 'x', FILL_SZ);

    memset(&g_settings, 0, sizeof g_settings);
    g_settings.on_message_begin = on_message_begin;
    g_settings.on_url = on_url;
    g_settings.on_header_field = on_header_field;
    g_settings.on_header_value = on_header_value;
    g_settings.on_headers_complete = on_headers_complete;
    g_settings.on_body = on_body;
    g_settings.on_message_complete = on_message_complete;

    int r = uv_loop_init(&g_loop);
    if (r) {
        fprintf(stderr, "testserver: uv_loop_init: %s\n", uv_strerror(r));
        return 1;
    }

    struct sockaddr_storage addr;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
        fprintf(stderr, "testserver: bad host address: %s\n", host);
        return 2;
    }
    uv_tcp_init(&g_loop, &g_server);
    r = uv_tcp_bind(&g_server, (const struct sockaddr *)&addr, 0);
    if (!r)
        r = uv_listen((uv_stream_t *)&g_server, 4096, on_connection);
    if (r) {
        fprintf(stderr, "testserver: listen on %s:%d: %s\n", host, port, uv_strerror(r));
        return 1;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&g_server, (struct sockaddr *)&bound, &blen);
    int actual = bound.ss_family == AF_INET6
                     ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                     : ntohs(((struct sockaddr_in *)&bound)->sin_port);

    uv_signal_init(&g_loop, &g_sigterm);
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_init(&g_loop, &g_sigint);
    uv_signal_start(&g_sigint, on_signal, SIGINT);

    if (watch_stdin && uv_guess_handle(0) == UV_NAMED_PIPE) {
        if (uv_pipe_init(&g_loop, &g_stdin, 0) == 0) {
            g_stdin_active = 1;
            if (uv_pipe_open(&g_stdin, 0) != 0 ||
                uv_read_start((uv_stream_t *)&g_stdin, on_alloc, on_stdin_read) != 0) {
                uv_close((uv_handle_t *)&g_stdin, NULL);
                g_stdin_active = 0;
            }
        }
    }

    printf("PORT %d\n", actual);
    fflush(stdout);

    uv_run(&g_loop, UV_RUN_DEFAULT);
    r = uv_loop_close(&g_loop);
    if (r) {
        fprintf(stderr, "testserver: uv_loop_close: %s\n", uv_strerror(r));
        return 1;
    }
    return 0;
}
