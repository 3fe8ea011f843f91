/* mod_workflows.h — `workflows`: the journal of durable workflow runs
 * (runtime: lua/moonhive/workflows.lua). */
#ifndef MH_MOD_WORKFLOWS_H
#define MH_MOD_WORKFLOWS_H
#include <lua.h>
int luaopen_mh_workflows(lua_State *L);
#endif
