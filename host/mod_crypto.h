/* mod_crypto.h — `crypto` (OpenSSL): hashes, HMAC, random bytes, constant-time compare. */
#ifndef MH_MOD_CRYPTO_H
#define MH_MOD_CRYPTO_H
#include <lua.h>
#include <stddef.h>
int luaopen_mh_crypto(lua_State *L);
/* SHA-256 of len bytes as 64 lowercase hex characters and a NUL; 0, or -1
 * when OpenSSL fails (hex is then ""). */
int mh_sha256_hex(const void *data, size_t len, char hex[65]);
#endif
