/* mod_launch.h — `launch`: the service's runs of agents and workflows: each started on
 * the reload registry's current versions (registry.h), in a sandbox shared
 * by the runs of one definition version, and followed until it ends.
 *
 * `moonhive serve` opens one launcher on its host (host->launcher); the
 * runtime starts runs through the `launch` module (mod_launch.c) and hears
 * of each end in lua/moonhive/service/launcher.lua's ended(). On shutdown
 * the server lets the runs in flight reach a journaled point
 * (mh_launcher_live counts them), then cancels what is left. */
#ifndef MH_MOD_LAUNCH_H
#define MH_MOD_LAUNCH_H

#include <lua.h>

#include "host.h"
#include "registry.h"

typedef struct mh_launcher mh_launcher;

/* A launcher on host for reg's definitions; sets host->launcher. NULL when
 * memory ran out. */
mh_launcher *mh_launcher_new(mh_host *host, mh_registry *reg);
/* How many launched runs are still running. */
int mh_launcher_live(const mh_launcher *l);
/* Asks every launched run to stop (they end on the next loop turns). */
void mh_launcher_cancel_all(mh_launcher *l);
/* Releases the sandboxes and clears host->launcher. Runs still running
 * keep their sandbox until they end, but nobody hears of their end. */
void mh_launcher_free(mh_launcher *l);

/* [-0, +1, -] the `launch` module (the trusted runtime only). */
int luaopen_mh_launch(lua_State *L);

#endif
