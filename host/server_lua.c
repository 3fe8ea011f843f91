/* server_lua.c — requests as runs of the trusted runtime: for each request
 * the server builds a request table and a response object on the runtime's
 * state and runs lua/moonhive/service's
 *
 *   handle(request, response) -> status, headers, body
 *
 * request  = {method=, path= (percent-encoded), query= (raw, or nil),
 *             headers = {lower-case name = value}, body= (string), remote=}
 * response = the stream's side: response:stream(status, headers) sends the
 *            head of a chunked response (Server-Sent Events), then
 *            response:write(text) sends each piece, waiting while the
 *            client is more than MH_STREAM_HIGH_WATER behind; both answer
 *            true, or nil and "the client went away". response:closed().
 *
 * A handler that did not stream returns status (integer), headers (a table
 * of strings, or nil) and body (a string, or nil); one that raises is
 * logged and answered 500 without its message (it may name internals). */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "log.h"
#include "membuf.h"
#include "runtime.h"
#include "server_conn.h"

static const char HANDLER_KEY = 0; /* runtime registry: service.handle */
#define RESPONSE_MT "moonhive.response"

typedef struct response_ud {
  mh_exchange *ex; /* NULL once collected or never started */
} response_ud;

typedef struct write_wait {
  mh_op op;
  mh_exchange *ex;
} write_wait;

/* ---- the exchange's holds ---- */

void mh_exchange_release(mh_exchange *ex) {
  if (ex->conn_holds || ex->lua_holds || ex->run) return;
  free(ex);
}

void mh_exchange_conn_gone(mh_exchange *ex) {
  ex->conn = NULL;
  if (ex->waiter) mh_op_wake(&ex->waiter->op);
  if (ex->streaming && ex->run) mh_run_cancel(ex->run, MH_BREAK_CANCEL); /* nobody is listening */
}

void mh_exchange_drained(mh_exchange *ex) {
  if (ex->waiter) mh_op_wake(&ex->waiter->op);
}

void mh_exchange_cancel(mh_exchange *ex) {
  if (ex->run) mh_run_cancel(ex->run, MH_BREAK_CANCEL);
}

/* ---- headers ---- */

static int token_char(unsigned char ch) {
  return ch > 0x20 && ch < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", ch);
}

/* [-0, +0, -] Appends the table at idx (header name -> string) as header
 * lines. Returns 0, or -1 with err filled for a bad name or value, or a
 * header the server sets itself. Strings only: nothing here allocates on L. */
static int format_headers(lua_State *L, int idx, mh_membuf *out, char *err, size_t errlen) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (!lua_istable(L, idx)) {
    snprintf(err, errlen, "headers must be a table");
    return -1;
  }
  static const char *const reserved[] = {"content-length", "transfer-encoding", "connection", "date", "server", NULL};
  lua_pushnil(L);
  while (lua_next(L, idx)) {                              /* ... key value */
    size_t nlen, vlen;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 2);
      snprintf(err, errlen, "headers must map names to strings");
      return -1;
    }
    const char *name = lua_tolstring(L, -2, &nlen);
    const char *value = lua_tolstring(L, -1, &vlen);
    int ok = nlen > 0;
    for (size_t i = 0; ok && i < nlen; i++) ok = token_char((unsigned char)name[i]);
    for (size_t i = 0; ok && i < vlen; i++) ok = value[i] != '\r' && value[i] != '\n' && value[i] != '\0';
    for (int i = 0; ok && reserved[i]; i++) ok = strcasecmp(name, reserved[i]) != 0;
    if (!ok) {
      snprintf(err, errlen, "header '%.60s' cannot be sent", name);
      lua_pop(L, 2);
      return -1;
    }
    if (mh_membuf_append(out, name, nlen) || mh_membuf_append(out, ": ", 2) || mh_membuf_append(out, value, vlen) ||
        mh_membuf_append(out, "\r\n", 2)) {
      lua_pop(L, 2);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    lua_pop(L, 1);                                        /* ... key */
  }
  return 0;
}

/* ---- the response object ---- */

static mh_exchange *check_response(lua_State *L) {
  response_ud *u = luaL_checkudata(L, 1, RESPONSE_MT);
  if (u->ex == NULL) luaL_error(L, "response: no longer usable");
  return u->ex;
}

static int went_away(lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "the client went away");
  return 2;
}

