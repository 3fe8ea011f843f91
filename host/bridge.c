/* bridge.c — calls from sandboxed scripts into the trusted runtime.
 *
 * A native such as `llm.chat` or `memory.search` names a function of a
 * runtime module (lua/moonhive/...); mh_bridge_call copies the script's
 * request table (without its `stream` callback) into the runtime and runs
 * the function there as a run of its own:
 *
 *   fn(request, emit, caller) -> result table | nil, message
 *
 * `caller` is {run_id = <the id of the recorded agent run the script is
 * part of, or nil>}: set by C, never by the script, so a script cannot act
 * for another run. `emit` streams pieces back to the script's callback (see
 * runtime_emit). The result and every streamed piece are copied back with
 * the host's keys masked. The sandbox holds no runtime code and no keys.
 *
 * The two sides share a small bridge struct in host memory, freed when both
 * have let go, so either side may end first: a cancelled script cancels the
 * runtime's run, and a late delta for a script that is gone is dropped. */
#include "bridge.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "copy.h"
#include "membuf.h"
#include "mod_store.h"
#include "runtime.h"
#include "sandbox.h"
#include "scheduler.h"

#define CALL_SLOT 3 /* stack: request callback call */

typedef struct bridge_call bridge_call;
typedef struct pause_op pause_op;

typedef struct bridge {
  bridge_call *caller;   /* NULL once the sandbox side is gone */
  mh_run *remote;     /* NULL once the runtime's run has ended */
  pause_op *paused;   /* the runtime's emit waiting for the script to catch up */
} bridge;

/* Streamed deltas wait in host memory charged to the script's sandbox, as
 * records: a kind byte, then (text) one field, or (tool call) the index as
 * a lua_Integer and three fields: id, name, arguments. A field is a 4-byte
 * length and its bytes (NO_FIELD for nil). The runtime writes them without touching the sandbox's Lua
 * state; the script turns each into a table just before its callback. */
enum { DELTA_TEXT = 1, DELTA_TOOL = 2 };
#define NO_FIELD UINT32_MAX
#define QUEUE_HIGH (1u << 20) /* the runtime's emit waits above this... */
#define QUEUE_LOW (64u << 10) /* ...until the script has read down to this */

struct bridge_call {  /* Lua-owned op: its stream callback is script code */
  mh_op op;
  const mh_bridge_spec *spec;
  bridge *b;
  lua_State *sandbox; /* the sandbox's main thread */
  mh_membuf queue;    /* deltas not yet handed to the callback */
  size_t qread;       /* bytes of queue already handed out */
  int result_ref;     /* sandbox registry: the result table or the message */
  int done, ok, in_callback;
};

static int call_k(lua_State *L, int status, lua_KContext ctx);

/* ---- lifecycle ---- */

static void call_release(mh_op *op) {
  bridge_call *c = (bridge_call *)op;
  if (op->released && c->b == NULL) return;
  mh_op_detach(op);
  if (c->b) {
    c->b->caller = NULL;
    if (c->b->remote) mh_run_cancel(c->b->remote, MH_BREAK_CANCEL);
    else free(c->b);
    c->b = NULL;
  }
  mh_membuf_free(&c->queue);
  c->qread = 0;
  luaL_unref(c->sandbox, LUA_REGISTRYINDEX, c->result_ref);
  c->result_ref = LUA_NOREF;
}

static const mh_op_type call_type = {"runtime call", call_release};

/* [-1, +0, e] lua_pcall target in the sandbox: ref the value */
static int ref_protected(lua_State *L) {
  lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
  return 1;
}

/* The provider keys the host holds, as a NULL-terminated list: whatever
 * crosses back to a script is masked with it, so a key a server echoed in
 * an escaped form (decoded only by the runtime) still never reaches it. */
static const char *const *host_keys(mh_host *host, const char *keys[MH_SECRET_COUNT + 1]) {
  int n = 0;
  for (int i = 0; i < MH_SECRET_COUNT; i++)
    if (host->secrets[i]) keys[n++] = host->secrets[i];
  keys[n] = NULL;
  return n ? keys : NULL;
}

/* ---- the runtime's side of a stream ---- */

/* The runtime's emit, waiting while the script's queue is full: an op in
 * host memory whose continuation runs only while it lives. */
struct pause_op {
  mh_op op;
  bridge *b;
};

