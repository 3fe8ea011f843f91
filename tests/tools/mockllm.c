/*
 * mockllm — a mock LLM server speaking the OpenAI and Anthropic wire formats.
 *
 * moonhive's LLM tests and benchmarks run against this server instead of the
 * real providers. It is one C file on libuv, http_parser and cJSON, single
 * threaded and event driven (delays are uv timers; nothing ever sleeps). Its
 * connection handling follows tests/tools/testserver.c.
 *
 * Usage: mockllm [--port N] [--host ADDR] [--ignore-stdin]
 *   --port 0 (the default) picks a free port; --host defaults to 127.0.0.1.
 *   Once listening it prints exactly one line "PORT <n>" on stdout and flushes
 *   it. It exits 0 on SIGTERM or SIGINT, and when stdin reaches EOF if stdin
 *   is a pipe (so a parent that dies takes it along; --ignore-stdin disables
 *   this), after closing every connection and timer.
 *
 * HTTP: HTTP/1.1 keep-alive (Connection: close honoured; HTTP/1.0 closes
 * unless it asks for keep-alive), pipelined requests answered in order,
 * "Expect: 100-continue" answered, request bodies of any size up to 256 MiB
 * (413 beyond), request targets up to 8 KiB (414 beyond). Malformed HTTP gets
 * 400 with an OpenAI-shaped error body and the connection is closed. Paths
 * are matched without their query string. Streams are sent with
 * Transfer-Encoding: chunked (one chunk per SSE event), or close-delimited to
 * HTTP/1.0 clients. Every response to /v1/chat/completions carries
 * "x-request-id: req_mock_<n>", every one to /v1/messages "request-id:
 * req_mock_<n>" (n as in "Numbering" below).
 *
 * Endpoints
 *   POST /v1/chat/completions  OpenAI Chat Completions (below)
 *   POST /v1/messages          Anthropic Messages (below)
 *   POST /v1/embeddings        OpenAI embeddings: {model, input: string |
 *                              [string]} -> {"object":"list","data":[{"object":
 *                              "embedding","index":i,"embedding":[8 floats]}],
 *                              "model":M,"usage":{"prompt_tokens":N,
 *                              "total_tokens":N}}. The vector: every byte
 *                              bigram of " " + lowercased text + " " adds 1 to
 *                              bucket FNV-1a(bigram) % 8, then the vector is
 *                              L2-normalised and rounded to 6 decimals. Equal
 *                              texts give equal vectors, similar texts similar
 *                              ones. N = words over all inputs. An empty
 *                              string or a non-string input is a 400. The
 *                              inputs' text honours [status], [fail],
 *                              [retry-after], [delay], [stall] and [close]
 *                              (the non-streaming forms).
 *   GET  /_requests            JSON array of every request received since the
 *                              start or the last reset, oldest first, except
 *                              the /_ endpoints: {"method":"POST","path":
 *                              <target, query included>,"headers":{<lower-case
 *                              name>:<value>, repeated headers joined with
 *                              ", ">},"body":<parsed JSON, or null when the body
 *                              is empty or not valid JSON>}. The list grows
 *                              until /_reset.
 *   POST /_reset               clears the request list, the request numbering
 *                              and every [fail] counter; 200 {"ok":true}
 *   GET  /_health              200 text/plain "ok"
 *   anything else              404 {"error":{"message":"Unknown request URL:
 *                              <METHOD> <path>","type":"invalid_request_error",
 *                              "param":null,"code":"unknown_url"}} (recorded)
 *
 * Numbering: requests outside /_ are numbered 1, 2, ... (their position in
 * /_requests). Request n answers with id "chatcmpl-mock-<n>" (OpenAI) or
 * "msg_mock_<n>" (Anthropic).
 *
 * Request validation (400, in the endpoint's own error shape): the body must
 * be valid UTF-8 JSON (an object); "model" must be a non-empty string;
 * "messages" a non-empty array of objects with a string "role"; Anthropic also
 * requires a numeric "max_tokens"; embeddings require "input".
 *
 * Which text scripts the reply: the text of the LAST user message. OpenAI:
 * the last message with role "user"; its content string, or its
 * {"type":"text"} parts joined with "\n". Anthropic: the last user message
 * that has text (a string content, or "text" blocks joined with "\n"); user
 * messages carrying only tool_result blocks are skipped, just as OpenAI's
 * role "tool" messages are not user messages. Directives (below) are taken
 * out of that text; what remains, trimmed, is the "prompt text" (inner
 * whitespace kept as is). Text in [brackets] that is not a well-formed
 * directive stays in the prompt text.
 *
 * Tool rounds: when the conversation ends with tool results (OpenAI: the last
 * message has role "tool"; Anthropic: the last message is a user message with
 * tool_result blocks), [tool:...] directives are ignored — the tool round is
 * over — and the default reply becomes "mock: tool results: <r1> | <r2>..."
 * (the text of each trailing tool result, in order). So "[reply:done]
 * [tool:f:{}]" calls f first and answers "done" once f's result is sent back.
 * tool_choice "none" (OpenAI) or {"type":"none"} (Anthropic) also disables
 * tool directives.
 *
 * Directives (several may appear; each is one bracketed token):
 *   [reply:TEXT]        reply exactly TEXT (up to the first "]"); several are
 *                       concatenated in order.
 *   [tool:NAME:{JSON}]  a tool call to NAME ([A-Za-z0-9_-]+) with that JSON
 *                       object as its arguments, kept byte for byte as the
 *                       OpenAI "arguments" string and the Anthropic
 *                       partial_json pieces (braces nest; strings may hold
 *                       braces and "]"). Several make parallel calls, in
 *                       order, with ids call_1, call_2... (OpenAI) or toolu_1,
 *                       toolu_2... (Anthropic), numbered per response. With
 *                       any tool call there is no text content: OpenAI
 *                       content null and finish_reason "tool_calls", Anthropic
 *                       stop_reason "tool_use".
 *   [status:CODE]       answer status CODE (400..599) with the provider's error
 *                       body, message "mock error CODE":
 *                       OpenAI {"error":{"message","type","param":null,"code"}}
 *                         400 invalid_request_error / bad_request
 *                         401 invalid_request_error / invalid_api_key
 *                         403 permission_error      / permission_denied
 *                         404 invalid_request_error / model_not_found
 *                         429 rate_limit_exceeded   / rate_limit_exceeded
 *                         500 server_error          / server_error
 *                         503 server_error          / service_unavailable
 *                         529 server_error          / overloaded
 *                         other 4xx invalid_request_error, other 5xx
 *                         server_error, code "mock_error"
 *                       Anthropic {"type":"error","error":{"type","message"}}
 *                         400 invalid_request_error, 401 authentication_error,
 *                         403 permission_error, 404 not_found_error,
 *                         413 request_too_large, 429 rate_limit_error,
 *                         500 api_error, 529 overloaded_error, other 4xx
 *                         invalid_request_error, other 5xx api_error
 *                       429, 503 and 529 carry "Retry-After: 1".
 *   [echo-key]          with [status:CODE]: the error message ends with
 *                       ": key " and the request's key, each character
 *                       written as a \uXXXX escape.
 *   [retry-after:S]     error responses carry "Retry-After: S" instead (any
 *                       status; S is any text without "]", e.g. 0, 2 or an
 *                       HTTP date); [retry-after:none] sends no Retry-After.
 *   [fail:N:CODE:KEY]   the first N requests carrying this directive with this
 *                       KEY fail like [status:CODE]; later ones are answered
 *                       normally. One counter per KEY, cleared by /_reset.
 *                       CODE may also be "close" (close the connection without
 *                       any response) or "stall" (behave like [stall]).
 *   [delay:MS]          wait MS ms (<= 600000) before answering (errors too).
 *   [interval:MS]       streaming: wait MS ms between SSE events (default: all
 *                       events are written at once).
 *   [stall]             send the response headers (non-streaming: with the
 *                       Content-Length of the body that never comes;
 *                       streaming: and the first event) and then nothing until
 *                       the client goes away.
 *   [close]             non-streaming: close the connection without any
 *                       response. Streaming: send everything up to the second
 *                       content event (OpenAI content/tool-call delta chunk,
 *                       Anthropic content_block_delta), then close without the
 *                       terminating events (and without the last chunk).
 *   [chunks:N]          streaming text: split the reply into N content deltas
 *                       of near-equal size (never splitting a UTF-8 character;
 *                       fewer when the reply has fewer characters). Default:
 *                       one delta per word, each word with the whitespace
 *                       before it ("a b c" -> "a", " b", " c").
 *   [stream-error]      streaming: after the first content event, send an
 *                       error and end the stream (no finish events). Anthropic:
 *                       "event: error" with data {"type":"error","error":
 *                       {"type":"overloaded_error","message":"Overloaded"}};
 *                       OpenAI: data {"error":{"message":"mock stream error",
 *                       "type":"server_error","param":null,"code":null}} (no
 *                       [DONE]). The HTTP response itself ends properly.
 * Precedence: a scripted error (status/fail) wins over everything but
 * [delay] and [retry-after]; [stall], [close] and [stream-error] apply to
 * successful answers only; [stall] wins over [close].
 *
 * The reply text, when there are no tool calls: [reply:...] if given; else in
 * JSON mode (OpenAI response_format {"type":"json_object"}) the object
 * {"echo":"<prompt text>"} as compact JSON text; else after a tool round
 * "mock: tool results: ..." (above); else "mock: <prompt text>".
 * max_tokens (OpenAI also max_completion_tokens): a text reply of more words
 * is cut after that many words, with finish_reason "length" / stop_reason
 * "max_tokens".
 *
 * Usage: input tokens = whitespace-separated words over the text of every
 * message (string contents, text parts and blocks, tool message contents and
 * tool_result contents) plus the Anthropic system prompt. Output tokens =
 * words in the reply text, or for tool calls 1 per call plus the words of its
 * JSON text.
 *
 * OpenAI, non-streaming: {"id":"chatcmpl-mock-<n>","object":"chat.completion",
 *   "created":<unix time>,"model":<model>,"choices":[{"index":0,"message":
 *   {"role":"assistant","content":<text or null>[,"tool_calls":[{"id":"call_1",
 *   "type":"function","function":{"name":N,"arguments":"<JSON text>"}}]]},
 *   "logprobs":null,"finish_reason":"stop"|"tool_calls"|"length"}],"usage":
 *   {"prompt_tokens":I,"completion_tokens":O,"total_tokens":I+O}}
 * OpenAI, streaming ("stream":true): Content-Type: text/event-stream; events
 *   "data: <chunk>\n\n", every chunk {"id","object":"chat.completion.chunk",
 *   "created","model","choices":[{"index":0,"delta":D,"logprobs":null,
 *   "finish_reason":null}]} (plus "usage":null when usage is asked for):
 *     D = {"role":"assistant","content":""}
 *     D = {"content":"<piece>"}                      one per piece, or per call i:
 *     D = {"tool_calls":[{"index":i,"id":"call_<i+1>","type":"function",
 *          "function":{"name":N,"arguments":""}}]}
 *     D = {"tool_calls":[{"index":i,"function":{"arguments":"<piece>"}}]}
 *          max(3, ceil(bytes/16)) pieces of near-equal length (fewer only
 *          when the JSON text has fewer than 3 characters, e.g. "{}")
 *     D = {} with "finish_reason" set
 *   then, with "stream_options":{"include_usage":true}, a chunk with
 *   "choices":[] and "usage":{...}; then "data: [DONE]\n\n".
 * Anthropic, non-streaming: {"id":"msg_mock_<n>","type":"message","role":
 *   "assistant","model":<model>,"content":[{"type":"text","text":T}] or
 *   [{"type":"tool_use","id":"toolu_1","name":N,"input":{...}},...],
 *   "stop_reason":"end_turn"|"tool_use"|"max_tokens","stop_sequence":null,
 *   "usage":{"input_tokens":I,"output_tokens":O}}
 * Anthropic, streaming: events "event: <type>\ndata: <JSON with that
 *   "type">\n\n":
 *     message_start        {"type":"message_start","message":{<as above with
 *                          "content":[],"stop_reason":null,"usage":
 *                          {"input_tokens":I,"output_tokens":1}>}}
 *   per content block i (one text block, or one tool_use block per call):
 *     content_block_start  {"type":"content_block_start","index":i,
 *                          "content_block":{"type":"text","text":""} or
 *                          {"type":"tool_use","id","name","input":{}}}
 *     ping                 {"type":"ping"}  (once, after the first block start)
 *     content_block_delta  {"type":"content_block_delta","index":i,"delta":
 *                          {"type":"text_delta","text":"<piece>"}} per piece,
 *                          or for tool_use first {"type":"input_json_delta",
 *                          "partial_json":""} then >= 3 pieces as for OpenAI
 *     content_block_stop   {"type":"content_block_stop","index":i}
 *   then
 *     message_delta        {"type":"message_delta","delta":{"stop_reason":R,
 *                          "stop_sequence":null},"usage":{"output_tokens":O}}
 *     message_stop         {"type":"message_stop"}
 *
 * Every string this server emits is valid UTF-8 (request bodies must be;
 * header bytes that are not become U+FFFD). Out of memory aborts.
 */

