/* mod_task.c — `require "task"`: several things at once inside one run.
 *
 *   local t = task.spawn(fn, ...)   -- fn(...) as a child run, from the next loop turn
 *   local ok, ... = task.wait(t)    -- true and its results, or false and its error
 *   task.cancel(t)                  -- it ends with "run cancelled"
 *   local a, b = task.all{f1, f2}   -- spawn each, wait for all; first result of each;
 *                                   -- raises "task N failed: ..." if one fails
 *   local sem = task.semaphore(n)   -- at most n holders at once (semaphore.c)
 *   local ev = task.event()         -- a latch: ev:wait() until someone's ev:set() (event.c)
 *   local t = task.background(fn, ...) -- runtime only: fn(...) as a run of its own,
 *                                   -- not the caller's child: it outlives the caller
 * t:wait() and t:cancel() work too. A child shares the sandbox and the
 * parent's deadline, has its own CPU budget, and is cancelled when the parent
 * run ends.
 *
 * A task struct has two holders: the script's handle (a userdata; its __gc
 * lets go) and the child run (its done callback lets go); the last one frees
 * it. Results wait in a registry ref until the handle goes. */
#include "mod_task.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "scheduler.h"
#include "vm.h"

static const char TASK_MT = 0; /* registry: metatable of task handles */

typedef struct task task;

typedef struct task_waiter {
  mh_op op;
  task *task;
  struct task_waiter *prev, *next;
} task_waiter;

struct task {
  mh_run *run;             /* the child while it runs */
  int finished, ok;
  int results_ref;         /* vm registry: {n = N, ...} on success, the message on failure */
  task_waiter *waiters;
  int holders;
};

static void task_unhold(lua_State *L, task *t) {
  if (--t->holders > 0) return;
  /* (A waiter holds the handle on its stack, so none is left here.) */
  luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
  free(t);
}

/* ---- the metatables of task's objects ---- */

void mh_task_set_mt(lua_State *L, const void *key, const char *name, const luaL_Reg *methods) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
  lua_setmetatable(L, -2);
}

void *mh_task_check(lua_State *L, int idx, const void *key, const char *name) {
  void *p = lua_touserdata(L, idx);
  if (p && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    int ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (ok) return p;
  }
  luaL_typeerror(L, idx, name);
  return NULL;
}

/* ---- waiting ---- */

/* The one release point of a waiter: unlink, detach, free. */
static void waiter_release(mh_op *op) {
  task_waiter *w = (task_waiter *)op;
  mh_op_detach(op);
  if (w->task) {
    if (w->prev) w->prev->next = w->next;
    else w->task->waiters = w->next;
    if (w->next) w->next->prev = w->prev;
  }
  free(w);
}

static const mh_op_type wait_type = {"task.wait", waiter_release};

/* [-0, +1, e] lua_pcall target: (thread, n) -> {n = n, values moved from thread} */
static int pack_results(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  int n = (int)lua_tointeger(L, 2);
  lua_settop(L, 0);
  luaL_checkstack(L, n + 2, "too many results");
  lua_createtable(L, n, 1);
  lua_xmove(co, L, n);
  for (int i = n; i >= 1; i--) lua_rawseti(L, 1, i);
  lua_pushinteger(L, n);
  lua_setfield(L, 1, "n");
  return 1;
}

/* [-0, +1, e] lua_pcall target: (message) -> the message without its traceback */
static int keep_message(lua_State *L) {
  const char *msg = lua_touserdata(L, 1);
  const char *cut = strstr(msg, "\nstack traceback:");
  lua_pushlstring(L, msg, cut ? (size_t)(cut - msg) : strlen(msg));
  return 1;
}

static void task_done(mh_run *run, void *ud) {
  task *t = ud;
  lua_State *L = run->vm->L;
  t->run = NULL;
  t->finished = 1;
  t->ok = run->state == MH_RUN_OK;
  if (t->holders > 1) { /* someone may still ask: keep the outcome */
    if (t->ok) {
      lua_pushcfunction(L, pack_results);
      lua_rawgeti(L, LUA_REGISTRYINDEX, run->co_ref);
      lua_pushinteger(L, run->nres);
    } else {
      lua_pushcfunction(L, keep_message);
      lua_pushlightuserdata(L, run->error ? run->error : (char *)"task failed");
      lua_pushnil(L);
    }
    if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
      t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
      lua_pop(L, 1);
      t->ok = 0; /* out of memory: the waiter learns it failed */
    }
  }
  for (task_waiter *w = t->waiters; w; w = w->next) mh_op_wake(&w->op);
  task_unhold(L, t);
}

/* [-0, +(1|2|n+1), e] true and the results, or false and the message */
static int push_outcome(lua_State *L, task *t) {
  lua_pushboolean(L, t->ok);
  if (t->results_ref == LUA_NOREF || t->results_ref == LUA_REFNIL) {
    if (t->ok) return 1;
    lua_pushliteral(L, "task failed (out of memory)");
    return 2;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
  if (!t->ok) return 2;
  lua_getfield(L, -1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -(n + 1));
  return n + 1;
}

static task *check_task(lua_State *L, int idx) {
  task **box = lua_touserdata(L, idx);
  if (box && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TASK_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same && *box) return *box;
  }
  luaL_typeerror(L, idx, "task");
  return NULL;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  task_waiter *w = (task_waiter *)ctx;
  mh_op_resumed(L, &w->op); /* raises (after releasing w) if this run broke a limit */
  task *t = w->task;
  waiter_release(&w->op);
  return push_outcome(L, t);
}

