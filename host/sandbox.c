/* sandbox.c — the allow-list environment of a sandboxed state.
 *
 * Layout (one per state, built once by mh_sandbox_open):
 *   script env  -- fresh per script; metatable { __index = base }
 *   base        -- shared, unreachable from scripts; allowed functions,
 *                  read-only proxies of string/table/math/utf8/coroutine/os;
 *                  its metatable's __index opens native modules on first use
 *                  and raises "undefined global" for anything else.
 * The state's real global table is emptied; every loaded chunk has its _ENV
 * rebound (vm.c), so nothing reaches it. Left out on purpose: io, debug,
 * package, dofile, loadfile, string.dump, collectgarbage options that change
 * the collector, os beyond time/clock/date/difftime, binary chunks, and __gc
 * metamethods (finalizers run with hooks off, so they could loop forever). */
#include "sandbox.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "mod_time.h"
#include "mod_versions.h"
#include "sb_string.h"
#include "sb_table.h"
#include "scheduler.h"
#include "stack_check.h"
#include "vm.h"

static const char BASE_KEY = 0;      /* registry: the shared base table */
static const char ENV_MT_KEY = 0;    /* registry: metatable of script envs */
static const char READONLY_KEY = 0;  /* registry: weak set of read-only proxies */
static const char LOADED_KEY = 0;    /* registry: require's cache */
static const char LOADING = 0;       /* require's "being loaded" marker */

/* ---- read-only proxies ---- */

static int readonly_newindex(lua_State *L) {
  return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                    lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

static int readonly_next(lua_State *L) { /* [-0, +(1|2), e] next over the target */
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  if (lua_next(L, 1)) return 2;
  lua_pushnil(L);
  return 1;
}

static int readonly_pairs(lua_State *L) {
  lua_pushcfunction(L, readonly_next);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushnil(L);
  return 3;
}

static int readonly_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lua_rawlen(L, lua_upvalueindex(1)));
  return 1;
}

void mh_sandbox_readonly(lua_State *L) {
  MH_STACK_BEGIN(L);
  lua_newtable(L);                    /* target proxy */
  lua_createtable(L, 0, 5);           /* target proxy mt */
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, readonly_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, readonly_pairs, 1);
  lua_setfield(L, -2, "__pairs");
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, readonly_len, 1);
  lua_setfield(L, -2, "__len");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);            /* target proxy */
  lua_remove(L, -2);                  /* proxy */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &READONLY_KEY);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);                  /* readonly[proxy] = true */
  lua_pop(L, 1);                      /* proxy */
  MH_STACK_END(L, 0);
}

static int is_readonly(lua_State *L, int idx) { /* [-0, +0, -] */
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &READONLY_KEY);
  lua_pushvalue(L, idx);
  int ro = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return ro;
}

/* ---- wrapped base functions ---- */

void mh_sandbox_rethrow_if_broken(lua_State *L, int status) {
  mh_run *run = mh_run_current(L);
  if (run == NULL) return;
  if (run->broken == MH_BREAK_NONE && mh_vm_is_memory_error(L, status)) run->broken = MH_BREAK_MEMORY;
  if (run->broken != MH_BREAK_NONE) lua_error(L);
}

/* [-0, +?, e] Continuation shared by pcall and xpcall (as in lbaselib). */
static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) {
    mh_sandbox_rethrow_if_broken(L, status);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1);            /* first result if no errors */
  lua_insert(L, 1);
  int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
  return finish_pcall(L, status, 0);
}

static int sb_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushboolean(L, 1);            /* f msgh ... true */
  lua_pushvalue(L, 1);              /* f msgh ... true f */
  lua_rotate(L, 3, 2);              /* f msgh true f ... */
  int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
  return finish_pcall(L, status, 2);
}

static int sb_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL) /* raw, as Lua itself looks for __gc */
      return luaL_error(L, "__gc metamethods are not available in the sandbox (use __close)");
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

static int sb_rawset(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  if (is_readonly(L, 1)) return luaL_error(L, "attempt to modify a read-only table");
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 1;
}

static int sb_collectgarbage(lua_State *L) {
  static const char *const opts[] = {"collect", "count", "step", "isrunning", NULL};
  int o = luaL_checkoption(L, 1, "collect", opts);
  switch (o) {
    case 1: {
      int kb = lua_gc(L, LUA_GCCOUNT), rest = lua_gc(L, LUA_GCCOUNTB);
      lua_pushnumber(L, (lua_Number)kb + ((lua_Number)rest / 1024));
      return 1;
    }
    case 2:
      lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, (int)luaL_optinteger(L, 2, 0)));
      return 1;
    case 3:
      lua_pushboolean(L, lua_gc(L, LUA_GCISRUNNING));
      return 1;
    default:
      lua_gc(L, LUA_GCCOLLECT);
      lua_pushinteger(L, 0);
      return 1;
  }
}

static void write_stdout(void *ud, const char *s, size_t len) {
  (void)ud;
  fwrite(s, 1, len, stdout);
}

static int sb_print(lua_State *L) {
  mh_vm *vm = mh_vm_of(L);
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  (vm->print ? vm->print : write_stdout)(vm->print_ud, s, len);
  if (!vm->print) fflush(stdout);
  return 0;
}