#include <cjson/cJSON.h>
#include <ctype.h>
#include <http_parser.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define READ_BUF_SZ  (64 * 1024)
#define URL_MAX      (8 * 1024)
#define BODY_MAX     (256u * 1024 * 1024)
#define PENDING_MAX  (1024 * 1024)  /* stop reading while busy beyond this */
#define MS_MAX       600000L
#define CHUNKS_MAX   100000L
#define FAIL_CLOSE   (-1)           /* [fail:N:close:KEY] */
#define FAIL_STALL   (-2)           /* [fail:N:stall:KEY] */

/* ------------------------------------------------------------------ */
/* memory, growable strings, UTF-8                                     */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("mockllm: out of memory\n", stderr);
        abort();
    }
    return q;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = xrealloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* A growable byte string, always NUL-terminated once it holds anything. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void sb_add(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_adds(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static const char *sb_str(const sbuf *b)
{
    return b->p ? b->p : "";
}

static void sb_clear(sbuf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = 0;
}

static void sb_free(sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes there
 * are not valid UTF-8 (overlongs, surrogates, > U+10FFFF, NUL). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char ch = s[0];
    if (ch < 0x80)
        return ch ? 1 : 0;
    size_t need;
    uint32_t cp, min;
    if (ch >= 0xC2 && ch <= 0xDF) { need = 1; cp = ch & 0x1F; min = 0x80; }
    else if (ch >= 0xE0 && ch <= 0xEF) { need = 2; cp = ch & 0x0F; min = 0x800; }
    else if (ch >= 0xF0 && ch <= 0xF4) { need = 3; cp = ch & 0x07; min = 0x10000; }
    else return 0;
    if (need >= n)
        return 0;
    for (size_t j = 1; j <= need; j++) {
        if ((s[j] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need + 1;
}

static int utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

/* Appends s with every invalid byte replaced by U+FFFD. */
static void utf8_sanitize(sbuf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k) {
            sb_add(out, s + i, k);
            i += k;
        } else {
            sb_add(out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
}

/* Index just after the UTF-8 character starting at i (input is valid). */
static size_t cp_next(const char *s, size_t n, size_t i)
{
    i++;
    while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
        i++;
    return i;
}

/* ------------------------------------------------------------------ */
/* words and pieces                                                    */

static int is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static long count_words(const char *s, size_t n)
{
    long w = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && is_ws(s[i]))
            i++;
        if (i >= n)
            break;
        w++;
        while (i < n && !is_ws(s[i]))
            i++;
    }
    return w;
}

/* Length of the prefix of s that holds its first k words. */
static size_t words_prefix(const char *s, size_t n, long k)
{
    long w = 0;
    size_t i = 0;
    while (i < n && w < k) {
        while (i < n && is_ws(s[i]))
            i++;
        if (i >= n)
            break;
        while (i < n && !is_ws(s[i]))
            i++;
        w++;
    }
    return w < k ? n : i;
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_ws(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_ws((*s)[*n - 1]))
        (*n)--;
}

typedef struct span {
    size_t off, len;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static void spans_add(spans *sp, size_t off, size_t len)
{
    if (sp->n == sp->cap) {
        sp->cap = sp->cap ? sp->cap * 2 : 16;
        sp->v = xrealloc(sp->v, sp->cap * sizeof *sp->v);
    }
    sp->v[sp->n].off = off;
    sp->v[sp->n].len = len;
    sp->n++;
}

/* One piece per word, each with the whitespace before it; trailing
 * whitespace goes with the last piece. */
static void split_words(const char *s, size_t n, spans *out)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && is_ws(s[j]))
            j++;
        while (j < n && !is_ws(s[j]))
            j++;
        size_t k = j;
        while (k < n && is_ws(s[k]))
            k++;
        if (k == n)
            j = n;
        spans_add(out, i, j - i);
        i = j;
    }
}

/* `parts` pieces of near-equal length in characters (fewer when s has fewer
 * characters); never splits a UTF-8 character. */
static void split_even(const char *s, size_t n, size_t parts, spans *out)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i = cp_next(s, n, i))
        chars++;
    if (parts > chars)
        parts = chars;
    size_t i = 0, ci = 0;
    for (size_t k = 0; k < parts; k++) {
        size_t stop = (k + 1) * chars / parts, start = i;
        while (ci < stop) {
            i = cp_next(s, n, i);
            ci++;
        }
        spans_add(out, start, i - start);
    }
}

/* Pieces of a tool call's JSON text: at least 3, one per ~16 bytes. */
static void split_args(const char *s, size_t n, spans *out)
{
    size_t parts = (n + 15) / 16;
    split_even(s, n, parts < 3 ? 3 : parts, out);
}

/* ------------------------------------------------------------------ */
/* global state                                                        */

typedef struct failctr {
    struct failctr *next;
    long count;
    char key[];
} failctr;

struct conn;

static uv_loop_t g_loop;
static uv_tcp_t g_server;
static uv_signal_t g_sigterm, g_sigint;
static uv_pipe_t g_stdin;
static int g_stdin_active;
static int g_stopping;
static struct conn *g_conns;
static http_parser_settings g_settings;
static char g_rbuf[READ_BUF_SZ];

static cJSON *g_log;        /* array of recorded requests */
static int g_seq;           /* requests recorded since start or reset */
static failctr *g_fails;    /* [fail] counters by KEY */

