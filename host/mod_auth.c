/* mod_auth.c — `require "auth"` in the trusted runtime (never in a sandbox):
 * the one place that uses the service's JWT secret (MOONHIVE_JWT_SECRET,
 * read once into host memory, never handed to Lua).
 *
 *   auth.jwt_configured()   -- is a secret set?
 *   auth.jwt_verify(token)  -- header_json, payload_json when token is
 *                           -- "header.payload.signature" (base64url) and its
 *                           -- HMAC-SHA-256 over "header.payload" matches
 *                           -- (constant-time); nil and why not otherwise.
 *
 * Only the signature is checked here; the runtime (moonhive.service.auth)
 * decodes the JSON and checks alg, exp and nbf — after the signature has
 * proved the text came from a holder of the secret. */
#include "mod_auth.h"

#include <string.h>

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "host.h"
#include "vm.h"

#define TOKEN_MAX 8192

/* Decodes base64url (no padding) from in[0..n) into out; returns the length
 * or -1. out must hold n bytes. */
static long b64url_decode(const char *in, size_t n, unsigned char *out) {
  char buf[TOKEN_MAX + 4];
  if (n > TOKEN_MAX || n % 4 == 1) return -1;
  for (size_t i = 0; i < n; i++) {
    char ch = in[i];
    if (ch == '-') ch = '+';
    else if (ch == '_') ch = '/';
    else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) return -1;
    buf[i] = ch;
  }
  size_t padded = n;
  while (padded % 4) buf[padded++] = '=';
  int len = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)padded);
  if (len < 0) return -1;
  return len - (long)(padded - n); /* EVP_DecodeBlock counts the padding as zero bytes */
}

static int fail(lua_State *L, const char *why) {
  luaL_pushfail(L);
  lua_pushstring(L, why);
  return 2;
}

/* auth.jwt_configured() [-0, +1, -] */
static int auth_jwt_configured(lua_State *L) {
  lua_pushboolean(L, mh_host_secret(mh_vm_of(L)->host, MH_SECRET_JWT) != NULL);
  return 1;
}

/* auth.jwt_verify(token) [-1, +2, m] */
static int auth_jwt_verify(lua_State *L) {
  size_t len;
  const char *token = luaL_checklstring(L, 1, &len);
  const char *secret = mh_host_secret(mh_vm_of(L)->host, MH_SECRET_JWT);
  if (secret == NULL) return fail(L, "bearer tokens are not accepted: no MOONHIVE_JWT_SECRET is set");
  if (len > TOKEN_MAX) return fail(L, "the token is too long");
  const char *dot1 = memchr(token, '.', len);
  const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
  if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
    return fail(L, "the token is not a JWT (header.payload.signature)");
  unsigned char given[TOKEN_MAX], expected[EVP_MAX_MD_SIZE];
  long glen = b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), given);
  unsigned int elen = 0;
  if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)token, (size_t)(dot2 - token),
           expected, &elen) == NULL)
    return fail(L, "cannot compute the signature");
  if (glen != (long)elen || CRYPTO_memcmp(given, expected, elen) != 0) return fail(L, "the token's signature is not valid");
  unsigned char header[TOKEN_MAX], payload[TOKEN_MAX];
  long hlen = b64url_decode(token, (size_t)(dot1 - token), header);
  long plen = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload);
  if (hlen < 0 || plen < 0) return fail(L, "the token's header or payload is not base64url");
  lua_pushlstring(L, (const char *)header, (size_t)hlen);
  lua_pushlstring(L, (const char *)payload, (size_t)plen);
  return 2;
}

int luaopen_mh_auth(lua_State *L) {
  static const luaL_Reg funcs[] = {{"jwt_configured", auth_jwt_configured}, {"jwt_verify", auth_jwt_verify}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
