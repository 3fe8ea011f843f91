/* natives.c — the table of native modules a sandbox may require. Each is
 * opened at most once per state, cached, and handed out as a read-only proxy,
 * so `require "http"` and the global `http` are the same table. */
#include <string.h>

#include "mod_auth.h"
#include "mod_builtin_tools.h"
#include "mod_crypto.h"
#include "mod_host.h"
#include "mod_http.h"
#include "mod_jsonscan.h"
#include "mod_launch.h"
#include "mod_llm.h"
#include "mod_log.h"
#include "mod_memory.h"
#include "mod_runs.h"
#include "mod_proc.h"
#include "mod_store.h"
#include "mod_task.h"
#include "mod_time.h"
#include "mod_versions.h"
#include "mod_workflows.h"
#include "mod_workspace.h"
#include "sandbox.h"
#include "vm.h"
#include "stack_check.h"

static const char CACHE_KEY = 0; /* registry: name -> opened native module */

int luaopen_cjson(lua_State *L); /* lua-cjson (Debian's liblua5.4-cjson) */

static const struct { const char *name; lua_CFunction open; int trusted_only; } natives[] = {
  {"builtin_tools", luaopen_mh_builtin_tools, 0},
  {"crypto", luaopen_mh_crypto, 0},
  {"http", luaopen_mh_http, 0},
  {"llm", luaopen_mh_llm, 0},
  {"log", luaopen_mh_log, 0},
  {"memory", luaopen_mh_memory, 0},
  {"runs", luaopen_mh_runs, 0},
  {"task", luaopen_mh_task, 0},
  {"time", luaopen_mh_time, 0},
  {"versions", luaopen_mh_versions, 0},
  {"workflows", luaopen_mh_workflows, 0},
  {"auth", luaopen_mh_auth, 1},     /* the service's JWT secret */
  {"cjson", luaopen_cjson, 1},   /* its buffers live outside the sandbox's cap */
  {"host", luaopen_mh_host, 1},
  {"jsonscan", luaopen_mh_jsonscan, 1},
  {"launch", luaopen_mh_launch, 1},  /* the service starts runs */
  {"proc", luaopen_mh_proc, 1},    /* subprocesses: sandboxes get them only through a tool */
  {"store", luaopen_mh_store, 1},   /* SQLite: files and memory outside the sandbox */
  {"workspace", luaopen_mh_workspace, 1},   /* files under a run's directory: the `files` tool */
};

const char *const mh_native_names[] = {"builtin_tools", "crypto", "http", "llm", "log", "memory", "runs", "task", "time", "versions", "workflows", NULL};

int mh_native_open(lua_State *L, const char *name) {
  for (size_t i = 0; i < sizeof natives / sizeof natives[0]; i++) {
    if (strcmp(natives[i].name, name) != 0) continue;
    if (natives[i].trusted_only && !mh_vm_of(L)->trusted) return 0;
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
