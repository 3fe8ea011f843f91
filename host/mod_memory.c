/* mod_memory.c — `require "memory"`: episodic and long-term memory that
 * outlives runs, for sandboxed scripts.
 *
 *   memory.remember{agent=, namespace=, text=, kind=, metadata=} -> {id = n}
 *   memory.search{agent=, namespace=, query=, k=, semantic=} -> {{id=, text=, score=, ...}, ...}
 *   memory.recent{agent=, namespace=, k=} -> the latest entries
 *   memory.forget{agent=, namespace=, id=} -> {removed = n}
 *
 * Stored in SQLite by the runtime (lua/moonhive/memory.lua: FTS5 with bm25
 * and recency; cosine top-k over embeddings when the model offers them),
 * reached through the bridge. */
#include "mod_memory.h"

#include <lauxlib.h>

#include "bridge.h"

static const mh_bridge_spec remember = {"moonhive.memory", "remember", "memory.remember", NULL, NULL};
static const mh_bridge_spec search = {"moonhive.memory", "search", "memory.search", NULL, NULL};
static const mh_bridge_spec recent = {"moonhive.memory", "recent", "memory.recent", NULL, NULL};
static const mh_bridge_spec forget = {"moonhive.memory", "forget", "memory.forget", NULL, NULL};

/* [-1, +(1|2), v] each: a request table in, the runtime's answer out */
static int memory_remember(lua_State *L) { return mh_bridge_call(L, &remember); }
static int memory_search(lua_State *L) { return mh_bridge_call(L, &search); }
static int memory_recent(lua_State *L) { return mh_bridge_call(L, &recent); }
static int memory_forget(lua_State *L) { return mh_bridge_call(L, &forget); }

int luaopen_mh_memory(lua_State *L) {
  static const luaL_Reg funcs[] = {{"remember", memory_remember}, {"search", memory_search},
                                   {"recent", memory_recent}, {"forget", memory_forget}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
