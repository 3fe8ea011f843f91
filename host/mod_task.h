/* mod_task.h — the `task` native module: concurrency inside a run. */
#ifndef MH_MOD_TASK_H
#define MH_MOD_TASK_H
#include <lua.h>
int luaopen_mh_task(lua_State *L);
/* semaphore.c: task.semaphore(n) */
int mh_task_semaphore(lua_State *L);
#endif
