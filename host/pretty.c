/* pretty.c — renders Lua values as readable text (REPL and `eval` output).
 *
 * Pieces are collected in a Lua table (memory the state's cap governs) and
 * joined at the end. Tables print as constructors: the array part first, then
 * the other keys sorted (numbers, then strings, then the rest); a table seen
 * on the current path prints as <cycle>. Depth, entries per table and total
 * entries are bounded so printing a huge value stays cheap. */
#include "pretty.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "stack_check.h"

#define MAX_DEPTH 8
#define MAX_ENTRIES_PER_TABLE 200
#define MAX_ENTRIES_TOTAL 5000
#define MAX_SORTED_KEYS 1000
#define INLINE_ENTRIES 8

typedef struct pretty {
  lua_State *L;
  int parts;   /* stack index of the pieces table */
  int seen;    /* stack index of the tables on the current path */
  int nparts;
  int budget;  /* entries left in total */
} pretty;

static void emit(pretty *p, const char *s, size_t len) { /* [-0, +0, m] */
  lua_pushlstring(p->L, s, len);
  lua_rawseti(p->L, p->parts, ++p->nparts);
}

static void emits(pretty *p, const char *s) { emit(p, s, strlen(s)); }

static void emit_indent(pretty *p, int depth) {
  static const char spaces[] = "                                ";
  emit(p, "\n", 1);
  emit(p, spaces, (size_t)(depth * 2 < 32 ? depth * 2 : 32));
}

/* [-0, +0, m] a string as a Lua literal: escapes for quotes, backslashes and
 * control bytes; UTF-8 passes through. */
static void emit_quoted(pretty *p, const char *s, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(p->L, &b);
  luaL_addchar(&b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
      case '"': luaL_addstring(&b, "\\\""); break;
      case '\\': luaL_addstring(&b, "\\\\"); break;
      case '\n': luaL_addstring(&b, "\\n"); break;
      case '\r': luaL_addstring(&b, "\\r"); break;
      case '\t': luaL_addstring(&b, "\\t"); break;
      default:
        if (c < 32 || c == 127) {
          char esc[8];
          snprintf(esc, sizeof esc, "\\%d", c);
          luaL_addstring(&b, esc);
        } else {
          luaL_addchar(&b, (char)c);
        }
    }
  }
  luaL_addchar(&b, '"');
  luaL_pushresult(&b);
  lua_rawseti(p->L, p->parts, ++p->nparts);
}

static int is_identifier(const char *s, size_t len) {
  static const char *const reserved[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while", NULL};
  if (len == 0 || (!isalpha((unsigned char)s[0]) && s[0] != '_')) return 0;
  for (size_t i = 1; i < len; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_') return 0;
  for (int i = 0; reserved[i]; i++)
    if (strcmp(s, reserved[i]) == 0) return 0;
  return 1;
}

static void emit_value(pretty *p, int idx, int depth, int raw_strings);

/* Ordering of non-array keys: numbers, strings, booleans, then the rest. */
typedef struct key_ref { int rank; lua_Number num; const char *str; int slot; } key_ref;

static int key_cmp(const void *a, const void *b) {
  const key_ref *x = a, *y = b;
  if (x->rank != y->rank) return x->rank - y->rank;
  if (x->rank == 0) return x->num < y->num ? -1 : x->num > y->num;
  if (x->rank == 1) return strcmp(x->str, y->str);
  return x->slot - y->slot;
}

/* [-0, +1, m] Pushes a table of the non-array keys of table t (array part
 * 1..n excluded) in display order; *more counts keys left out. */
static void sorted_keys(lua_State *L, int t, lua_Integer n, int *more) {
  lua_newtable(L);
  int keys = lua_gettop(L), count = 0;
  *more = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= n) continue;
    if (count >= MAX_SORTED_KEYS) { (*more)++; continue; }
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, ++count);
  }
  key_ref *refs = count ? malloc(sizeof *refs * (size_t)count) : NULL;
  if (refs == NULL) return; /* keep insertion order */
  for (int i = 0; i < count; i++) {
    lua_rawgeti(L, keys, i + 1);
    int type = lua_type(L, -1);
    refs[i].slot = i + 1;
    refs[i].rank = type == LUA_TNUMBER ? 0 : type == LUA_TSTRING ? 1 : type == LUA_TBOOLEAN ? 2 : 3;
    refs[i].num = type == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    refs[i].str = type == LUA_TSTRING ? lua_tostring(L, -1) : NULL; /* anchored by keys */
    lua_pop(L, 1);
  }
  qsort(refs, (size_t)count, sizeof *refs, key_cmp);
  /* Reorder in place through a second table; no raising while refs is held. */
  int order[MAX_SORTED_KEYS];
  for (int i = 0; i < count; i++) order[i] = refs[i].slot;
  free(refs);
  lua_createtable(L, count, 0);
  for (int i = 0; i < count; i++) {
    lua_rawgeti(L, keys, order[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_remove(L, keys);
}

static void emit_key(pretty *p, int idx, int depth) {
  lua_State *L = p->L;
  size_t len;
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, idx, &len);
    if (is_identifier(s, len)) {
      emit(p, s, len);
      return;
    }
  }
  emit(p, "[", 1);
  emit_value(p, idx, depth, 0);
  emit(p, "]", 1);
}