static void pause_release(mh_op *op) {
  pause_op *p = (pause_op *)op;
  mh_op_detach(op);
  if (p->b && p->b->paused == p) p->b->paused = NULL;
  free(p);
}

static const mh_op_type pause_type = {"stream", pause_release};

/* [-0, +1, v] continuation of a paused emit: the script has caught up */
static int pause_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  pause_op *p = (pause_op *)ctx;
  mh_op_resumed(L, &p->op);
  pause_release(&p->op);
  lua_pushboolean(L, 1);
  return 1;
}

static int put_field(mh_membuf *q, const char *s, size_t len) {
  uint32_t n = s ? (uint32_t)len : NO_FIELD;
  if (mh_membuf_append(q, &n, sizeof n) != 0) return -1;
  return s ? mh_membuf_append(q, s, len) : 0;
}

/* [-0, +0, -] an optional string argument (nil when absent or not a string) */
static const char *opt_field(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING) return NULL;
  return lua_tolstring(L, idx, len);
}

/* emit(text) or emit(index, id, name, fragment) in the runtime: hands a
 * streamed piece of content or of a tool call's arguments to the script.
 * Returns false once the script is gone (the provider may stop); waits
 * while the script has a full queue. [-(1|4), +1, v] */
static int runtime_emit(lua_State *L) {
  bridge *b = lua_touserdata(L, lua_upvalueindex(1));
  bridge_call *c = b->caller;
  if (c == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  mh_membuf *q = &c->queue;
  size_t mark = q->len, len = 0;
  int failed;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *text = lua_tolstring(L, 1, &len);
    uint8_t kind = DELTA_TEXT;
    failed = mh_membuf_append(q, &kind, 1) != 0 || put_field(q, text, len) != 0;
  } else {
    lua_Integer index = luaL_checkinteger(L, 1);
    uint8_t kind = DELTA_TOOL;
    size_t idlen = 0, namelen = 0, arglen = 0;
    const char *id = opt_field(L, 2, &idlen), *name = opt_field(L, 3, &namelen);
    const char *args = opt_field(L, 4, &arglen);
    failed = mh_membuf_append(q, &kind, 1) != 0 || mh_membuf_append(q, &index, sizeof index) != 0 ||
             put_field(q, id, idlen) != 0 || put_field(q, name, namelen) != 0 || put_field(q, args, arglen) != 0;
  }
  if (failed) {
    q->len = mark;
    lua_pushfstring(L, "%s: the script is out of memory: the stream was cut", c->spec->what);
    return lua_error(L); /* no position: the runtime's file means nothing to the script */
  }
  mh_op_wake(&c->op);
  if (q->len - c->qread > QUEUE_HIGH && b->paused == NULL && lua_isyieldable(L)) {
    mh_run *run = mh_async_begin(L, "a stream");
    pause_op *p = calloc(1, sizeof *p);
    if (p == NULL) return luaL_error(L, "%s: out of memory", c->spec->what);
    p->b = b;
    b->paused = p;
    mh_op_attach(run, &p->op, &pause_type);
    return mh_op_wait(L, &p->op, (lua_KContext)p, pause_k);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the script's side of a stream ---- */

static uint32_t read_u32(const char *p) {
  uint32_t n;
  memcpy(&n, p, sizeof n);
  return n;
}

/* [-0, +0, m] sets t[key] (t on top) to the next field at *pos, unless
 * nil, masked with the host's keys */
static void take_field(lua_State *L, const char *data, size_t *pos, const char *key, const char *const *masked) {
  uint32_t n = read_u32(data + *pos);
  *pos += sizeof n;
  if (n == NO_FIELD) return;
  mh_push_masked(L, data + *pos, n, masked);
  lua_setfield(L, -2, key);
  *pos += n;
}

/* [-0, +1, m] pushes the next queued delta as the table the script sees:
 * {content = "..."} or {tool_call = {index=, id=, name=, arguments=}} */
static void push_next_delta(lua_State *L, bridge_call *c) {
  const char *data = c->queue.data;
  size_t pos = c->qread;
  const char *keys[MH_SECRET_COUNT + 1];
  const char *const *masked = host_keys(mh_vm_of(L)->host, keys);
  uint8_t kind = (uint8_t)data[pos++];
  lua_createtable(L, 0, 1);
  if (kind == DELTA_TEXT) {
    take_field(L, data, &pos, "content", masked);
  } else {
    lua_createtable(L, 0, 4);
    lua_Integer index;
    memcpy(&index, data + pos, sizeof index);
    pos += sizeof index;
    lua_pushinteger(L, index);
    lua_setfield(L, -2, "index");
    take_field(L, data, &pos, "id", masked);
    take_field(L, data, &pos, "name", masked);
    take_field(L, data, &pos, "arguments", masked);
    lua_setfield(L, -2, "tool_call");
  }
  c->qread = pos;
  if (c->qread == c->queue.len) c->queue.len = c->qread = 0;
  else if (c->qread > QUEUE_LOW && c->qread > c->queue.len / 2) {
    mh_membuf_consume(&c->queue, c->qread);
    c->qread = 0;
  }
  bridge *b = c->b;
  if (b && b->paused && c->queue.len - c->qread <= QUEUE_LOW) mh_op_wake(&b->paused->op);
}

typedef struct message {
  const char *text;
  size_t len;
  const char *const *masked;
} message;

/* [-1, +1, m] lua_pcall target in the sandbox: (message*) -> ref of the text */
static int ref_message_protected(lua_State *L) {
  const message *m = lua_touserdata(L, 1);
  mh_push_masked(L, m->text, m->len, m->masked);
  lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
  return 1;
}

/* [-0, +0, -] stores what the runtime's run ended with into the sandbox:
 * the result table (c->ok) or an error message, as c->result_ref */
static void keep_outcome(bridge_call *c, mh_run *run) {
  lua_State *S = c->sandbox;
  char err[256];
  lua_State *co = run->co;
  int base = lua_gettop(co) - run->nres;
  const char *keys[MH_SECRET_COUNT + 1];
  const char *const *masked = host_keys(run->vm->host, keys);
  message m = {NULL, 0, masked};
  c->ok = 0;
  if (run->state == MH_RUN_OK && run->nres >= 1 && lua_istable(co, base + 1)) {
    mh_copy_rules rules = {0, masked};
    if (mh_copy_value(co, base + 1, S, &rules, err, sizeof err) == 0) {
      lua_pushcfunction(S, ref_protected);
      lua_insert(S, -2);
      c->ok = lua_pcall(S, 1, 1, 0) == LUA_OK;
      if (c->ok) c->result_ref = (int)lua_tointeger(S, -1);
      lua_pop(S, 1);
      if (c->ok) return;
      m.text = "the script is out of memory";
    } else {
      m.text = err;
    }
  } else if (run->state == MH_RUN_OK && run->nres >= 2 && lua_type(co, base + 2) == LUA_TSTRING) {
    m.text = lua_tolstring(co, base + 2, &m.len);
  } else if (run->state != MH_RUN_OK && run->error) {
    const char *cut = strstr(run->error, "\nstack traceback:");
    m.text = run->error;
    m.len = cut ? (size_t)(cut - run->error) : strlen(run->error);
  } else {
    m.text = "the runtime returned no result";
  }
  if (m.len == 0) m.len = strlen(m.text);
  lua_pushcfunction(S, ref_message_protected);
  lua_pushlightuserdata(S, &m);
  if (lua_pcall(S, 1, 1, 0) == LUA_OK) c->result_ref = (int)lua_tointeger(S, -1);
  lua_pop(S, 1); /* the ref, or the error: then result_ref stays LUA_NOREF (pushed as nil) */
}

static void remote_done(mh_run *run, void *ud) {
  bridge *b = ud;
  b->remote = NULL;
  bridge_call *c = b->caller;
  if (c == NULL) {
    free(b);
    return;
  }
  keep_outcome(c, run);
  c->done = 1;
  mh_op_wake(&c->op);
}

/* ---- the continuation ---- */

static int call_step(lua_State *L, bridge_call *c) {
  for (;;) {
    if (c->qread < c->queue.len) {
      lua_pushvalue(L, 2);
      push_next_delta(L, c);                        /* ... callback delta */
      c->in_callback = 1;
      int status = lua_pcallk(L, 1, 0, 0, CALL_SLOT, call_k);
      if (status != LUA_OK) return call_k(L, status, CALL_SLOT);
      c->in_callback = 0;
      continue;
    }
    if (c->done) {
      int ok = c->ok;
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->result_ref);
      call_release(&c->op);
      if (ok && c->spec->on_result) c->spec->on_result(L, lua_gettop(L));
      if (ok) return 1;
      luaL_pushfail(L);
      lua_insert(L, -2);
      return 2;
    }
    return mh_op_wait(L, &c->op, CALL_SLOT, call_k);
  }
}

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  bridge_call *c = (bridge_call *)mh_op_at(L, (int)ctx);
  if (status != LUA_OK && status != LUA_YIELD) { /* the stream callback raised */
    c->in_callback = 0;
    call_release(&c->op);
    mh_sandbox_rethrow_if_broken(L, status);
    return lua_error(L);
  }
  if (c->in_callback) {
    mh_op_check_owner(L, &c->op);
    c->in_callback = 0;
  } else {
    mh_op_resumed(L, &c->op);
  }
  return call_step(L, c);
}

