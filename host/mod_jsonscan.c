/* mod_jsonscan.c — `require "jsonscan"` in the trusted runtime.
 *
 *   jsonscan.string_after(text, prefix) -> string | nil
 *
 * Finds `prefix` (which ends with a string's opening quote, such as
 * '"delta":{"content":"') in JSON text and returns that string's value with
 * its escapes decoded; nil when the prefix is absent or the string is not
 * well-formed JSON. Streamed model replies arrive as hundreds of small JSON
 * chunks whose only news is one such string: reading it here costs a
 * fraction of decoding every chunk with cjson, and the providers fall back
 * to the full decoder whenever this answers nil. */
#include "mod_jsonscan.h"

#include <string.h>

#include <lauxlib.h>

static int hex4(const unsigned char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v << 4 | d;
  }
  *out = v;
  return 0;
}

/* [-0, +0, m] appends code point cp as UTF-8 */
static void add_utf8(luaL_Buffer *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) u[0] = (char)cp, n = 1;
  else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
  else if (cp < 0x10000)
    u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
  else
    u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)), u[2] = (char)(0x80 | (cp >> 6 & 0x3F)),
    u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
  luaL_addlstring(b, u, n);
}

/* [-0, +1, m] decodes the JSON string body at p (after its opening quote);
 * pushes it, or nothing and returns 0 when it is malformed */
static int push_string_body(lua_State *L, const unsigned char *p, const unsigned char *end) {
  const unsigned char *run = p;
  while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) p++;
  if (p < end && *p == '"') { /* the common case: no escapes */
    lua_pushlstring(L, (const char *)run, (size_t)(p - run));
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
  while (p < end) {
    unsigned c = *p;
    if (c == '"') {
      luaL_pushresult(&b);
      return 1;
    }
    if (c < 0x20) break;
    if (c != '\\') {
      luaL_addchar(&b, (char)c);
      p++;
      continue;
    }
    if (p + 1 >= end) break;
    unsigned cp;
    switch (p[1]) {
      case '"': luaL_addchar(&b, '"'); break;
      case '\\': luaL_addchar(&b, '\\'); break;
      case '/': luaL_addchar(&b, '/'); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u':
        if (end - p < 6 || hex4(p + 2, &cp) != 0) goto malformed;
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate wants its low half */
          unsigned lo;
          if (end - p >= 8 && p[2] == '\\' && p[3] == 'u' && hex4(p + 4, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
          } else {
            cp = 0xFFFD;
          }
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          cp = 0xFFFD;
        }
        add_utf8(&b, cp);
        break;
      default: goto malformed;
    }
    p += 2;
  }
malformed:
  luaL_pushresult(&b);
  lua_pop(L, 1);
  return 0;
}

/* jsonscan.string_after(text, prefix) [-2, +1, m] */
static int string_after(lua_State *L) {
  size_t len, plen;
  const char *text = luaL_checklstring(L, 1, &len);
  const char *prefix = luaL_checklstring(L, 2, &plen);
  luaL_argcheck(L, plen > 0 && prefix[plen - 1] == '"', 2, "a prefix ending with '\"' expected");
  const char *at = memmem(text, len, prefix, plen);
  if (at == NULL || !push_string_body(L, (const unsigned char *)at + plen, (const unsigned char *)text + len))
    lua_pushnil(L);
  return 1;
}

int luaopen_mh_jsonscan(lua_State *L) {
  static const luaL_Reg funcs[] = {{"string_after", string_after}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