static long *fail_counter(const char *key, size_t klen)
{
    for (failctr *f = g_fails; f; f = f->next)
        if (strlen(f->key) == klen && memcmp(f->key, key, klen) == 0)
            return &f->count;
    failctr *f = xrealloc(NULL, sizeof *f + klen + 1);
    memcpy(f->key, key, klen);
    f->key[klen] = 0;
    f->count = 0;
    f->next = g_fails;
    g_fails = f;
    return &f->count;
}

static void reset_state(void)
{
    cJSON_Delete(g_log);
    g_log = cJSON_CreateArray();
    g_seq = 0;
    while (g_fails) {
        failctr *f = g_fails;
        g_fails = f->next;
        free(f);
    }
}

/* ------------------------------------------------------------------ */
/* connections and response plans                                      */

enum end_mode {
    END_FINISH,  /* the whole response, then keep-alive */
    END_STALL,   /* stop after `limit` events, wait for the client to go */
    END_CLOSE,   /* stop after `limit` events and close the connection */
    END_DROP     /* close without sending anything */
};

/* What to send for one request. Built at once when the request completes;
 * sent by resp_step (after the delay, and with intervals between events). */
typedef struct plan {
    int status;
    const char *ctype;
    sbuf headers;          /* extra header lines, each ending in \r\n */
    sbuf body;             /* JSON body, or all SSE events back to back */
    int streaming;
    size_t *ev_end;        /* streaming: end offset of each event in body */
    unsigned char *ev_content; /* streaming: is the event a content event */
    size_t nev, evcap;
    size_t limit;          /* events to send */
    enum end_mode end;
    long delay, interval;
} plan;

enum rstage { RS_IDLE, RS_DELAY, RS_HEAD, RS_EVENTS, RS_END, RS_STALL };

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shut;
    http_parser parser;
    struct conn *prev, *next;
    int handles;       /* libuv handles still to be closed before free */
    int inflight;      /* queued uv_write requests */
    int hstate;        /* header capture: 0 none, 1 in a name, 2 in a value */
    unsigned closing : 1, timer_init : 1, timer_fired : 1, busy : 1, start_async : 1,
        keep_alive : 1, http10 : 1, close_after : 1, peer_eof : 1, read_stopped : 1,
        in_drain : 1, chunked : 1, url_overflow : 1, body_overflow : 1;
    enum rstage rstage;
    size_t ev;         /* next event to send */
    sbuf pending;      /* bytes received while a response is in progress */
    sbuf url, hname, hval, body;
    cJSON *headers;    /* the current request's headers */
    plan plan;
} conn;

typedef struct wreq {
    uv_write_t req;
    conn *c;
    char data[];
} wreq;

static void resp_step(conn *c);
static void conn_drain(conn *c);

static void plan_clear(plan *p)
{
    p->status = 200;
    p->ctype = NULL;
    sb_clear(&p->headers);
    sb_clear(&p->body);
    p->streaming = 0;
    p->nev = 0;
    p->limit = 0;
    p->end = END_FINISH;
    p->delay = p->interval = 0;
}

static void plan_free(plan *p)
{
    sb_free(&p->headers);
    sb_free(&p->body);
    free(p->ev_end);
    free(p->ev_content);
}

/* Sets a complete JSON response; takes ownership of obj. */
static void plan_json(plan *p, int status, cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s) {
        fputs("mockllm: out of memory\n", stderr);
        abort();
    }
    p->status = status;
    p->ctype = "application/json";
    p->streaming = 0;
    sb_clear(&p->body);
    sb_adds(&p->body, s);
    cJSON_free(s);
}

static void plan_text(plan *p, int status, const char *text)
{
    p->status = status;
    p->ctype = "text/plain";
    p->streaming = 0;
    sb_clear(&p->body);
    sb_adds(&p->body, text);
}

/* Appends one SSE event: "event: <name>\n" (when name) "data: <obj>\n\n".
 * Takes ownership of obj; obj NULL means the literal data "[DONE]". */
static void plan_event(plan *p, const char *name, cJSON *obj, int content)
{
    if (p->nev == p->evcap) {
        p->evcap = p->evcap ? p->evcap * 2 : 32;
        p->ev_end = xrealloc(p->ev_end, p->evcap * sizeof *p->ev_end);
        p->ev_content = xrealloc(p->ev_content, p->evcap);
    }
    if (name)
        sb_printf(&p->body, "event: %s\n", name);
    sb_adds(&p->body, "data: ");
    if (obj) {
        char *s = cJSON_PrintUnformatted(obj);
        cJSON_Delete(obj);
        if (!s)
            abort();
        sb_adds(&p->body, s);
        cJSON_free(s);
    } else {
        sb_adds(&p->body, "[DONE]");
    }
    sb_adds(&p->body, "\n\n");
    p->ev_end[p->nev] = p->body.len;
    p->ev_content[p->nev] = (unsigned char)content;
    p->nev++;
}

/* Index just after the k-th (1-based) content event, or after the last
 * content event when there are fewer; 1 when there is none. */
static size_t plan_after_content(const plan *p, size_t k)
{
    size_t seen = 0, cut = 0;
    for (size_t i = 0; i < p->nev; i++) {
        if (p->ev_content[i]) {
            cut = i + 1;
            if (++seen == k)
                break;
        }
    }
    return cut ? cut : 1;
}

/* Drops every event from index k on. */
static void plan_truncate(plan *p, size_t k)
{
    if (k >= p->nev)
        return;
    p->nev = k;
    p->body.len = k ? p->ev_end[k - 1] : 0;
    if (p->body.p)
        p->body.p[p->body.len] = 0;
}

/* ------------------------------------------------------------------ */
/* connection lifetime (as in testserver.c)                            */

static void on_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sb_free(&c->pending);
    sb_free(&c->url);
    sb_free(&c->hname);
    sb_free(&c->hval);
    sb_free(&c->body);
    cJSON_Delete(c->headers);
    plan_free(&c->plan);
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
    if (!c->closing && status < 0)
        conn_close_now(c);
}

/* Sends data in order with everything sent before: written at once when the
 * socket takes it, otherwise the rest is copied and queued. */
static void conn_send(conn *c, const char *data, size_t len)
{
    if (c->closing || len == 0)
        return;
    if (c->inflight == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r >= 0) {
            data += r;
            len -= (size_t)r;
            if (len == 0)
                return;
        } else if (r != UV_EAGAIN) {
            conn_close_now(c);
            return;
        }
    }
    wreq *w = xrealloc(NULL, sizeof *w + len);
    w->c = c;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w);
        conn_close_now(c);
        return;
    }
    c->inflight++;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default:
        if (status < 300) return "Success";
        if (status < 400) return "Redirection";
        if (status < 500) return "Client Error";
        return "Server Error";
    }
}

/* Status line and headers. clen < 0: no Content-Length. */
static void head_into(conn *c, sbuf *out, long long clen)
{
    plan *p = &c->plan;
    sb_printf(out, "HTTP/1.1 %d %s\r\n", p->status, reason(p->status));
    if (p->ctype)
        sb_printf(out, "Content-Type: %s\r\n", p->ctype);
    if (clen >= 0)
        sb_printf(out, "Content-Length: %lld\r\n", clen);
    if (c->chunked)
        sb_adds(out, "Transfer-Encoding: chunked\r\n");
    if (p->streaming)
        sb_adds(out, "Cache-Control: no-cache\r\n");
    sb_add(out, p->headers.p, p->headers.len);
    if (c->close_after)
        sb_adds(out, "Connection: close\r\n");
    else if (c->http10)
        sb_adds(out, "Connection: keep-alive\r\n");
    sb_adds(out, "\r\n");
}

/* ------------------------------------------------------------------ */
/* sending a plan                                                      */

static void finish_response(conn *c)
{
    c->busy = 0;
    c->rstage = RS_IDLE;
    if (c->close_after) {
        conn_close_graceful(c);
        return;
    }
    conn_drain(c);
}

static void on_timer(uv_timer_t *t)
{
    conn *c = t->data;
    c->timer_fired = 1;
    resp_step(c);
}

