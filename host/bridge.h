/* bridge.h — calls from sandboxed scripts into the trusted runtime (see
 * bridge.c): the request is copied in, a runtime module's function runs on
 * the script's behalf, its streamed pieces and result are copied back. */
#ifndef MH_BRIDGE_H
#define MH_BRIDGE_H

#include <lua.h>

typedef struct mh_bridge_spec {
  const char *module;   /* runtime module, "moonhive.llm" */
  const char *entry;    /* its function, "chat" */
  const char *what;     /* the script's name for the call, in errors: "llm.chat" */
  /* Optional, [-0, +0, v]: sees a successful result (at idx) before the
   * script does; may raise (a broken budget). */
  void (*on_result)(lua_State *L, int idx);
  /* Optional: the entry's synchronous form, tried first when nothing
   * streams (see call_now in bridge.c): "step_now". */
  const char *now;
} mh_bridge_spec;

/* [-?, +(1|2), v] The body of a native whose argument 1 is a request table;
 * its optional field `stream`, a function, receives each streamed piece.
 * Waits for the runtime, then returns its result, or nil and a message. */
int mh_bridge_call(lua_State *L, const mh_bridge_spec *spec);

/* [-0, +(0|1|2), v] Runs spec->now only, for a native that goes on with its
 * answer itself: L holds the request at 1 and nil at 2. Returns the
 * native's result count (the answer, or nil and a message), or -1 with
 * nothing pushed when the runtime declined. An entry called this way must
 * not answer a db to wait on (that wait would yield). */
int mh_bridge_call_now(lua_State *L, const mh_bridge_spec *spec);

#endif
