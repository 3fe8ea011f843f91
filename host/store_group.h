/* store_group.h — group commit for a SQLite connection of the `store`
 * module (see store_group.c): the writes of one loop turn share one
 * transaction, committed once before the loop next waits for I/O; a caller
 * that needs its write durable waits for that commit. */
#ifndef MH_STORE_GROUP_H
#define MH_STORE_GROUP_H

#include <lua.h>
#include <sqlite3.h>
#include <uv.h>

typedef struct mh_store_group mh_store_group;

/* A group for db on loop, or NULL when out of memory. */
mh_store_group *mh_store_group_new(uv_loop_t *loop, sqlite3 *db);
/* Makes sure the group's transaction is open (BEGIN IMMEDIATE on the first
 * write of a loop turn, its commit armed for the turn's end). SQLITE_OK, or
 * SQLite's code for why it cannot begin. */
int mh_store_group_join(mh_store_group *g);
/* [-0, +(1|2), v] The body of db:committed(): true once everything written
 * so far is committed (at once when nothing is pending or g is NULL), or
 * nil and a message when the commit failed. Waits (yields) when a commit
 * is pending. With `then`, the native's own continuation, it returns
 * then(L, LUA_OK, then_ctx) with those values pushed instead. */
int mh_store_group_wait(lua_State *L, mh_store_group *g, lua_KContext then_ctx, lua_KFunction then);
/* Commits what is pending (waking its waiters), then lets go of the db;
 * g is freed once its libuv handle has closed. The one release point. */
void mh_store_group_close(mh_store_group *g);

#endif
