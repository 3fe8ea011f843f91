/* mod_proc.h — `proc`, for the trusted runtime only: run a program in a
 * child process with resource limits and no network (mod_proc.c). */
#ifndef MH_MOD_PROC_H
#define MH_MOD_PROC_H

#include <lua.h>

/* For tests: when set, child exits are watched by polling every few
 * milliseconds instead of with a pidfd (what happens where pidfd_open is
 * missing, before Linux 5.3). */
extern int mh_proc_no_pidfd;

int luaopen_mh_proc(lua_State *L);

#endif
