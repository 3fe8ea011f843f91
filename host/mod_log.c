/* mod_log.c — `require "log"`: log.debug/info/warn/error(...) write one line
 * on the host's log (stderr), tagged with the run id, at MOONHIVE_LOG's level;
 * log.write(text) writes text to stderr as it is (progress displays). */
#include "mod_log.h"

#include <stdio.h>

#include <lauxlib.h>

#include "log.h"
#include "scheduler.h"

/* [-0, +0, e] joins the arguments like print and logs them at `level` */
static int log_at(lua_State *L, mh_log_level level) {
  if (!mh_log_enabled(level)) return 0;
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  mh_run *run = mh_run_current(L);
  mh_log(level, "run %llu: %s", run ? run->id : 0ull, lua_tostring(L, -1));
  return 0;
}

static int log_debug(lua_State *L) { return log_at(L, MH_LOG_DEBUG); }
static int log_info(lua_State *L) { return log_at(L, MH_LOG_INFO); }
static int log_warn(lua_State *L) { return log_at(L, MH_LOG_WARN); }
static int log_error(lua_State *L) { return log_at(L, MH_LOG_ERROR); }

/* log.write(text) [-1, +0, e] */
static int log_write(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  fwrite(text, 1, len, stderr);
  fflush(stderr);
  return 0;
}

int luaopen_mh_log(lua_State *L) {
  static const luaL_Reg funcs[] = {{"debug", log_debug}, {"info", log_info}, {"warn", log_warn},
                                   {"error", log_error}, {"write", log_write}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
