/* mod_llm.c — `require "llm"`: model calls for sandboxed scripts.
 *
 *   local res, err = llm.chat{model=, messages=, system=, tools=, tool_choice=,
 *       temperature=, max_tokens=, response_format=, stream=function(delta) end}
 *   local res, err = llm.embed{model=, input=}
 *
 * The sandbox holds no provider code and no keys. The request (without its
 * `stream` callback) is copied into the trusted runtime, where
 * lua/moonhive/llm.lua makes the call as a run of its own; each streamed
 * delta and the final result are copied back. The two sides share a small
 * bridge in host memory, freed when both have let go, so either side may end
 * first: a cancelled script cancels the runtime's run, and a late delta for
 * a script that is gone is dropped. */
#include "mod_llm.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "copy.h"
#include "runtime.h"
#include "sandbox.h"
#include "scheduler.h"

#define CALL_SLOT 3 /* stack: request callback call */

typedef struct llm_call llm_call;

typedef struct bridge {
  llm_call *caller;   /* NULL once the sandbox side is gone */
  mh_run *remote;     /* NULL once the runtime's run has ended */
} bridge;

struct llm_call {     /* Lua-owned op: its stream callback is script code */
  mh_op op;
  bridge *b;
  lua_State *sandbox; /* the sandbox's main thread */
  int queue_ref;      /* sandbox registry: deltas waiting for the callback */
  lua_Integer qhead, qtail;
  int result_ref;     /* sandbox registry: the result table or the message */
  int done, ok, in_callback;
};

static int call_k(lua_State *L, int status, lua_KContext ctx);

/* ---- lifecycle ---- */

static void call_release(mh_op *op) {
  llm_call *c = (llm_call *)op;
  if (op->released && c->b == NULL) return;
  mh_op_detach(op);
  if (c->b) {
    c->b->caller = NULL;
    if (c->b->remote) mh_run_cancel(c->b->remote, MH_BREAK_CANCEL);
    else free(c->b);
    c->b = NULL;
  }
  luaL_unref(c->sandbox, LUA_REGISTRYINDEX, c->queue_ref);
  luaL_unref(c->sandbox, LUA_REGISTRYINDEX, c->result_ref);
  c->queue_ref = c->result_ref = LUA_NOREF;
}

static const mh_op_type llm_type = {"llm", call_release};

/* [-3, +0, e] lua_pcall target in the sandbox: (queue, v, i) -> queue[i] = v */
static int append_protected(lua_State *L) {
  lua_settop(L, 3);
  lua_Integer i = lua_tointeger(L, 3);
  lua_pop(L, 1);
  lua_rawseti(L, 1, i);
  return 0;
}

/* [-1, +0, e] lua_pcall target in the sandbox: ref the value */
static int ref_protected(lua_State *L) {
  lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
  return 1;
}

/* emit(delta) in the runtime: hand a streamed piece to the script. Returns
 * false once the script is gone, so the provider may stop. */
static int runtime_emit(lua_State *L) {
  bridge *b = lua_touserdata(L, lua_upvalueindex(1));
  llm_call *c = b->caller;
  if (c == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_State *S = c->sandbox;
  char err[256];
  lua_pushcfunction(S, append_protected);
  lua_rawgeti(S, LUA_REGISTRYINDEX, c->queue_ref);
  if (mh_copy_value(L, 1, S, err, sizeof err) != 0) {
    lua_pop(S, 2);
    return luaL_error(L, "llm: %s", err);
  }
  lua_pushinteger(S, c->qtail + 1);
  if (lua_pcall(S, 3, 0, 0) == LUA_OK) c->qtail++;
  else lua_pop(S, 1); /* the sandbox is out of memory: the delta is dropped */
  mh_op_wake(&c->op);
  lua_pushboolean(L, 1);
  return 1;
}

/* [-0, +0, -] stores what the runtime's run ended with into the sandbox */
static void keep_outcome(llm_call *c, mh_run *run) {
  lua_State *S = c->sandbox;
  char err[256];
  lua_State *co = run->co;
  int base = lua_gettop(co) - run->nres;
  c->ok = 0;
  lua_pushcfunction(S, ref_protected);
  if (run->state == MH_RUN_OK && run->nres >= 1 && lua_istable(co, base + 1)) {
    if (mh_copy_value(co, base + 1, S, err, sizeof err) != 0) lua_pushstring(S, err);
    else c->ok = 1;
  } else if (run->state == MH_RUN_OK && run->nres >= 2 && lua_type(co, base + 2) == LUA_TSTRING) {
    lua_pushstring(S, lua_tostring(co, base + 2));
  } else if (run->state != MH_RUN_OK && run->error) {
    const char *cut = strstr(run->error, "\nstack traceback:");
    lua_pushlstring(S, run->error, cut ? (size_t)(cut - run->error) : strlen(run->error));
  } else {
    lua_pushstring(S, "llm: the runtime returned no result");
  }
  if (lua_pcall(S, 1, 1, 0) == LUA_OK) c->result_ref = (int)lua_tointeger(S, -1);
  else c->ok = 0;
  lua_pop(S, 1);
}

static void remote_done(mh_run *run, void *ud) {
  bridge *b = ud;
  b->remote = NULL;
  llm_call *c = b->caller;
  if (c == NULL) {
    free(b);
    return;
  }
  keep_outcome(c, run);
  c->done = 1;
  mh_op_wake(&c->op);
}

/* ---- usage and budgets ---- */

static lua_Number number_field(lua_State *L, int t, const char *k1, const char *k2) {
  lua_Number v = 0;
  if (lua_getfield(L, t, k1) == LUA_TTABLE && k2) lua_getfield(L, -1, k2);
  else lua_pushnil(L);
  if (!k2) v = lua_tonumber(L, -2);
  else v = lua_tonumber(L, -1);
  lua_pop(L, 2);
  return v;
}

/* [-0, +0, -] adds the result's usage (table at idx) to the run; returns 1
 * when that broke the run's token or cost budget */
static int account(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  mh_run *run = mh_run_current(L);
  if (run == NULL) return 0;
  lua_Number in = number_field(L, idx, "usage", "input");
  lua_Number out = number_field(L, idx, "usage", "output");
  lua_Number cost = number_field(L, idx, "cost", NULL);
  return mh_run_add_usage(run, in > 0 ? (uint64_t)in : 0, out > 0 ? (uint64_t)out : 0, cost > 0 ? cost : 0)
         != MH_BREAK_NONE;
}

/* llm.usage() -> {input=, output=, cost=, calls=} of this run and its tasks */
static int llm_usage(lua_State *L) {
  mh_run *run = mh_run_current(L);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, run ? (lua_Integer)run->tokens_in : 0);
  lua_setfield(L, -2, "input");
  lua_pushinteger(L, run ? (lua_Integer)run->tokens_out : 0);
  lua_setfield(L, -2, "output");
  lua_pushnumber(L, run ? run->cost : 0);
  lua_setfield(L, -2, "cost");
  lua_pushinteger(L, run ? run->calls : 0);
  lua_setfield(L, -2, "calls");
  return 1;
}

