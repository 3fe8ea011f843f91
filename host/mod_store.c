/* mod_store.c — `require "store"`: SQLite for the trusted runtime (never for
 * sandboxes; natives.c marks it trusted-only).
 *
 *   store.open(path)            -- db, or nil, err; creates missing folders (0700);
 *                               -- WAL, synchronous=NORMAL, foreign_keys=ON,
 *                               -- busy_timeout 5000 ms
 *   db:exec(sql)                -- one or more statements, no results: true | nil, err
 *   db:run(sql, ...)            -- one statement, `?` parameters:
 *                               -- {changes = n, last_id = rowid} | nil, err
 *   db:query(sql, ...)          -- array of rows keyed by column name | nil, err
 *   db:first(sql, ...)          -- the first row, nil when none | nil, err
 *   db:transaction(fn)          -- BEGIN IMMEDIATE; fn(db); COMMIT and return fn's
 *                               -- first result, or ROLLBACK and re-raise its error
 *                               -- (a SAVEPOINT when a group transaction is open)
 *   db:group_commit()           -- from now on the writes (db:run, db:transaction)
 *                               -- of one loop turn share one transaction,
 *                               -- committed at the turn's end (store_group.c)
 *   db:committed()              -- waits until what was written so far is
 *                               -- committed: true | nil, err (at once without
 *                               -- group commit, or with nothing pending)
 *   db:user_version([n])        -- read or set PRAGMA user_version
 *   db:close()                  -- also __gc and __close; idempotent
 *
 * Parameters: nil, booleans (0/1), integers, floats and strings (TEXT when
 * valid UTF-8, else BLOB). Values come back as integers, floats and strings;
 * NULL columns are absent from the row. Misuse (wrong types, a closed db, a
 * parameter count that does not match the statement) raises; SQLite's own
 * failures return nil and "db:<method>: <sqlite's message>".
 *
 * These calls are synchronous: they block the loop for as long as SQLite takes
 * (local disk, WAL, so normally well under a millisecond; up to the 5 s busy
 * timeout when another process holds the write lock). Acceptable for now; a
 * worker thread can come later without changing the Lua API.
 *
 * A statement is in use only inside one call. Everything between taking it
 * and giving it back (binding, stepping, building result tables, which may
 * raise on memory) runs in a function called through lua_pcall; its caller
 * then resets the statement, clears its bindings and only then re-raises, so
 * an error never leaves one bound or mid-step. Prepared statements are kept
 * per db (STMT_CACHE of them, by exact SQL text, oldest evicted) and
 * finalized when it closes: the runtime runs the same few statements over
 * and over, and parsing them was a fifth of SQLite's time. A
 * transaction's function cannot yield (it is called with lua_pcall): other
 * runs must not interleave their statements with an open transaction. */
#include "mod_store.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <lauxlib.h>
#include <sqlite3.h>

#include "stack_check.h"
#include "store_group.h"
#include "vm.h"

static const char DB_MT = 0; /* registry: metatable of db userdata */

#define BUSY_TIMEOUT_MS 5000
#define STMT_CACHE 32

/* A prepared statement waiting for its next use; sql is its own copy. */
typedef struct cached_stmt {
  char *sql;
  size_t len;
  sqlite3_stmt *stmt;
} cached_stmt;

typedef struct store_db {
  sqlite3 *db;   /* NULL once closed */
  mh_store_group *group; /* group commit, once db:group_commit() asked for it */
  int in_tx;     /* inside db:transaction's function */
  int ncached;   /* cache[0..ncached), oldest first */
  cached_stmt cache[STMT_CACHE];
} store_db;

/* The cached statement for sql, taken out of the cache (the caller owns it
 * until stmt_give), or NULL. */
static sqlite3_stmt *stmt_take(store_db *d, const char *sql, size_t len) {
  for (int i = d->ncached - 1; i >= 0; i--) {
    if (d->cache[i].len != len || memcmp(d->cache[i].sql, sql, len) != 0) continue;
    sqlite3_stmt *stmt = d->cache[i].stmt;
    free(d->cache[i].sql);
    memmove(&d->cache[i], &d->cache[i + 1], sizeof d->cache[0] * (size_t)(d->ncached - i - 1));
    d->ncached--;
    return stmt;
  }
  return NULL;
}

/* Resets a statement after its call and keeps it for the next one (the
 * newest entry), finalizing the oldest when the cache is full, or the
 * statement itself when its SQL cannot be copied. */
