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

#endif
