/* mod_store.h — `store` (SQLite), for the trusted runtime only. */
#ifndef MH_MOD_STORE_H
#define MH_MOD_STORE_H
#include <lua.h>
int luaopen_mh_store(lua_State *L);
#endif
