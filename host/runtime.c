/* runtime.c — creating the trusted runtime state and finding its entry points. */
#include "runtime.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "log.h"
#include "sandbox.h"

static const char MODULES_KEY = 0; /* runtime registry: module name -> module table */

mh_vm *mh_runtime(mh_host *host, char *err, size_t errlen) {
  if (host->runtime) return host->runtime;
  if (!host->runtime_dir[0]) {
    snprintf(err, errlen, "the runtime's Lua files (lua/) were not found next to the binary or under PREFIX/share/moonhive");
    return NULL;
  }
  /* Trusted code: no CPU budget or deadline of its own (each call it makes on
   * behalf of a sandbox is bounded by that sandbox's run), a generous cap. */
  mh_limits limits = {(size_t)1 << 30, 0, 0, 0, 0};
  mh_vm *vm = mh_vm_new(host, &limits, host->runtime_dir);
  if (vm == NULL) {
    snprintf(err, errlen, "cannot create the runtime state");
    return NULL;
  }
  vm->trusted = 1;
  /* Its runs count instructions only while they keep a sandbox run's limits
   * (mh_vm_hook): a request handler or a resume has none to keep. */
  lua_sethook(vm->L, NULL, 0, 0);
  host->runtime = vm;
  return vm;
}

/* [-2, +1, e] lua_pcall target: (module name, field) -> module[field] */
static int load_entry(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &MODULES_KEY);   /* name field cache|nil */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &MODULES_KEY);
  }
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 3) == LUA_TNIL) {                 /* name field cache mod|nil */
    lua_pop(L, 1);
    mh_vm_new_env(L);                                 /* ... env */
    lua_getfield(L, -1, "require");                   /* ... env require */
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);                                /* ... env mod */
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) return luaL_error(L, "runtime module '%s' did not return a table", lua_tostring(L, 1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, 3);
  }
  lua_getfield(L, -1, lua_tostring(L, 2));
  if (lua_isnil(L, -1)) return luaL_error(L, "runtime module '%s' has no '%s'", lua_tostring(L, 1), lua_tostring(L, 2));
  return 1;
}

/* Calls shutdown() of every runtime module loaded so far (not only the entry
 * points: a helper such as moonhive.tally has buffered writes to flush).
 * They are gathered first, since a shutdown may require a module and so
 * add to the cache being walked. */
void mh_runtime_shutdown(mh_host *host) {
  if (host->runtime == NULL) return;
  lua_State *L = host->runtime->L;
  if (!lua_checkstack(L, 8)) return;
  lua_newtable(L);                                              /* hooks */
  mh_sandbox_push_loaded(L);                                    /* hooks loaded */
  lua_pushnil(L);                                               /* hooks loaded nil */
  while (lua_next(L, -2)) {                                     /* hooks loaded name mod */
    if (lua_istable(L, -1)) {
      if (lua_getfield(L, -1, "shutdown") == LUA_TFUNCTION) {   /* ... name mod fn */
        lua_pushvalue(L, -3);                                   /* ... name mod fn name */
        lua_insert(L, -2);                                      /* ... name mod name fn */
        lua_rawset(L, -6);                                      /* hooks[name] = fn; ... name mod */
      } else {
        lua_pop(L, 1);                                          /* ... name mod */
      }
    }
    lua_pop(L, 1);                                              /* hooks loaded name */
  }
  lua_pop(L, 1);                                                /* hooks */
  lua_pushnil(L);
  while (lua_next(L, -2)) {                                     /* hooks name fn */
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {                      /* hooks name [msg] */
      mh_log(MH_LOG_WARN, "runtime module %s: shutdown failed: %s", lua_tostring(L, -2), lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

int mh_runtime_push(mh_host *host, const char *module, const char *name, char *err, size_t errlen) {
  mh_vm *vm = mh_runtime(host, err, errlen);
  if (vm == NULL) return -1;
  lua_State *L = vm->L;
  lua_pushcfunction(L, load_entry);
  lua_pushstring(L, module);
  lua_pushstring(L, name);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  return 0;
}
