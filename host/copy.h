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

/* [-0, +1, -] Pushes onto `to` a copy of the value at `idx` in `from`, or
 * pushes nothing and returns -1 with a message in err (not copyable, too
 * deep, or `to` is out of memory). Never raises. `from` and `to` may be
 * threads of different states. */
int mh_copy_value(lua_State *from, int idx, lua_State *to, char *err, size_t errlen);

#endif