/* ---- starting a call ---- */


/* [-0, +1, -] on the runtime: function `entry` of spec's module, looked up
 * once and then kept in the runtime's registry under the address `key` (a
 * module lookup per call was a measurable part of a model call). Returns 0,
 * or -1 with err filled and nothing pushed. */
static int push_entry(mh_host *host, const mh_bridge_spec *spec, const char *entry, const void *key, char *err,
                      size_t errlen) {
  mh_vm *rt = mh_runtime(host, err, errlen);
  if (rt == NULL) return -1;
  lua_State *R = rt->L;
  if (lua_rawgetp(R, LUA_REGISTRYINDEX, key) == LUA_TFUNCTION) return 0;    /* R: entry */
  lua_pop(R, 1);
  if (mh_runtime_push(host, spec->module, entry, err, errlen) != 0) return -1;
  lua_pushvalue(R, -1);                                                      /* R: entry entry */
  lua_rawsetp(R, LUA_REGISTRYINDEX, key);                                    /* R: entry */
  return 0;
}

/* [-0, +1, m] on the runtime: the caller table of a call made by run */
static void push_caller(lua_State *R, const mh_run *run) {
  lua_createtable(R, 0, 3);
  if (run->record_id[0]) {
    lua_pushstring(R, run->record_id);
    lua_setfield(R, -2, "run_id");
  }
  if (run->record_step[0]) {
    lua_pushstring(R, run->record_step);
    lua_setfield(R, -2, "step");
    lua_pushnumber(R, run->record_step_at);
    lua_setfield(R, -2, "step_at");
  }
}

