/* mod_http.c — `require "http"`: HTTP requests for sandboxed scripts.
 *
 *   local res, err, detail = http.request{ url=, method=, headers=, body=,
 *       timeout=, connect_timeout=, idle_timeout= (ms), max_body=,
 *       follow_redirects=, compressed=, http_version="1.1"|"2",
 *       stream=function(chunk) end  -- body pieces as they arrive
 *       sse=function(ev) end        -- {event=, data=, id=, retry=} records
 *       sse_data=function(data, event) end -- the same events, no table
 *       sse_text={after=, needed=, refused=, into=, call=} } -- see below
 *   http.get(url [, opts]), http.post(url, body [, opts])
 *
 * res = {status=, headers={lower-case name = value}, body=, url=,
 * http_version=, aborted=}; failures are nil plus a short stable message
 * ("connection refused", "timeout", "idle timeout", ...) and curl's detail.
 * A callback that returns false stops the transfer (res.aborted = true).
 *
 * sse_text (trusted runtime only, with sse or sse_data) takes the common
 * event of a model's stream out of Lua: an event whose data holds a JSON
 * string right after `after` (jsonscan.string_after's rules, with its
 * needed/refused guards) skips the sse callback; the string, unless empty,
 * is appended to the list `into` and passed to `call(text)` (a C function
 * such as the bridge's emit, so a chunk costs no Lua code). Other events
 * reach the sse callback as before, in order.
 *
 * Each request is an op (scheduler.h; its memory is a userdata Lua owns)
 * holding one easy handle, its header list, its buffers (charged to the
 * sandbox's memory cap) and an idle timer; req_release is the one place that
 * lets them go. The continuation finds the request at stack slot REQ_SLOT. Data from libcurl's callbacks is
 * buffered there; the script's callbacks run later, in the continuation,
 * through lua_pcallk so they may themselves wait. A stream that outpaces its
 * callback is paused at a high-water mark and resumed once drained. */
#include "mod_http.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "http_client.h"
#include "membuf.h"
#include "mod_jsonscan.h"
#include "sandbox.h"
#include "scheduler.h"
#include "sse.h"
#include "stack_check.h"

#define REQ_SLOT 3 /* stack: opts callback req [into call after needed refused] */
#define INTO_SLOT 4 /* with sse_text: its list, its function, then its strings */
#define CALL_SLOT 5
#define AFTER_SLOT 6
#define HIGH_WATER (1u << 20)
#define MAX_HEADER_BYTES (256u << 10)
#define DEFAULT_CONNECT_TIMEOUT_MS 10000

typedef enum { BODY_BUFFER, BODY_STREAM, BODY_SSE } body_mode;
/* the name of each streaming mode's option */
static const char *const callback_field[] = {NULL, "stream", "sse"};

typedef struct http_req {
  mh_op op;
  mh_http_transfer xfer;
  struct mh_http *http;
  mh_vm *vm;
  struct curl_slist *headers;
  body_mode mode;
  int sse_args;           /* sse_data: events as (data, event), not tables */
  int has_text;           /* sse_text: its fields are at INTO_SLOT.. */
  mh_json_after text;     /* its strings, anchored at AFTER_SLOT.. */
  int in_callback;        /* the continuation is running the script's callback */
  int done;               /* curl finished (or we stopped it) */
  CURLcode result;
  const char *fail;       /* our own reason to stop, when it is not curl's */
  int aborted;            /* the script's callback returned false */
  int paused;
  int divert;             /* SSE requested but the answer is an error: keep it as body */
  int first_byte_seen;
  size_t max_body;
  const char *secret;     /* the key C attached (trusted runtime's `auth`), to scrub from answers */
  mh_membuf body, pending, head;
  size_t pending_off;     /* SSE mode: bytes of `pending` already parsed */
  mh_sse sse;
  uint64_t idle_ms, last_activity;
  mh_timer idle_timer;    /* in host->timers while an idle timeout is set */
  mh_timers *timers;
  char errbuf[CURL_ERROR_SIZE];
} http_req;

