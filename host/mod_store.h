/* mod_store.h — `store` (SQLite), for the trusted runtime only. */
#ifndef MH_MOD_STORE_H
#define MH_MOD_STORE_H
#include <lua.h>

#include "store_group.h"

int luaopen_mh_store(lua_State *L);

/* [-0, +0, -] The group commit of the open db (a store.open value) at idx,
 * or NULL when it is not one or commits each write by itself. */
mh_store_group *mh_store_db_group(lua_State *L, int idx);
#endif
