/* mod_workspace.h — `workspace`: files confined to a per-run directory, for
 * the trusted runtime only (it backs the agents' `files` tool). */
#ifndef MH_MOD_WORKSPACE_H
#define MH_MOD_WORKSPACE_H
#include <lua.h>
int luaopen_mh_workspace(lua_State *L);

/* Tests: nonzero makes workspaces opened from now on resolve paths one
 * component at a time with openat(O_NOFOLLOW) instead of openat2, as on a
 * kernel without openat2; zero restores the default. Without a call, the
 * environment variable MOONHIVE_NO_OPENAT2=1 (read once) does the same. */
void mh_workspace_force_fallback(int on);
#endif
