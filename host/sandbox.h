/* sandbox.h — what a sandboxed script sees: the allow-listed globals,
 * read-only library tables, the guarded require and the limit-aware pcall. */
#ifndef MH_SANDBOX_H
#define MH_SANDBOX_H

#include <lua.h>

/* [-0, +0, e] Builds the shared base environment of a fresh state. */
void mh_sandbox_open(lua_State *L);
/* [-0, +1, m] Pushes a fresh script environment (misses read the base;
 * an undefined global raises). */
void mh_sandbox_new_env(lua_State *L);

/* [-0, +1, -] pushes require's cache: module name -> what the module returned. */
void mh_sandbox_push_loaded(lua_State *L);
/* [-1, +1, m] Replaces the table on top with a read-only proxy of it. */
void mh_sandbox_readonly(lua_State *L);
/* [-0, +0, v] After a protected call failed with `status` (error object on
 * top): rethrows when the run broke a limit, so pcall cannot absorb it. */
void mh_sandbox_rethrow_if_broken(lua_State *L, int status);

/* sb_coroutine.c: [-0, +1, m] pushes the sandbox's coroutine library. */
void mh_coroutine_open(lua_State *L);

/* natives.c: [-0, +(0|1), e] pushes native module `name` and returns 1, or
 * returns 0 when there is no such native module. */
int mh_native_open(lua_State *L, const char *name);
/* Names of every native module, NULL-terminated (for completion and docs). */
extern const char *const mh_native_names[];

#endif
