/* mod_auth.h — `auth`, for the trusted runtime only: JWT HS256 signatures
 * checked against the secret the host holds. */
#ifndef MH_MOD_AUTH_H
#define MH_MOD_AUTH_H
#include <lua.h>
int luaopen_mh_auth(lua_State *L);
#endif
