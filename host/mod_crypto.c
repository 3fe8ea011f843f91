/* mod_crypto.c — `require "crypto"`: SHA-256, HMAC-SHA-256, random bytes and
 * ids, and a constant-time comparison, from OpenSSL 3 (EVP, RAND_bytes,
 * CRYPTO_memcmp). Available to sandboxes: nothing here reaches a secret or the
 * file system. Every function validates its arguments, computes into stack
 * buffers, and only then pushes its result, so no memory is held across a
 * call that may raise.
 *
 *   crypto.sha256(s [, raw])            -- 64 lowercase hex chars, or 32 raw bytes
 *   crypto.hmac_sha256(key, s [, raw])  -- the same for HMAC-SHA-256
 *   crypto.random(n)                    -- n random bytes, 1 <= n <= 4096
 *   crypto.random_id()                  -- 32 hex chars (128 random bits)
 *   crypto.equal(a, b)                  -- constant-time a == b (false if lengths differ) */
#include "mod_crypto.h"

#include <pthread.h>
#include <stddef.h>

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define DIGEST_LEN 32      /* SHA-256 */
#define RANDOM_MAX 4096

/* SHA-256 fetched from OpenSSL's provider once per process: EVP_sha256()
 * makes EVP_Digest look it up again at every call, which was half of a
 * short digest's cost (a workflow step digests its arguments). */
static EVP_MD *sha256_fetched;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void) { sha256_fetched = EVP_MD_fetch(NULL, "SHA256", NULL); }

/* SHA-256 of data into md (DIGEST_LEN bytes): 0, or -1 when OpenSSL fails. */
static int sha256(const void *data, size_t len, unsigned char md[EVP_MAX_MD_SIZE]) {
  pthread_once(&sha256_once, fetch_sha256);
  unsigned int mdlen = 0;
  const EVP_MD *type = sha256_fetched ? sha256_fetched : EVP_sha256();
  return EVP_Digest(data, len, md, &mdlen, type, NULL) == 1 && mdlen == DIGEST_LEN ? 0 : -1;
}

/* [-0, +1, m] pushes len bytes as lowercase hex */
static void push_hex(lua_State *L, const unsigned char *bytes, size_t len) {
  static const char digits[] = "0123456789abcdef";
  char hex[2 * DIGEST_LEN];
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  while (len > 0) {
    size_t n = len < DIGEST_LEN ? len : DIGEST_LEN;
    for (size_t i = 0; i < n; i++) {
      hex[2 * i] = digits[bytes[i] >> 4];
      hex[2 * i + 1] = digits[bytes[i] & 15];
    }
    luaL_addlstring(&b, hex, 2 * n);
    bytes += n;
    len -= n;
  }
  luaL_pushresult(&b);
}

/* [-0, +1, m] pushes a digest raw or as hex */
static int push_digest(lua_State *L, const unsigned char *md, size_t len, int raw) {
  if (raw) lua_pushlstring(L, (const char *)md, len);
  else push_hex(L, md, len);
  return 1;
}

int mh_sha256_hex(const void *data, size_t len, char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  unsigned char md[EVP_MAX_MD_SIZE];
  hex[0] = '\0';
  if (sha256(data, len, md) != 0) return -1;
  for (unsigned i = 0; i < DIGEST_LEN; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  hex[2 * DIGEST_LEN] = '\0';
  return 0;
}

/* crypto.sha256(s [, raw]) [-(1|2), +1, e] */
static int crypto_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int raw = lua_toboolean(L, 2);
  unsigned char md[EVP_MAX_MD_SIZE];
  if (sha256(s, len, md) != 0) return luaL_error(L, "crypto.sha256: OpenSSL failed to compute the digest");
  return push_digest(L, md, DIGEST_LEN, raw);
}

/* crypto.hmac_sha256(key, s [, raw]) [-(2|3), +1, e] */
static int crypto_hmac_sha256(lua_State *L) {
  size_t keylen, len;
  const char *key = luaL_checklstring(L, 1, &keylen);
  const char *s = luaL_checklstring(L, 2, &len);
  int raw = lua_toboolean(L, 3);
  unsigned char md[EVP_MAX_MD_SIZE];
  size_t mdlen = 0;
  /* EVP_Q_mac refuses a NULL key; an empty key is a valid HMAC key. */
  static const unsigned char empty[1] = {0};
  if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, keylen ? (const void *)key : empty, keylen,
                (const unsigned char *)s, len, md, sizeof md, &mdlen) == NULL
      || mdlen != DIGEST_LEN)
    return luaL_error(L, "crypto.hmac_sha256: OpenSSL failed to compute the MAC");
  return push_digest(L, md, mdlen, raw);
}

/* crypto.random(n) [-1, +1, e] */
static int crypto_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= RANDOM_MAX, 1, "a length between 1 and 4096 expected");
  unsigned char buf[RANDOM_MAX];
  if (RAND_bytes(buf, (int)n) != 1)
    return luaL_error(L, "crypto.random: the random generator failed");
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  OPENSSL_cleanse(buf, (size_t)n);
  return 1;
}

/* crypto.random_id() [-0, +1, e] */
static int crypto_random_id(lua_State *L) {
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof buf) != 1)
    return luaL_error(L, "crypto.random_id: the random generator failed");
  push_hex(L, buf, sizeof buf);
  return 1;
}

/* crypto.equal(a, b) [-2, +1, e] */
static int crypto_equal(lua_State *L) {
  size_t alen, blen;
  const char *a = luaL_checklstring(L, 1, &alen);
  const char *b = luaL_checklstring(L, 2, &blen);
  lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
  return 1;
}

int luaopen_mh_crypto(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sha256", crypto_sha256}, {"hmac_sha256", crypto_hmac_sha256}, {"random", crypto_random},
    {"random_id", crypto_random_id}, {"equal", crypto_equal}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