static void start_timer(conn *c, long ms)
{
    if (!c->timer_init) {
        uv_timer_init(&g_loop, &c->timer);
        c->timer.data = c;
        c->timer_init = 1;
        c->handles++;
    }
    c->timer_fired = 0;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

/* Appends event k of the plan, framed as a chunk when chunked. */
static void frame_event(conn *c, sbuf *out, size_t k)
{
    plan *p = &c->plan;
    size_t start = k ? p->ev_end[k - 1] : 0, len = p->ev_end[k] - start;
    if (c->chunked)
        sb_printf(out, "%zx\r\n", len);
    sb_add(out, p->body.p + start, len);
    if (c->chunked)
        sb_adds(out, "\r\n");
}

static void resp_step(conn *c)
{
    plan *p = &c->plan;
    sbuf out = {0};
    for (;;) {
        if (c->closing || !c->busy)
            break;
        if (c->rstage == RS_DELAY) {
            if (p->delay > 0 && !c->timer_fired) {
                start_timer(c, p->delay);
                break;
            }
            c->rstage = RS_HEAD;
        } else if (c->rstage == RS_HEAD) {
            if (p->end == END_DROP) {
                conn_close_graceful(c);
                break;
            }
            sb_clear(&out);
            if (!p->streaming) {
                head_into(c, &out, (long long)p->body.len);
                if (p->end != END_STALL)
                    sb_add(&out, p->body.p, p->body.len);
                conn_send(c, out.p, out.len);
                c->rstage = p->end == END_STALL ? RS_STALL : RS_END;
                continue;
            }
            if (c->http10)
                c->close_after = 1;
            else
                c->chunked = 1;
            head_into(c, &out, -1);
            conn_send(c, out.p, out.len);
            c->ev = 0;
            c->rstage = RS_EVENTS;
        } else if (c->rstage == RS_EVENTS) {
            if (c->ev >= p->limit) {
                c->rstage = RS_END;
                continue;
            }
            if (c->ev > 0 && p->interval > 0 && !c->timer_fired) {
                start_timer(c, p->interval);
                break;
            }
            c->timer_fired = 0;
            size_t last = p->interval > 0 ? c->ev + 1 : p->limit;
            sb_clear(&out);
            for (; c->ev < last; c->ev++)
                frame_event(c, &out, c->ev);
            conn_send(c, out.p, out.len);
        } else if (c->rstage == RS_END) {
            if (p->streaming && p->end == END_STALL) {
                c->rstage = RS_STALL;
                continue;
            }
            if (p->streaming && p->end == END_CLOSE) {
                conn_close_graceful(c);
                break;
            }
            if (c->chunked)
                conn_send(c, "0\r\n\r\n", 5);
            finish_response(c);
            break;
        } else { /* RS_STALL: idle until the client goes away; RS_IDLE */
            break;
        }
    }
    sb_free(&out);
}

/* ------------------------------------------------------------------ */
/* directives                                                          */

typedef struct toolcall {
    char *name;
    char *args;   /* the JSON object text as written */
} toolcall;

typedef struct failspec {
    long n;
    int code;     /* status, FAIL_CLOSE or FAIL_STALL */
    const char *key;
    size_t klen;
} failspec;

typedef struct script {
    sbuf text;       /* the scripting text; fail keys point into it */
    sbuf prompt;     /* text outside directives (untrimmed) */
    int has_reply;
    sbuf reply;
    toolcall *tools;
    size_t ntools;
    failspec *fails;
    size_t nfails;
    int status;
    long delay, interval, chunks;
    int stall, close, stream_error;
    int echo_key;    /* [echo-key] */
    int retry_set;   /* [retry-after:...] seen */
    char *retry;     /* its value; NULL for "none" */
} script;

static void script_free(script *sc)
{
    sb_free(&sc->text);
    sb_free(&sc->prompt);
    sb_free(&sc->reply);
    for (size_t i = 0; i < sc->ntools; i++) {
        free(sc->tools[i].name);
        free(sc->tools[i].args);
    }
    free(sc->tools);
    free(sc->fails);
    free(sc->retry);
}

/* Strict decimal: 1..9 digits, value <= max. */
static int parse_num(const char *s, size_t n, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t k = 0; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -1;
        v = v * 10 + (s[k] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_status(const char *s, size_t n, int *out)
{
    long v;
    if (parse_num(s, n, 599, &v) != 0 || v < 400)
        return -1;
    *out = (int)v;
    return 0;
}

/* Length of the JSON object text at s (s[0] == '{'), found by brace depth
 * outside strings; 0 when it does not close. */
static size_t scan_json_object(const char *s, size_t n)
{
    int depth = 0, in_str = 0, esc = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (ch == '\\')
                esc = 1;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '{') {
            depth++;
        } else if (ch == '}' && --depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

static int is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
}

/* Reads the directive at s (s[0] == '['); returns the bytes it spans, or 0
 * when the text there is not a well-formed directive. */
static size_t directive(script *sc, const char *s, size_t n)
{
#define IS(lit) (n >= sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)
    if (IS("[tool:")) {
        size_t i = 6;
        while (i < n && is_name_char(s[i]))
            i++;
        if (i == 6 || i + 1 >= n || s[i] != ':' || s[i + 1] != '{')
            return 0;
        size_t name_end = i, js = i + 1;
        size_t jl = scan_json_object(s + js, n - js);
        if (!jl || js + jl >= n || s[js + jl] != ']')
            return 0;
        cJSON *args = cJSON_ParseWithLength(s + js, jl);
        int ok = cJSON_IsObject(args);
        cJSON_Delete(args);
        if (!ok)
            return 0;
        sc->tools = xrealloc(sc->tools, (sc->ntools + 1) * sizeof *sc->tools);
        sc->tools[sc->ntools].name = xstrndup(s + 6, name_end - 6);
        sc->tools[sc->ntools].args = xstrndup(s + js, jl);
        sc->ntools++;
        return js + jl + 1;
    }
    const char *rb = memchr(s, ']', n);
    if (!rb)
        return 0;
    size_t end = (size_t)(rb - s); /* index of the first ']' */
    long v;
    if (IS("[reply:")) {
        sc->has_reply = 1;
        sb_add(&sc->reply, s + 7, end - 7);
    } else if (IS("[status:")) {
        if (parse_status(s + 8, end - 8, &sc->status) != 0)
            return 0;
    } else if (IS("[echo-key]")) {
        sc->echo_key = 1;
    } else if (IS("[delay:")) {
        if (parse_num(s + 7, end - 7, MS_MAX, &sc->delay) != 0)
            return 0;
    } else if (IS("[interval:")) {
        if (parse_num(s + 10, end - 10, MS_MAX, &sc->interval) != 0)
            return 0;
    } else if (IS("[chunks:")) {
        if (parse_num(s + 8, end - 8, CHUNKS_MAX, &v) != 0 || v < 1)
            return 0;
        sc->chunks = v;
    } else if (IS("[stall]")) {
        sc->stall = 1;
    } else if (IS("[close]")) {
        sc->close = 1;
    } else if (IS("[stream-error]")) {
        sc->stream_error = 1;
    } else if (IS("[retry-after:")) {
        const char *a = s + 13;
        size_t al = end - 13;
        if (al == 0)
            return 0;
        for (size_t k = 0; k < al; k++)
            if ((unsigned char)a[k] < 0x20 || a[k] == 0x7f)
                return 0;
        free(sc->retry);
        sc->retry_set = 1;
        sc->retry = al == 4 && memcmp(a, "none", 4) == 0 ? NULL : xstrndup(a, al);
    } else if (IS("[fail:")) {
        /* [fail:N:CODE:KEY] */
        const char *a = s + 6, *e = s + end;
        const char *c1 = memchr(a, ':', (size_t)(e - a));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(e - c1 - 1)) : NULL;
        if (!c2 || c2 + 1 >= e)
            return 0;
        failspec f;
        if (parse_num(a, (size_t)(c1 - a), 1000000000L - 1, &f.n) != 0)
            return 0;
        const char *code = c1 + 1;
        size_t cl = (size_t)(c2 - code);
        if (cl == 5 && memcmp(code, "close", 5) == 0)
            f.code = FAIL_CLOSE;
        else if (cl == 5 && memcmp(code, "stall", 5) == 0)
            f.code = FAIL_STALL;
        else if (parse_status(code, cl, &f.code) != 0)
            return 0;
        f.key = c2 + 1;
        f.klen = (size_t)(e - f.key);
        sc->fails = xrealloc(sc->fails, (sc->nfails + 1) * sizeof *sc->fails);
        sc->fails[sc->nfails++] = f;
    } else {
        return 0;
    }
    return end + 1;
#undef IS
}

/* Takes the directives out of text; the rest goes to sc->prompt. */
static void script_parse(script *sc, const char *text, size_t n)
{
    sb_clear(&sc->text);
    sb_add(&sc->text, text, n); /* fail keys point into this copy */
    const char *s = sc->text.p;
    for (size_t i = 0; i < n;) {
        if (s[i] == '[') {
            size_t k = directive(sc, s + i, n - i);
            if (k) {
                i += k;
                continue;
            }
        }
        sb_add(&sc->prompt, s + i, 1);
        i++;
    }
}

/* ------------------------------------------------------------------ */
/* error responses                                                     */

enum api { API_OPENAI, API_ANTHROPIC };

static void add_retry_after(plan *p, const script *sc, int status)
{
    if (sc && sc->retry_set) {
        if (sc->retry)
            sb_printf(&p->headers, "Retry-After: %s\r\n", sc->retry);
    } else if (status == 429 || status == 503 || status == 529) {
        sb_adds(&p->headers, "Retry-After: 1\r\n");
    }
}

static cJSON *openai_error_obj(const char *msg, const char *type, const char *param,
                               const char *code)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    return o;
}

static cJSON *anthropic_error_obj(const char *type, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "message", msg);
    return o;
}

static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 500: return "api_error";
    case 529: return "overloaded_error";
    default: return status < 500 ? "invalid_request_error" : "api_error";
    }
}

/* An error in the endpoint's own shape (a request the mock refuses). */
static void api_error(conn *c, enum api api, int status, const char *msg, const char *param)
{
    if (api == API_ANTHROPIC)
        plan_json(&c->plan, status, anthropic_error_obj(anthropic_error_type(status), msg));
    else
        plan_json(&c->plan, status,
                  openai_error_obj(msg, status < 500 ? "invalid_request_error" : "server_error",
                                   param, NULL));
}

/* [echo-key]: appends the key the request carried to the error message,
 * every character written as a JSON \u escape, as a careless proxy might:
 * only a decoder sees the key, not a byte search of the body. */
