/* mod_host.c — `require "host"` in the trusted runtime: the configuration a
 * provider may read, never a secret.
 *
 *   host.env(name)      -- one of a few non-secret variables (MOONHIVE_MODEL,
 *                       -- OPENAI_BASE_URL, ANTHROPIC_BASE_URL,
 *                       -- MOONHIVE_LLM_CONCURRENCY, MOONHIVE_HTTP_ALLOW,
 *                       -- MOONHIVE_MOCK_SCRIPT, MOONHIVE_MOCK_LOG, MOONHIVE_STORE,
 *                       -- MOONHIVE_DURABILITY, MOONHIVE_LEASE_MS,
 *                       -- MOONHIVE_RATE_LIMIT, MOONHIVE_RATE_BURST, MOONHIVE_SESSION_KEY), or nil
 *   host.has_key(name)  -- "openai" | "anthropic": is a key configured?
 *   host.data_dir()     -- the data directory
 *   host.runtime_dir()  -- the runtime's Lua files (the lua/ holding moonhive/),
 *                       -- for files shipped next to its modules (the dashboard page)
 *   host.version()      -- moonhive's version ("0.1.0")
 *   host.process()      -- {pid=, hostname=, pidns=} of this process (workflow
 *                       -- leases; pidns: the pid namespace's inode, "" if unknown)
 *   host.alive(pid)     -- false when no process pid exists (in this pid namespace)
 *   host.config()       -- the project's moonhive.lua (or $MOONHIVE_CONFIG) as a
 *                       -- table, {} when there is none; nil, err when it is broken.
 *                       -- It is evaluated as data: text only, no globals at all. */
#include "mod_host.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "copy.h"
#include "vm.h"

static const char *const readable[] = {"MOONHIVE_MODEL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL",
                                       "MOONHIVE_LLM_CONCURRENCY", "MOONHIVE_HTTP_ALLOW",
                                       "MOONHIVE_MOCK_SCRIPT", "MOONHIVE_MOCK_LOG", "MOONHIVE_STORE",
                                       "MOONHIVE_DURABILITY", "MOONHIVE_LEASE_MS", "MOONHIVE_RATE_LIMIT",
                                       "MOONHIVE_RATE_BURST", "MOONHIVE_SESSION_KEY", NULL};

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

/* host.version() [-0, +1, -] */
static int host_version(lua_State *L) {
  lua_pushliteral(L, MH_VERSION);
  return 1;
}

static int host_has_key(lua_State *L) {
  static const char *const providers[] = {"openai", "anthropic", NULL};
  int id = luaL_checkoption(L, 1, NULL, providers);
  lua_pushboolean(L, mh_host_secret(mh_vm_of(L)->host, (mh_secret_id)id) != NULL);
  return 1;
}

static const char CONFIG_KEY = 0; /* registry: the loaded configuration */

/* The configuration is evaluated in a bare state of its own: no libraries
 * at all (so strings have no methods and no C function can run long), a
 * memory cap, and an instruction cap; only the resulting data is copied out. */
#define CONFIG_MEMORY ((size_t)16 << 20)

static void *config_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  size_t *used = ud;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    free(ptr);
    *used -= osize;
    return NULL;
  }
  if (nsize > osize && *used - osize + nsize > CONFIG_MEMORY) return NULL;
  void *block = realloc(ptr, nsize);
  if (block) *used = *used - osize + nsize;
  return block;
}

static void config_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  luaL_error(L, "the configuration file takes too long to evaluate");
}

/* [-0, +(1|2), -] evaluates the config text into a table on L, or fail + message */
static int evaluate_config(lua_State *L, const char *path, const char *text, size_t len) {
  size_t used = 0;
  lua_State *C = lua_newstate(config_alloc, &used);
  if (C == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "cannot evaluate the configuration: out of memory");
    return 2;
  }
  char chunkname[512];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  int status = luaL_loadbufferx(C, text, len, chunkname, "t");
  if (status == LUA_OK) {
    lua_newtable(C);                        /* its _ENV: nothing at all */
    lua_setupvalue(C, -2, 1);
    lua_sethook(C, config_hook, LUA_MASKCOUNT, 10000000);
    status = lua_pcall(C, 0, 1, 0);
  }
  char err[300];
  int rc;
  if (status != LUA_OK) {
    luaL_pushfail(L);
    lua_pushstring(L, lua_tostring(C, -1) ? lua_tostring(C, -1) : "the configuration failed");
    rc = 2;
  } else if (!lua_istable(C, -1)) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s must return a table", path);
    rc = 2;
  } else if (mh_copy_value(C, -1, L, NULL, err, sizeof err) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, err);
    rc = 2;
  } else {
    rc = 1;
  }
  lua_close(C);
  return rc;
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
    int rc = evaluate_config(L, path, text, len);
    if (rc == 2) return 2;
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CONFIG_KEY);
  return 1;
}

static int host_data_dir(lua_State *L) {
  lua_pushstring(L, mh_vm_of(L)->host->data_dir);
  return 1;
}

/* host.runtime_dir() [-0, +1, m] */
static int host_runtime_dir(lua_State *L) {
  lua_pushstring(L, mh_vm_of(L)->host->runtime_dir);
  return 1;
}

/* host.process() [-0, +1, m] -> {pid = n, hostname = "...", pidns = "..."}: who holds a lease */
static int host_process(lua_State *L) {
  char name[256], ns[64];
  size_t len = sizeof name;
  if (uv_os_gethostname(name, &len) != 0) memcpy(name, "unknown", sizeof "unknown");
  ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1); /* "pid:[4026531836]" */
  ns[n > 0 ? n : 0] = '\0';
  const char *digits = strchr(ns, '[');
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  lua_setfield(L, -2, "pid");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "hostname");
  lua_pushlstring(L, digits ? digits + 1 : "", digits ? strspn(digits + 1, "0123456789") : 0);
  lua_setfield(L, -2, "pidns");
  return 1;
}

/* host.alive(pid) [-0, +1, -]: whether a process pid exists here (it may be another one by now) */
static int host_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  luaL_argcheck(L, pid > 0 && pid <= INT32_MAX, 1, "a process id");
  lua_pushboolean(L, kill((pid_t)pid, 0) == 0 || errno != ESRCH);
  return 1;
}

int luaopen_mh_host(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"env", host_env}, {"has_key", host_has_key}, {"data_dir", host_data_dir}, {"config", host_config},
    {"runtime_dir", host_runtime_dir}, {"version", host_version}, {"process", host_process},
    {"alive", host_alive}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