static int request_k(lua_State *L, int status, lua_KContext ctx);

/* ---- lifecycle ---- */

static void req_release(http_req *r) {
  if (r->op.released && r->xfer.easy == NULL) return;
  mh_op_detach(&r->op);
  if (r->xfer.easy) {
    mh_http_abort(r->http, &r->xfer);
    mh_http_easy_give(r->http, r->xfer.easy);
    r->xfer.easy = NULL;
  }
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  mh_membuf_free(&r->body);
  mh_membuf_free(&r->pending);
  mh_membuf_free(&r->head);
  mh_sse_free(&r->sse);
  mh_timer_stop(r->timers, &r->idle_timer);
}

static void req_cancel(mh_op *op) { req_release((http_req *)op); }

static const mh_op_type http_type = {"http", req_cancel};

/* Stops the transfer from our side (idle timeout, callback said stop). */
static void req_stop(http_req *r, const char *why) {
  mh_http_abort(r->http, &r->xfer);
  r->done = 1;
  if (why) {
    r->fail = why;
    r->result = CURLE_OPERATION_TIMEDOUT;
  }
  mh_timer_stop(r->timers, &r->idle_timer);
  mh_op_wake(&r->op);
}

static void on_done(mh_http_transfer *t, CURLcode result) {
  http_req *r = (http_req *)((char *)t - offsetof(http_req, xfer));
  r->done = 1;
  r->result = result;
  mh_timer_stop(r->timers, &r->idle_timer);
  mh_op_wake(&r->op);
}

static void on_idle_check(mh_timer *timer) {
  http_req *r = (http_req *)((char *)timer - offsetof(http_req, idle_timer));
  uint64_t now = uv_now(r->vm->host->loop), quiet = now - r->last_activity;
  if (r->xfer.queued) r->last_activity = now; /* not sent yet: not idle */
  if (r->paused || r->in_callback || r->xfer.queued || quiet < r->idle_ms) {
    /* The script is the slow side, the request waits its turn, or data came
     * meanwhile: look again later. */
    uint64_t wait = (r->paused || r->in_callback || r->xfer.queued) ? r->idle_ms : r->idle_ms - quiet;
    mh_timer_start(r->timers, timer, wait);
    return;
  }
  req_stop(r, "idle timeout");
}

/* ---- libcurl callbacks: buffer only, never call libcurl or Lua ---- */

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud) {
  http_req *r = ud;
  size_t n = size * nmemb;
  r->last_activity = uv_now(r->vm->host->loop);
  if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) r->head.len = 0; /* a new response (redirect, 100) */
  if (r->head.len + n > MAX_HEADER_BYTES) {
    r->fail = "response headers too large";
    return 0;
  }
  if (mh_membuf_append(&r->head, ptr, n)) {
    r->fail = "response headers exceed the memory limit";
    return 0;
  }
  return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
  http_req *r = ud;
  size_t n = size * nmemb;
  r->last_activity = uv_now(r->vm->host->loop);
  if (!r->first_byte_seen) {
    r->first_byte_seen = 1;
    long status = 0;
    curl_easy_getinfo(r->xfer.easy, CURLINFO_RESPONSE_CODE, &status);
    r->divert = r->mode == BODY_SSE && (status < 200 || status > 299);
  }
  if (r->mode == BODY_BUFFER || r->divert) {
    if (r->body.len + n > r->max_body) {
      r->fail = "response body too large";
      return 0;
    }
    if (mh_membuf_append(&r->body, ptr, n)) {
      r->fail = "response body exceeds the memory limit";
      return 0;
    }
    return n;
  }
  if (r->pending.len >= HIGH_WATER) {
    r->paused = 1;
    mh_op_wake(&r->op);
    return CURL_WRITEFUNC_PAUSE;
  }
  if (mh_membuf_append(&r->pending, ptr, n)) {
    r->fail = "stream buffer exceeds the memory limit";
    return 0;
  }
  mh_op_wake(&r->op);
  return n;
}

/* Overwrites every copy of the secret in buf: a server that echoes the key
 * (a misconfigured proxy, a mock) must not hand it to Lua. */