/* response:stream(status, headers) [-2, +(1|2), v] */
static int response_stream(lua_State *L) {
  mh_exchange *ex = check_response(L);
  lua_Integer status = luaL_checkinteger(L, 2);
  luaL_argcheck(L, status >= 200 && status <= 599, 2, "an HTTP status from 200 to 599 expected");
  if (ex->answered) return luaL_error(L, "response: already sent");
  if (ex->conn == NULL) return went_away(L);
  mh_membuf h = {0};
  char err[128];
  if (format_headers(L, 3, &h, err, sizeof err) != 0) {
    mh_membuf_free(&h);
    return luaL_error(L, "response:stream: %s", err);
  }
  int rc = mh_conn_stream_head(ex->conn, (int)status, h.data, h.len);
  mh_membuf_free(&h);
  ex->answered = 1;
  if (rc != 0) return went_away(L);
  ex->streaming = 1;
  lua_pushboolean(L, 1);
  return 1;
}

static void wait_release(mh_op *op) {
  write_wait *w = (write_wait *)op;
  mh_op_detach(op);
  if (w->ex->waiter == w) w->ex->waiter = NULL;
  free(w);
}

static const mh_op_type write_wait_type = {"response:write", wait_release};

/* [-0, +(1|2), v] continuation: the client read enough, or left */
static int write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  write_wait *w = (write_wait *)ctx;
  mh_op_resumed(L, &w->op); /* raises (after releasing w) if the run was cancelled */
  mh_exchange *ex = w->ex;
  wait_release(&w->op);
  if (ex->conn == NULL) return went_away(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* response:write(text) [-2, +(1|2), v] */
static int response_write(lua_State *L) {
  mh_exchange *ex = check_response(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (!ex->streaming) return luaL_error(L, "response:write: call response:stream first");
  if (ex->conn == NULL) return went_away(L);
  long behind = mh_conn_stream_chunk(ex->conn, data, len);
  if (behind < 0) return went_away(L);
  if ((unsigned long)behind <= MH_STREAM_HIGH_WATER) {
    lua_pushboolean(L, 1);
    return 1;
  }
  mh_run *run = mh_async_begin(L, "response:write");
  write_wait *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "response:write: out of memory");
  w->ex = ex;
  ex->waiter = w;
  mh_op_attach(run, &w->op, &write_wait_type);
  return mh_op_wait(L, &w->op, (lua_KContext)w, write_k);
}

/* response:closed() [-1, +1, v] */
static int response_closed(lua_State *L) {
  response_ud *u = luaL_checkudata(L, 1, RESPONSE_MT);
  lua_pushboolean(L, u->ex == NULL || u->ex->conn == NULL);
  return 1;
}

static int response_gc(lua_State *L) {
  response_ud *u = luaL_checkudata(L, 1, RESPONSE_MT);
  mh_exchange *ex = u->ex;
  u->ex = NULL;
  if (ex) {
    ex->lua_holds = 0;
    mh_exchange_release(ex);
  }
  return 0;
}

/* ---- starting a request ---- */

/* [-0, +1, m] request table from the view */
static void push_request(lua_State *L, const mh_request_view *req) {
  lua_createtable(L, 0, 7);
  lua_pushstring(L, req->method);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, req->path, req->path_len);
  lua_setfield(L, -2, "path");
  if (req->query) {
    lua_pushlstring(L, req->query, req->query_len);
    lua_setfield(L, -2, "query");
  }
  lua_pushlstring(L, req->body, req->body_len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, req->remote);
  lua_setfield(L, -2, "remote");
  lua_newtable(L);                                        /* req headers */
  size_t off = 0;
  while (off < req->headers_len) {
    const char *name = req->headers + off;
    const char *value = name + strlen(name) + 1;
    off = (size_t)(value - req->headers) + strlen(value) + 1;
    if (lua_getfield(L, -1, name) == LUA_TSTRING) {       /* a repeated header: joined, as RFC 9110 allows */
      lua_pushliteral(L, ", ");
      lua_pushstring(L, value);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, value);
    }
    lua_setfield(L, -2, name);
  }
  lua_setfield(L, -2, "headers");
}

