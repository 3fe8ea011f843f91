/* mod_time.h — the `time` native module and the global `sleep`. */
#ifndef MH_MOD_TIME_H
#define MH_MOD_TIME_H

#include <lua.h>

/* sleep(ms): waits without blocking the loop. */
int mh_time_sleep(lua_State *L);
int luaopen_mh_time(lua_State *L);

#endif
