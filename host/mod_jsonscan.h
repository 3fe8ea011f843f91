/* mod_jsonscan.h — `jsonscan` (trusted runtime only): read one JSON string
 * out of a text without decoding the whole document. */
#ifndef MH_MOD_JSONSCAN_H
#define MH_MOD_JSONSCAN_H
#include <lua.h>
int luaopen_mh_jsonscan(lua_State *L);
#endif
