/* mod_runs.h — `runs`: recording agent runs (runtime: lua/moonhive/runs.lua). */
#ifndef MH_MOD_RUNS_H
#define MH_MOD_RUNS_H
#include <lua.h>
int luaopen_mh_runs(lua_State *L);
#endif
