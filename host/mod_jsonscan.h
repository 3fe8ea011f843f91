/* mod_jsonscan.h — `jsonscan` (trusted runtime only): read one JSON string
 * out of a text without decoding the whole document; the string finder is
 * shared with http's sse_text. */
#ifndef MH_MOD_JSONSCAN_H
#define MH_MOD_JSONSCAN_H
#include <stddef.h>

#include <lua.h>

/* What jsonscan.string_after looks for: the string right after prefix
 * (which ends with its opening quote), when needed (if not NULL) occurs in
 * the text and refused (if not NULL) does not. */
typedef struct mh_json_after {
  const char *prefix, *needed, *refused;
  size_t plen, nlen, rlen;
} mh_json_after;

void mh_json_check_after(lua_State *L, int idx, mh_json_after *a);
/* [-0, +(0|1), m] pushes the string a asks for in text, escapes decoded;
 * returns 1, or 0 with nothing pushed when there is none (or it is not
 * well-formed JSON). Also used by http's sse_text (host/mod_http.c). */
int mh_json_push_after(lua_State *L, const char *text, size_t len, const mh_json_after *a);

int luaopen_mh_jsonscan(lua_State *L);
#endif
