/* copy.c — deep copies of plain Lua values between states (see copy.h).
 *
 * The copy runs inside lua_pcall on the destination, so running out of
 * memory there is an error value, not a longjmp through the caller; the
 * source is only read (raw gets, lua_next), which never allocates. */
#include "copy.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

typedef struct copy_job {
  lua_State *from;
  int idx;
  int items;
  size_t bytes;          /* string bytes copied so far */
  const mh_copy_rules *rules;
  int depth;             /* of the value being copied */
  int keys[MH_COPY_MAX_DEPTH]; /* from's stack: the key of each level above it */
  const char *why;       /* set when the value cannot be copied */
} copy_job;

/* The path of the value that could not be copied ("messages[2].content"),
 * read from the keys still on from's stack; built only for the error. */
static void describe_path(const copy_job *job, char *path, size_t size) {
  size_t len = 0;
  path[0] = '\0';
  for (int d = 0; d < job->depth && len + 2 < size; d++) {
    int k = job->keys[d];
    if (lua_type(job->from, k) == LUA_TSTRING)
      snprintf(path + len, size - len, "%s%s", len ? "." : "", lua_tostring(job->from, k));
    else if (lua_isinteger(job->from, k))
      snprintf(path + len, size - len, "[%lld]", (long long)lua_tointeger(job->from, k));
    else
      snprintf(path + len, size - len, "[?]");
    len = strlen(path);
  }
}

/* [-0, +1, e] copies from->stack[idx] onto L (the destination) */
static void copy_one(copy_job *job, lua_State *L, int idx, int depth) {
  lua_State *from = job->from;
  if (++job->items > MH_COPY_MAX_ITEMS) {
    job->why = "too many values";
    luaL_error(L, "copy");
  }
  switch (lua_type(from, idx)) {
    case LUA_TNIL: lua_pushnil(L); return;
    case LUA_TBOOLEAN: lua_pushboolean(L, lua_toboolean(from, idx)); return;
    case LUA_TNUMBER:
      if (lua_isinteger(from, idx)) lua_pushinteger(L, lua_tointeger(from, idx));
      else lua_pushnumber(L, lua_tonumber(from, idx));
      return;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(from, idx, &len);
      job->bytes += len;
      if (job->rules && job->rules->max_bytes && job->bytes > job->rules->max_bytes) {
        job->why = "too big";
        luaL_error(L, "copy");
      }
      if (job->rules && job->rules->masked) mh_push_masked(L, s, len, job->rules->masked);
      else lua_pushlstring(L, s, len);
      return;
    }
    case LUA_TTABLE: break;
    default:
      job->why = lua_typename(from, lua_type(from, idx));
      luaL_error(L, "copy");
  }
  if (depth >= MH_COPY_MAX_DEPTH) {
    job->why = "nested too deeply (or a cycle)";
    luaL_error(L, "copy");
  }
  if (!lua_checkstack(from, 4)) {
    job->why = "no stack space";
    luaL_error(L, "copy");
  }
  luaL_checkstack(L, 4, "copy");
  idx = lua_absindex(from, idx);
  /* Sized up front: growing a table key by key rehashes it at every power
   * of two, which cost more than the copy itself. */
  lua_Unsigned n = lua_rawlen(from, idx);          /* a border, not a count */
  int entries = 0;
  lua_pushnil(from);
  while (entries < (1 << 16) && lua_next(from, idx)) {
    entries++;
    lua_pop(from, 1);                              /* from: key */
  }
  if (entries == (1 << 16)) lua_pop(from, 1);      /* the key the count stopped at */
  int narr = n < (lua_Unsigned)entries ? (int)n : entries;
  lua_createtable(L, narr, entries - narr);
  lua_pushnil(from);
  while (lua_next(from, idx)) {               /* from: key value */
    int kt = lua_type(from, -2);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      lua_pop(from, 2);
      job->why = "a table key that is not a string, number or boolean";
      luaL_error(L, "copy");
    }
    job->keys[depth] = lua_absindex(from, -2);
    job->depth = depth + 1;
    copy_one(job, L, -2, depth + 1);          /* L: t key */
    copy_one(job, L, -1, depth + 1);          /* L: t key value */
    lua_rawset(L, -3);
    job->depth = depth;
    lua_pop(from, 1);                         /* from: key */
  }
}

/* [-0, +1, e] lua_pcall target on the destination */
static int copy_protected(lua_State *L) {
  copy_job *job = lua_touserdata(L, 1);
  lua_pop(L, 1);
  copy_one(job, L, job->idx, 0);
  return 1;
}

/* The first occurrence of any masked string in s, or NULL; *klen its length. */
static const char *find_masked(const char *s, size_t len, const char *const *masked, size_t *klen) {
  const char *first = NULL;
  for (const char *const *m = masked; *m; m++) {
    size_t kl = strlen(*m);
    const char *at = kl ? memmem(s, len, *m, kl) : NULL;
    if (at && (first == NULL || at < first)) first = at, *klen = kl;
  }
  return first;
}

void mh_push_masked(lua_State *L, const char *s, size_t len, const char *const *masked) {
  size_t klen = 0;
  const char *at = masked ? find_masked(s, len, masked, &klen) : NULL;
  if (at == NULL) {
    lua_pushlstring(L, s, len);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (at) {
    luaL_addlstring(&b, s, (size_t)(at - s));
    for (size_t i = 0; i < klen; i++) luaL_addchar(&b, '*');
    len -= (size_t)(at - s) + klen;
    s = at + klen;
    at = find_masked(s, len, masked, &klen);
  }
  luaL_addlstring(&b, s, len);
  luaL_pushresult(&b);
}

int mh_copy_value(lua_State *from, int idx, lua_State *to, const mh_copy_rules *rules, char *err, size_t errlen) {
  copy_job job;
  job.from = from;
  job.idx = lua_absindex(from, idx);
  job.items = 0;
  job.bytes = 0;
  job.rules = rules;
  job.depth = 0;
  job.why = NULL;
  int top = lua_gettop(from);
  if (!lua_checkstack(to, 3)) {
    snprintf(err, errlen, "cannot copy: no stack space");
    return -1;
  }
  lua_pushcfunction(to, copy_protected);
  lua_pushlightuserdata(to, &job);
  int status = lua_pcall(to, 1, 1, 0);
  if (status == LUA_OK) return 0;
  char path[160];
  describe_path(&job, path, sizeof path);     /* from the keys an error left behind */
  lua_settop(from, top);
  lua_pop(to, 1);
  if (job.why)
    snprintf(err, errlen, "cannot copy value%s%s: %s", path[0] ? " at " : "", path,
             strcmp(job.why, "function") == 0 || strcmp(job.why, "userdata") == 0 || strcmp(job.why, "thread") == 0
               ? (job.why[0] == 'f' ? "a function cannot cross" : job.why[0] == 'u' ? "userdata cannot cross" : "a coroutine cannot cross")
               : job.why);
  else
    snprintf(err, errlen, "cannot copy value: %s", status == LUA_ERRMEM ? "out of memory" : "error");
  return -1;
}
