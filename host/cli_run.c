/* cli_run.c — `moonhive run FILE.lua [ARGS...]` and `moonhive eval 'CODE'`,
 * plus the limit options every command shares.
 *
 * Both create a host and one sandbox, start a single run, turn the loop until
 * it ends, and report: results (eval) on stdout, errors with their traceback
 * on stderr, exit status 0 or 1. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "cli.h"
#include "evaluate.h"
#include "host.h"
#include "scheduler.h"
#include "vm.h"

#define LIMIT_HELP \
  "  --memory-limit SIZE   memory cap of the sandbox (default 64M)\n" \
  "  --cpu-limit DURATION  CPU budget of the run (default 10s; 0 = none)\n" \
  "  --deadline DURATION   wall-clock deadline of the run (default 30s; 0 = none)\n" \
  "  --token-budget N      model tokens the run may use, tasks included (default: none)\n" \
  "  --cost-budget USD     model cost in dollars the run may spend (default: none)\n"

const char mh_help_run[] =
  "usage: moonhive run [OPTIONS] FILE.lua|FLOW.json [ARGS...]\n"
  "\n"
  "Runs FILE.lua in a sandbox. The script sees ARGS as the table `arg`\n"
  "(arg[0] is the file) and as `...`. Exit status 0 on success; on an error the\n"
  "message and a traceback go to stderr and the status is 1.\n"
  "\n"
  "A file that returns an agent (agents/*.lua) runs as that agent with ARGS\n"
  "joined as its task (or --input TEXT): progress (model tokens, tool calls and results) on\n"
  "stderr, the answer on stdout; the run is recorded (moonhive runs).\n"
  "A file that returns a workflow starts a durable run of it: --input JSON\n"
  "after the file gives its input; steps on stderr, the output on stdout\n"
  "(moonhive runs resume continues it after a crash). A .json file is a\n"
  "workflow graph (docs/workflows.md) and runs the same way.\n"
  "agents/NAME.lua and workflows/NAME.lua that are not in the current folder\n"
  "are the ones shipped with moonhive (the ready-made roles and pipelines).\n"
  "\noptions:\n"
  "  --json                an agent's or workflow's result as one JSON object on stdout\n"
  "  --watch               run an agent or workflow file again on every saved change\n"
  "                        to it or to the agents/ and workflows/ files it uses; runs\n"
  "                        in flight finish on their version; Ctrl-C stops (docs/reload.md)\n" LIMIT_HELP;

/* When the file returned a table with a metatable: if it is an agent, run it
 * (stdlib/agent.lua's main) with the file's arguments as the task; if it is
 * a workflow, start a durable run of it (stdlib/workflow.lua's main, which
 * stores the file's text as the run's version). */
static const char agent_stage[] =
  "local value, json_out, file, source = ...\n"
  "if getmetatable(value) ~= nil and require('agent').is_agent(value) then\n"
  "  value.version = source and crypto.sha256(source)\n"
  "  return require('agent').main(value, json_out, select(5, ...))\n"
  "end\n"
  "if getmetatable(value) ~= nil and require('workflow').is_workflow(value) then\n"
  "  return require('workflow').main(value, json_out, file, source, select(5, ...))\n"
  "end\n"
  "if json_out then error('--json is for files that return an agent or a workflow', 0) end\n";

/* FLOW.json: a workflow graph, built from the file's text (given as `...`
 * with the file's name) by stdlib/workflow.lua's from_json. */
static const char json_stage[] =
  "local file, source = ...\n"
  "return require('workflow').from_json(source, file)\n";

static int is_json_file(const char *file) {
  size_t n = strlen(file);
  return n > 5 && strcmp(file + n - 5, ".json") == 0;
}

/* [-0, +1, -] The chunk that builds FLOW.json's graph, or (like
 * mh_vm_loadfile) an error message when the file cannot be read. */
static int load_json_stage(lua_State *L, const char *file) {
  if (access(file, R_OK) != 0) {
    lua_pushfstring(L, "cannot open %s: %s", file, strerror(errno));
    return LUA_ERRFILE;
  }
  return mh_vm_load(L, json_stage, sizeof json_stage - 1, "=moonhive run", 0);
}

const char mh_help_eval[] =
  "usage: moonhive eval [OPTIONS] 'CODE'\n"
  "\n"
  "Evaluates CODE (an expression or statements) in a sandbox and prints what it\n"
  "returns, one line, values separated by tabs. Errors go to stderr, exit 1.\n"
  "\noptions:\n" LIMIT_HELP;

int mh_cli_limits_init(mh_limits *limits) {
  char err[256];
  mh_limits_default(limits);
  if (mh_limits_from_env(limits, err, sizeof err) != 0) {
    fprintf(stderr, "moonhive: %s\n", err);
    return -1;
  }
  return 0;
}

