/* mod_llm.c — `require "llm"`: model calls for sandboxed scripts.
 *
 *   local res, err = llm.chat{model=, messages=, system=, tools=, tool_choice=,
 *       temperature=, max_tokens=, response_format=, stream=function(delta) end}
 *   local res, err = llm.embed{model=, input=}
 *   llm.usage() -> {input=, output=, cost=, calls=}
 *
 * The calls run in the trusted runtime (lua/moonhive/llm.lua) through the
 * bridge; what stays here is the accounting: each result's usage counts
 * toward the run's token and cost budgets. */
#include "mod_llm.h"

#include <stdint.h>

#include <lauxlib.h>

#include "bridge.h"
#include "scheduler.h"

/* [-0, +0, -] t[k1][k2] (or t[k1] when k2 is NULL) as a number, 0 if absent */
static lua_Number number_field(lua_State *L, int t, const char *k1, const char *k2) {
  lua_Number v = 0;
  if (lua_getfield(L, t, k1) == LUA_TTABLE && k2) lua_getfield(L, -1, k2);
  else lua_pushnil(L);
  if (!k2) v = lua_tonumber(L, -2);
  else v = lua_tonumber(L, -1);
  lua_pop(L, 2);
  return v;
}

/* [-0, +0, v] adds the result's usage (table at idx) to the run; raises
 * when that broke the run's token or cost budget */
static void account(lua_State *L, int idx) {
  mh_run *run = mh_run_current(L);
  if (run == NULL) return;
  lua_Number in = number_field(L, idx, "usage", "input");
  lua_Number out = number_field(L, idx, "usage", "output");
  lua_Number cost = number_field(L, idx, "cost", NULL);
  if (mh_run_add_usage(run, in > 0 ? (uint64_t)in : 0, out > 0 ? (uint64_t)out : 0, cost > 0 ? cost : 0)
      != MH_BREAK_NONE)
    mh_raise_broken(L, run);
}

/* llm.usage() -> {input=, output=, cost=, calls=} of this run and its tasks [-0, +1, m] */
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

static const mh_bridge_spec chat = {"moonhive.llm", "chat", "llm.chat", account, NULL};
static const mh_bridge_spec embed = {"moonhive.llm", "embed", "llm.embed", account, NULL};

static int llm_chat(lua_State *L) { return mh_bridge_call(L, &chat); }
static int llm_embed(lua_State *L) { return mh_bridge_call(L, &embed); }

int luaopen_mh_llm(lua_State *L) {
  static const luaL_Reg funcs[] = {{"chat", llm_chat}, {"embed", llm_embed}, {"usage", llm_usage}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