static void echo_key(conn *c, const char *msg)
{
    /* the request's headers are in its record by now: the last one logged */
    const cJSON *rec = cJSON_GetArrayItem(g_log, cJSON_GetArraySize(g_log) - 1);
    const cJSON *headers = cJSON_GetObjectItemCaseSensitive(rec, "headers");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(headers, "authorization");
    const char *key = cJSON_IsString(h) ? h->valuestring : NULL;
    if (key && strncmp(key, "Bearer ", 7) == 0)
        key += 7;
    if (!key) {
        h = cJSON_GetObjectItemCaseSensitive(headers, "x-api-key");
        key = cJSON_IsString(h) ? h->valuestring : "";
    }
    char *at = strstr(c->plan.body.p, msg);
    if (!at)
        return;
    sbuf out = {0};
    size_t head = (size_t)(at - c->plan.body.p) + strlen(msg);
    sb_add(&out, c->plan.body.p, head);
    sb_adds(&out, ": key ");
    for (const unsigned char *k = (const unsigned char *)key; *k; k++)
        sb_printf(&out, "\\u%04x", *k);
    sb_adds(&out, c->plan.body.p + head);
    sb_clear(&c->plan.body);
    sb_add(&c->plan.body, out.p, out.len);
    sb_free(&out);
}

/* The error scripted by [status:CODE] or [fail:N:CODE:KEY]. */
static void scripted_error(conn *c, enum api api, int status, const script *sc)
{
    char msg[32];
    snprintf(msg, sizeof msg, "mock error %d", status);
    if (api == API_ANTHROPIC) {
        plan_json(&c->plan, status, anthropic_error_obj(anthropic_error_type(status), msg));
    } else {
        const char *type, *code;
        switch (status) {
        case 400: type = "invalid_request_error"; code = "bad_request"; break;
        case 401: type = "invalid_request_error"; code = "invalid_api_key"; break;
        case 403: type = "permission_error"; code = "permission_denied"; break;
        case 404: type = "invalid_request_error"; code = "model_not_found"; break;
        case 429: type = "rate_limit_exceeded"; code = "rate_limit_exceeded"; break;
        case 500: type = "server_error"; code = "server_error"; break;
        case 503: type = "server_error"; code = "service_unavailable"; break;
        case 529: type = "server_error"; code = "overloaded"; break;
        default:
            type = status < 500 ? "invalid_request_error" : "server_error";
            code = "mock_error";
        }
        plan_json(&c->plan, status, openai_error_obj(msg, type, NULL, code));
    }
    if (sc->echo_key)
        echo_key(c, msg);
    add_retry_after(&c->plan, sc, status);
}

/* Applies [delay], [status] and [fail]. Returns 1 when the answer is
 * decided (an error, or a dropped connection). */
static int scripted_failure(conn *c, enum api api, script *sc)
{
    c->plan.delay = sc->delay;
    int status = sc->status, action = 0;
    for (size_t i = 0; i < sc->nfails; i++) {
        const failspec *f = &sc->fails[i];
        long *count = fail_counter(f->key, f->klen);
        ++*count;
        if (*count <= f->n && !status && !action) {
            if (f->code > 0)
                status = f->code;
            else
                action = f->code;
        }
    }
    if (status) {
        scripted_error(c, api, status, sc);
        return 1;
    }
    if (action == FAIL_CLOSE) {
        c->plan.end = END_DROP;
        return 1;
    }
    if (action == FAIL_STALL)
        sc->stall = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* chat completions: what to answer                                    */

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int str_is(const cJSON *v, const char *s)
{
    return cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

/* Appends the text of a message content: a string, or the "text" of its
 * {"type":"text"} parts joined with "\n". Returns 1 when there was text. */
static int text_of(const cJSON *content, sbuf *out)
{
    if (cJSON_IsString(content)) {
        sb_adds(out, content->valuestring);
        return 1;
    }
    int any = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = get(part, "text");
        if (str_is(get(part, "type"), "text") && cJSON_IsString(t)) {
            if (any)
                sb_adds(out, "\n");
            sb_adds(out, t->valuestring);
            any = 1;
        }
    }
    return any;
}

/* Appends the text of the tool_result blocks of an Anthropic content,
 * joined with " | ". Returns how many there were. */
static int tool_results_of(const cJSON *content, sbuf *out)
{
    int count = 0;
    const cJSON *part;
    if (!cJSON_IsArray(content))
        return 0;
    cJSON_ArrayForEach(part, content) {
        if (!str_is(get(part, "type"), "tool_result"))
            continue;
        if (out->len)
            sb_adds(out, " | ");
        text_of(get(part, "content"), out);
        count++;
    }
    return count;
}

typedef struct completion {
    enum api api;
    char id[48];
    const char *model;
    double created;
    script sc;
    int tools_allowed, tool_round_done, json_mode, stream, include_usage;
    long max_tokens;   /* -1: none */
    long in_words;
    sbuf results;      /* trailing tool results */
    /* decided by decide() */
    int use_tools, truncated;
    sbuf reply;
    long out_words;
} completion;

static void completion_free(completion *cp)
{
    script_free(&cp->sc);
    sb_free(&cp->results);
    sb_free(&cp->reply);
}

static void decide(completion *cp)
{
    script *sc = &cp->sc;
    cp->use_tools = sc->ntools > 0 && cp->tools_allowed && !cp->tool_round_done;
    if (cp->use_tools) {
        for (size_t i = 0; i < sc->ntools; i++)
            cp->out_words += 1 + count_words(sc->tools[i].args, strlen(sc->tools[i].args));
        return;
    }
    const char *pr = sb_str(&sc->prompt);
    size_t pl = sc->prompt.len;
    trim(&pr, &pl);
    if (sc->has_reply) {
        sb_add(&cp->reply, sb_str(&sc->reply), sc->reply.len);
    } else if (cp->json_mode) {
        char *ps = xstrndup(pr, pl);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "echo", ps);
        char *s = cJSON_PrintUnformatted(o);
        sb_adds(&cp->reply, s);
        cJSON_free(s);
        cJSON_Delete(o);
        free(ps);
    } else if (cp->tool_round_done) {
        sb_adds(&cp->reply, "mock: tool results: ");
        sb_add(&cp->reply, sb_str(&cp->results), cp->results.len);
    } else {
        sb_adds(&cp->reply, "mock: ");
        sb_add(&cp->reply, pr, pl);
    }
    cp->out_words = count_words(sb_str(&cp->reply), cp->reply.len);
    if (cp->max_tokens >= 0 && cp->out_words > cp->max_tokens) {
        cp->reply.len = words_prefix(cp->reply.p, cp->reply.len, cp->max_tokens);
        cp->reply.p[cp->reply.len] = 0;
        cp->out_words = cp->max_tokens;
        cp->truncated = 1;
    }
}

/* Text pieces of a streamed reply. */
static void reply_pieces(const completion *cp, spans *out)
{
    if (cp->sc.chunks > 0)
        split_even(sb_str(&cp->reply), cp->reply.len, (size_t)cp->sc.chunks, out);
    else
        split_words(sb_str(&cp->reply), cp->reply.len, out);
}

/* After the events are built: [stall], [close], [stream-error]. */
static void apply_stream_script(plan *p, const completion *cp)
{
    p->limit = p->nev;
    if (cp->sc.stall) {
        p->limit = 1;
        p->end = END_STALL;
    } else if (cp->sc.close) {
        p->limit = plan_after_content(p, 2);
        p->end = END_CLOSE;
    } else if (cp->sc.stream_error) {
        plan_truncate(p, plan_after_content(p, 1));
        if (cp->api == API_ANTHROPIC) {
            plan_event(p, "error", anthropic_error_obj("overloaded_error", "Overloaded"), 0);
        } else {
            plan_event(p, NULL,
                       openai_error_obj("mock stream error", "server_error", NULL, NULL), 0);
        }
        p->limit = p->nev;
    }
}

/* ---- OpenAI ---- */

static cJSON *openai_usage(const completion *cp)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)cp->in_words);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)cp->out_words);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(cp->in_words + cp->out_words));
    return u;
}

static const char *openai_finish(const completion *cp)
{
    return cp->use_tools ? "tool_calls" : cp->truncated ? "length" : "stop";
}

