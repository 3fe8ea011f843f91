/* mod_workflows.c — `require "workflows"`: the journal of durable workflow
 * runs, for the sandboxed workflow engine (stdlib/workflow.lua).
 *
 *   workflows.begin{workflow=, path=, source=, input=} -> {id=, version=}
 *   workflows.attach{id=}          -> {id=, workflow=, input=, status=, journal=}
 *   workflows.unfinished{id=}      -> {runs = {{id=, workflow=, path=, source=}, ...}}
 *   workflows.step{step=, kind=, name=, status=, result=, error=, memory=} -> {status=}
 *   workflows.status{status=, output=, error=} -> {status=}
 *   workflows.watch{}              -> {status=, lost=} once the run is cancelled or taken over
 *   workflows.wake(run_id)         -- runtime only: the watch loop has news of run_id
 *   workflows.take_signal{name=, step=, memory=} -> {found=, payload=, status=}
 *   workflows.in_step(id, attempt)  -- the model and tool calls this task (and the
 *   workflows.in_step()             -- tasks it spawns) makes from now on are recorded
 *                                   -- in the agent run of step id's attempt; () ends it
 *
 * The work is done in the runtime (lua/moonhive/workflows.lua, behind the
 * store interface of lua/moonhive/store/) through the bridge. `begin` and
 * `attach` bind the calling run and the tasks it spawns afterwards to the
 * workflow run, like runs.start; every other call acts on the bound run
 * only. */
#include "mod_workflows.h"

#include <lauxlib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge.h"
#include "mod_runs.h"
#include "scheduler.h"
#include "vm.h"

#define ENTRY(fn, bind, now) \
  static const mh_bridge_spec spec_##fn = {"moonhive.workflows", #fn, "workflows." #fn, bind, now}; \
  static int workflows_##fn(lua_State *L) { return mh_bridge_call(L, &spec_##fn); }

/* [-1, +(1|2), v] each: a request table in, the runtime's answer out */
ENTRY(begin, mh_runs_bind_record, "begin_now")
ENTRY(attach, mh_runs_bind_record, NULL)
ENTRY(unfinished, NULL, NULL)
ENTRY(step, NULL, "step_now")
ENTRY(status, NULL, "status_now")
ENTRY(take_signal, NULL, NULL)

/* ---- the watch ----
 *
 * On a store whose calls never yield, a script's watch of its run waits in
 * host memory, not in a run of the runtime: watch_now (answered at once)
 * registers it with the runtime's watch loop, then the script waits on a
 * watch_waiter in the host's list until the runtime calls
 * workflows.wake(run id) (runtime only), and asks watch_news (at once) what
 * the news is. Elsewhere the runtime's own watch entry waits, as a run. */

static const mh_bridge_spec spec_watch = {"moonhive.workflows", "watch", "workflows.watch", NULL, "watch_now"};
static const mh_bridge_spec spec_news = {"moonhive.workflows", "watch", "workflows.watch", NULL, "watch_news"};
static const mh_bridge_spec spec_watch_run = {"moonhive.workflows", "watch", "workflows.watch", NULL, NULL};

typedef struct mh_workflow_watch watch_waiter;
struct mh_workflow_watch {
  mh_op op;
  mh_host *host;
  watch_waiter *prev, *next;  /* host->watches */
  char run_id[sizeof ((mh_run *)0)->record_id];
};

static void watch_release(mh_op *op) {
  watch_waiter *w = (watch_waiter *)op;
  mh_op_detach(op);
  if (w->prev) w->prev->next = w->next;
  else w->host->watches = w->next;
  if (w->next) w->next->prev = w->prev;
  free(w);
}

static const mh_op_type watch_type = {"workflows.watch", watch_release};

