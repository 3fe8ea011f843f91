/* store_group.c — group commit for one SQLite connection (db:group_commit()
 * in mod_store.c).
 *
 * A commit in WAL mode costs a WAL write of every page the transaction
 * touched plus a round of file locks, and with synchronous=FULL an fsync:
 * done per statement, it was most of what a durable workflow step cost.
 * Here the first write of a loop turn opens a transaction (BEGIN
 * IMMEDIATE) and arms a uv_prepare handle; every write of the same turn
 * joins it; the prepare callback — after the ready queue's runs of this
 * turn have run, before the loop waits for I/O — commits it once and wakes
 * the runs waiting in db:committed() with the outcome. A write therefore
 * returns before it is durable; a caller that promises durability (the
 * workflow journal) waits for the commit, so the promise holds while many
 * runs share one commit.
 *
 * A waiter is an op in host memory: its continuation runs only while it
 * lives; waiter_release (also the op's cancel) is its one release point.
 * The group itself is freed in its handle's close callback. */
#include "store_group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "scheduler.h"

typedef struct group_waiter group_waiter;

struct mh_store_group {
  uv_prepare_t prepare;      /* active while a transaction is open */
  sqlite3 *db;               /* NULL once closed */
  int open;                  /* a transaction we began is not committed yet */
  group_waiter *waiters;     /* runs waiting for its commit */
};

struct group_waiter {
  mh_op op;
  mh_store_group *g;         /* NULL once the commit it waited for is done */
  int rc;                    /* that commit's outcome */
  char err[240];
  lua_KContext then_ctx;     /* the waiting native's own continuation, if any */
  lua_KFunction then;
  group_waiter *prev, *next;
};

static void waiter_release(mh_op *op) {
  group_waiter *w = (group_waiter *)op;
  mh_op_detach(op);
  if (w->g) {
    if (w->prev) w->prev->next = w->next;
    else w->g->waiters = w->next;
    if (w->next) w->next->prev = w->prev;
  }
  free(w);
}

static const mh_op_type waiter_type = {"db:committed", waiter_release};

/* Commits the open transaction (rolling back when that fails) and wakes
 * every waiter with the outcome. */
static void commit(mh_store_group *g) {
  uv_prepare_stop(&g->prepare);
  if (!g->open) return;
  g->open = 0;
  int rc = SQLITE_OK;
  char err[240] = "";
  if (sqlite3_get_autocommit(g->db)) { /* SQLite rolled it back itself (an I/O error, say) */
    rc = SQLITE_ABORT;
    snprintf(err, sizeof err, "the write was rolled back: %s", sqlite3_errmsg(g->db));
  } else if ((rc = sqlite3_exec(g->db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK) {
    snprintf(err, sizeof err, "the commit failed: %s", sqlite3_errmsg(g->db));
    if (!sqlite3_get_autocommit(g->db)) sqlite3_exec(g->db, "ROLLBACK", NULL, NULL, NULL);
  }
  group_waiter *w;
  while ((w = g->waiters) != NULL) {
    g->waiters = w->next;
    w->g = NULL;
    w->prev = w->next = NULL;
    w->rc = rc;
    memcpy(w->err, err, sizeof err);
    mh_op_wake(&w->op);
  }
}

static void on_prepare(uv_prepare_t *handle) { commit(handle->data); }

mh_store_group *mh_store_group_new(uv_loop_t *loop, sqlite3 *db) {
  mh_store_group *g = calloc(1, sizeof *g);
  if (g == NULL) return NULL;
  uv_prepare_init(loop, &g->prepare);
  g->prepare.data = g;
  g->db = db;
  return g;
}

int mh_store_group_join(mh_store_group *g) {
  if (g->open && !sqlite3_get_autocommit(g->db)) return SQLITE_OK;
  if (g->open) commit(g); /* lost to a rollback: its waiters learn it now */
  if (!sqlite3_get_autocommit(g->db)) return SQLITE_OK; /* a transaction of db:transaction's own */
  int rc = sqlite3_exec(g->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc != SQLITE_OK) return rc;
  g->open = 1;
  uv_prepare_start(&g->prepare, on_prepare);
  return SQLITE_OK;
}

/* [-0, +(1|2), v] */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  group_waiter *w = (group_waiter *)ctx;
  mh_op_resumed(L, &w->op); /* raises (after releasing w) if this run was cancelled meanwhile */
  lua_KFunction then = w->then;
  lua_KContext then_ctx = w->then_ctx;
  int n = 1;
  if (w->rc == SQLITE_OK) {
    lua_pushboolean(L, 1);
  } else {
    lua_pushnil(L);
    lua_pushstring(L, w->err);
    n = 2;
  }
  waiter_release(&w->op);
  return then ? then(L, LUA_OK, then_ctx) : n;
}

int mh_store_group_wait(lua_State *L, mh_store_group *g, lua_KContext then_ctx, lua_KFunction then) {
  if (g == NULL || !g->open) {
    lua_pushboolean(L, 1);
    return then ? then(L, LUA_OK, then_ctx) : 1;
  }
  mh_run *run = mh_async_begin(L, "db:committed");
  group_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "db:committed: out of memory");
  w->then = then;
  w->then_ctx = then_ctx;
  w->g = g;
  w->next = g->waiters;
  if (g->waiters) g->waiters->prev = w;
  g->waiters = w;
  mh_op_attach(run, &w->op, &waiter_type);
  return mh_op_wait(L, &w->op, (lua_KContext)w, wait_k);
}

static void free_group(uv_handle_t *handle) { free(handle->data); }

void mh_store_group_close(mh_store_group *g) {
  commit(g);
  g->db = NULL;
  uv_close((uv_handle_t *)&g->prepare, free_group);
}
