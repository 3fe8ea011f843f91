/* mod_runs.h — `runs`: recording agent runs (runtime: lua/moonhive/runs.lua). */
#ifndef MH_MOD_RUNS_H
#define MH_MOD_RUNS_H
#include <lua.h>
int luaopen_mh_runs(lua_State *L);
/* [-0, +0, -] Binds the current run (and the tasks it spawns later) to the
 * recorded run whose id is field `id` of the table at idx: a bridge spec's
 * on_result for calls that start or attach to a recorded run. */
void mh_runs_bind_record(lua_State *L, int idx);

#endif
