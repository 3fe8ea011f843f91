/* sb_string.h — budgeted string.find, string.match, string.gmatch, string.gsub.
 *
 * Lua's own pattern matcher has no step counter and the count hook never fires
 * inside a C call, so one pathological pattern could hold the loop forever.
 * These replacements behave exactly like Lua 5.4.4's and call
 * mh_vm_check_limits (limits_check.h) every few thousand matcher steps. */
#ifndef MH_SB_STRING_H
#define MH_SB_STRING_H

#include <lua.h>

/* [-0, +0, m] Sets find, match, gmatch and gsub in the table at stack index idx
 * (a sandbox's copy of the string library) to the budgeted versions. The table
 * is written with raw sets; the stack is left as it was. */
void mh_string_guard(lua_State *L, int idx);

#endif