/* A chat.completion.chunk; takes ownership of delta (NULL: "choices":[]). */
static cJSON *openai_chunk(const completion *cp, cJSON *delta, const char *finish)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", cp->id);
    cJSON_AddStringToObject(o, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(o, "created", cp->created);
    cJSON_AddStringToObject(o, "model", cp->model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    if (delta) {
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", 0);
        cJSON_AddItemToObject(ch, "delta", delta);
        cJSON_AddNullToObject(ch, "logprobs");
        if (finish)
            cJSON_AddStringToObject(ch, "finish_reason", finish);
        else
            cJSON_AddNullToObject(ch, "finish_reason");
        cJSON_AddItemToArray(choices, ch);
    }
    if (cp->include_usage)
        cJSON_AddNullToObject(o, "usage");
    return o;
}

static char *piece(const char *s, const span *sp)
{
    return xstrndup(s + sp->off, sp->len);
}

static void openai_stream(plan *p, const completion *cp)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    plan_event(p, NULL, openai_chunk(cp, d, NULL), 0);
    spans sp = {0};
    if (cp->use_tools) {
        for (size_t i = 0; i < cp->sc.ntools; i++) {
            const toolcall *t = &cp->sc.tools[i];
            char idbuf[32];
            snprintf(idbuf, sizeof idbuf, "call_%zu", i + 1);
            d = cJSON_CreateObject();
            cJSON *tc = cJSON_CreateObject();
            cJSON_AddNumberToObject(tc, "index", (double)i);
            cJSON_AddStringToObject(tc, "id", idbuf);
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", t->name);
            cJSON_AddStringToObject(fn, "arguments", "");
            cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), tc);
            plan_event(p, NULL, openai_chunk(cp, d, NULL), 1);
            sp.n = 0;
            split_args(t->args, strlen(t->args), &sp);
            for (size_t k = 0; k < sp.n; k++) {
                char *pc = piece(t->args, &sp.v[k]);
                d = cJSON_CreateObject();
                tc = cJSON_CreateObject();
                cJSON_AddNumberToObject(tc, "index", (double)i);
                fn = cJSON_AddObjectToObject(tc, "function");
                cJSON_AddStringToObject(fn, "arguments", pc);
                cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), tc);
                plan_event(p, NULL, openai_chunk(cp, d, NULL), 1);
                free(pc);
            }
        }
    } else {
        reply_pieces(cp, &sp);
        for (size_t k = 0; k < sp.n; k++) {
            char *pc = piece(cp->reply.p, &sp.v[k]);
            d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "content", pc);
            plan_event(p, NULL, openai_chunk(cp, d, NULL), 1);
            free(pc);
        }
    }
    free(sp.v);
    plan_event(p, NULL, openai_chunk(cp, cJSON_CreateObject(), openai_finish(cp)), 0);
    if (cp->include_usage) {
        cJSON *o = openai_chunk(cp, NULL, NULL);
        cJSON_ReplaceItemInObjectCaseSensitive(o, "usage", openai_usage(cp));
        plan_event(p, NULL, o, 0);
    }
    plan_event(p, NULL, NULL, 0); /* data: [DONE] */
}

static cJSON *openai_message(const completion *cp)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", cp->id);
    cJSON_AddStringToObject(o, "object", "chat.completion");
    cJSON_AddNumberToObject(o, "created", cp->created);
    cJSON_AddStringToObject(o, "model", cp->model);
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *m = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    if (cp->use_tools) {
        cJSON_AddNullToObject(m, "content");
        cJSON *tcs = cJSON_AddArrayToObject(m, "tool_calls");
        for (size_t i = 0; i < cp->sc.ntools; i++) {
            char idbuf[32];
            snprintf(idbuf, sizeof idbuf, "call_%zu", i + 1);
            cJSON *tc = cJSON_CreateObject();
            cJSON_AddStringToObject(tc, "id", idbuf);
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(tc, "function");
            cJSON_AddStringToObject(fn, "name", cp->sc.tools[i].name);
            cJSON_AddStringToObject(fn, "arguments", cp->sc.tools[i].args);
            cJSON_AddItemToArray(tcs, tc);
        }
    } else {
        cJSON_AddStringToObject(m, "content", sb_str(&cp->reply));
    }
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", openai_finish(cp));
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
    cJSON_AddItemToObject(o, "usage", openai_usage(cp));
    return o;
}

static void openai_chat(conn *c, const cJSON *req, int seq)
{
    const enum api api = API_OPENAI;
    sb_printf(&c->plan.headers, "x-request-id: req_mock_%d\r\n", seq);
    if (!cJSON_IsObject(req)) {
        api_error(c, api, 400, "We could not parse the JSON body of your request. (mock: the body "
                  "must be a JSON object)", NULL);
        return;
    }
    const cJSON *model = get(req, "model"), *messages = get(req, "messages");
    if (!cJSON_IsString(model) || !*model->valuestring) {
        api_error(c, api, 400, "you must provide a model parameter", "model");
        return;
    }
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        api_error(c, api, 400, "'messages' must be a non-empty array", "messages");
        return;
    }
    completion cp = {0};
    cp.api = api;
    cp.model = model->valuestring;
    cp.created = (double)time(NULL);
    cp.max_tokens = -1;
    snprintf(cp.id, sizeof cp.id, "chatcmpl-mock-%d", seq);

    const cJSON *m, *last_user = NULL, *last = NULL;
    sbuf t = {0};
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m) || !cJSON_IsString(get(m, "role"))) {
            sb_free(&t);
            api_error(c, api, 400, "each message must be an object with a string 'role'",
                      "messages");
            return;
        }
        sb_clear(&t);
        text_of(get(m, "content"), &t);
        cp.in_words += count_words(sb_str(&t), t.len);
        if (str_is(get(m, "role"), "user"))
            last_user = m;
        last = m;
    }
    /* trailing role "tool" messages: the tool round is over */
    if (str_is(get(last, "role"), "tool")) {
        cp.tool_round_done = 1;
        const cJSON *first_tool = last;
        for (const cJSON *x = last; x && str_is(get(x, "role"), "tool"); x = x->prev) {
            first_tool = x;
            if (x == messages->child)
                break;
        }
        for (const cJSON *x = first_tool; x; x = x->next) {
            if (cp.results.len)
                sb_adds(&cp.results, " | ");
            text_of(get(x, "content"), &cp.results);
        }
    }
    sb_clear(&t);
    if (last_user)
        text_of(get(last_user, "content"), &t);
    script_parse(&cp.sc, sb_str(&t), t.len);
    sb_free(&t);

    const cJSON *rf = get(req, "response_format"), *so = get(req, "stream_options");
    cp.tools_allowed = !str_is(get(req, "tool_choice"), "none");
    cp.json_mode = str_is(get(rf, "type"), "json_object");
    cp.stream = cJSON_IsTrue(get(req, "stream"));
    cp.include_usage = cp.stream && cJSON_IsTrue(get(so, "include_usage"));
    const cJSON *mt = get(req, "max_completion_tokens");
    if (!cJSON_IsNumber(mt))
        mt = get(req, "max_tokens");
    if (cJSON_IsNumber(mt) && mt->valuedouble >= 0)
        cp.max_tokens = mt->valuedouble < 1e9 ? (long)mt->valuedouble : 1000000000L;

    if (!scripted_failure(c, api, &cp.sc)) {
        decide(&cp);
        plan *p = &c->plan;
        p->interval = cp.sc.interval;
        if (cp.stream) {
            p->status = 200;
            p->ctype = "text/event-stream";
            p->streaming = 1;
            openai_stream(p, &cp);
            apply_stream_script(p, &cp);
        } else {
            plan_json(p, 200, openai_message(&cp));
            if (cp.sc.stall)
                p->end = END_STALL;
            else if (cp.sc.close)
                p->end = END_DROP;
        }
    }
    completion_free(&cp);
}

/* ---- Anthropic ---- */

static const char *anthropic_stop(const completion *cp)
{
    return cp->use_tools ? "tool_use" : cp->truncated ? "max_tokens" : "end_turn";
}

/* The message object; streaming: the message_start form. */
static cJSON *anthropic_message(const completion *cp, int start)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", cp->id);
    cJSON_AddStringToObject(o, "type", "message");
    cJSON_AddStringToObject(o, "role", "assistant");
    cJSON_AddStringToObject(o, "model", cp->model);
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    if (!start && cp->use_tools) {
        for (size_t i = 0; i < cp->sc.ntools; i++) {
            char idbuf[32];
            snprintf(idbuf, sizeof idbuf, "toolu_%zu", i + 1);
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "tool_use");
            cJSON_AddStringToObject(b, "id", idbuf);
            cJSON_AddStringToObject(b, "name", cp->sc.tools[i].name);
            cJSON_AddItemToObject(b, "input", cJSON_Parse(cp->sc.tools[i].args));
            cJSON_AddItemToArray(content, b);
        }
    } else if (!start) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", sb_str(&cp->reply));
        cJSON_AddItemToArray(content, b);
    }
    if (start)
        cJSON_AddNullToObject(o, "stop_reason");
    else
        cJSON_AddStringToObject(o, "stop_reason", anthropic_stop(cp));
    cJSON_AddNullToObject(o, "stop_sequence");
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "input_tokens", (double)cp->in_words);
    cJSON_AddNumberToObject(u, "output_tokens", start ? 1.0 : (double)cp->out_words);
    return o;
}

