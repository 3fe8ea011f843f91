/* cli_runtime.c — commands answered by the trusted runtime's Lua
 * (lua/moonhive/cli.lua, cli_keys.lua): `moonhive keys create|list|revoke`,
 * `moonhive runs [list] [--limit N] [--json]`, `moonhive runs show ID [--json]`,
 * `runs cancel ID`, `runs signal ID NAME [JSON]`, `moonhive trace ID
 * [--json] [--verbose]` (`runs resume` is in
 * cli_workflow.c: it runs sandboxed workflow code).
 *
 * The command's arguments go to the runtime function as a list of strings;
 * it runs as a run of the runtime (so it may wait) and returns the text for
 * stdout, or nil and a message for stderr (exit 1). */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "cli.h"
#include "host.h"
#include "runtime.h"
#include "scheduler.h"

const char mh_help_runs[] =
  "usage: moonhive runs [list] [--limit N] [--json]\n"
  "       moonhive runs show ID [--json]\n"
  "       moonhive runs resume [ID] [--json]\n"
  "       moonhive runs cancel ID\n"
  "       moonhive runs signal ID NAME [JSON]\n"
  "\n"
  "Lists recorded agent and workflow runs, newest first (id, name, status,\n"
  "start, duration, tokens, cost), or shows one run with its input, output,\n"
  "every event and (workflows) its step journal. ID may be a unique prefix.\n"
  "resume runs again every unfinished workflow run (or run ID) on the version\n"
  "it started with: journaled steps are not executed again; it also claims\n"
  "and runs the pending runs `moonhive run FILE --enqueue` queued. cancel stops a\n"
  "workflow run; signal sends NAME (with a JSON payload) to one waiting in\n"
  "wf:wait_signal. Runs are stored in $MOONHIVE_DATA/moonhive.db.\n";

const char mh_help_trace[] =
  "usage: moonhive trace ID [--json] [--verbose]\n"
  "\n"
  "Shows a recorded run as a tree with durations, tokens and cost: a\n"
  "workflow run's journaled steps (3.2.1 under 3), under each wf:call step\n"
  "the agent run it started, under each agent run its model calls and tool\n"
  "calls. --verbose adds the prompts model calls were recorded with (system\n"
  "prompt and newest messages, 4 KB each), tool arguments and results, step\n"
  "results, run input and output; --json prints the tree as JSON. ID may be a\n"
  "unique prefix.\n";

typedef struct answer {
  int finished, code;
} answer;

static void answered(mh_run *run, void *ud) {
  answer *a = ud;
  a->finished = 1;
  a->code = 1;
  lua_State *co = run->co;
  int base = lua_gettop(co) - run->nres;
  if (run->state == MH_RUN_OK && run->nres >= 1 && lua_type(co, base + 1) == LUA_TSTRING) {
    fputs(lua_tostring(co, base + 1), stdout);
    a->code = 0;
  } else if (run->state == MH_RUN_OK && run->nres >= 2) {
    fprintf(stderr, "moonhive: %s\n", luaL_tolstring(co, base + 2, NULL));
    lua_pop(co, 1);
  } else {
    fprintf(stderr, "moonhive: %s\n", run->error ? run->error : "the command failed");
  }
  fflush(stdout);
}

/* Runs runtime module `module`'s `fn` with argv as a list of strings. */
static int runtime_command(const char *module, const char *fn, int argc, char **argv) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  char err[512];
  int code = 1;
  if (mh_runtime_push(&host, module, fn, err, sizeof err) != 0) {
    fprintf(stderr, "moonhive: %s\n", err);
  } else {
    lua_State *R = host.runtime->L;
    lua_createtable(R, argc, 0);
    for (int i = 0; i < argc; i++) {
      lua_pushstring(R, argv[i]);
      lua_rawseti(R, -2, i + 1);
    }
    answer a = {0, 1};
    if (mh_run_start(host.runtime, 1, answered, &a) == NULL) {
      fprintf(stderr, "moonhive: the runtime could not start the command\n");
    } else {
      while (!a.finished) uv_run(&loop, UV_RUN_ONCE);
      code = a.code;
    }
  }
  mh_host_close(&host);
  uv_loop_close(&loop);
  return code;
}

int mh_cmd_runs(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (mh_cli_wants_help(argv[i])) {
      fputs(mh_help_runs, stdout);
      return 0;
    }
  if (argc > 0 && strcmp(argv[0], "resume") == 0) return mh_cmd_runs_resume(argc - 1, argv + 1);
  return runtime_command("moonhive.cli", "runs", argc, argv);
}

const char mh_help_keys[] =
  "usage: moonhive keys create --role admin|operator|viewer [--name NAME]\n"
  "       moonhive keys list [--json]\n"
  "       moonhive keys revoke ID\n"
  "\n"
  "API keys for `moonhive serve`. create prints the new key once on stdout\n"
  "(mh_<id>_<secret>); only its SHA-256 is stored, in $MOONHIVE_DATA/moonhive.db.\n"
  "Clients send it as `Authorization: Bearer KEY`. viewer may read, operator may\n"
  "also start, cancel and signal runs, admin may also read the audit log.\n"
  "list shows id, role, name, created, last used and revoked; revoke ID\n"
  "refuses the key from then on.\n";

int mh_cmd_keys(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (mh_cli_wants_help(argv[i])) {
      fputs(mh_help_keys, stdout);
      return 0;
    }
  return runtime_command("moonhive.cli_keys", "keys", argc, argv);
}

int mh_cmd_trace(int argc, char **argv) {
  return runtime_command("moonhive.cli", "trace", argc, argv);
}
