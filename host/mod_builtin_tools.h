/* mod_builtin_tools.h — the privileged halves of the built-in agent tools. */
#ifndef MH_MOD_BUILTIN_TOOLS_H
#define MH_MOD_BUILTIN_TOOLS_H
#include <lua.h>
int luaopen_mh_builtin_tools(lua_State *L);
#endif