int mh_cli_limit_option(int argc, char **argv, int *i, mh_limits *limits) {
  static const char *const opts[] = {"--memory-limit", "--cpu-limit", "--deadline", "--token-budget", "--cost-budget"};
  static const char *const kinds[] = {"size", "duration", "duration", "whole number of tokens", "dollar amount"};
  static const char *const examples[] = {"64M, 512k", "30s, 250ms", "30s, 250ms", "20000", "0.50"};
  const char *arg = argv[*i];
  for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
    size_t n = strlen(opts[o]);
    if (strncmp(arg, opts[o], n) != 0 || (arg[n] != '\0' && arg[n] != '=')) continue;
    const char *value = arg[n] == '=' ? arg + n + 1 : (*i + 1 < argc ? argv[++*i] : NULL);
    int bad = value == NULL;
    if (!bad && o == 0) bad = mh_parse_size(value, &limits->memory) != 0;
    else if (!bad && o == 1) bad = mh_parse_duration(value, &limits->cpu_ns) != 0;
    else if (!bad && o == 2) bad = mh_parse_duration(value, &limits->deadline_ns) != 0;
    else if (!bad && o == 3) bad = mh_parse_count(value, &limits->tokens) != 0;
    else if (!bad) bad = mh_parse_cost(value, &limits->cost) != 0;
    if (bad) {
      fprintf(stderr, "moonhive: %s needs a %s (examples: %s)\n", opts[o], kinds[o], examples[o]);
      return -1;
    }
    (*i)++;
    return 1;
  }
  return 0;
}

typedef struct outcome {
  int finished;
  int exit_code;
  int print_results;
  int agent_stage;      /* run: an agent the file returns runs next */
  int json;             /* run --json */
  int argc;             /* the file's arguments, for the agent stage */
  char **argv;
  const char *file;     /* the script, for the workflow stage */
} outcome;

static void on_done(mh_run *run, void *ud);

/* [-0, +0, -] After a file's chunk returned a table with a metatable (on
 * run->co): starts the agent stage with it; 1 if started. */
static int start_agent_stage(mh_run *run, outcome *out) {
  lua_State *co = run->co, *L = run->vm->L;
  int base = lua_gettop(co) - run->nres;
  if (run->nres < 1 || !lua_istable(co, base + 1) || !lua_getmetatable(co, base + 1)) return 0;
  lua_pop(co, 1);
  if (!lua_checkstack(L, out->argc + 6) ||
      mh_vm_load(L, agent_stage, sizeof agent_stage - 1, "=moonhive run", 0) != LUA_OK) {
    lua_settop(L, 0);
    return 0;
  }
  lua_pushvalue(co, base + 1);
  lua_xmove(co, L, 1);
  lua_pushboolean(L, out->json);
  lua_pushstring(L, out->file);
  if (!mh_cli_push_file(L, out->file)) lua_pushnil(L);
  for (int i = 0; i < out->argc; i++) lua_pushstring(L, out->argv[i]);
  out->agent_stage = 0;
  return mh_run_start(run->vm, out->argc + 4, on_done, out) != NULL;
}

static void on_done(mh_run *run, void *ud) {
  outcome *out = ud;
  if (run->state == MH_RUN_OK && out->agent_stage && start_agent_stage(run, out)) return;
  if (run->state == MH_RUN_OK && out->agent_stage && out->json) {
    fprintf(stderr, "moonhive: --json is for files that return an agent or a workflow\n");
    out->finished = 1;
    out->exit_code = 1;
    uv_stop(run->vm->host->loop);
    return;
  }
  out->finished = 1;
  if (run->state == MH_RUN_OK) {
    out->exit_code = 0;
    if (out->print_results) mh_eval_print(run);
  } else {
    out->exit_code = 1;
    fflush(stdout);
    fprintf(stderr, "%s\n", run->error ? run->error : "run failed");
  }
  fflush(stdout);
  uv_stop(run->vm->host->loop);
}

/* Turns the loop until the run has ended, then closes everything. */
static int finish(mh_host *host, mh_vm *vm, mh_run *run, outcome *out) {
  if (run == NULL) {
    fprintf(stderr, "moonhive: cannot start the run: memory limit too small\n");
    out->exit_code = 1;
  } else {
    while (!out->finished) uv_run(host->loop, UV_RUN_DEFAULT);
  }
  mh_host_close(host);
  mh_vm_free(vm);
  return out->exit_code;
}

/* Parses leading options; returns the index of the first operand or -1.
 * json and watch may be NULL (the command has no --json, --watch). */
static int parse_options(int argc, char **argv, mh_limits *limits, const char *help, int *json, int *watch) {
  if (mh_cli_limits_init(limits) != 0) return -1;
  int i = 0;
  while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
    if (strcmp(argv[i], "--") == 0) return i + 1;
    if (json && strcmp(argv[i], "--json") == 0) {
      *json = 1;
      i++;
      continue;
    }
    if (watch && strcmp(argv[i], "--watch") == 0) {
      *watch = 1;
      i++;
      continue;
    }
    int r = mh_cli_limit_option(argc, argv, &i, limits);
    if (r < 0) return -1;
    if (r == 0) {
      fprintf(stderr, "moonhive: unknown option '%s'\n\n%s", argv[i], help);
      return -1;
    }
  }
  return i;
}

