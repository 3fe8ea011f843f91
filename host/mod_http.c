#include "mod_http.h"
#include <lauxlib.h>
int luaopen_mh_http(lua_State *L) { lua_newtable(L); return 1; }
void mh_http_shutdown(struct mh_http *http) { (void)http; }