static int has_nested_table(lua_State *L, int t) {
  int nested = 0;
  lua_pushnil(L);
  while (!nested && lua_next(L, t)) {
    nested = lua_type(L, -1) == LUA_TTABLE;
    lua_pop(L, 1);
  }
  if (nested) lua_pop(L, 1);
  return nested;
}

static void emit_table(pretty *p, int t, int depth) {
  lua_State *L = p->L;
  MH_STACK_BEGIN(L);
  lua_pushvalue(L, t);
  if (lua_rawget(L, p->seen) != LUA_TNIL) {
    lua_pop(L, 1);
    emits(p, "<cycle>");
    return;
  }
  lua_pop(L, 1);
  if (depth >= MAX_DEPTH) {
    emits(p, "{...}");
    return;
  }
  luaL_checkstack(L, 8, "value too deep to print");
  lua_pushvalue(L, t);
  lua_pushboolean(L, 1);
  lua_rawset(L, p->seen);

  lua_Integer n = 0;
  while (lua_rawgeti(L, t, n + 1) != LUA_TNIL) { lua_pop(L, 1); n++; }
  lua_pop(L, 1);
  int more;
  sorted_keys(L, t, n, &more);
  int keys = lua_gettop(L);
  lua_Integer nkeys = (lua_Integer)lua_rawlen(L, keys);
  lua_Integer total = n + nkeys;
  int multiline = total > INLINE_ENTRIES || has_nested_table(L, t);
  if (total == 0) {
    emits(p, "{}");
  } else {
    emit(p, "{", 1);
    lua_Integer shown = 0;
    for (lua_Integer i = 1; i <= total; i++) {
      if (shown >= MAX_ENTRIES_PER_TABLE || p->budget <= 0) {
        if (multiline) emit_indent(p, depth + 1);
        else emit(p, " ", 1);
        lua_pushfstring(L, "... (%I more)", (LUAI_UACINT)(total - shown + more));
        lua_rawseti(L, p->parts, ++p->nparts);
        more = 0;
        break;
      }
      if (multiline) emit_indent(p, depth + 1);
      if (i <= n) {
        lua_rawgeti(L, t, i);
      } else {
        lua_rawgeti(L, keys, i - n);        /* key */
        emit_key(p, lua_gettop(L), depth + 1);
        emit(p, " = ", 3);
        lua_rawget(L, t);                   /* value */
      }
      emit_value(p, lua_gettop(L), depth + 1, 0);
      lua_pop(L, 1);
      if (i < total) emit(p, multiline ? "," : ", ", multiline ? 1 : 2);
      shown++;
      p->budget--;
    }
    if (more) {
      lua_pushfstring(L, ", ... (%d more)", more);
      lua_rawseti(L, p->parts, ++p->nparts);
    }
    if (multiline) emit_indent(p, depth);
    emit(p, "}", 1);
  }
  lua_pop(L, 1); /* keys */
  lua_pushvalue(L, t);
  lua_pushnil(L);
  lua_rawset(L, p->seen);
  MH_STACK_END(L, 0);
}

static void emit_value(pretty *p, int idx, int depth, int raw_strings) {
  lua_State *L = p->L;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (raw_strings) emit(p, s, len);
      else emit_quoted(p, s, len);
      return;
    }
    case LUA_TTABLE:
      if (luaL_getmetafield(L, idx, "__tostring") == LUA_TNIL) {
        emit_table(p, idx, depth);
        return;
      }
      lua_pop(L, 1);
      /* it knows how to print itself */
      /* fallthrough */
    default:
      luaL_tolstring(L, idx, NULL);
      lua_rawseti(L, p->parts, ++p->nparts);
  }
}

/* [-0, +1, e] joins the pieces table on top into one string, replacing it */
static void join_parts(lua_State *L, int parts, int nparts) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= nparts; i++) {
    lua_rawgeti(L, parts, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
}

void mh_pretty_push(lua_State *L, int idx, int raw_strings) {
  idx = lua_absindex(L, idx);
  MH_STACK_BEGIN(L);
  pretty p = {L, 0, 0, 0, MAX_ENTRIES_TOTAL};
  lua_newtable(L);
  p.parts = lua_gettop(L);
  lua_newtable(L);
  p.seen = lua_gettop(L);
  emit_value(&p, idx, 0, raw_strings);
  join_parts(L, p.parts, p.nparts);
  lua_replace(L, p.parts);
  lua_pop(L, 1); /* seen */
  MH_STACK_END(L, 1);
}

int mh_pretty_values(lua_State *L) {
  int n = lua_gettop(L);
  lua_newtable(L);
  int parts = n + 1, nparts = 0;
  for (int i = 1; i <= n; i++) {
    if (i > 1) {
      lua_pushliteral(L, "\t");
      lua_rawseti(L, parts, ++nparts);
    }
    mh_pretty_push(L, i, 1);
    lua_rawseti(L, parts, ++nparts);
  }
  join_parts(L, parts, nparts);
  return 1;
}
