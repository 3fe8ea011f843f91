/* sb_table.c — table.insert, table.remove and table.move for the sandbox.
 *
 * Lua's own versions shift or copy element by element in a C loop whose
 * length comes from `#t` or the arguments, not from memory: with a __len
 * that answers 1e12, or `table.move({}, 1, 1e12, 1)`, one call would run for
 * hours with no hook firing. These follow the reference manual's semantics
 * (metamethods included, same error messages) and call mh_vm_check_limits
 * every few thousand elements. */
#include "sb_table.h"

#include <lauxlib.h>

#include "limits_check.h"

#define CHECK_EVERY 4096

#define TAB_R 1  /* read */
#define TAB_W 2  /* write */
#define TAB_L 4  /* length */
#define TAB_RW (TAB_R | TAB_W)

/* [-0, +0, v] Is the value at arg a table, or something with the
 * metamethods the operation needs? */
static void check_tab(lua_State *L, int arg, int what) {
  if (lua_type(L, arg) == LUA_TTABLE) return;
  int n = 1;
  if (lua_getmetatable(L, arg) &&
      (!(what & TAB_R) || (n++, lua_getfield(L, -n, "__index") != LUA_TNIL)) &&
      (!(what & TAB_W) || (n++, lua_getfield(L, -n, "__newindex") != LUA_TNIL)) &&
      (!(what & TAB_L) || (n++, lua_getfield(L, -n, "__len") != LUA_TNIL))) {
    lua_pop(L, n);
    return;
  }
  luaL_checktype(L, arg, LUA_TTABLE); /* raises the usual message */
}

static lua_Integer length_of(lua_State *L, int arg, int what) {
  check_tab(L, arg, what | TAB_L);
  return luaL_len(L, arg);
}

static void tick(lua_State *L, lua_Integer *count) {
  if (++*count % CHECK_EVERY == 0) mh_vm_check_limits(L);
}

/* table.insert(t, [pos,] value) */
static int sb_insert(lua_State *L) {
  lua_Integer last = length_of(L, 1, TAB_RW) + 1; /* first empty slot */
  lua_Integer pos, count = 0;
  switch (lua_gettop(L)) {
    case 2:
      pos = last;
      break;
    case 3:
      pos = luaL_checkinteger(L, 2);
      /* unsigned comparison checks 1 <= pos <= last in one go */
      luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)last, 2, "position out of bounds");
      for (lua_Integer i = last; i > pos; i--) {
        lua_geti(L, 1, i - 1);
        lua_seti(L, 1, i);
        tick(L, &count);
      }
      break;
    default:
      return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

/* table.remove(t [, pos]) */
static int sb_remove(lua_State *L) {
  lua_Integer size = length_of(L, 1, TAB_RW);
  lua_Integer pos = luaL_optinteger(L, 2, size), count = 0;
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  lua_geti(L, 1, pos);
  for (; pos < size; pos++) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
    tick(L, &count);
  }
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

/* table.move(a1, f, e, t [, a2]) */
static int sb_move(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  lua_Integer t = luaL_checkinteger(L, 4);
  int tt = !lua_isnoneornil(L, 5) ? 5 : 1; /* destination table */
  check_tab(L, 1, TAB_R);
  check_tab(L, tt, TAB_W);
  if (e >= f) {
    lua_Integer n, count = 0;
    luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
    n = e - f + 1;
    luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
    if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
      for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 1, f + i);
        lua_seti(L, tt, t + i);
        tick(L, &count);
      }
    } else {
      for (lua_Integer i = n - 1; i >= 0; i--) {
        lua_geti(L, 1, f + i);
        lua_seti(L, tt, t + i);
        tick(L, &count);
      }
    }
  }
  lua_pushvalue(L, tt);
  return 1;
}

void mh_table_guard(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, sb_insert);
  lua_setfield(L, idx, "insert");
  lua_pushcfunction(L, sb_remove);
  lua_setfield(L, idx, "remove");
  lua_pushcfunction(L, sb_move);
  lua_setfield(L, idx, "move");
}