static void stmt_give(store_db *d, const char *sql, size_t len, sqlite3_stmt *stmt) {
  if (stmt == NULL) return;
  sqlite3_reset(stmt);            /* ends a read left mid-way (db:first) */
  sqlite3_clear_bindings(stmt);   /* bound strings pointed into the caller's stack */
  char *copy = malloc(len + 1);
  if (copy == NULL || d->db == NULL) {
    free(copy);
    sqlite3_finalize(stmt);
    return;
  }
  memcpy(copy, sql, len + 1);
  if (d->ncached == STMT_CACHE) {
    sqlite3_finalize(d->cache[0].stmt);
    free(d->cache[0].sql);
    memmove(&d->cache[0], &d->cache[1], sizeof d->cache[0] * (STMT_CACHE - 1));
    d->ncached--;
  }
  d->cache[d->ncached++] = (cached_stmt){copy, len, stmt};
}

static void stmt_cache_clear(store_db *d) {
  for (int i = 0; i < d->ncached; i++) {
    sqlite3_finalize(d->cache[i].stmt);
    free(d->cache[i].sql);
  }
  d->ncached = 0;
}

/* ---- the db userdata ---- */

/* [-0, +0, -] the db at idx, or NULL when it is not one */
static store_db *test_db(lua_State *L, int idx) {
  store_db *d = lua_touserdata(L, idx);
  if (d && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &DB_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return d;
  }
  return NULL;
}

/* [-0, +0, v] the db at idx (raises if it is not one) */
static store_db *to_db(lua_State *L, int idx) {
  store_db *d = test_db(L, idx);
  if (d == NULL) luaL_typeerror(L, idx, "store.db");
  return d;
}

mh_store_group *mh_store_db_group(lua_State *L, int idx) {
  store_db *d = test_db(L, idx);
  return d && d->db ? d->group : NULL;
}

/* [-0, +0, v] the open db at idx (raises if it is closed) */
static store_db *check_open(lua_State *L, int idx) {
  store_db *d = to_db(L, idx);
  if (d->db == NULL) luaL_error(L, "database is closed");
  return d;
}

/* [-0, +2, m] nil, "what: sqlite's message" */
static int push_failure(lua_State *L, sqlite3 *db, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, sqlite3_errmsg(db));
  return 2;
}

/* db:close() [-1, +1, v]; also __gc and __close (idempotent) */
static int db_close(lua_State *L) {
  store_db *d = to_db(L, 1);
  if (d->group) {                /* first: what this loop turn wrote is committed */
    mh_store_group_close(d->group);
    d->group = NULL;
  }
  if (d->db) {
    stmt_cache_clear(d);
    sqlite3_close_v2(d->db); /* rolls back an open transaction */
    d->db = NULL;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- parameters ---- */

/* Is s[0..len) well-formed UTF-8 (no overlong forms, surrogates or code
 * points above U+10FFFF)? */
static int utf8_valid(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) { i++; continue; }
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (len - i <= n) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= n; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += n + 1;
  }
  return 1;
}

/* [-0, +0, v] raises unless the value at idx can be bound */
static void check_param(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
    luaL_typeerror(L, idx, "nil, boolean, number or string");
}

/* [-0, +0, -] binds the value at idx to parameter n. Strings are bound
 * SQLITE_STATIC: the caller keeps them on its stack until the statement is
 * finalized. */
static int bind_param(lua_State *L, sqlite3_stmt *stmt, int n, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN: return sqlite3_bind_int(stmt, n, lua_toboolean(L, idx));
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) return sqlite3_bind_int64(stmt, n, (sqlite3_int64)lua_tointeger(L, idx));
    return sqlite3_bind_double(stmt, n, (double)lua_tonumber(L, idx));
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (utf8_valid((const unsigned char *)s, len))
      return sqlite3_bind_text64(stmt, n, s, len, SQLITE_STATIC, SQLITE_UTF8);
    return sqlite3_bind_blob64(stmt, n, s, len, SQLITE_STATIC);
  }
  default: return sqlite3_bind_null(stmt, n);
  }
}

/* ---- one statement, prepared, bound, stepped and finalized in one call ---- */

enum { MODE_RUN, MODE_QUERY, MODE_FIRST };

typedef struct stmt_call {
  store_db *d;
  sqlite3 *db;
  sqlite3_stmt *stmt;   /* given back (or finalized) by the caller of stmt_body, whatever happened */
  const char *what;     /* "db:run", ... */
  int mode;
} stmt_call;