/* FILE as given; or, when it does not exist and reads agents/NAME.lua or
 * workflows/NAME.lua, the copy shipped with moonhive (beside the binary or
 * under PREFIX/share/moonhive), so the ready-made roles and pipelines run
 * from any project folder. A project's own file comes first. */
static const char *shipped_file(const char *file, char *buf, size_t len) {
  static const char *const kinds[][3] = {{"agents/", "agents", "MOONHIVE_ROLES"},
                                         {"workflows/", "workflows", "MOONHIVE_WORKFLOWS"}};
  if (access(file, F_OK) == 0) return file;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    size_t n = strlen(kinds[k][0]);
    const char *name = file + n;
    if (strncmp(file, kinds[k][0], n) != 0 || strchr(name, '/') != NULL || name[0] == '.') continue;
    char dir[PATH_MAX] = "";
    mh_find_shipped_dir(kinds[k][1], kinds[k][2], dir, sizeof dir);
    int w = snprintf(buf, len, "%s/%s", dir, name);
    if (dir[0] && w > 0 && (size_t)w < len && access(buf, F_OK) == 0) return buf;
  }
  return file;
}

int mh_cmd_run(int argc, char **argv) {
  mh_limits limits;
  int json = 0, watch = 0;
  int first = parse_options(argc, argv, &limits, mh_help_run, &json, &watch);
  if (first < 0) return 2;
  if (first >= argc) {
    fprintf(stderr, "moonhive: run needs a script file\n\n%s", mh_help_run);
    return 2;
  }
  char shipped[PATH_MAX + 256];
  const char *file = shipped_file(argv[first], shipped, sizeof shipped);
  if (watch) return mh_cli_run_watch(file, argc - first - 1, argv + first + 1, &limits, json);
  char *dir_copy = strdup(file);
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  host.limits = limits;
  mh_vm *vm = mh_vm_new(&host, &limits, dir_copy ? dirname(dir_copy) : ".");
  free(dir_copy);
  if (vm == NULL) {
    fprintf(stderr, "moonhive: cannot create a sandbox (memory limit too small?)\n");
    mh_host_close(&host);
    uv_loop_close(&loop);
    return 1;
  }
  lua_State *L = vm->L;
  outcome out = {0, 1, 0, 0, 0, 0, NULL, NULL};
  int json_flow = is_json_file(file);
  int loaded = json_flow ? load_json_stage(L, file) : mh_vm_loadfile(L, file, 0);
  if (loaded != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    mh_host_close(&host);
    mh_vm_free(vm);
    uv_loop_close(&loop);
    return 1;
  }
  /* arg = {[0] = file, ARGS...} in the script's environment; ARGS as `...` too */
  int nargs = argc - first - 1;
  if (!lua_checkstack(L, nargs + 8)) {
    fprintf(stderr, "moonhive: too many arguments\n");
    lua_pop(L, 1);
    mh_host_close(&host);
    mh_vm_free(vm);
    uv_loop_close(&loop);
    return 2;
  }
  lua_getupvalue(L, -1, 1);                  /* chunk env */
  lua_createtable(L, nargs, 1);
  lua_pushstring(L, file);
  lua_rawseti(L, -2, 0);
  for (int i = 1; i <= nargs; i++) {
    lua_pushstring(L, argv[first + i]);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "arg");
  lua_pop(L, 1);                             /* chunk */
  out.agent_stage = 1;
  out.json = json;
  out.argc = nargs;
  out.argv = argv + first + 1;
  out.file = file;
  if (json_flow) {
    lua_pushstring(L, file);
    if (!mh_cli_push_file(L, file)) lua_pushnil(L);
  } else {
    for (int i = 1; i <= nargs; i++) lua_pushstring(L, argv[first + i]);
  }
  mh_run *run = mh_run_start(vm, json_flow ? 2 : nargs, on_done, &out);
  int code = finish(&host, vm, run, &out);
  uv_loop_close(&loop);
  return code;
}

int mh_cmd_eval(int argc, char **argv) {
  mh_limits limits;
  int first = parse_options(argc, argv, &limits, mh_help_eval, NULL, NULL);
  if (first < 0) return 2;
  if (first >= argc) {
    fprintf(stderr, "moonhive: eval needs code to evaluate\n\n%s", mh_help_eval);
    return 2;
  }
  const char *code = argv[first];
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  host.limits = limits;
  mh_vm *vm = mh_vm_new(&host, &limits, ".");
  if (vm == NULL) {
    fprintf(stderr, "moonhive: cannot create a sandbox (memory limit too small?)\n");
    mh_host_close(&host);
    uv_loop_close(&loop);
    return 1;
  }
  outcome out = {0, 1, 1, 0, 0, 0, NULL, NULL};
  int incomplete;
  if (mh_eval_compile(vm->L, code, strlen(code), "=eval", 0, &incomplete) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(vm->L, -1));
    lua_pop(vm->L, 1);
    mh_host_close(&host);
    mh_vm_free(vm);
    uv_loop_close(&loop);
    return 1;
  }
  mh_run *run = mh_eval_start(vm, on_done, &out);
  int rc = finish(&host, vm, run, &out);
  uv_loop_close(&loop);
  return rc;
}
