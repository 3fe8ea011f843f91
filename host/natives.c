/* natives.c — the table of native modules a sandbox may require. Each is
 * opened at most once per state, cached, and handed out as a read-only proxy,
 * so `require "http"` and the global `http` are the same table. */
#include <string.h>

#include "mod_http.h"
#include "mod_log.h"
#include "mod_task.h"
#include "mod_time.h"
#include "sandbox.h"
#include "stack_check.h"

static const char CACHE_KEY = 0; /* registry: name -> opened native module */

static const struct { const char *name; lua_CFunction open; } natives[] = {
  {"http", luaopen_mh_http},
  {"log", luaopen_mh_log},
  {"task", luaopen_mh_task},
  {"time", luaopen_mh_time},
};

const char *const mh_native_names[] = {"http", "log", "task", "time", NULL};

int mh_native_open(lua_State *L, const char *name) {
  for (size_t i = 0; i < sizeof natives / sizeof natives[0]; i++) {
    if (strcmp(natives[i].name, name) != 0) continue;
    MH_STACK_BEGIN(L);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CACHE_KEY) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &CACHE_KEY);
    }                                              /* cache */
    if (lua_getfield(L, -1, name) == LUA_TNIL) {   /* cache mod|nil */
      lua_pop(L, 1);
      lua_pushcfunction(L, natives[i].open);
      lua_call(L, 0, 1);
      mh_sandbox_readonly(L);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, name);
    }
    lua_remove(L, -2);                             /* mod */
    MH_STACK_END(L, 1);
    return 1;
  }
  return 0;
}