static void scrub(const char *secret, char *buf, size_t len) {
  if (secret == NULL || buf == NULL) return;
  size_t kl = strlen(secret);
  if (kl == 0 || len < kl) return;
  char *p = buf, *end = buf + len;
  while ((p = memmem(p, (size_t)(end - p), secret, kl)) != NULL) {
    memset(p, '*', kl);
    p += kl;
  }
}

/* ---- results ---- */

static const char *failure_message(http_req *r) {
  if (r->fail) return r->fail;
  switch (r->result) {
    case CURLE_COULDNT_CONNECT: {
      long os_errno = 0;
      curl_easy_getinfo(r->xfer.easy, CURLINFO_OS_ERRNO, &os_errno);
      return os_errno == ECONNREFUSED ? "connection refused" : "could not connect";
    }
    case CURLE_COULDNT_RESOLVE_HOST: return "could not resolve host";
    case CURLE_OPERATION_TIMEDOUT: {
      curl_off_t connected = 0;
      curl_easy_getinfo(r->xfer.easy, CURLINFO_CONNECT_TIME_T, &connected);
      return connected == 0 ? "connect timeout" : "timeout";
    }
    case CURLE_PARTIAL_FILE: return "connection closed before the response was complete";
    case CURLE_GOT_NOTHING: return "connection closed without a response";
    case CURLE_RECV_ERROR: return "connection reset while receiving";
    case CURLE_SEND_ERROR: return "connection reset while sending";
    case CURLE_TOO_MANY_REDIRECTS: return "too many redirects";
    case CURLE_URL_MALFORMAT: return "malformed URL";
    case CURLE_UNSUPPORTED_PROTOCOL: return "unsupported protocol (only http and https)";
    case CURLE_PEER_FAILED_VERIFICATION: return "TLS certificate verification failed";
    case CURLE_SSL_CONNECT_ERROR: return "TLS handshake failed";
    default: return curl_easy_strerror(r->result);
  }
}

/* [-0, +1, m] headers of the last response as {name = value}; repeats joined by ", " */
static void push_headers(lua_State *L, const mh_membuf *head) {
  MH_STACK_BEGIN(L);
  lua_newtable(L);
  const char *p = head->data, *end = head->data + head->len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon && colon > p && memcmp(p, "HTTP/", 5) != 0) {
      char name[128];
      size_t nlen = (size_t)(colon - p) < sizeof name - 1 ? (size_t)(colon - p) : sizeof name - 1;
      for (size_t i = 0; i < nlen; i++) name[i] = (char)tolower((unsigned char)p[i]);
      const char *v = colon + 1, *vend = line_end;
      while (v < vend && (*v == ' ' || *v == '\t')) v++;
      while (vend > v && (vend[-1] == '\r' || vend[-1] == ' ' || vend[-1] == '\t')) vend--;
      lua_pushlstring(L, name, nlen);
      if (lua_rawget(L, -2) == LUA_TSTRING) {        /* headers old */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(vend - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(vend - v));
      }
      lua_pushlstring(L, name, nlen);
      lua_insert(L, -2);
      lua_rawset(L, -3);
    }
    p = eol ? eol + 1 : NULL;
  }
  MH_STACK_END(L, 1);
}