/* [-0, +(1|2), v] woken: the runtime has news of the run. L: req nil */
static int watch_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  watch_waiter *w = (watch_waiter *)ctx;
  mh_op_resumed(L, &w->op); /* raises (after releasing w) if the watching task was cancelled meanwhile */
  watch_release(&w->op);
  int n = mh_bridge_call_now(L, &spec_news);
  if (n >= 0) return n;
  luaL_pushfail(L);
  lua_pushliteral(L, "workflows.watch: the runtime has no news of this run");
  return 2;
}

/* workflows.watch{} [-1, +(1|2), v] -> {status=, lost=, draining=} once the
 * run is cancelled, taken over or finished, or the process drains */
static int workflows_watch(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushnil(L);                                   /* req nil */
  int n = mh_bridge_call_now(L, &spec_watch);
  if (n < 0) {                                      /* a store that waits: the runtime's own watch entry */
    lua_settop(L, 1);
    return mh_bridge_call(L, &spec_watch_run);
  }
  if (n != 1 || lua_getfield(L, -1, "waiting") != LUA_TBOOLEAN) {
    if (n == 1) lua_pop(L, 1);
    return n;                                       /* a failure, or news already */
  }
  lua_pop(L, 2);                                    /* req nil */
  mh_run *run = mh_async_begin(L, "workflows.watch");
  watch_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "workflows.watch: out of memory");
  w->host = run->vm->host;
  memcpy(w->run_id, run->record_id, sizeof w->run_id);
  w->next = w->host->watches;
  if (w->next) w->next->prev = w;
  w->host->watches = w;
  mh_op_attach(run, &w->op, &watch_type);
  return mh_op_wait(L, &w->op, (lua_KContext)w, watch_k);
}

/* workflows.wake(run_id) [-1, +0, v]: the runtime's watch loop has news of
 * run_id (runtime only) */
static int workflows_wake(lua_State *L) {
  const char *id = luaL_checkstring(L, 1);
  for (watch_waiter *w = mh_vm_of(L)->host->watches; w; w = w->next)
    if (strcmp(w->run_id, id) == 0) mh_op_wake(&w->op);
  return 0;
}

/* workflows.in_step([id, attempt]) [-(0|2), +0, v] */
static int workflows_in_step(lua_State *L) {
  mh_run *run = mh_run_current(L);
  if (lua_isnoneornil(L, 1)) {
    if (run) run->record_step[0] = '\0';
    return 0;
  }
  size_t len;
  const char *id = luaL_checklstring(L, 1, &len);
  lua_Integer attempt = luaL_checkinteger(L, 2);
  /* "3.2.1", or a compensation's "c.1" / an error handler's "e.2.1" */
  size_t skip = len > 2 && (id[0] == 'c' || id[0] == 'e') && id[1] == '.' ? 2 : 0;
  luaL_argcheck(L, len > skip && strspn(id + skip, "0123456789.") == len - skip, 1,
                "a workflow step id (\"3.2.1\", \"c.1\") expected");
  luaL_argcheck(L, attempt >= 1 && attempt <= 9999, 2, "an attempt number from 1 expected");
  char tag[sizeof run->record_step];
  int n = snprintf(tag, sizeof tag, "%s#%d", id, (int)attempt);
  luaL_argcheck(L, n > 0 && (size_t)n < sizeof tag, 1, "step id too long");
  if (run == NULL) return luaL_error(L, "workflows.in_step: not inside a run");
  memcpy(run->record_step, tag, (size_t)n + 1);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  run->record_step_at = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
  return 0;
}

int luaopen_mh_workflows(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"begin", workflows_begin}, {"attach", workflows_attach}, {"unfinished", workflows_unfinished},
    {"step", workflows_step}, {"status", workflows_status}, {"watch", workflows_watch},
    {"take_signal", workflows_take_signal}, {"in_step", workflows_in_step}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  if (mh_vm_of(L)->trusted) {
    lua_pushcfunction(L, workflows_wake);
    lua_setfield(L, -2, "wake");
  }
  return 1;
}
