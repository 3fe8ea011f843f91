/* mod_llm.h — the `llm` native module of sandboxes. */
#ifndef MH_MOD_LLM_H
#define MH_MOD_LLM_H
#include <lua.h>
int luaopen_mh_llm(lua_State *L);
#endif
