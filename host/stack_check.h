/* stack_check.h — balance checks for functions that touch a Lua stack.
 *
 *   MH_STACK_BEGIN(L);          ... code ...   MH_STACK_END(L, +1);
 * asserts the stack grew by exactly the stated amount. Active in debug and
 * sanitizer builds (MH_STACK_CHECKS); compiled out otherwise. Lua here is
 * built without LUA_USE_APICHECK, so an imbalance would otherwise surface
 * later as an unrelated error. */
#ifndef MH_STACK_CHECK_H
#define MH_STACK_CHECK_H

#ifdef MH_STACK_CHECKS
#include <assert.h>
#define MH_STACK_BEGIN(L) int mh_stack_top_ = lua_gettop(L)
#define MH_STACK_END(L, delta) assert(lua_gettop(L) == mh_stack_top_ + (delta))
#else
#define MH_STACK_BEGIN(L) ((void)0)
#define MH_STACK_END(L, delta) ((void)0)
#endif

#endif