/* [-0, +1, m] pushes the current row; the column names are at names+0..n-1 */
static void push_row(lua_State *L, sqlite3_stmt *stmt, int names, int ncols) {
  MH_STACK_BEGIN(L);
  lua_createtable(L, 0, ncols);                             /* row */
  for (int i = 0; i < ncols; i++) {
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_NULL: continue;
    case SQLITE_INTEGER: lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(stmt, i)); break;
    case SQLITE_FLOAT: lua_pushnumber(L, (lua_Number)sqlite3_column_double(stmt, i)); break;
    case SQLITE_TEXT: {
      const unsigned char *s = sqlite3_column_text(stmt, i); /* before _bytes, as the docs ask */
      lua_pushlstring(L, s ? (const char *)s : "", (size_t)sqlite3_column_bytes(stmt, i));
      break;
    }
    default: {
      const void *b = sqlite3_column_blob(stmt, i);
      lua_pushlstring(L, b ? (const char *)b : "", (size_t)sqlite3_column_bytes(stmt, i));
      break;
    }
    }                                                       /* row value */
    lua_pushvalue(L, names + i);                            /* row value name */
    lua_insert(L, -2);                                      /* row name value */
    lua_rawset(L, -3);                                      /* row */
  }
  MH_STACK_END(L, 1);
}

/* [-n, +(1|2), e] called through lua_pcall by stmt_exec:
 * 1 = stmt_call*, 2 = db, 3 = sql, 4.. = parameters (already checked).
 * Returns the call's results, or nil, err for SQLite's failures; may raise
 * (parameter count, memory). Leaves the statement in c->stmt. */
static int stmt_body(lua_State *L) {
  stmt_call *c = lua_touserdata(L, 1);
  size_t len;
  const char *sql = lua_tolstring(L, 3, &len);
  const char *tail = NULL;
  c->stmt = stmt_take(c->d, sql, len);
  if (c->stmt == NULL &&
      sqlite3_prepare_v3(c->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &c->stmt, &tail) != SQLITE_OK)
    return push_failure(L, c->db, c->what);
  if (c->stmt == NULL) return luaL_error(L, "%s: no SQL statement given", c->what);
  if (tail && *tail) { /* only whitespace and comments may follow (checked when first prepared) */
    sqlite3_stmt *next = NULL;
    int rc = sqlite3_prepare_v2(c->db, tail, (int)(len - (size_t)(tail - sql)), &next, NULL);
    sqlite3_finalize(next);
    if (rc != SQLITE_OK || next != NULL) {
      sqlite3_finalize(c->stmt);
      c->stmt = NULL;
      return luaL_error(L, "%s: one statement expected (db:exec runs several)", c->what);
    }
  }
  int nparams = lua_gettop(L) - 3;
  int expected = sqlite3_bind_parameter_count(c->stmt);
  if (nparams != expected)
    return luaL_error(L, "%s: the statement takes %d parameter%s, %d given", c->what, expected,
                      expected == 1 ? "" : "s", nparams);
  for (int i = 1; i <= nparams; i++)
    if (bind_param(L, c->stmt, i, 3 + i) != SQLITE_OK) return push_failure(L, c->db, c->what);

  int rc;
  if (c->mode == MODE_RUN) {
    while ((rc = sqlite3_step(c->stmt)) == SQLITE_ROW) {}
    if (rc != SQLITE_DONE) return push_failure(L, c->db, c->what);
    lua_createtable(L, 0, 2);                                           /* res */
    lua_pushinteger(L, (lua_Integer)sqlite3_changes64(c->db));
    lua_setfield(L, -2, "changes");
    lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(c->db));
    lua_setfield(L, -2, "last_id");
    return 1;
  }

  int ncols = sqlite3_column_count(c->stmt);
  luaL_checkstack(L, ncols + 4, "too many columns");
  int names = lua_gettop(L) + 1;
  for (int i = 0; i < ncols; i++) {                                   /* names... */
    const char *name = sqlite3_column_name(c->stmt, i);
    if (name == NULL) return luaL_error(L, "%s: out of memory", c->what);
    lua_pushstring(L, name);
  }
  if (c->mode == MODE_FIRST) {
    rc = sqlite3_step(c->stmt);
    if (rc == SQLITE_ROW) push_row(L, c->stmt, names, ncols);         /* names... row */
    else if (rc == SQLITE_DONE) lua_pushnil(L);                       /* names... nil */
    else return push_failure(L, c->db, c->what);
    return 1;
  }
  lua_newtable(L);                                                    /* names... rows */
  lua_Integer n = 0;
  while ((rc = sqlite3_step(c->stmt)) == SQLITE_ROW) {
    push_row(L, c->stmt, names, ncols);                               /* names... rows row */
    lua_rawseti(L, -2, ++n);                                          /* names... rows */
  }
  if (rc != SQLITE_DONE) return push_failure(L, c->db, c->what);
  return 1;
}

