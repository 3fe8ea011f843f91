/* host.h — the process context: the libuv loop, the scheduler's ready queue,
 * shared subsystems (the HTTP client) and where files live.
 *
 * One mh_host per process. Everything that needs the loop finds it here,
 * reached from a lua_State through its vm (vm.h); there are no globals. */
#ifndef MH_HOST_H
#define MH_HOST_H

#include <limits.h>
#include <signal.h>
#include <uv.h>

#include "config.h"
#include "timers.h"

struct mh_run;
struct mh_http;
struct mh_launcher;

/* Secrets the host may hold (index into host->secrets): provider keys and
 * the service's JWT signing secret. */
typedef enum { MH_SECRET_OPENAI = 0, MH_SECRET_ANTHROPIC = 1, MH_SECRET_JWT = 2, MH_SECRET_COUNT } mh_secret_id;

typedef struct mh_host {
  uv_loop_t *loop;
  uv_idle_t ready_idle;               /* drains the ready queue; active only when non-empty */
  mh_timers timers;                   /* sleeps and run deadlines, on one uv_timer */
  struct mh_run *ready_head, *ready_tail;
  unsigned long long next_run_id;
  int live_runs;                      /* runs started and not yet finished */
  struct mh_run *runs;                /* those runs, so shutdown can cancel them */
  struct mh_http *http;               /* HTTP client, created on first use */
  volatile sig_atomic_t *interrupt;   /* set by a signal handler (REPL Ctrl-C); may be NULL */
  mh_limits limits;                   /* defaults for new sandboxes */
  char stdlib_dir[PATH_MAX];          /* where guarded require finds stdlib/ */
  char runtime_dir[PATH_MAX];         /* the trusted runtime's Lua files (lua/) */
  char roles_dir[PATH_MAX];           /* the ready-made agents shipped with moonhive (agents/) */
  struct mh_vm *runtime;              /* the trusted runtime state, created on first use */
  char *secrets[MH_SECRET_COUNT];     /* provider API keys, read once from the environment; never in Lua */
  char data_dir[PATH_MAX];            /* $MOONHIVE_DATA or ./.moonhive */
  struct mh_launcher *launcher;       /* the service's runs (mod_launch.h), while `serve` runs */
  struct mh_workflow_watch *watches;  /* scripts waiting for news of their workflow run (mod_workflows.c) */
  char project_dir[PATH_MAX];         /* $MOONHIVE_PROJECT or the working directory: agents/, tools/... */
} mh_host;

/* Sets up the loop and finds stdlib/ and the data directory. Returns 0 or -1. */
int mh_host_init(mh_host *host, uv_loop_t *loop);
/* Closes every handle the host owns and runs the loop until they are closed. */
void mh_host_close(mh_host *host);
/* The key for a provider, or NULL. Only C code (the http module, when the
 * trusted runtime asks for `auth`) ever reads it. */
const char *mh_host_secret(mh_host *host, mh_secret_id id);

/* A folder shipped with moonhive (stdlib, lua, testkit): $env_name when set,
 * else `name` next to the binary (a checkout's build output is two levels
 * down), else ../share/moonhive/name (an install). out stays unchanged when
 * none is found; outlen must be at least PATH_MAX. */
void mh_find_shipped_dir(const char *name, const char *env_name, char *out, size_t outlen);

/* Creates the data directory if needed; returns 0 or -1 (errno set). */
int mh_host_ensure_data_dir(mh_host *host);

#endif