/* task.wait(t) [-1, +?, v] */
static int task_wait(lua_State *L) {
  task *t = check_task(L, 1);
  if (t->finished) return push_outcome(L, t);
  mh_run *run = mh_async_begin(L, "task.wait");
  if (t->run == run) return luaL_error(L, "a task cannot wait for itself");
  task_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "task.wait: out of memory");
  w->task = t;
  w->prev = NULL;
  w->next = t->waiters;
  if (t->waiters) t->waiters->prev = w;
  t->waiters = w;
  mh_op_attach(run, &w->op, &wait_type);
  return mh_op_wait(L, &w->op, (lua_KContext)w, wait_k);
}

/* ---- spawning ---- */

static int task_gc(lua_State *L) {
  task **box = lua_touserdata(L, 1);
  if (box && *box) {
    task *t = *box;
    *box = NULL;
    task_unhold(L, t);
  }
  return 0;
}

/* [-0, +1, e] pushes the metatable of task handles */
static void push_task_mt(lua_State *L);

/* [-n, +1, e] Starts fn(...) (the whole stack) as a child run of the
 * caller, or (detached) as a run of its own in the same state. */
static int start_task(lua_State *L, int detached) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  mh_run *parent = mh_run_current(L);
  /* a background run needs no parent: the runtime starts one from a bridge
   * call answered at once too (the workflow watch loop) */
  if (parent == NULL && !detached) return luaL_error(L, "task.spawn can only be called while a script runs");
  mh_vm *vm = parent ? parent->vm : mh_vm_of(L);
  int n = lua_gettop(L);
  task **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  push_task_mt(L);
  lua_setmetatable(L, -2);
  task *t = calloc(1, sizeof *t);
  if (t == NULL) return luaL_error(L, "task.spawn: out of memory");
  t->results_ref = LUA_NOREF;
  t->holders = 1;
  *box = t;
  lua_State *main = vm->L;
  luaL_checkstack(L, n, "too many arguments");
  if (!lua_checkstack(main, n + 8)) return luaL_error(L, "task.spawn: too many arguments");
  for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
  lua_xmove(L, main, n);
  mh_run *child = detached ? mh_run_start(vm, n - 1, task_done, t)
                           : mh_run_spawn(parent, n - 1, task_done, t);
  if (child == NULL) return luaL_error(L, "task.spawn: cannot start a task (memory limit)");
  t->run = child;
  t->holders++;
  return 1;
}

/* task.spawn(fn, ...) [-n, +1, e] */
static int task_spawn(lua_State *L) { return start_task(L, 0); }

/* task.background(fn, ...) [-n, +1, e]: the trusted runtime's long-lived
 * work (the workflow watch loop); no sandbox gets it, since such a run is
 * bounded by no script's limits */
static int task_background(lua_State *L) { return start_task(L, 1); }

/* task.cancel(t) [-1, +0, v] */
static int task_cancel(lua_State *L) {
  task *t = check_task(L, 1);
  if (t->run) mh_run_cancel(t->run, MH_BREAK_CANCEL);
  return 0;
}

/* ---- all ---- */

static int all_step(lua_State *L);

static int all_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  /* stack: fns handles results i ok values... */
  lua_Integer i = lua_tointeger(L, 4);
  if (!lua_toboolean(L, 5)) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer j = i + 1; j <= n; j++) { /* stop the rest */
      lua_rawgeti(L, 2, j);
      task **box = lua_touserdata(L, -1);
      if (box && *box && (*box)->run) mh_run_cancel((*box)->run, MH_BREAK_CANCEL);
      lua_pop(L, 1);
    }
    return luaL_error(L, "task %d failed: %s", (int)i, luaL_optstring(L, 6, "?"));
  }
  lua_settop(L, 6);
  lua_rawseti(L, 3, i);
  lua_settop(L, 4);
  lua_pushinteger(L, i + 1);
  lua_replace(L, 4);
  return all_step(L);
}

static int all_step(lua_State *L) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  lua_Integer i = lua_tointeger(L, 4);
  if (i > n) {
    luaL_checkstack(L, (int)n, "too many results");
    for (lua_Integer j = 1; j <= n; j++) lua_rawgeti(L, 3, j);
    return (int)n;
  }
  lua_pushcfunction(L, task_wait);
  lua_rawgeti(L, 2, i);
  lua_callk(L, 1, LUA_MULTRET, 0, all_k);
  return all_k(L, LUA_OK, 0);
}

/* task.all{f1, f2, ...} [-1, +n, v] */
static int task_all(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TFUNCTION) return luaL_error(L, "task.all: entry %d is not a function", (int)i);
    lua_pop(L, 1);
  }
  lua_createtable(L, (int)n, 0);      /* fns handles */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushcfunction(L, task_spawn);
    lua_rawgeti(L, 1, i);
    lua_call(L, 1, 1);
    lua_rawseti(L, 2, i);
  }
  lua_createtable(L, (int)n, 0);      /* fns handles results */
  lua_pushinteger(L, 1);              /* fns handles results i */
  return all_step(L);
}

static void push_task_mt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TASK_MT) != LUA_TNIL) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);
  lua_pushcfunction(L, task_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "task");
  lua_setfield(L, -2, "__name");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  static const luaL_Reg methods[] = {{"wait", task_wait}, {"cancel", task_cancel}, {NULL, NULL}};
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TASK_MT);
}

int luaopen_mh_task(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"spawn", task_spawn}, {"wait", task_wait}, {"cancel", task_cancel}, {"all", task_all},
    {"semaphore", mh_task_semaphore}, {"event", mh_task_event}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  if (mh_vm_of(L)->trusted) {
    lua_pushcfunction(L, task_background);
    lua_setfield(L, -2, "background");
  }
  return 1;
}