/* [-0, +(1|2), e] db:run/query/first(sql, ...): validate, then run stmt_body
 * protected, finalize, and only then pass its results or error on. */
static int stmt_exec(lua_State *L, const char *what, int mode) {
  store_db *d = check_open(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, strlen(sql) == len && len < INT_MAX, 2, "SQL text without zero bytes expected");
  int top = lua_gettop(L);
  for (int i = 3; i <= top; i++) check_param(L, i);
  luaL_checkstack(L, top + 2, "too many parameters");
  if (mode == MODE_RUN && d->group && mh_store_group_join(d->group) != SQLITE_OK) return push_failure(L, d->db, what);
  stmt_call c = {d, d->db, NULL, what, mode};
  lua_pushcfunction(L, stmt_body);
  lua_pushlightuserdata(L, &c);
  for (int i = 1; i <= top; i++) lua_pushvalue(L, i); /* the originals stay: bound SQLITE_STATIC */
  int status = lua_pcall(L, top + 1, LUA_MULTRET, 0);  /* args... results|err */
  stmt_give(d, sql, len, c.stmt);
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - top;
}

static int db_run(lua_State *L) { return stmt_exec(L, "db:run", MODE_RUN); }
static int db_query(lua_State *L) { return stmt_exec(L, "db:query", MODE_QUERY); }
static int db_first(lua_State *L) { return stmt_exec(L, "db:first", MODE_FIRST); }

/* db:exec(sql) [-2, +(1|2), e] */
static int db_exec(lua_State *L) {
  store_db *d = check_open(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, strlen(sql) == len, 2, "SQL text without zero bytes expected");
  if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK) return push_failure(L, d->db, "db:exec");
  lua_pushboolean(L, 1);
  return 1;
}

/* db:user_version([n]) [-(1|2), +(1|2), e] -> the version (the new one when set) */
static int db_user_version(lua_State *L) {
  store_db *d = check_open(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= INT32_MIN && n <= INT32_MAX, 2, "a 32-bit integer expected");
    char sql[48];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %lld", (long long)n);
    if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK)
      return push_failure(L, d->db, "db:user_version");
    lua_pushinteger(L, n);
    return 1;
  }
  sqlite3_stmt *stmt = NULL;
  sqlite3_int64 v = 0;
  int rc = sqlite3_prepare_v2(d->db, "PRAGMA user_version", -1, &stmt, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) v = sqlite3_column_int64(stmt, 0);
  char msg[256];
  snprintf(msg, sizeof msg, "db:user_version: %s", sqlite3_errmsg(d->db));
  sqlite3_finalize(stmt);                /* before anything that may raise */
  if (rc != SQLITE_ROW) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

/* Runs one statement of fixed SQL without parameters or results through the
 * statement cache (SAVEPOINT and RELEASE run once per nested transaction:
 * parsing them each time cost more than running them). SQLite's code. */