/* [-0, +(1|3), m] the final result of a request, then its release */
static int push_result(lua_State *L, http_req *r) {
  if (r->fail || (r->result != CURLE_OK && !r->aborted)) {
    luaL_pushfail(L);
    lua_pushstring(L, failure_message(r));
    lua_pushstring(L, r->fail ? r->fail : r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
    req_release(r);
    return 3;
  }
  long status = 0, version = 0;
  char *url = NULL;
  scrub(r->secret, r->body.data, r->body.len);
  scrub(r->secret, r->head.data, r->head.len);
  curl_easy_getinfo(r->xfer.easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(r->xfer.easy, CURLINFO_HTTP_VERSION, &version);
  curl_easy_getinfo(r->xfer.easy, CURLINFO_EFFECTIVE_URL, &url);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, &r->head);
  lua_setfield(L, -2, "headers");
  if (r->mode == BODY_BUFFER || r->divert) {
    /* The copy moves into the state: refund the buffer's charge first so a
     * body near the cap is not counted twice. */
    if (r->body.charge_to) mh_vm_charge(r->vm, -(ptrdiff_t)r->body.cap);
    r->body.charge_to = NULL;
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
  }
  if (url) {
    lua_pushstring(L, url);
    lua_setfield(L, -2, "url");
  }
  lua_pushstring(L, version == CURL_HTTP_VERSION_2_0 ? "2" : version == CURL_HTTP_VERSION_1_0 ? "1.0"
                   : version == CURL_HTTP_VERSION_3 ? "3" : "1.1");
  lua_setfield(L, -2, "http_version");
  if (r->aborted) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "aborted");
  }
  req_release(r);
  return 1;
}

/* ---- the continuation: deliver what arrived, then wait or finish ---- */

/* [-0, +n, m] pushes the next SSE event parsed from pending data (a record,
 * or data and event name for sse_data; or sse_text's string, with *fn set
 * to CALL_SLOT); returns how many values, 0 if none */
static int next_sse_event(lua_State *L, http_req *r, int *fn) {
  while (r->pending_off < r->pending.len) {
    mh_sse_event ev;
    int ready;
    size_t used = mh_sse_feed(&r->sse, r->pending.data + r->pending_off, r->pending.len - r->pending_off, &ev, &ready);
    if (used == (size_t)-1) {
      r->fail = "stream buffer exceeds the memory limit";
      req_stop(r, NULL);
      r->pending.len = r->pending_off = 0;
      return 0;
    }
    /* Consumed bytes are skipped, not moved: the buffer empties in one go. */
    r->pending_off += used;
    if (r->pending_off == r->pending.len) r->pending.len = r->pending_off = 0;
    if (ready) {
      /* the event's fields live in the parser's buffers: mask the key there */
      scrub(r->secret, (char *)ev.data, ev.data_len);
      scrub(r->secret, (char *)ev.event, ev.event_len);
      if (ev.id) scrub(r->secret, (char *)ev.id, ev.id_len);
      if (r->has_text && mh_json_push_after(L, ev.data, ev.data_len, &r->text)) { /* text */
        if (lua_rawlen(L, -1) == 0) {
          lua_pop(L, 1);
          continue;
        }
        lua_pushvalue(L, -1);                               /* text text */
        lua_rawseti(L, INTO_SLOT, (lua_Integer)lua_rawlen(L, INTO_SLOT) + 1);
        *fn = CALL_SLOT;
        return 1;
      }
      if (r->sse_args) {
        lua_pushlstring(L, ev.data, ev.data_len);
        lua_pushlstring(L, ev.event, ev.event_len);
        return 2;
      }
      lua_createtable(L, 0, 4);
      lua_pushlstring(L, ev.event, ev.event_len);
      lua_setfield(L, -2, "event");
      lua_pushlstring(L, ev.data, ev.data_len);
      lua_setfield(L, -2, "data");
      if (ev.id) {
        lua_pushlstring(L, ev.id, ev.id_len);
        lua_setfield(L, -2, "id");
      }
      if (ev.retry >= 0) {
        lua_pushinteger(L, ev.retry);
        lua_setfield(L, -2, "retry");
      }
      return 1;
    }
  }
  return 0;
}

/* [-0, +n, m] pushes the next values for a callback (the script's, at
 * stack slot *fn); returns how many, 0 if none */
static int next_delivery(lua_State *L, http_req *r, int *fn) {
  *fn = 2;
  if (r->aborted || r->pending.len == r->pending_off) return 0;
  if (r->mode == BODY_SSE) return next_sse_event(L, r, fn); /* scrubs whole events */
  /* A key split across two reads must not slip through: with a secret, the
   * last len(key) - 1 bytes wait for more data (or the end). */
  size_t hold = r->secret && !r->done ? strlen(r->secret) - 1 : 0;
  if (r->pending.len <= hold) return 0;
  scrub(r->secret, r->pending.data, r->pending.len);
  size_t give = r->pending.len - hold;
  lua_pushlstring(L, r->pending.data, give);
  mh_membuf_consume(&r->pending, give);
  return 1;
}

