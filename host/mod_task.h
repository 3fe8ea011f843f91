/* mod_task.h — the `task` native module: concurrency inside a run. */
#ifndef MH_MOD_TASK_H
#define MH_MOD_TASK_H
#include <lauxlib.h>
#include <lua.h>
int luaopen_mh_task(lua_State *L);
/* semaphore.c: task.semaphore(n) */
int mh_task_semaphore(lua_State *L);
/* event.c: task.event() */
int mh_task_event(lua_State *L);

/* The userdata objects of task (semaphores, events): a metatable kept in
 * the registry under `key`, hidden from scripts (__metatable = false). */
/* [-0, +0, -] Gives the userdata on top of the stack its metatable (made on
 * first use with `methods` as __index and `name` as __name). */
void mh_task_set_mt(lua_State *L, const void *key, const char *name, const luaL_Reg *methods);
/* [-0, +0, v] The userdata at idx when it has that metatable; raises a type
 * error naming `name` otherwise. */
void *mh_task_check(lua_State *L, int idx, const void *key, const char *name);
#endif