/* load(chunk [, chunkname [, mode [, env]]]): text only; the default
 * environment is the calling script's own (upvalue 1). */
static int sb_load(lua_State *L) {
  int has_env = !lua_isnone(L, 4);
  const char *mode = luaL_optstring(L, 3, "t");
  if (strchr(mode, 'b')) {
    luaL_pushfail(L);
    lua_pushliteral(L, "binary chunks are not allowed in the sandbox");
    return 2;
  }
  size_t len;
  int status;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, 1, &len);
    status = luaL_loadbufferx(L, s, len, luaL_optstring(L, 2, s), "t");
  } else {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    /* Collect the pieces first: the reader is script code. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
      lua_pushvalue(L, 1);
      lua_call(L, 0, 1);
      if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
      if (!lua_isstring(L, -1)) return luaL_error(L, "reader function must return a string");
      if (lua_rawlen(L, -1) == 0) { lua_pop(L, 1); break; }
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    const char *s = lua_tolstring(L, -1, &len);
    status = luaL_loadbufferx(L, s, len, luaL_optstring(L, 2, "=(load)"), "t");
  }
  if (status != LUA_OK) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  if (has_env) lua_pushvalue(L, 4);
  else lua_pushvalue(L, lua_upvalueindex(1));
  if (lua_setupvalue(L, -2, 1) == NULL) lua_pop(L, 1);
  return 1;
}

/* string.rep(s, n [, sep]): Lua's own loops n times even when s and sep are
 * empty (no memory to hit the cap); answer that case at once. */
static int sb_string_rep(lua_State *L) {
  size_t l, lsep;
  luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0 || l + lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* ---- guarded require ---- */

static int valid_module_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 128 || name[0] == '.' || name[n - 1] == '.') return 0;
  for (const char *p = name; *p; p++) {
    if (*p == '.') { if (p[1] == '.') return 0; continue; }
    if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') return 0;
  }
  return 1;
}

/* [-0, +(0|1), e] Finds name.lua or name/init.lua under dir (a file, or a
 * pinned version of one: mod_versions.c); pushes its path and returns 1, or
 * returns 0. */
static int find_module(lua_State *L, const char *dir, const char *name) {
  if (dir == NULL || !*dir) return 0;
  char rel[160];
  size_t i;
  for (i = 0; name[i] && i < sizeof rel - 1; i++) rel[i] = name[i] == '.' ? '/' : name[i];
  rel[i] = '\0';
  static const char *const forms[] = {"%s/%s.lua", "%s/%s/init.lua"};
  for (int f = 0; f < 2; f++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, forms[f], dir, rel);
    int pinned = mh_versions_pinned(L, path);
    FILE *fp = pinned ? NULL : fopen(path, "r");
    if (fp) fclose(fp);
    if (pinned || fp) {
      lua_pushstring(L, path);
      return 1;
    }
  }
  return 0;
}

/* [-0, +(0|1), e] agents.NAME not found in the project: the ready-made role
 * shipped with moonhive (agents/ beside stdlib/), so ctx:ask("coder") works
 * in any project; a project's own agents/NAME.lua comes first. */
static int find_shipped_role(lua_State *L, mh_host *host, const char *name) {
  return strncmp(name, "agents.", 7) == 0 && find_module(L, host->roles_dir, name + 7);
}

/* The agent engine's own modules come from stdlib/ only: a user's file named
 * agent.lua or json.lua next to a script must not replace them (the `agent`
 * global would load that file instead), nor a project's handoff.lua the one
 * the shipped pipelines (workflows/) read verdicts with. */
static int stdlib_only(const char *name) {
  static const char *const reserved[] = {"agent", "tool", "json", "schema", "workflow", "handoff", NULL};
  for (int i = 0; reserved[i]; i++)
    if (strcmp(name, reserved[i]) == 0) return 1;
  return 0;
}

static int sb_require(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);   /* name loaded */
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 2) != LUA_TNIL) {                 /* name loaded mod */
    if (lua_touserdata(L, -1) == &LOADING)
      return luaL_error(L, "module '%s' requires itself (a require loop)", name);
    return 1;
  }
  lua_pop(L, 1);
  if (mh_native_open(L, name)) {                      /* name loaded mod */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, 2);
    return 1;
  }
  if (!valid_module_name(name))
    return luaL_error(L, "module '%s' not found: names are letters, digits, '_' and '.'", name);
  mh_vm *vm = mh_vm_of(L);
  if (stdlib_only(name)) {
    if (!find_module(L, vm->host->stdlib_dir, name))
      return luaL_error(L, "module '%s' not found in stdlib/", name);
  } else if (!find_module(L, vm->script_dir, name) && !find_module(L, vm->host->project_dir, name) &&
             !find_module(L, vm->host->stdlib_dir, name) && !find_shipped_role(L, vm->host, name)) {
    return luaL_error(L, "module '%s' not found in the script's folder, the project or stdlib/", name);
  }
  const char *path = lua_tostring(L, 3);              /* name loaded path */
  int status = mh_versions_load(L, name, path);       /* name loaded path chunk|msg */
  if (status != LUA_OK) return lua_error(L);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, (void *)&LOADING);
  lua_rawset(L, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  status = lua_pcall(L, 2, 1, 0);                     /* name loaded path result|msg */
  if (status != LUA_OK) {
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, 2);                                 /* a later require may try again */
    mh_sandbox_rethrow_if_broken(L, status);
    return lua_error(L);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, 2);                                   /* loaded[name] = result */
  return 1;
}

