/* runtime.h — the trusted runtime: one Lua state per host that runs the
 * files under lua/ (LLM providers, later the agent and workflow engines) with
 * host privileges: JSON (lua-cjson), `host` (non-secret configuration) and
 * http's `auth` option, which makes C attach a provider's key. Sandboxes
 * reach it only through native bridges (mod_llm.c) and values cross by copy. */
#ifndef MH_RUNTIME_H
#define MH_RUNTIME_H

#include <stddef.h>

#include "host.h"
#include "vm.h"

/* The host's runtime, created on first use; NULL with err filled on failure. */
mh_vm *mh_runtime(mh_host *host, char *err, size_t errlen);
/* [-0, +1, -] Pushes onto the runtime's main stack field `name` of module
 * `module` (loaded once, cached). Returns 0, or -1 with err filled (nothing pushed). */
int mh_runtime_push(mh_host *host, const char *module, const char *name, char *err, size_t errlen);
/* [-0, +0, -] Calls shutdown() of each runtime module loaded so far that
 * has one (moonhive.workflows releases its leases), once, as the host
 * closes: synchronously, so it must not wait; a failure is logged. */
void mh_runtime_shutdown(mh_host *host);

#endif