/* ---- calls answered at once ---- */

/* [-0, +(1|2), -] the script's result once a call answered at once is done:
 * L: request callback result */
static int now_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  const mh_bridge_spec *spec = (const mh_bridge_spec *)ctx;
  if (spec->on_result) spec->on_result(L, lua_gettop(L));
  return 1;
}

/* [-0, +(1|2), v] continuation once the commit a call answered at once
 * waited for is done: L: request callback result (true | nil message) */
static int now_committed(lua_State *L, int status, lua_KContext ctx) {
  const mh_bridge_spec *spec = (const mh_bridge_spec *)ctx;
  if (lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    return now_done(L, status, ctx);
  }
  luaL_pushfail(L);
  lua_pushfstring(L, "%s: %s", spec->what, lua_tostring(L, -2));
  return 2;
}

/* [-0, +(0|1|2), v] Runs spec->now, the synchronous form of spec's entry,
 * on the runtime's main thread: fn(request, nil, caller) -> result | nil,
 * message | false (declined). It cannot yield (an attempt is its error), so
 * it costs no run, no op and no resumes; when it answers a third value,
 * the store's db, the script waits for that db's group commit before it
 * sees the result (durable writes). L: request nil. Returns the native's
 * result count, or -1 with nothing pushed when the runtime declined. */