static cJSON *typed(const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static void anthropic_block_delta(plan *p, size_t index, const char *dtype, const char *field,
                                  const char *text)
{
    cJSON *e = typed("content_block_delta");
    cJSON_AddNumberToObject(e, "index", (double)index);
    cJSON *d = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(d, "type", dtype);
    cJSON_AddStringToObject(d, field, text);
    plan_event(p, "content_block_delta", e, 1);
}

static void anthropic_stream(plan *p, const completion *cp)
{
    cJSON *e = typed("message_start");
    cJSON_AddItemToObject(e, "message", anthropic_message(cp, 1));
    plan_event(p, "message_start", e, 0);
    size_t nblocks = cp->use_tools ? cp->sc.ntools : 1;
    spans sp = {0};
    for (size_t i = 0; i < nblocks; i++) {
        e = typed("content_block_start");
        cJSON_AddNumberToObject(e, "index", (double)i);
        cJSON *b = cJSON_AddObjectToObject(e, "content_block");
        const char *src;
        sp.n = 0;
        if (cp->use_tools) {
            const toolcall *t = &cp->sc.tools[i];
            char idbuf[32];
            snprintf(idbuf, sizeof idbuf, "toolu_%zu", i + 1);
            cJSON_AddStringToObject(b, "type", "tool_use");
            cJSON_AddStringToObject(b, "id", idbuf);
            cJSON_AddStringToObject(b, "name", t->name);
            cJSON_AddObjectToObject(b, "input");
            src = t->args;
            split_args(t->args, strlen(t->args), &sp);
        } else {
            cJSON_AddStringToObject(b, "type", "text");
            cJSON_AddStringToObject(b, "text", "");
            src = sb_str(&cp->reply);
            reply_pieces(cp, &sp);
        }
        plan_event(p, "content_block_start", e, 0);
        if (i == 0)
            plan_event(p, "ping", typed("ping"), 0);
        if (cp->use_tools)
            anthropic_block_delta(p, i, "input_json_delta", "partial_json", "");
        for (size_t k = 0; k < sp.n; k++) {
            char *pc = piece(src, &sp.v[k]);
            if (cp->use_tools)
                anthropic_block_delta(p, i, "input_json_delta", "partial_json", pc);
            else
                anthropic_block_delta(p, i, "text_delta", "text", pc);
            free(pc);
        }
        e = typed("content_block_stop");
        cJSON_AddNumberToObject(e, "index", (double)i);
        plan_event(p, "content_block_stop", e, 0);
    }
    free(sp.v);
    e = typed("message_delta");
    cJSON *d = cJSON_AddObjectToObject(e, "delta");
    cJSON_AddStringToObject(d, "stop_reason", anthropic_stop(cp));
    cJSON_AddNullToObject(d, "stop_sequence");
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(e, "usage"), "output_tokens",
                            (double)cp->out_words);
    plan_event(p, "message_delta", e, 0);
    plan_event(p, "message_stop", typed("message_stop"), 0);
}

static void anthropic_messages(conn *c, const cJSON *req, int seq)
{
    const enum api api = API_ANTHROPIC;
    sb_printf(&c->plan.headers, "request-id: req_mock_%d\r\n", seq);
    if (!cJSON_IsObject(req)) {
        api_error(c, api, 400, "mock: the request body must be a JSON object", NULL);
        return;
    }
    const cJSON *model = get(req, "model"), *messages = get(req, "messages");
    if (!cJSON_IsString(model) || !*model->valuestring) {
        api_error(c, api, 400, "model: Field required", NULL);
        return;
    }
    if (!cJSON_IsNumber(get(req, "max_tokens"))) {
        api_error(c, api, 400, "max_tokens: Field required", NULL);
        return;
    }
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0) {
        api_error(c, api, 400, "messages: Field required (a non-empty array)", NULL);
        return;
    }
    completion cp = {0};
    cp.api = api;
    cp.model = model->valuestring;
    double mt = get(req, "max_tokens")->valuedouble;
    cp.max_tokens = mt < 0 ? -1 : mt < 1e9 ? (long)mt : 1000000000L;
    snprintf(cp.id, sizeof cp.id, "msg_mock_%d", seq);

    sbuf t = {0};
    text_of(get(req, "system"), &t);
    cp.in_words = count_words(sb_str(&t), t.len);
    const cJSON *m, *script_msg = NULL, *last = NULL;
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m) || !cJSON_IsString(get(m, "role"))) {
            sb_free(&t);
            api_error(c, api, 400, "messages: each message must be an object with a role", NULL);
            return;
        }
        sb_clear(&t);
        int has_text = text_of(get(m, "content"), &t);
        tool_results_of(get(m, "content"), &t);
        cp.in_words += count_words(sb_str(&t), t.len);
        if (has_text && str_is(get(m, "role"), "user"))
            script_msg = m;
        last = m;
    }
    if (str_is(get(last, "role"), "user") && tool_results_of(get(last, "content"), &cp.results))
        cp.tool_round_done = 1;
    sb_clear(&t);
    if (script_msg)
        text_of(get(script_msg, "content"), &t);
    script_parse(&cp.sc, sb_str(&t), t.len);
    sb_free(&t);

    cp.tools_allowed = !str_is(get(get(req, "tool_choice"), "type"), "none");
    cp.stream = cJSON_IsTrue(get(req, "stream"));

    if (!scripted_failure(c, api, &cp.sc)) {
        decide(&cp);
        plan *p = &c->plan;
        p->interval = cp.sc.interval;
        if (cp.stream) {
            p->status = 200;
            p->ctype = "text/event-stream";
            p->streaming = 1;
            anthropic_stream(p, &cp);
            apply_stream_script(p, &cp);
        } else {
            plan_json(p, 200, anthropic_message(&cp, 0));
            if (cp.sc.stall)
                p->end = END_STALL;
            else if (cp.sc.close)
                p->end = END_DROP;
        }
    }
    completion_free(&cp);
}

/* ---- embeddings ---- */

static void embed_vector(const char *s, size_t n, cJSON *out)
{
    double v[8] = {0}, norm = 0;
    unsigned prev = ' ';
    for (size_t i = 0; i <= n; i++) {
        unsigned cur = i < n ? (unsigned)tolower((unsigned char)s[i]) : ' ';
        uint32_t h = 2166136261u;
        h = (h ^ prev) * 16777619u;
        h = (h ^ cur) * 16777619u;
        v[h % 8] += 1.0;
        prev = cur;
    }
    for (int k = 0; k < 8; k++)
        norm += v[k] * v[k];
    norm = sqrt(norm);
    for (int k = 0; k < 8; k++)
        cJSON_AddItemToArray(out, cJSON_CreateNumber(round(v[k] / norm * 1e6) / 1e6));
}

static void embeddings(conn *c, const cJSON *req)
{
    const enum api api = API_OPENAI;
    if (!cJSON_IsObject(req)) {
        api_error(c, api, 400, "We could not parse the JSON body of your request. (mock: the body "
                  "must be a JSON object)", NULL);
        return;
    }
    const cJSON *model = get(req, "model"), *input = get(req, "input"), *x;
    if (!cJSON_IsString(model) || !*model->valuestring) {
        api_error(c, api, 400, "you must provide a model parameter", "model");
        return;
    }
    int ok = cJSON_IsString(input) || (cJSON_IsArray(input) && cJSON_GetArraySize(input) > 0);
    if (ok && cJSON_IsArray(input))
        cJSON_ArrayForEach(x, input) ok = ok && cJSON_IsString(x) && *x->valuestring;
    if (!ok || (cJSON_IsString(input) && !*input->valuestring)) {
        api_error(c, api, 400, "'input' must be a non-empty string or a non-empty array of "
                  "non-empty strings", "input");
        return;
    }
    /* the failure directives work here too */
    script sc = {0};
    sbuf all = {0};
    if (cJSON_IsString(input)) {
        sb_adds(&all, input->valuestring);
    } else {
        cJSON_ArrayForEach(x, input) {
            sb_adds(&all, x->valuestring);
            sb_adds(&all, "\n");
        }
    }
    script_parse(&sc, all.p, all.len);
    if (!scripted_failure(c, api, &sc)) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "object", "list");
        cJSON *data = cJSON_AddArrayToObject(o, "data");
        long words = 0;
        int index = 0;
        const cJSON *first = cJSON_IsString(input) ? input : input->child;
        for (x = first; x; x = cJSON_IsString(input) ? NULL : x->next) {
            size_t len = strlen(x->valuestring);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "object", "embedding");
            cJSON_AddNumberToObject(e, "index", index++);
            embed_vector(x->valuestring, len, cJSON_AddArrayToObject(e, "embedding"));
            cJSON_AddItemToArray(data, e);
            words += count_words(x->valuestring, len);
        }
        cJSON_AddStringToObject(o, "model", model->valuestring);
        cJSON *u = cJSON_AddObjectToObject(o, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", (double)words);
        cJSON_AddNumberToObject(u, "total_tokens", (double)words);
        plan_json(&c->plan, 200, o);
        if (sc.stall)
            c->plan.end = END_STALL;
        else if (sc.close)
            c->plan.end = END_DROP;
    }
    sb_free(&all);
    script_free(&sc);
}

/* ------------------------------------------------------------------ */
/* request dispatch                                                    */

/* Records the request; returns its parsed body (owned by the log) or NULL. */
static const cJSON *record(conn *c, const char *method)
{
    cJSON *r = cJSON_CreateObject();
    sbuf path = {0};
    utf8_sanitize(&path, c->url.p, c->url.len);
    cJSON_AddStringToObject(r, "method", method);
    cJSON_AddStringToObject(r, "path", sb_str(&path));
    sb_free(&path);
    cJSON_AddItemToObject(r, "headers", c->headers ? c->headers : cJSON_CreateObject());
    c->headers = NULL;
    cJSON *body = NULL;
    if (c->body.len && utf8_valid(c->body.p, c->body.len))
        body = cJSON_ParseWithOpts(c->body.p, NULL, 1);
    cJSON_AddItemToObject(r, "body", body ? body : cJSON_CreateNull());
    cJSON_AddItemToArray(g_log, r);
    return body;
}

