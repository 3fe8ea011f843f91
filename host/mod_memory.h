/* mod_memory.h — `memory`: persisted agent memory (runtime: lua/moonhive/memory.lua). */
#ifndef MH_MOD_MEMORY_H
#define MH_MOD_MEMORY_H
#include <lua.h>
int luaopen_mh_memory(lua_State *L);
#endif