/* [-2, +2, m] lua_pcall target: (view, exchange) -> request, response */
static int build_protected(lua_State *L) {
  const mh_request_view *req = lua_touserdata(L, 1);
  mh_exchange *ex = lua_touserdata(L, 2);
  push_request(L, req);
  response_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->ex = NULL;
  if (luaL_newmetatable(L, RESPONSE_MT)) {
    static const luaL_Reg methods[] = {
        {"stream", response_stream}, {"write", response_write}, {"closed", response_closed}, {NULL, NULL}};
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, response_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "response");
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  u->ex = ex;
  ex->lua_holds = 1;
  return 2;
}

/* [-0, +1, -] on the runtime: the handler, looked up once. Returns 0, or -1
 * with err filled and nothing pushed. */
static int push_handler(mh_host *host, char *err, size_t errlen) {
  mh_vm *rt = mh_runtime(host, err, errlen);
  if (rt == NULL) return -1;
  if (lua_rawgetp(rt->L, LUA_REGISTRYINDEX, &HANDLER_KEY) == LUA_TFUNCTION) return 0;
  lua_pop(rt->L, 1);
  if (mh_runtime_push(host, "moonhive.service", "handle", err, errlen) != 0) return -1;
  lua_pushvalue(rt->L, -1);
  lua_rawsetp(rt->L, LUA_REGISTRYINDEX, &HANDLER_KEY);
  return 0;
}

/* What a handler that did not stream returned, as the response. */
static void answer_from_results(mh_conn *c, mh_run *run) {
  lua_State *co = run->co;
  int base = lua_gettop(co) - run->nres;
  char err[160];
  if (run->state != MH_RUN_OK) {
    mh_log(MH_LOG_ERROR, "serve: the request handler failed: %s", run->error ? run->error : "(no message)");
  } else if (run->nres < 1 || !lua_isinteger(co, base + 1) || lua_tointeger(co, base + 1) < 200 ||
             lua_tointeger(co, base + 1) > 599) {
    mh_log(MH_LOG_ERROR, "serve: the request handler returned no HTTP status");
  } else {
    mh_membuf h = {0};
    size_t blen = 0;
    const char *body = run->nres >= 3 && lua_type(co, base + 3) == LUA_TSTRING ? lua_tolstring(co, base + 3, &blen) : "";
    if (format_headers(co, base + 2, &h, err, sizeof err) == 0) {
      mh_conn_respond(c, (int)lua_tointeger(co, base + 1), h.data, h.len, body, blen);
      mh_membuf_free(&h);
      return;
    }
    mh_membuf_free(&h);
    mh_log(MH_LOG_ERROR, "serve: the request handler returned bad headers: %s", err);
  }
  static const char internal[] = "{\"error\":{\"status\":500,\"message\":\"internal error; see the server log\"}}\n";
  mh_conn_respond(c, 500, "Content-Type: application/json\r\n", 32, internal, sizeof internal - 1);
}

static void handled(mh_run *run, void *ud) {
  mh_exchange *ex = ud;
  mh_conn *c = ex->conn;  /* ex->run still holds ex while the connection lets go */
  if (c) {
    if (ex->answered) mh_conn_stream_end(c);
    else answer_from_results(c, run);
  }
  ex->run = NULL;
  mh_exchange_release(ex);
}

mh_exchange *mh_server_dispatch(mh_server *s, mh_host *host, mh_conn *c, const mh_request_view *req, char *err,
                                size_t errlen) {
  if (push_handler(host, err, errlen) != 0) return NULL;
  lua_State *R = host->runtime->L;                        /* R: handle */
  mh_exchange *ex = calloc(1, sizeof *ex);
  if (ex == NULL) {
    lua_pop(R, 1);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ex->server = s;
  ex->conn = c;
  ex->conn_holds = 1;
  lua_pushcfunction(R, build_protected);
  lua_pushlightuserdata(R, (void *)req);
  lua_pushlightuserdata(R, ex);
  if (lua_pcall(R, 2, 2, 0) != LUA_OK) {                  /* R: handle request response | handle msg */
    snprintf(err, errlen, "%s", lua_tostring(R, -1));
    lua_pop(R, 2);
    free(ex);
    return NULL;
  }
  response_ud *u = lua_touserdata(R, -1);
  mh_run *run = mh_run_start(host->runtime, 2, handled, ex);
  if (run == NULL) {
    u->ex = NULL; /* the response object is unreachable now; its collection finds nothing */
    free(ex);
    snprintf(err, errlen, "the runtime could not start a run");
    return NULL;
  }
  ex->run = run;
  return ex;
}