/* The callback returned (normally): false means stop the transfer. */
static void callback_returned(lua_State *L, http_req *r) {
  r->in_callback = 0;
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    r->aborted = 1;
    r->pending.len = r->pending_off = 0;
    if (!r->done) req_stop(r, NULL);
  }
  lua_pop(L, 1);
}

static int request_step(lua_State *L, http_req *r) {
  for (;;) {
    int fn;
    int n = next_delivery(L, r, &fn);
    if (n) {                                         /* opts callback req ... values */
      lua_pushvalue(L, fn);
      lua_insert(L, -(n + 1));
      r->in_callback = 1;
      int status = lua_pcallk(L, n, 1, 0, REQ_SLOT, request_k);
      if (status != LUA_OK) return request_k(L, status, REQ_SLOT);
      callback_returned(L, r);
      continue;
    }
    if (r->paused && !r->done) {
      r->paused = 0;
      curl_easy_pause(r->xfer.easy, CURLPAUSE_CONT); /* may deliver at once */
      continue;
    }
    if (r->done) return push_result(L, r);
    return mh_op_wait(L, &r->op, REQ_SLOT, request_k);
  }
}

static int request_k(lua_State *L, int status, lua_KContext ctx) {
  http_req *r = (http_req *)mh_op_at(L, (int)ctx);
  if (status != LUA_OK && status != LUA_YIELD) {
    /* The script's callback raised: stop the transfer, pass the error on. */
    r->in_callback = 0;
    req_release(r);
    mh_sandbox_rethrow_if_broken(L, status);
    return lua_error(L);
  }
  if (r->in_callback) {                              /* it waited, then returned */
    mh_op_check_owner(L, &r->op);                    /* ...in this run, while live */
    callback_returned(L, r);
  } else {
    mh_op_resumed(L, &r->op);
  }
  return request_step(L, r);
}

/* ---- starting a request ---- */

typedef struct request_args {
  const char *url, *method, *body, *version, *auth_header;
  const char *secret;
  size_t body_len;
  lua_Integer timeout_ms, connect_timeout_ms, idle_timeout_ms, max_body;
  int follow, has_headers, compressed;
  body_mode mode;
  int sse_args, has_text;
} request_args;

static lua_Integer opt_ms(lua_State *L, const char *field, lua_Integer def) {
  int t = lua_getfield(L, 1, field);
  lua_Integer v = def;
  if (t != LUA_TNIL) {
    if (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) >= 0 && lua_tonumber(L, -1) <= 1e12))
      luaL_error(L, "http: '%s' must be a number between 0 and 1e12", field);
    v = (lua_Integer)lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static const char *opt_string(lua_State *L, const char *field, size_t *len) {
  int t = lua_getfield(L, 1, field);
  const char *s = NULL;
  if (t == LUA_TSTRING) s = lua_tolstring(L, -1, len); /* anchored by opts */
  else if (t != LUA_TNIL) luaL_error(L, "http: '%s' must be a string", field);
  lua_pop(L, 1);
  return s;
}

