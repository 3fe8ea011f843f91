/* registry.h — the project's agents and workflows as loaded versions, kept
 * current while their files change (hot reload).
 *
 * The registry watches agents/ and workflows/ under the project folder (and
 * one more file: the one `moonhive run --watch` runs). Each changed file is
 * loaded into a new sandbox and checked: it must return an agent{} (files in
 * agents/), a workflow{} (files in workflows/) or either (the extra file).
 * A file that passes becomes the current version of its entry; one that does
 * not leaves the entry as it was and is reported as "file:line: message" on
 * stderr and in the entry's last_error. The entries themselves live in the
 * runtime (lua/moonhive/registry.lua) where the service reads them; a run
 * starts in a fresh sandbox with the current versions pinned
 * (mh_registry_pin), so it keeps them while the files change. */
#ifndef MH_REGISTRY_H
#define MH_REGISTRY_H

#include <lua.h>

#include "host.h"
#include "vm.h"

typedef struct mh_registry mh_registry;

typedef enum {
  MH_REG_LOADED,   /* path has a new current version */
  MH_REG_FAILED,   /* an edit of path did not load (reported; the old version stays) */
  MH_REG_REMOVED,  /* path is gone, and its entry with it */
  MH_REG_READY     /* every file found at the start has been loaded or has failed */
} mh_reg_event;

/* path is the file's real path (NULL for MH_REG_READY). The callback may
 * start runs and pin versions, but must not close the registry. */
typedef void (*mh_registry_fn)(mh_registry *reg, mh_reg_event ev, const char *path, void *ud);

/* Flags of mh_registry_open. */
enum {
  MH_REG_SHIPPED = 1, /* also the agents/ and workflows/ shipped with moonhive (entries marked
                       * shipped); a project file of the same name comes first */
  MH_REG_ONCE = 2     /* load every file once, do not watch for changes */
};

/* Opens the registry of host's project folder and starts loading every file;
 * file (may be NULL) is one more file to keep, shown as given. Events reach
 * fn from the loop, never during this call: check mh_registry_ready after
 * it. NULL with err filled when nothing can be watched. */
mh_registry *mh_registry_open(mh_host *host, const char *file, int flags, mh_registry_fn fn, void *ud, char *err,
                              size_t errlen);
/* Stops watching and checking; checks in flight are cancelled. */
void mh_registry_close(mh_registry *reg);
/* Has the first loading of every file ended? */
int mh_registry_ready(const mh_registry *reg);
/* Is a folder polled (no file system events)? */
int mh_registry_polling(const mh_registry *reg);
/* Counts every change of the current versions (a file loaded or gone):
 * sandboxes made for one value pin versions that a later value changed. */
unsigned long mh_registry_generation(const mh_registry *reg);
/* The real path of the extra file ("" when there is none). */
const char *mh_registry_file(const mh_registry *reg);

/* Pins every current version into sandbox vm, whose run has not started:
 * require then loads those texts, whatever the files say later. 0, or -1
 * when memory ran out. */
int mh_registry_pin(mh_registry *reg, mh_vm *vm);
/* [-0, +(0|1|2), -] Compiles the current version of path (a real path) into
 * sandbox L under chunkname; hash receives the version. Returns LUA_OK with
 * the chunk and the text pushed; an error status with the message pushed;
 * or -1 with nothing pushed (path has no version, or memory ran out). */
int mh_registry_load(mh_registry *reg, const char *path, lua_State *L, const char *chunkname, char hash[65]);

#endif
