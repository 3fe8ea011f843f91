/* copy.h — deep copies of plain Lua values between states.
 *
 * Values cross between sandboxes and the trusted runtime by copy, never by
 * reference (DESIGN.md). Copied: nil, booleans, numbers, strings and tables
 * of those (raw access only: no metamethod runs). Functions, userdata,
 * threads and cycles are refused with a message naming the path. */
#ifndef MH_COPY_H
#define MH_COPY_H

#include <lua.h>
#include <stddef.h>

#define MH_COPY_MAX_DEPTH 64
#define MH_COPY_MAX_ITEMS 1000000

/* What a copy may hold: at most max_bytes of string data in all (0: no
 * limit; a string reached twice counts twice, as it costs twice), and none
 * of the `masked` strings (NULL-terminated list; each occurrence inside a
 * copied string becomes asterisks). */
typedef struct mh_copy_rules {
  size_t max_bytes;
  const char *const *masked;
} mh_copy_rules;

/* [-0, +1, -] Pushes onto `to` a copy of the value at `idx` in `from`, or
 * pushes nothing and returns -1 with a message in err (not copyable, too
 * deep, too big, or `to` is out of memory). Never raises. `from` and `to`
 * may be threads of different states. rules may be NULL. */
int mh_copy_value(lua_State *from, int idx, lua_State *to, const mh_copy_rules *rules, char *err, size_t errlen);

/* [-0, +1, m] Pushes s with every occurrence of the `masked` strings
 * replaced by asterisks. */
void mh_push_masked(lua_State *L, const char *s, size_t len, const char *const *masked);

#endif
