/* mod_versions.h — the versions (SHA-256 of the text) of the module sources
 * a sandbox loads, pinned texts that replace files, and `require "versions"`. */
#ifndef MH_MOD_VERSIONS_H
#define MH_MOD_VERSIONS_H

#include <lua.h>
#include <stddef.h>

/* [-0, +0, -] Pins source (hash: its SHA-256 in hex) as the text of the file
 * at path (a real path) in sandbox L: require loads it instead of the file.
 * Returns 0, or -1 when memory ran out (nothing pinned). */
int mh_versions_pin(lua_State *L, const char *path, const char *source, size_t len, const char *hash);
/* [-0, +0, m] Has path (as given, or its real path) a pinned text in L? */
int mh_versions_pinned(lua_State *L, const char *path);
/* [-0, +1, e] require's loader: compiles module `name` found at path (its
 * pinned text, else the file's) in a fresh environment and records which
 * version it was. Pushes the chunk and returns LUA_OK, or pushes the
 * message and returns the error status. */
int mh_versions_load(lua_State *L, const char *name, const char *path);
/* [-0, +0, -] Did sandbox L load a module from the file whose real path is real? */
int mh_versions_used(lua_State *L, const char *real);
/* [-0, +0, -] Calls fn with the real path of every file sandbox L loaded a module from. */
void mh_versions_each(lua_State *L, void (*fn)(const char *real, void *ud), void *ud);

int luaopen_mh_versions(lua_State *L);

#endif
