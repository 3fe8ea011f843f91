/* sb_coroutine.c — the sandbox's coroutine library.
 *
 * Scripts may make their own coroutines and still call async natives inside
 * them. A native that waits yields a private sentinel; resume and wrap here
 * recognise it, mark the inner coroutine blocked, and yield the sentinel
 * outward until it reaches the scheduler. When the run is resumed, the
 * continuations resume the inner coroutines in turn down to the native's own
 * continuation. A blocked coroutine or a run's own coroutine cannot be resumed
 * or closed by script code. create, status, running, isyieldable and yield are
 * Lua's own. */
#include <lauxlib.h>
#include <lualib.h>

#include "sandbox.h"
#include "scheduler.h"

#define RESUME_WAITING (-2)
#define RESUME_FAILED  (-1)

/* Why co cannot be resumed from L, or NULL when it can. */
static const char *cannot_resume(lua_State *L, lua_State *co) {
  uintptr_t flags = *mh_thread_flags(co);
  if (flags & MH_THREAD_ROOT) return "cannot resume a run's own coroutine";
  if (flags & MH_THREAD_DEAD) return "cannot resume a coroutine whose async call was cancelled";
  if (flags & MH_THREAD_BLOCKED) return "cannot resume a coroutine that is waiting for an async call";
  if (co == L) return "cannot resume non-suspended coroutine";
  switch (lua_status(co)) {
    case LUA_YIELD: return NULL;
    case LUA_OK: {
      lua_Debug ar;
      if (lua_getstack(co, 0, &ar)) return "cannot resume non-suspended coroutine";
      if (lua_gettop(co) == 0) return "cannot resume dead coroutine";
      return NULL;
    }
    default: return "cannot resume dead coroutine";
  }
}

/* [-narg, +(results | 1), -] Resumes co with narg values from L's top.
 * Returns the number of results moved to L, RESUME_FAILED with the error
 * object moved to L (*status set), or RESUME_WAITING when a native inside co
 * waits (nothing moved). */
static int resume_step(lua_State *L, lua_State *co, int narg, int *status) {
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    *status = LUA_ERRRUN;
    return RESUME_FAILED;
  }
  /* Every coroutine runs under the same count hook as its resumer
   * (including the every-instruction hook once a limit is broken). */
  lua_sethook(co, lua_gethook(L), lua_gethookmask(L), lua_gethookcount(L));
  lua_xmove(L, co, narg);
  int nres;
  *status = lua_resume(co, L, narg, &nres);
  if (*status == LUA_OK || *status == LUA_YIELD) {
    if (*status == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == &mh_wait_sentinel) {
      lua_pop(co, 1);
      return RESUME_WAITING;
    }
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      *status = LUA_ERRRUN;
      return RESUME_FAILED;
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1);
  return RESUME_FAILED;
}

/* [-0, +0, v] Passes a native wait inside co up through L, continuing in k. */
static int pass_wait_outward(lua_State *L, lua_State *co, lua_KFunction k) {
  if (!lua_isyieldable(L)) {
    mh_run *run = mh_run_current(L);
    if (run && run->waiting) {
      mh_op *op = run->waiting;
      run->waiting = NULL;
      op->type->cancel(op);
    }
    /* The coroutine stays suspended inside the cancelled call: it must never run again. */
    *mh_thread_flags(co) |= MH_THREAD_DEAD;
    return luaL_error(L, "an async call inside this coroutine cannot wait: the coroutine was "
                         "resumed from a metamethod, iterator or other C function");
  }
  *mh_thread_flags(co) |= MH_THREAD_BLOCKED;
  lua_pushlightuserdata(L, (void *)&mh_wait_sentinel);
  return lua_yieldk(L, 1, 0, k);
}

/* ---- coroutine.resume ---- */

static int resume_finish(lua_State *L, lua_State *co, int r, int status, lua_KFunction k);

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_State *co = lua_tothread(L, 1);
  *mh_thread_flags(co) &= ~MH_THREAD_BLOCKED;
  int st;
  int r = resume_step(L, co, 0, &st);
  return resume_finish(L, co, r, st, resume_k);
}

static int resume_finish(lua_State *L, lua_State *co, int r, int status, lua_KFunction k) {
  if (r == RESUME_WAITING) return pass_wait_outward(L, co, k);
  if (r == RESUME_FAILED) {
    mh_sandbox_rethrow_if_broken(L, status);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  const char *why = cannot_resume(L, co);
  if (why) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, why);
    return 2;
  }
  int status;
  int r = resume_step(L, co, lua_gettop(L) - 1, &status);
  return resume_finish(L, co, r, status, resume_k);
}

/* ---- coroutine.wrap ---- */

static int wrap_finish(lua_State *L, lua_State *co, int r, int status, lua_KFunction k);

static int wrap_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  *mh_thread_flags(co) &= ~MH_THREAD_BLOCKED;
  int st;
  int r = resume_step(L, co, 0, &st);
  return wrap_finish(L, co, r, st, wrap_k);
}

static int wrap_finish(lua_State *L, lua_State *co, int r, int status, lua_KFunction k) {
  if (r == RESUME_WAITING) return pass_wait_outward(L, co, k);
  if (r == RESUME_FAILED) {
    if (lua_status(co) > LUA_YIELD)
      lua_resetthread(co);           /* close its to-be-closed variables */
    mh_sandbox_rethrow_if_broken(L, status);
    if (status != LUA_ERRRUN || lua_type(L, -1) != LUA_TSTRING)
      return lua_error(L);
    luaL_where(L, 1);                /* as Lua's own wrap: add position info */
    lua_insert(L, -2);
    lua_concat(L, 2);
    return lua_error(L);
  }
  return r;
}

static int wrap_call(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  const char *why = cannot_resume(L, co);
  if (why) return luaL_error(L, "%s", why);
  int status;
  int r = resume_step(L, co, lua_gettop(L), &status);
  return wrap_finish(L, co, r, status, wrap_k);
}

static int co_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, wrap_call, 1);
  return 1;
}

/* ---- coroutine.close ---- */

static int co_close(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  uintptr_t flags = *mh_thread_flags(co);
  if (flags & (MH_THREAD_ROOT | MH_THREAD_BLOCKED | MH_THREAD_DEAD))
    return luaL_error(L, "cannot close a coroutine that is running or waiting for an async call");
  lua_pushvalue(L, lua_upvalueindex(1));  /* Lua's own close */
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

void mh_coroutine_open(lua_State *L) {
  lua_pushcfunction(L, luaopen_coroutine);
  lua_call(L, 0, 1);                       /* co */
  static const luaL_Reg funcs[] = {{"resume", co_resume}, {"wrap", co_wrap}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
  lua_getfield(L, -1, "close");
  lua_pushcclosure(L, co_close, 1);
  lua_setfield(L, -2, "close");
}
