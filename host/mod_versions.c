/* mod_versions.c — which version of each module's source a sandbox runs.
 *
 * A version is a file's text named by its SHA-256. The guarded require
 * (sandbox.c) loads every module through mh_versions_load, which
 *   - takes a *pinned* text when the file's path has one (mh_versions_pin:
 *     the reload registry pins the versions current when a run starts, so
 *     the run keeps them while the files change on disk), else reads the file;
 *   - records module name -> {path, real, hash, source} for the state.
 * Scripts read the record with `require "versions"`:
 *
 *   versions.of(module) -> hash, path, source | nil
 *       the version module `module` (as given to require: "agents.coder")
 *       was loaded from in this sandbox; source is nil for stdlib modules
 *
 * The workflow engine journals the version of every agent a wf:call runs;
 * the reload registry asks which files a run used (mh_versions_used). */
#include "mod_versions.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "mod_crypto.h"
#include "stack_check.h"
#include "vm.h"

static const char PINS_KEY = 0;    /* registry: real path -> {source=, hash=} */
static const char RECORDS_KEY = 0; /* registry: module name -> {path=, real=, hash=, source=} */

/* [-0, +1, m] pushes the table at key in L's registry, made on first use */
static void push_table(lua_State *L, const void *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TNIL) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* [-0, +1, m] the pin of path (looked up as given, then by its real path)
 * or nil; real receives the real path ("" when there is none). */
static int push_pin(lua_State *L, const char *path, char real[PATH_MAX]) {
  real[0] = '\0';
  if (realpath(path, real) == NULL) real[0] = '\0';
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &PINS_KEY) == LUA_TNIL) return 0; /* nil */
  if (lua_getfield(L, -1, path) == LUA_TNIL && real[0]) {
    lua_pop(L, 1);
    lua_getfield(L, -1, real);
  }
  lua_remove(L, -2);
  return !lua_isnil(L, -1);
}

struct pin_request {
  const char *path, *source, *hash;
  size_t len;
};

/* [-1, +0, m] lua_pcall target: pins[path] = {source=, hash=} */
static int pin_protected(lua_State *L) {
  const struct pin_request *r = lua_touserdata(L, 1);
  push_table(L, &PINS_KEY);
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, r->source, r->len);
  lua_setfield(L, -2, "source");
  lua_pushstring(L, r->hash);
  lua_setfield(L, -2, "hash");
  lua_setfield(L, -2, r->path);
  return 0;
}

int mh_versions_pin(lua_State *L, const char *path, const char *source, size_t len, const char *hash) {
  MH_STACK_BEGIN(L);
  struct pin_request r = {path, source, hash, len};
  if (!lua_checkstack(L, 4)) return -1;
  lua_pushcfunction(L, pin_protected);
  lua_pushlightuserdata(L, &r);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) lua_pop(L, 1);
  MH_STACK_END(L, 0);
  return status == LUA_OK ? 0 : -1;
}

int mh_versions_pinned(lua_State *L, const char *path) {
  char real[PATH_MAX];
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &PINS_KEY) == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 1);
  int found = push_pin(L, path, real);
  lua_pop(L, 1);
  return found;
}

/* [-0, +1, e] The file's whole text as a Lua string; raises "cannot open PATH: ...". */
static void push_file(lua_State *L, const char *path) {
  char err[PATH_MAX + 128];
  size_t len;
  char *buf = mh_read_file(path, &len, err, sizeof err);
  if (buf == NULL) luaL_error(L, "%s", err);
  int status = mh_vm_pushtext(L, buf, len);
  free(buf);
  if (status != LUA_OK) {
    lua_pushliteral(L, "not enough memory"); /* interned at the state's start: no allocation */
    lua_error(L);
  }
}

/* Is path inside dir (a folder)? */
static int inside(const char *path, const char *dir) {
  size_t n = strlen(dir);
  return n > 0 && strncmp(path, dir, n) == 0 && path[n] == '/';
}

int mh_versions_load(lua_State *L, const char *name, const char *path) {
  char real[PATH_MAX];
  luaL_checkstack(L, 8, "loading a module");
  char hash[65];
  if (push_pin(L, path, real)) {                    /* pin */
    lua_getfield(L, -1, "source");                  /* pin source */
    lua_getfield(L, -2, "hash");                    /* pin source hash */
    lua_remove(L, -3);                              /* source hash */
    snprintf(hash, sizeof hash, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);                                  /* source */
  } else {
    lua_pop(L, 1);
    push_file(L, path);                             /* source */
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (mh_sha256_hex(s, len, hash) != 0) return luaL_error(L, "cannot hash %s", path);
  }
  mh_vm *vm = mh_vm_of(L);
  push_table(L, &RECORDS_KEY);                      /* source records */
  lua_createtable(L, 0, 4);                         /* source records record */
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, real[0] ? real : path);
  lua_setfield(L, -2, "real");
  lua_pushstring(L, hash);
  lua_setfield(L, -2, "hash");
  if (!inside(path, vm->host->stdlib_dir)) {
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "source");
  }
  lua_setfield(L, -2, name);
  lua_pop(L, 1);                                    /* source */
  size_t len;
  const char *code = lua_tolstring(L, -1, &len);
  size_t skip = mh_shebang_len(code, len);
  char chunkname[PATH_MAX + 2];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  int status = mh_vm_load(L, code + skip, len - skip, chunkname, 0); /* source chunk|msg */
  lua_remove(L, -2);
  return status;
}

void mh_versions_each(lua_State *L, void (*fn)(const char *real, void *ud), void *ud) {
  MH_STACK_BEGIN(L);
  if (!lua_checkstack(L, 4)) return;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RECORDS_KEY) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {                       /* records name record */
      if (lua_istable(L, -1) && lua_getfield(L, -1, "real") == LUA_TSTRING) fn(lua_tostring(L, -1), ud);
      lua_pop(L, 2);                                /* records name */
    }
  }
  lua_pop(L, 1);
  MH_STACK_END(L, 0);
}

static void match_real(const char *real, void *ud) {
  const char **want = ud;
  if (*want && strcmp(real, *want) == 0) *want = NULL;
}

int mh_versions_used(lua_State *L, const char *real) {
  const char *want = real;
  mh_versions_each(L, match_real, &want);
  return want == NULL;
}

/* versions.of(module) [-1, +(1|3), e] */
static int versions_of(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RECORDS_KEY) != LUA_TTABLE || lua_getfield(L, -1, name) != LUA_TTABLE) {
    lua_pushnil(L);
    return 1;
  }
  lua_getfield(L, -1, "hash");
  lua_getfield(L, -2, "path");
  lua_getfield(L, -3, "source");
  return 3;
}

int luaopen_mh_versions(lua_State *L) {
  static const luaL_Reg funcs[] = {{"of", versions_of}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