/* ---- the continuation ---- */

static int call_step(lua_State *L, llm_call *c) {
  for (;;) {
    if (c->qhead < c->qtail) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, c->queue_ref);
      lua_rawgeti(L, -1, ++c->qhead);               /* ... queue delta */
      lua_pushnil(L);
      lua_rawseti(L, -3, c->qhead);
      lua_remove(L, -2);                            /* ... delta */
      if (lua_isnil(L, 2)) {
        lua_pop(L, 1);
        continue;
      }
      lua_pushvalue(L, 2);
      lua_insert(L, -2);                            /* ... callback delta */
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
      if (ok && account(L, -1)) mh_raise_broken(L, mh_run_current(L));
      if (ok) return 1;
      luaL_pushfail(L);
      lua_insert(L, -2);
      return 2;
    }
    return mh_op_wait(L, &c->op, CALL_SLOT, call_k);
  }
}

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  llm_call *c = (llm_call *)mh_op_at(L, (int)ctx);
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

static int start_call(lua_State *L, const char *entry, const char *what) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushliteral(L, "stream");
  int t = lua_rawget(L, 1);                         /* req callback|nil */
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TFUNCTION, 1, "stream as a function");
  mh_run *run = mh_async_begin(L, what);
  mh_vm *vm = run->vm;
  llm_call *c = mh_op_new(L, sizeof *c, &llm_type);  /* req callback call */
  c->sandbox = vm->L;
  c->queue_ref = c->result_ref = LUA_NOREF;
  c->op.released = 1;                               /* until it is attached */
  lua_newtable(L);
  c->queue_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  request_without_stream(L);                        /* req callback call plain */
  if (!lua_isnil(L, 2)) {                           /* the provider should stream */
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "stream_deltas");
  }

  char err[512];
  /* From here on every failure lets go of queue_ref and anything pushed on R. */
  if (mh_runtime_push(vm->host, "moonhive.llm", entry, err, sizeof err) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->queue_ref);
    c->queue_ref = LUA_NOREF;
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_State *R = vm->host->runtime->L;              /* R: entry */
  bridge *b = NULL;
  const char *failed = NULL;
  int pushed = 1;                                   /* on R: the entry */
  if (mh_copy_value(L, 4, R, err, sizeof err) != 0) failed = err;
  else if (pushed++, (b = calloc(1, sizeof *b)) == NULL) failed = "out of memory";
  if (failed) {
    lua_pop(R, pushed);
    luaL_unref(L, LUA_REGISTRYINDEX, c->queue_ref);
    c->queue_ref = LUA_NOREF;
    return luaL_error(L, "%s: the request cannot be sent: %s", what, failed);
  }
  lua_pop(L, 1);                                    /* req callback call */
  lua_pushlightuserdata(R, b);
  lua_pushcclosure(R, runtime_emit, 1);             /* R: entry request emit */
  mh_run *remote = mh_run_start(vm->host->runtime, 2, remote_done, b);
  if (remote == NULL) {
    free(b);
    luaL_unref(L, LUA_REGISTRYINDEX, c->queue_ref);
    c->queue_ref = LUA_NOREF;
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

static int llm_chat(lua_State *L) { return start_call(L, "chat", "llm.chat"); }
static int llm_embed(lua_State *L) { return start_call(L, "embed", "llm.embed"); }

int luaopen_mh_llm(lua_State *L) {
  static const luaL_Reg funcs[] = {{"chat", llm_chat}, {"embed", llm_embed}, {"usage", llm_usage}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
