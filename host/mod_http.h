/* mod_http.h — the `http` native module: libcurl's multi interface on the
 * host's libuv loop. */
#ifndef MH_MOD_HTTP_H
#define MH_MOD_HTTP_H

#include <lua.h>

struct mh_http;

int luaopen_mh_http(lua_State *L);
/* Aborts transfers still running and frees the client; closes its handles. */
void mh_http_shutdown(struct mh_http *http);

#endif