/* Called at message complete: builds the plan and starts the response. */
static void dispatch(conn *c)
{
    plan *p = &c->plan;
    plan_clear(p);
    c->chunked = 0;
    c->close_after = !c->keep_alive;
    c->busy = 1;
    c->start_async = 1;
    c->rstage = RS_DELAY;
    c->timer_fired = 0;

    size_t plen = 0;
    while (plen < c->url.len && c->url.p[plen] != '?' && c->url.p[plen] != '#')
        plen++;
    const char *url = sb_str(&c->url);
    const char *method = http_method_str(c->parser.method);
    int get_ = c->parser.method == HTTP_GET, post = c->parser.method == HTTP_POST;
#define PATH_IS(s) (plen == sizeof(s) - 1 && memcmp(url, s, sizeof(s) - 1) == 0)

    if (c->url_overflow) {
        c->close_after = 1;
        api_error(c, API_OPENAI, 414, "mock: request target too long", NULL);
        return;
    }
    if (c->body_overflow) {
        c->close_after = 1;
        api_error(c, API_OPENAI, 413, "mock: request body too large", NULL);
        return;
    }
    if (plen >= 2 && url[0] == '/' && url[1] == '_') {
        if (get_ && PATH_IS("/_health")) {
            plan_text(p, 200, "ok");
        } else if (get_ && PATH_IS("/_requests")) {
            char *s = cJSON_PrintUnformatted(g_log);
            p->status = 200;
            p->ctype = "application/json";
            sb_adds(&p->body, s);
            cJSON_free(s);
        } else if (post && PATH_IS("/_reset")) {
            reset_state();
            plan_json(p, 200, cJSON_Parse("{\"ok\":true}"));
        } else {
            goto not_found;
        }
        return;
    }

    int seq = ++g_seq;
    const cJSON *body = record(c, method);
    int chat = post && PATH_IS("/v1/chat/completions"), msgs = post && PATH_IS("/v1/messages"),
        emb = post && PATH_IS("/v1/embeddings");
    if ((chat || msgs || emb) && !body) {
        if (msgs)
            sb_printf(&p->headers, "request-id: req_mock_%d\r\n", seq);
        else if (chat)
            sb_printf(&p->headers, "x-request-id: req_mock_%d\r\n", seq);
        api_error(c, msgs ? API_ANTHROPIC : API_OPENAI, 400,
                  "We could not parse the JSON body of your request. (mock: the body is empty, "
                  "not valid UTF-8 or not valid JSON)", NULL);
    } else if (chat) {
        openai_chat(c, body, seq);
    } else if (msgs) {
        anthropic_messages(c, body, seq);
    } else if (emb) {
        embeddings(c, body);
    } else {
        goto not_found;
    }
    return;

not_found: {
        sbuf msg = {0};
        sb_printf(&msg, "Unknown request URL: %s ", method);
        utf8_sanitize(&msg, url, plen);
        plan_json(p, 404, openai_error_obj(msg.p, "invalid_request_error", NULL, "unknown_url"));
        sb_free(&msg);
    }
#undef PATH_IS
}

/* Malformed HTTP: 400 and close. */
static void bad_request(conn *c)
{
    static const char body[] =
        "{\"error\":{\"message\":\"mock: malformed HTTP request\",\"type\":"
        "\"invalid_request_error\",\"param\":null,\"code\":null}}";
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    conn_send(c, buf, (size_t)n);
    conn_close_graceful(c);
}

/* ------------------------------------------------------------------ */
/* http_parser callbacks                                               */

static int on_message_begin(http_parser *hp)
{
    conn *c = hp->data;
    sb_clear(&c->url);
    sb_clear(&c->hname);
    sb_clear(&c->hval);
    sb_clear(&c->body);
    cJSON_Delete(c->headers);
    c->headers = cJSON_CreateObject();
    c->hstate = 0;
    c->url_overflow = 0;
    c->body_overflow = 0;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    conn *c = hp->data;
    if (c->url.len + len > URL_MAX)
        c->url_overflow = 1;
    else
        sb_add(&c->url, at, len);
    return 0;
}

/* Adds the header just read: lower-case name, repeated ones joined. */
static void commit_header(conn *c)
{
    sbuf name = {0}, val = {0};
    utf8_sanitize(&name, c->hname.p, c->hname.len);
    for (size_t i = 0; i < name.len; i++)
        name.p[i] = (char)tolower((unsigned char)name.p[i]);
    const cJSON *old = get(c->headers, sb_str(&name));
    if (cJSON_IsString(old)) {
        sb_adds(&val, old->valuestring);
        sb_adds(&val, ", ");
    }
    utf8_sanitize(&val, c->hval.p, c->hval.len);
    if (old)
        cJSON_ReplaceItemInObjectCaseSensitive(c->headers, sb_str(&name),
                                               cJSON_CreateString(sb_str(&val)));
    else
        cJSON_AddStringToObject(c->headers, sb_str(&name), sb_str(&val));
    sb_free(&name);
    sb_free(&val);
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    conn *c = hp->data;
    if (c->hstate == 2)
        commit_header(c);
    if (c->hstate != 1)
        sb_clear(&c->hname);
    c->hstate = 1;
    sb_add(&c->hname, at, len);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    conn *c = hp->data;
    if (c->hstate != 2)
        sb_clear(&c->hval);
    c->hstate = 2;
    sb_add(&c->hval, at, len);
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    conn *c = hp->data;
    if (c->hstate == 2)
        commit_header(c);
    c->hstate = 0;
    const cJSON *expect = get(c->headers, "expect");
    if (cJSON_IsString(expect) && strcasecmp(expect->valuestring, "100-continue") == 0 &&
        hp->http_major == 1 && hp->http_minor >= 1)
        conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    conn *c = hp->data;
    if (c->body.len + len > BODY_MAX)
        c->body_overflow = 1;
    else if (!c->body_overflow)
        sb_add(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    conn *c = hp->data;
    c->keep_alive = http_should_keep_alive(hp) && !hp->upgrade;
    c->http10 = hp->http_major == 1 && hp->http_minor == 0;
    dispatch(c);
    /* the response is sent after the parser returns; hold further input */
    http_parser_pause(hp, 1);
    return 0;
}

/* Parses data; returns the bytes consumed (it stops after each request). */
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
            bad_request(c);
        return len;
    }
    if (c->parser.upgrade && !c->closing && !c->busy) {
        conn_close_graceful(c); /* another protocol follows; we do not speak it */
        return len;
    }
    return n;
}

/* Starts the response dispatch() prepared, if any. */
static void maybe_start(conn *c)
{
    if (c->start_async) {
        c->start_async = 0;
        resp_step(c);
    }
}

static void maybe_resume_read(conn *c);

/* Parses what accumulated while a response was in progress. Re-entrant calls
 * (a response finishing synchronously) just loop again. */
static void conn_drain(conn *c)
{
    if (c->in_drain)
        return;
    c->in_drain = 1;
    while (!c->closing && !c->busy && c->pending.len) {
        size_t n = feed(c, c->pending.p, c->pending.len);
        if (c->closing)
            break;
        memmove(c->pending.p, c->pending.p + n, c->pending.len - n);
        c->pending.len -= n;
        maybe_start(c);
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
        if (!c->busy && c->pending.len == 0) {
            size_t n = feed(c, data, len);
            if (c->closing)
                return;
            data += n;
            len -= n;
        }
        if (len)
            sb_add(&c->pending, data, len);
        if (!c->read_stopped && c->pending.len > PENDING_MAX && c->rstage != RS_STALL) {
            uv_read_stop(s);
            c->read_stopped = 1;
        }
        maybe_start(c); /* may finish at once and drain pending */
    } else if (nread == UV_EOF) {
        c->peer_eof = 1;
        if (!c->busy)
            conn_close_graceful(c);
        else if (c->rstage == RS_STALL)
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
    conn *c = xrealloc(NULL, sizeof *c);
    memset(c, 0, sizeof *c);
    uv_tcp_init(&g_loop, &c->tcp);
    c->tcp.data = c;
    c->handles = 1;
    c->next = g_conns;
    if (g_conns)
        g_conns->prev = c;
    g_conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close_now(c);
        return;
    }
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
    fprintf(f, "usage: mockllm [--port N] [--host ADDR] [--ignore-stdin]\n");
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 0;
    int watch_stdin = 1;
    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--port") == 0 && k + 1 < argc) {
            const char *s = argv[++k];
            if (parse_num(s, strlen(s), 65535, &port) != 0) {
                usage(stderr);
                return 2;
            }
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
    g_log = cJSON_CreateArray();

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
        fprintf(stderr, "mockllm: uv_loop_init: %s\n", uv_strerror(r));
        return 1;
    }

    struct sockaddr_storage addr;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr) != 0) {
        fprintf(stderr, "mockllm: bad host address: %s\n", host);
        return 2;
    }
    uv_tcp_init(&g_loop, &g_server);
    r = uv_tcp_bind(&g_server, (const struct sockaddr *)&addr, 0);
    if (!r)
        r = uv_listen((uv_stream_t *)&g_server, 4096, on_connection);
    if (r) {
        fprintf(stderr, "mockllm: listen on %s:%ld: %s\n", host, port, uv_strerror(r));
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
    reset_state();
    cJSON_Delete(g_log);
    if (r) {
        fprintf(stderr, "mockllm: uv_loop_close: %s\n", uv_strerror(r));
        return 1;
    }
    return 0;
}
