/* mod_host.h — `host`, for the trusted runtime only. */
#ifndef MH_MOD_HOST_H
#define MH_MOD_HOST_H
#include <lua.h>
int luaopen_mh_host(lua_State *L);
#endif
