/* mod_host.c — `require "host"` in the trusted runtime: the configuration a
 * provider may read, never a secret.
 *
 *   host.env(name)      -- one of a few non-secret variables (MOONHIVE_MODEL,
 *                       -- OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
 *                       -- MOONHIVE_LLM_CONCURRENCY), or nil
 *   host.has_key(name)  -- "openai" | "anthropic": is a key configured?
 *   host.data_dir()     -- the data directory */
#include "mod_host.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "vm.h"

static const char *const readable[] = {"MOONHIVE_MODEL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL",
                                       "MOONHIVE_LLM_CONCURRENCY", NULL};

static int host_env(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (int i = 0; readable[i]; i++) {
    if (strcmp(name, readable[i]) == 0) {
      const char *v = getenv(name);
      if (v && *v) lua_pushstring(L, v);
      else lua_pushnil(L);
      return 1;
    }
  }
  return luaL_error(L, "host.env: '%s' is not readable", name);
}

static int host_has_key(lua_State *L) {
  static const char *const providers[] = {"openai", "anthropic", NULL};
  int id = luaL_checkoption(L, 1, NULL, providers);
  lua_pushboolean(L, mh_host_secret(mh_vm_of(L)->host, (mh_secret_id)id) != NULL);
  return 1;
}

static int host_data_dir(lua_State *L) {
  lua_pushstring(L, mh_vm_of(L)->host->data_dir);
  return 1;
}

int luaopen_mh_host(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"env", host_env}, {"has_key", host_has_key}, {"data_dir", host_data_dir}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
