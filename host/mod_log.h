/* mod_log.h — the `log` native module. */
#ifndef MH_MOD_LOG_H
#define MH_MOD_LOG_H
#include <lua.h>
int luaopen_mh_log(lua_State *L);
#endif
