/* mod_workflows.c — `require "workflows"`: the journal of durable workflow
 * runs, for the sandboxed workflow engine (stdlib/workflow.lua).
 *
 *   workflows.begin{workflow=, path=, source=, input=} -> {id=, version=}
 *   workflows.attach{id=}          -> {id=, workflow=, input=, status=, journal=}
 *   workflows.unfinished{id=}      -> {runs = {{id=, workflow=, path=, source=}, ...}}
 *   workflows.step{step=, kind=, name=, status=, result=, error=, memory=} -> {status=}
 *   workflows.status{status=, output=, error=} -> {status=}
 *   workflows.poll{}               -> {status=}
 *   workflows.take_signal{name=, step=, memory=} -> {found=, payload=, status=}
 *
 * The work is done in the runtime (lua/moonhive/workflows.lua, behind the
 * store interface of lua/moonhive/store/) through the bridge. `begin` and
 * `attach` bind the calling run and the tasks it spawns afterwards to the
 * workflow run, like runs.start; every other call acts on the bound run
 * only. */
#include "mod_workflows.h"

#include <lauxlib.h>

#include "bridge.h"
#include "mod_runs.h"

#define ENTRY(fn, bind) \
  static const mh_bridge_spec spec_##fn = {"moonhive.workflows", #fn, "workflows." #fn, bind}; \
  static int workflows_##fn(lua_State *L) { return mh_bridge_call(L, &spec_##fn); }

/* [-1, +(1|2), v] each: a request table in, the runtime's answer out */
ENTRY(begin, mh_runs_bind_record)
ENTRY(attach, mh_runs_bind_record)
ENTRY(unfinished, NULL)
ENTRY(step, NULL)
ENTRY(status, NULL)
ENTRY(poll, NULL)
ENTRY(take_signal, NULL)

int luaopen_mh_workflows(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"begin", workflows_begin}, {"attach", workflows_attach}, {"unfinished", workflows_unfinished},
    {"step", workflows_step}, {"status", workflows_status}, {"poll", workflows_poll},
    {"take_signal", workflows_take_signal}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
