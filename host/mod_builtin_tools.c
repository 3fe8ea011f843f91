/* mod_builtin_tools.c — `require "builtin_tools"`: what the built-in agent
 * tools (stdlib/tools/) cannot do inside a sandbox, done by the trusted
 * runtime (lua/moonhive/tools.lua) through the bridge:
 *
 *   builtin_tools.files{op = "read"|"write"|"append"|"list"|"search"|"remove", path=, text=, ...}
 *   builtin_tools.run_code{language = "python3"|"lua"|"sh", code=, timeout=, stdin=}
 *   builtin_tools.http_fetch{url=, method=, headers=, body=}
 *
 * Files and code work in the workspace of the recorded run the caller is
 * part of ($MOONHIVE_DATA/workspaces/RUN_ID), which C names, not the script;
 * http_fetch reaches only the hosts the project allows. */
#include "mod_builtin_tools.h"

#include <lauxlib.h>

#include "bridge.h"

static const mh_bridge_spec files = {"moonhive.tools", "files", "files", NULL, NULL};
static const mh_bridge_spec run_code = {"moonhive.tools", "run_code", "run_code", NULL, NULL};
static const mh_bridge_spec http_fetch = {"moonhive.tools", "http_fetch", "http_fetch", NULL, NULL};

/* [-1, +(1|2), v] each: a request table in, the runtime's answer out */
static int tools_files(lua_State *L) { return mh_bridge_call(L, &files); }
static int tools_run_code(lua_State *L) { return mh_bridge_call(L, &run_code); }
static int tools_http_fetch(lua_State *L) { return mh_bridge_call(L, &http_fetch); }

int luaopen_mh_builtin_tools(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"files", tools_files}, {"run_code", tools_run_code}, {"http_fetch", tools_http_fetch}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