/* ---- the base environment ---- */

/* stdlib modules that are globals too, loaded on first use: agent files
 * read `return agent{...}` and `tool{...}`, workflow files `return workflow{...}` */
static const char *const stdlib_globals[] = {"agent", "tool", "json", "workflow", NULL};

/* __index of base: native modules and stdlib_globals appear as globals on
 * first use; anything else is a typo or a missing definition, reported where
 * it was read. [-2, +1, e] */
static int base_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING && mh_native_open(L, lua_tostring(L, 2))) {
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }
  for (int i = 0; lua_type(L, 2) == LUA_TSTRING && stdlib_globals[i]; i++) {
    if (strcmp(lua_tostring(L, 2), stdlib_globals[i]) != 0) continue;
    lua_pushcfunction(L, sb_require);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }
  luaL_where(L, 1);
  lua_pushfstring(L, "undefined global '%s'", luaL_tolstring(L, 2, NULL));
  lua_remove(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

/* [-1, +0, e] base[name] = read-only proxy of the table on top */
static void set_library(lua_State *L, int base, const char *name) {
  mh_sandbox_readonly(L);
  lua_setfield(L, base, name);
}

void mh_sandbox_push_loaded(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_KEY); }

/* [-0, +1, e] opens a standard library without touching the global table */
static void open_std(lua_State *L, lua_CFunction openf) {
  lua_pushcfunction(L, openf);
  lua_call(L, 0, 1);
}

void mh_sandbox_open(lua_State *L) {
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADED_KEY);
  lua_newtable(L);                                   /* weak set of read-only proxies */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &READONLY_KEY);

  lua_createtable(L, 0, 40);                         /* base */
  int base = lua_gettop(L);

  /* The base library registers into the real globals; copy what is allowed. */
  open_std(L, luaopen_base);                         /* base G */
  static const char *const allowed[] = {
    "assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal",
    "rawget", "rawlen", "select", "tonumber", "tostring", "type", "_VERSION", NULL};
  for (int i = 0; allowed[i]; i++) {
    lua_getfield(L, -1, allowed[i]);
    lua_setfield(L, base, allowed[i]);
  }
  lua_pop(L, 1);
  static const luaL_Reg wrapped[] = {
    {"pcall", sb_pcall}, {"xpcall", sb_xpcall}, {"setmetatable", sb_setmetatable},
    {"rawset", sb_rawset}, {"collectgarbage", sb_collectgarbage}, {"print", sb_print},
    {"require", sb_require}, {"sleep", mh_time_sleep}, {NULL, NULL}};
  luaL_setfuncs(L, wrapped, 0);

  /* string: guarded patterns, no dump; strings' own metatable is protected. */
  open_std(L, luaopen_string);                       /* base string */
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  mh_string_guard(L, lua_gettop(L));
  lua_getfield(L, -1, "rep");
  lua_pushcclosure(L, sb_string_rep, 1);
  lua_setfield(L, -2, "rep");
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);                           /* base string "" mt */
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 2);                                     /* base string */
  set_library(L, base, "string");

  open_std(L, luaopen_table);
  mh_table_guard(L, -1);
  set_library(L, base, "table");
  open_std(L, luaopen_math);
  set_library(L, base, "math");
  open_std(L, luaopen_utf8);
  set_library(L, base, "utf8");
  mh_coroutine_open(L);
  set_library(L, base, "coroutine");

  open_std(L, luaopen_os);                           /* base os */
  lua_createtable(L, 0, 4);                          /* base os safe_os */
  static const char *const os_allowed[] = {"time", "clock", "date", "difftime", NULL};
  for (int i = 0; os_allowed[i]; i++) {
    lua_getfield(L, -2, os_allowed[i]);
    lua_setfield(L, -2, os_allowed[i]);
  }
  lua_remove(L, -2);
  set_library(L, base, "os");

  lua_createtable(L, 0, 2);                          /* base's metatable */
  lua_pushcfunction(L, base_index);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, base);

  lua_createtable(L, 0, 2);                          /* metatable of script envs */
  lua_pushvalue(L, base);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);

  lua_rawsetp(L, LUA_REGISTRYINDEX, &BASE_KEY);      /* (pops base) */

  /* Nothing may be reached through the real global table. */
  lua_newtable(L);
  lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
}

void mh_sandbox_new_env(lua_State *L) {
  MH_STACK_BEGIN(L);
  lua_createtable(L, 0, 4);                          /* env */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");                         /* env._G = env */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, sb_load, 1);
  lua_setfield(L, -2, "load");                       /* load defaults to this env */
  MH_STACK_END(L, 1);
}