static int bad_header_text(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

/* [-0, +5, e] pushes sse_text's (at idx) into, call, after, needed, refused */
static void push_text_fields(lua_State *L, int idx) {
  static const char *const fields[] = {"into", "call", "after", "needed", "refused"};
  for (int i = 0; i < 5; i++) lua_getfield(L, idx, fields[i]);
}

/* [-0, +0, v] Reads and checks every option; raises on misuse. */
static void read_args(lua_State *L, request_args *a) {
  memset(a, 0, sizeof *a);
  size_t n;
  a->url = opt_string(L, "url", &n);
  if (a->url == NULL) luaL_error(L, "http: 'url' is required");
  if (strncasecmp(a->url, "http://", 7) != 0 && strncasecmp(a->url, "https://", 8) != 0)
    luaL_error(L, "http: url must start with http:// or https://");
  a->method = opt_string(L, "method", &n);
  if (a->method) {
    for (size_t i = 0; i < n; i++)
      if (!isupper((unsigned char)a->method[i]) && a->method[i] != '-')
        luaL_error(L, "http: method must be an upper-case token such as GET or POST");
    if (n == 0) luaL_error(L, "http: method must not be empty");
  }
  a->body = opt_string(L, "body", &a->body_len);
  const char *auth = opt_string(L, "auth", &n);
  if (auth) {
    mh_vm *vm = mh_vm_of(L);
    if (!vm->trusted) luaL_error(L, "http: 'auth' is not available to sandboxed scripts");
    if (strcmp(auth, "openai") == 0) {
      a->secret = mh_host_secret(vm->host, MH_SECRET_OPENAI);
      a->auth_header = "Authorization: Bearer ";
    } else if (strcmp(auth, "anthropic") == 0) {
      a->secret = mh_host_secret(vm->host, MH_SECRET_ANTHROPIC);
      a->auth_header = "x-api-key: ";
    } else {
      luaL_error(L, "http: unknown auth '%s'", auth);
    }
    if (a->secret == NULL) luaL_error(L, "no API key for %s (set %s)", auth,
                                      auth[0] == 'o' ? "OPENAI_API_KEY" : "ANTHROPIC_API_KEY");
  }
  a->version = opt_string(L, "http_version", &n);
  if (a->version && strcmp(a->version, "1.1") != 0 && strcmp(a->version, "2") != 0)
    luaL_error(L, "http: http_version must be \"1.1\" or \"2\"");
  a->timeout_ms = opt_ms(L, "timeout", 0);
  a->connect_timeout_ms = opt_ms(L, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_MS);
  a->idle_timeout_ms = opt_ms(L, "idle_timeout", 0);
  a->max_body = opt_ms(L, "max_body", 0);
  lua_getfield(L, 1, "follow_redirects");
  a->follow = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "compressed");
  a->compressed = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "headers") != LUA_TNIL) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "headers as a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      size_t kl, vl;
      if (lua_type(L, -2) != LUA_TSTRING || !(lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER))
        luaL_error(L, "http: headers must map names to strings");
      lua_pushvalue(L, -1);                  /* convert numbers on a copy, not the key slot */
      const char *v = lua_tolstring(L, -1, &vl);
      const char *k = lua_tolstring(L, -3, &kl);
      if (kl == 0 || bad_header_text(k, kl) || bad_header_text(v, vl) || memchr(k, ':', kl))
        luaL_error(L, "http: header '%s' has a bad name or a line break in its value", k);
      lua_pop(L, 2);
    }
    a->has_headers = 1;
  }
  lua_pop(L, 1);
  static const char *const modes[] = {"stream", "sse", "sse_data"};
  static const char *const expected[] = {"stream as a function", "sse as a function", "sse_data as a function"};
  int given = -1;
  for (int i = 0; i < 3; i++) {
    if (lua_getfield(L, 1, modes[i]) != LUA_TNIL) {
      if (given >= 0) luaL_error(L, "http: give only one of 'stream', 'sse' and 'sse_data'");
      luaL_argexpected(L, lua_isfunction(L, -1), 1, expected[i]);
      given = i;
    }
    lua_pop(L, 1);
  }
  if (given >= 0) {
    a->mode = given == 0 ? BODY_STREAM : BODY_SSE;
    a->sse_args = given == 2;
  }
  if (lua_getfield(L, 1, "sse_text") != LUA_TNIL) {
    if (!mh_vm_of(L)->trusted) luaL_error(L, "http: 'sse_text' is not available to sandboxed scripts");
    if (a->mode != BODY_SSE) luaL_error(L, "http: 'sse_text' needs 'sse' or 'sse_data'");
    luaL_argexpected(L, lua_istable(L, -1), 1, "sse_text as a table");
    push_text_fields(L, lua_gettop(L));              /* sse_text into call after needed refused */
    luaL_argexpected(L, lua_istable(L, -5), 1, "sse_text.into as a table");
    luaL_argexpected(L, lua_isfunction(L, -4), 1, "sse_text.call as a function");
    mh_json_after checked;
    mh_json_check_after(L, lua_gettop(L) - 2, &checked);
    lua_pop(L, 5);
    a->has_text = 1;
  }
  lua_pop(L, 1);
}