static int exec_cached(store_db *d, const char *sql) {
  size_t len = strlen(sql);
  sqlite3_stmt *stmt = stmt_take(d, sql, len);
  int rc = stmt ? SQLITE_OK : sqlite3_prepare_v2(d->db, sql, (int)len, &stmt, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  stmt_give(d, sql, len, stmt);
  return rc;
}

/* db:transaction(fn) [-2, +(1|2), e] */
static int db_transaction(lua_State *L) {
  store_db *d = check_open(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (d->in_tx) return luaL_error(L, "db:transaction: already inside a transaction (they do not nest)");
  lua_settop(L, 2);                                        /* db fn */
  if (d->group && mh_store_group_join(d->group) != SQLITE_OK) return push_failure(L, d->db, "db:transaction: begin");
  int nested = !sqlite3_get_autocommit(d->db);             /* within the group's transaction */
  if ((nested ? exec_cached(d, "SAVEPOINT mh_tx") : sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) != SQLITE_OK)
    return push_failure(L, d->db, "db:transaction: begin");
  d->in_tx = 1;
  lua_pushvalue(L, 1);                                     /* db fn db */
  int status = lua_pcall(L, 1, 1, 0);                      /* db result|err */
  d->in_tx = 0;
  if (d->db == NULL) {                                     /* closed (and rolled back) inside fn */
    if (status != LUA_OK) return lua_error(L);
    return luaL_error(L, "db:transaction: the database was closed inside the transaction");
  }
  const char *undo = nested ? "ROLLBACK TO mh_tx; RELEASE mh_tx" : "ROLLBACK";
  if (status != LUA_OK) {
    if (!sqlite3_get_autocommit(d->db)) sqlite3_exec(d->db, undo, NULL, NULL, NULL);
    return lua_error(L);
  }
  if ((nested ? exec_cached(d, "RELEASE mh_tx") : sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK) {
    push_failure(L, d->db, "db:transaction: commit");      /* db result nil err */
    if (!sqlite3_get_autocommit(d->db)) sqlite3_exec(d->db, undo, NULL, NULL, NULL);
    return 2;
  }
  return 1;
}

/* db:group_commit() [-1, +(1|2), e] */
static int db_group_commit(lua_State *L) {
  store_db *d = check_open(L, 1);
  if (d->group == NULL && (d->group = mh_store_group_new(mh_vm_of(L)->host->loop, d->db)) == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "db:group_commit: out of memory");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* db:committed() [-1, +(1|2), v] */
static int db_committed(lua_State *L) {
  store_db *d = check_open(L, 1);
  return mh_store_group_wait(L, d->group, 0, NULL);
}

/* [-0, +1, m] pushes the metatable of db userdata, creating it once per state */
static void push_db_mt(lua_State *L) {
  MH_STACK_BEGIN(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &DB_MT) == LUA_TNIL) {
    lua_pop(L, 1);
    static const luaL_Reg methods[] = {
      {"exec", db_exec}, {"run", db_run}, {"query", db_query}, {"first", db_first},
      {"transaction", db_transaction}, {"user_version", db_user_version}, {"close", db_close},
      {"group_commit", db_group_commit}, {"committed", db_committed}, {NULL, NULL}};
    lua_createtable(L, 0, 5);                                /* mt */
    luaL_newlib(L, methods);                                 /* mt methods */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, db_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, db_close);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, "store.db");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);                                    /* mt mt */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &DB_MT);               /* mt */
  }
  MH_STACK_END(L, 1);
}

/* mkdir -p of path's folder (mode 0700). Returns 0, or errno with the
 * folder that failed left in dir. */
static int make_parent_dirs(const char *path, char *dir, size_t dirlen) {
  if (snprintf(dir, dirlen, "%s", path) >= (int)dirlen) return ENAMETOOLONG;
  char *slash = strrchr(dir, '/');
  if (slash == NULL || slash == dir) return 0;
  *slash = '\0';
  struct stat st;
  if (stat(dir, &st) == 0) return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return errno;
    *p = saved;
    if (saved == '\0') break;
  }
  if (stat(dir, &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

/* store.open(path) [-1, +(1|2), e] */
static int store_open(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && strlen(path) == len, 1, "a non-empty path without zero bytes expected");
  luaL_argcheck(L, len < PATH_MAX, 1, "path too long");
  store_db *d = lua_newuserdatauv(L, sizeof *d, 0);        /* db */
  d->db = NULL;
  d->group = NULL;
  d->in_tx = 0;
  d->ncached = 0;
  push_db_mt(L);
  lua_setmetatable(L, -2);                                 /* from here __gc closes d->db */
  if (strcmp(path, ":memory:") != 0) {
    char dir[PATH_MAX];
    int err = make_parent_dirs(path, dir, sizeof dir);
    if (err != 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "store.open: cannot create the folder '%s': %s", dir, strerror(err));
      return 2;
    }
  }
  int rc = sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(d->db, BUSY_TIMEOUT_MS);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                      NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    lua_pushnil(L);                                        /* db nil */
    lua_pushfstring(L, "store.open: cannot open '%s': %s", path,
                    d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc)); /* db nil err */
    sqlite3_close_v2(d->db);
    d->db = NULL;
    return 2;
  }
  return 1;
}

int luaopen_mh_store(lua_State *L) {
  static const luaL_Reg funcs[] = {{"open", store_open}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  push_db_mt(L);
  lua_pop(L, 1);
  return 1;
}
