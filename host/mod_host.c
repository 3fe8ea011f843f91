/* mod_host.c — `require "host"` in the trusted runtime: the configuration a
 * provider may read, never a secret.
 *
 *   host.env(name)      -- one of a few non-secret variables (MOONHIVE_MODEL,
 *                       -- OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
 *                       -- MOONHIVE_LLM_CONCURRENCY), or nil
 *   host.has_key(name)  -- "openai" | "anthropic": is a key configured?
 *   host.data_dir()     -- the data directory
 *   host.config()       -- the project's moonhive.lua (or $MOONHIVE_CONFIG) as a
 *                       -- table, {} when there is none; nil, err when it is broken.
 *                       -- It is evaluated as data: text only, no globals at all. */
#include "mod_host.h"

#include <stdio.h>
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

static const char CONFIG_KEY = 0; /* registry: the loaded configuration */

/* [-0, +1, -] lua_pcall'd chunk runner with an instruction cap */
static void config_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "the configuration file takes too long to evaluate");
}

static int host_config(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  const char *path = getenv("MOONHIVE_CONFIG");
  int explicit_path = path && *path;
  if (!explicit_path) path = "moonhive.lua";
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    if (explicit_path) {
      luaL_pushfail(L);
      lua_pushfstring(L, "cannot open the configuration %s", path);
      return 2;
    }
    lua_newtable(L); /* no file: no configuration */
  } else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) luaL_addlstring(&b, chunk, n);
    fclose(f);
    luaL_pushresult(&b);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    lua_pushfstring(L, "@%s", path);
    if (luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t") != LUA_OK) {
      luaL_pushfail(L);
      lua_insert(L, -2);
      return 2;
    }
    lua_newtable(L);                       /* its _ENV: nothing at all */
    lua_setupvalue(L, -2, 1);
    lua_State *co = lua_newthread(L);      /* evaluate under an instruction cap */
    lua_insert(L, -2);
    lua_xmove(L, co, 1);
    lua_sethook(co, config_hook, LUA_MASKCOUNT, 10000000);
    int nres;
    int status = lua_resume(co, L, 0, &nres);
    if (status != LUA_OK || nres < 1 || !lua_istable(co, -nres)) {
      luaL_pushfail(L);
      if (status != LUA_OK) lua_xmove(co, L, 1);
      else lua_pushfstring(L, "%s must return a table", path);
      return 2;
    }
    lua_pop(co, nres - 1);
    lua_xmove(co, L, 1);                   /* ... thread config */
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY);
  return 1;
}

static int host_data_dir(lua_State *L) {
  lua_pushstring(L, mh_vm_of(L)->host->data_dir);
  return 1;
}

int luaopen_mh_host(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"env", host_env}, {"has_key", host_has_key}, {"data_dir", host_data_dir}, {"config", host_config},
    {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
