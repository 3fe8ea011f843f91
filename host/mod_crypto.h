/* mod_crypto.h — `crypto` (OpenSSL): hashes, HMAC, random bytes, constant-time compare. */
#ifndef MH_MOD_CRYPTO_H
#define MH_MOD_CRYPTO_H
#include <lua.h>
int luaopen_mh_crypto(lua_State *L);
#endif