/* Builds the header list; returns 0, or -1 when memory runs out. */
static int build_headers(lua_State *L, http_req *r, const request_args *a) {
  if (!a->body && !a->has_headers && a->mode != BODY_SSE && !a->secret) return 0; /* nothing to add */
  /* "Expect:" stops curl's 100-continue round trip before large bodies. */
  struct curl_slist *list = curl_slist_append(NULL, "Expect:");
  if (list == NULL) return -1;
  if (a->mode == BODY_SSE) list = curl_slist_append(list, "Accept: text/event-stream");
  if (list && a->secret) {
    /* The key goes from host memory into curl's header list only. */
    size_t hl = strlen(a->auth_header), kl = strlen(a->secret);
    char *line = malloc(hl + kl + 1);
    if (line == NULL) {
      curl_slist_free_all(list);
      return -1;
    }
    memcpy(line, a->auth_header, hl);
    memcpy(line + hl, a->secret, kl + 1);
    struct curl_slist *grown = curl_slist_append(list, line);
    explicit_bzero(line, hl + kl);
    free(line);
    if (grown == NULL) {
      curl_slist_free_all(list);
      return -1;
    }
    list = grown;
  }
  if (a->has_headers) {
    lua_getfield(L, 1, "headers");
    lua_pushnil(L);
    while (list && lua_next(L, -2)) {
      size_t kl, vl;
      lua_pushvalue(L, -1);
      const char *v = lua_tolstring(L, -1, &vl);
      const char *k = lua_tolstring(L, -3, &kl);
      char *line = malloc(kl + vl + 3);
      if (line == NULL) {
        lua_pop(L, 3);
        break;
      }
      memcpy(line, k, kl);
      /* "Name;" is how curl sends a header with an empty value */
      if (vl == 0) {
        line[kl] = ';';
        line[kl + 1] = '\0';
      } else {
        memcpy(line + kl, ": ", 2);
        memcpy(line + kl + 2, v, vl);
        line[kl + 2 + vl] = '\0';
      }
      struct curl_slist *grown = curl_slist_append(list, line);
      free(line);
      if (grown == NULL) {
        lua_pop(L, 3);
        list = NULL;
        break;
      }
      list = grown;
      lua_pop(L, 2);
    }
    lua_pop(L, 1);
  }
  r->headers = list;
  return list ? 0 : -1;
}

static void configure(http_req *r, const request_args *a) {
  CURL *e = r->xfer.easy;
  /* Per-request cost matters here (callgrind, make bench): a User-Agent or
   * Accept-Encoding header costs curl ~12k and ~16k instructions a request,
   * protocol lists ~7k; so they are set only when asked for. read_args has
   * already allowed only http:// and https:// URLs. */
  curl_easy_setopt(e, CURLOPT_URL, a->url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  if (a->compressed) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)a->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)a->timeout_ms);
  if (a->follow) {
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  }
  /* Over TLS, where HTTP/2 may be negotiated, wait for a connection that can
   * multiplex rather than opening one per concurrent request. (Not for
   * cleartext HTTP/2: Debian's libcurl 7.88 breaks streams that wait for a
   * prior-knowledge connection with "Error in the HTTP2 framing layer".) */
  if (strncasecmp(a->url, "https", 5) == 0) curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  if (mh_http_ca_file(r->http)) curl_easy_setopt(e, CURLOPT_CAINFO, mh_http_ca_file(r->http));
  if (a->version && strcmp(a->version, "2") == 0)
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, strncasecmp(a->url, "https", 5) == 0
                     ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
  else if (a->version)
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  if (a->body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->body_len);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, a->body);
  }
  if (a->method) {
    if (strcmp(a->method, "HEAD") == 0) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(a->method, "GET") == 0 && !a->body) curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    else if (strcmp(a->method, "POST") != 0 || !a->body) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, a->method);
  }
}