static int call_now(lua_State *L, const mh_bridge_spec *spec, mh_run *run) {
  mh_vm *vm = run->vm;
  char err[512];
  if (push_entry(vm->host, spec, spec->now, &spec->now, err, sizeof err) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_State *R = vm->host->runtime->L;
  int base = lua_gettop(R) - 1;                     /* R: entry */
  mh_copy_rules rules = {vm->mem_limit, NULL};
  if (mh_copy_value(L, 1, R, &rules, err, sizeof err) != 0) {
    lua_settop(R, base);
    return luaL_error(L, "%s: the request cannot be sent: %s", spec->what, err);
  }
  lua_pushnil(R);                                   /* R: entry request nil */
  push_caller(R, run);                              /* R: entry request nil caller */
  const char *keys[MH_SECRET_COUNT + 1];
  const char *const *masked = host_keys(vm->host, keys);
  if (lua_pcall(R, 3, 3, 0) == LUA_OK) {           /* R: result message pending */
    if (lua_type(R, base + 1) == LUA_TBOOLEAN && !lua_toboolean(R, base + 1)) {
      lua_settop(R, base);
      return -1;
    }
    if (lua_istable(R, base + 1)) {
      mh_store_group *g = mh_store_db_group(R, base + 3);
      mh_copy_rules back = {0, masked};
      int copied = mh_copy_value(R, base + 1, L, &back, err, sizeof err);
      lua_settop(R, base);
      if (copied == 0 && g == NULL) return now_done(L, LUA_OK, (lua_KContext)spec);
      if (copied == 0) return mh_store_group_wait(L, g, (lua_KContext)spec, now_committed);
    } else {
      const char *msg = lua_tostring(R, base + 2);
      snprintf(err, sizeof err, "%s", msg ? msg : "the runtime returned no result");
      lua_settop(R, base);
    }
  } else {
    const char *msg = lua_tostring(R, -1);
    snprintf(err, sizeof err, "%s", msg ? msg : "the runtime's call failed");
    lua_settop(R, base);
  }
  luaL_pushfail(L);
  mh_push_masked(L, err, strlen(err), masked);
  return 2;
}

/* [-0, +1, m] a shallow raw copy of the table at 1 without `stream` */
static void request_without_stream(lua_State *L) {
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "stream") == 0) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

int mh_bridge_call_now(lua_State *L, const mh_bridge_spec *spec) {
  return call_now(L, spec, mh_async_begin(L, spec->what));
}

int mh_bridge_call(lua_State *L, const mh_bridge_spec *spec) {
  const char *what = spec->what;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushliteral(L, "stream");
  int t = lua_rawget(L, 1);                         /* req callback|nil */
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TFUNCTION, 1, "stream as a function");
  mh_run *run = mh_async_begin(L, what);
  mh_vm *vm = run->vm;
  if (spec->now && t == LUA_TNIL) {                 /* req nil */
    int n = call_now(L, spec, run);
    if (n >= 0) return n;                           /* else the runtime declined: as any other call */
  }
  bridge_call *c = mh_op_new(L, sizeof *c, &call_type); /* req callback call */
  c->spec = spec;
  c->sandbox = vm->L;
  c->result_ref = LUA_NOREF;
  c->queue.charge_to = vm;
  c->op.released = 1;                               /* until it is attached */
  if (!lua_isnil(L, 2)) {                           /* the runtime should stream */
    request_without_stream(L);                      /* req callback call plain */
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "stream_deltas");
  } else {
    lua_pushvalue(L, 1);                            /* req callback call req: nothing to leave out */
  }

  char err[512];
  /* From here on every failure lets go of anything pushed on R. */
  if (push_entry(vm->host, spec, spec->entry, spec, err, sizeof err) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_State *R = vm->host->runtime->L;              /* R: entry */
  bridge *b = NULL;
  const char *failed = NULL;
  int pushed = 1;                                   /* on R: the entry */
  mh_copy_rules rules = {vm->mem_limit, NULL};      /* no bigger than the script could hold */
  if (mh_copy_value(L, 4, R, &rules, err, sizeof err) != 0) failed = err;
  else if (pushed++, (b = calloc(1, sizeof *b)) == NULL) failed = "out of memory";
  if (failed) {
    lua_pop(R, pushed);
    return luaL_error(L, "%s: the request cannot be sent: %s", what, failed);
  }
  lua_pop(L, 1);                                    /* req callback call */
  lua_pushlightuserdata(R, b);
  lua_pushcclosure(R, runtime_emit, 1);             /* R: entry request emit */
  push_caller(R, run);                              /* R: entry request emit caller */
  mh_run *remote = mh_run_start(vm->host->runtime, 3, remote_done, b);
  if (remote == NULL) {
    free(b);
    luaL_pushfail(L);
    lua_pushliteral(L, "the runtime could not start the call");
    return 2;
  }
  mh_run_inherit_limits(remote, run);
  b->caller = c;
  b->remote = remote;
  c->b = b;
  mh_op_attach(run, &c->op, NULL);
  return mh_op_wait(L, &c->op, CALL_SLOT, call_k);
}

