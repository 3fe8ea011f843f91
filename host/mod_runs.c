/* mod_runs.c — `require "runs"`: sandboxed scripts record agent runs.
 *
 *   local r = runs.start{agent = "researcher", input = ...}  -- {id = "..."}
 *   runs.event{kind = "tool_call", agent = "researcher", data = {...}}
 *   runs.finish{status = "succeeded"|"failed", output = ..., error = "..."}
 *   runs.current() -> the id of the recorded run this script works for, or nil
 *
 * The work is done in the runtime (lua/moonhive/runs.lua, SQLite) through
 * the bridge. `start` binds the calling run (and the tasks it spawns later)
 * to the new record; events and the finish go to the bound record only, so
 * a script cannot write into another run. */
#include "mod_runs.h"

#include <string.h>

#include <lauxlib.h>

#include "bridge.h"
#include "scheduler.h"

void mh_runs_bind_record(lua_State *L, int idx) {
  mh_run *run = mh_run_current(L);
  if (run == NULL) return;
  if (lua_getfield(L, idx, "id") == LUA_TSTRING) {
    size_t len;
    const char *id = lua_tolstring(L, -1, &len);
    if (len < sizeof run->record_id) memcpy(run->record_id, id, len + 1);
    run->record_step[0] = '\0';
    if (run->on_record) run->on_record(run, run->on_record_ud);
  }
  lua_pop(L, 1);
}

static const mh_bridge_spec start = {"moonhive.runs", "start", "runs.start", mh_runs_bind_record, NULL};
static const mh_bridge_spec event = {"moonhive.runs", "event", "runs.event", NULL, NULL};
static const mh_bridge_spec finish = {"moonhive.runs", "finish", "runs.finish", NULL, NULL};

/* [-1, +(1|2), v] each: a request table in, the runtime's answer out */
static int runs_start(lua_State *L) { return mh_bridge_call(L, &start); }
static int runs_event(lua_State *L) { return mh_bridge_call(L, &event); }
static int runs_finish(lua_State *L) { return mh_bridge_call(L, &finish); }

/* runs.current() [-0, +1, -] */
static int runs_current(lua_State *L) {
  mh_run *run = mh_run_current(L);
  if (run && run->record_id[0]) lua_pushstring(L, run->record_id);
  else lua_pushnil(L);
  return 1;
}

int luaopen_mh_runs(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"start", runs_start}, {"event", runs_event}, {"finish", runs_finish}, {"current", runs_current}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
