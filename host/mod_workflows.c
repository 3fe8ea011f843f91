/* mod_workflows.c — `require "workflows"`: the journal of durable workflow
 * runs, for the sandboxed workflow engine (stdlib/workflow.lua).
 *
 *   workflows.begin{workflow=, path=, source=, input=} -> {id=, version=}
 *   workflows.attach{id=}          -> {id=, workflow=, input=, status=, journal=}
 *   workflows.unfinished{id=}      -> {runs = {{id=, workflow=, path=, source=}, ...}}
 *   workflows.step{step=, kind=, name=, status=, result=, error=, memory=} -> {status=}
 *   workflows.status{status=, output=, error=} -> {status=}
 *   workflows.watch{}              -> {status=, lost=} once the run is cancelled or taken over
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
#include <string.h>
#include <time.h>

#include "bridge.h"
#include "mod_runs.h"
#include "scheduler.h"

#define ENTRY(fn, bind, now) \
  static const mh_bridge_spec spec_##fn = {"moonhive.workflows", #fn, "workflows." #fn, bind, now}; \
  static int workflows_##fn(lua_State *L) { return mh_bridge_call(L, &spec_##fn); }

/* [-1, +(1|2), v] each: a request table in, the runtime's answer out */
ENTRY(begin, mh_runs_bind_record, "begin_now")
ENTRY(attach, mh_runs_bind_record, NULL)
ENTRY(unfinished, NULL, NULL)
ENTRY(step, NULL, "step_now")
ENTRY(status, NULL, "status_now")
ENTRY(watch, NULL, NULL)
ENTRY(take_signal, NULL, NULL)

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
  return 1;
}
