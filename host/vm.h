/* vm.h — a sandboxed Lua state.
 *
 * A vm is one lua_State with its own allocator (the memory cap), an allow-list
 * global environment, read-only library tables, a guarded require, and the
 * count hook that enforces each run's CPU budget and deadline. Every script
 * loaded into it gets a fresh _ENV whose misses fall through to the shared,
 * read-only base; reading an undefined global raises. Runs (scheduler.h) are
 * coroutines of a vm; vm->current is the run executing now. */
#ifndef MH_VM_H
#define MH_VM_H

#include <lua.h>
#include <stddef.h>

#include "config.h"
#include "host.h"

struct mh_run;

typedef void (*mh_output_fn)(void *ud, const char *s, size_t len);

typedef struct mh_vm {
  lua_State *L;
  mh_host *host;
  size_t mem_used;         /* bytes held through this state's allocator */
  size_t mem_limit;        /* 0 = no cap */
  size_t mem_peak;
  size_t gc_floor;         /* mem_used after the last collection forced near the cap */
  mh_limits limits;        /* per-run limits for runs of this vm */
  struct mh_run *current;  /* the run executing now, or NULL */
  char *script_dir;        /* folder of the defining script: guarded require looks here */
  int trusted;             /* the host's runtime state (runtime.h), not a sandbox */
  mh_output_fn print;      /* where print() goes; default stdout */
  void *print_ud;
  int live_runs;           /* runs of this vm started and not yet ended (scheduler.c) */
  int finishing;           /* a run of this vm is ending: its done callback is running */
  int released;            /* mh_vm_release: freed when live_runs reaches 0 */
  int spare_refs[32];      /* registry refs of finished runs' threads, ready to run again */
  int spares;              /* (trusted runtime only: see scheduler.c) */
} mh_vm;

/* Count of VM instructions between two limit checks. */
#define MH_HOOK_COUNT 10000

/* Creates a sandbox. script_dir may be NULL (no local modules). NULL on failure. */
mh_vm *mh_vm_new(mh_host *host, const mh_limits *limits, const char *script_dir);
/* Closes the state. No run of this vm may be alive. */
void mh_vm_free(mh_vm *vm);

/* The vm a state belongs to. */
mh_vm *mh_vm_of(lua_State *L);

/* [-0, +1, -] Compiles text (never bytecode) as a chunk whose _ENV is the table
 * at env_idx, or a fresh script environment when env_idx is 0. Pushes the
 * function and returns LUA_OK, or pushes the message and returns the error. */
int mh_vm_load(lua_State *L, const char *code, size_t len, const char *chunkname, int env_idx);
/* [-0, +1, -] Reads and loads a file the same way ("@path" chunk name). */
int mh_vm_loadfile(lua_State *L, const char *path, int env_idx);
/* [-0, +(0|1), -] Pushes a copy of len bytes at s, without raising: LUA_OK,
 * or an error status with nothing pushed (memory ran out). */
int mh_vm_pushtext(lua_State *L, const char *s, size_t len);
/* The length of a "#!" first line (not its newline, so line numbers stay
 * right), or 0: what loading a file skips. */
size_t mh_shebang_len(const char *code, size_t len);
/* Reads a whole file into host memory (the caller frees it); NULL with err
 * filled ("cannot open PATH: reason") when it cannot. */
char *mh_read_file(const char *path, size_t *len, char *err, size_t errlen);
/* [-0, +1, m] Pushes a fresh script environment. */
void mh_vm_new_env(lua_State *L);

/* Charges (delta > 0) or refunds bytes held outside the Lua allocator on the
 * state's behalf (HTTP bodies). Returns 0, or -1 when the charge would break
 * the cap (nothing is charged then). */
int mh_vm_charge(mh_vm *vm, ptrdiff_t delta);

/* Runs a full collection when the state nears its cap and has grown since
 * the last such collection. Lua's luaL_Buffer asks the allocator directly,
 * without the emergency collection other allocations get, so garbage left
 * by a failed run could otherwise make a big string fail. Called at safe
 * points: before a resume and from the count hook. */
void mh_vm_collect_if_near_cap(mh_vm *vm, lua_State *L);
/* Is the error object on top of L the one a refused allocation raises? */
int mh_vm_is_memory_error(lua_State *L, int status);

/* Extra headroom granted while the host formats an error for a run that hit
 * the memory cap (message and traceback). */
#define MH_ERROR_HEADROOM (64 * 1024)

#endif