/* [-1, +?, v] request(opts) with opts at index 1 */
static int start_request(lua_State *L) {
  request_args a;
  read_args(L, &a);
  mh_run *run = mh_async_begin(L, "http.request");
  mh_vm *vm = run->vm;
  struct mh_http *http = mh_http_client(vm->host);
  if (http == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "the HTTP client could not start");
    return 2;
  }
  lua_settop(L, 1);
  if (a.mode == BODY_BUFFER) lua_pushnil(L);                  /* opts callback|nil */
  else lua_getfield(L, 1, a.sse_args ? "sse_data" : callback_field[a.mode]);
  http_req *r = mh_op_new(L, sizeof *r, &http_type);           /* opts callback req */
  if (a.has_text) {                                            /* read_args checked them */
    lua_getfield(L, 1, "sse_text");
    push_text_fields(L, lua_gettop(L));                        /* ... sse_text into call after needed refused */
    lua_remove(L, REQ_SLOT + 1);                               /* opts callback req into call after needed refused */
    mh_json_check_after(L, AFTER_SLOT, &r->text);
    r->has_text = 1;
  }
  /* Acquire: nothing below raises; every failure goes through req_release. */
  r->http = http;
  r->vm = vm;
  r->mode = a.mode;
  r->sse_args = a.sse_args;
  r->max_body = a.max_body > 0 ? (size_t)a.max_body : (size_t)-1;
  r->idle_ms = (uint64_t)a.idle_timeout_ms;
  r->secret = a.secret;
  r->body.charge_to = r->pending.charge_to = r->head.charge_to = vm;
  mh_sse_init(&r->sse, vm);
  r->xfer.done = on_done;
  r->timers = &vm->host->timers;
  mh_timer_init(&r->idle_timer, on_idle_check);
  mh_op_attach(run, &r->op, NULL);
  r->xfer.easy = mh_http_easy_take(http);
  const char *failed = NULL;
  if (r->xfer.easy == NULL || build_headers(L, r, &a) != 0) failed = "out of memory";
  if (!failed) {
    configure(r, &a);
    if (mh_http_start(http, &r->xfer, a.url) != CURLM_OK) failed = "could not start the transfer";
  }
  if (failed) {
    req_release(r);
    luaL_pushfail(L);
    lua_pushstring(L, failed);
    return 2;
  }
  if (r->idle_ms) {
    r->last_activity = uv_now(vm->host->loop);
    mh_timer_start(r->timers, &r->idle_timer, r->idle_ms);
  }
  return mh_op_wait(L, &r->op, REQ_SLOT, request_k);
}

static void copy_options(lua_State *L, int idx);

static int http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  /* A script's options are read from a raw copy: options behind __index
   * could change between the checks and their use. The trusted runtime
   * builds a fresh plain table for every request (a model call), so it
   * skips the copy. */
  if (!mh_vm_of(L)->trusted || lua_getmetatable(L, 1)) copy_options(L, 1);
  else lua_pushvalue(L, 1);
  lua_replace(L, 1);
  lua_settop(L, 1);
  return start_request(L);
}

/* [-0, +1, m] a shallow copy of the options at idx (or a new table) */
static void copy_options(lua_State *L, int idx) {
  lua_newtable(L);
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

static int http_get(lua_State *L) {
  luaL_checkstring(L, 1);
  copy_options(L, 2);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "url");
  lua_replace(L, 1);
  lua_settop(L, 1);
  return start_request(L);
}

static int http_post(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  copy_options(L, 3);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "url");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "body");
  if (lua_getfield(L, -1, "method") == LUA_TNIL) {
    lua_pushliteral(L, "POST");
    lua_setfield(L, -3, "method");
  }
  lua_pop(L, 1);
  lua_replace(L, 1);
  lua_settop(L, 1);
  return start_request(L);
}

int luaopen_mh_http(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"request", http_request}, {"get", http_get}, {"post", http_post}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
