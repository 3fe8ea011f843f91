/* pretty.h — readable renderings of Lua values for the REPL and `eval`. */
#ifndef MH_PRETTY_H
#define MH_PRETTY_H

#include <lua.h>

/* [-0, +1, e] Pushes a rendering of the value at idx: nested tables with
 * sorted keys, cycles shown as <cycle>, long or deep tables elided. A
 * top-level string is shown raw when raw_strings is set. */
void mh_pretty_push(lua_State *L, int idx, int raw_strings);
/* [-n, +1, e] Lua-callable: renders every argument, tab-separated. */
int mh_pretty_values(lua_State *L);

#endif
