/* cli_workflow.c — the C side of durable workflows on the command line:
 * `moonhive runs resume [ID] [--json]` (runs every unfinished workflow run,
 * or run ID, again in a fresh sandbox; stdlib/workflow.lua's resume_main
 * asks the runtime for each run's stored source and replays its journal;
 * it gets the token that lets it take runs over from here, so no other
 * script code can),
 * and the file reading `moonhive run` needs to store a workflow's version.
 * `runs cancel` and `runs signal` only touch the store: lua/moonhive/cli.lua
 * answers them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "cli.h"
#include "host.h"
#include "runtime.h"
#include "scheduler.h"
#include "vm.h"

#define MAX_SOURCE (16u << 20) /* a workflow file larger than this is not stored */

int mh_cli_push_file(lua_State *L, const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t total = 0, n;
  char chunk[8192];
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && total <= MAX_SOURCE) {
    luaL_addlstring(&b, chunk, n);
    total += n;
  }
  int failed = ferror(f) || total > MAX_SOURCE;
  fclose(f);
  luaL_pushresult(&b);
  if (failed) lua_pop(L, 1);
  return !failed;
}

static const char resume_stage[] = "return require('workflow').resume_main(...)\n";

typedef struct resumed {
  int finished, code;
} resumed;

static void resume_done(mh_run *run, void *ud) {
  resumed *r = ud;
  r->finished = 1;
  r->code = run->state == MH_RUN_OK ? 0 : 1;
  fflush(stdout);
  if (r->code != 0) {
    const char *msg = run->error ? run->error : "the resume failed";
    const char *cut = strstr(msg, "\nstack traceback:");
    fprintf(stderr, "moonhive: %.*s\n", cut ? (int)(cut - msg) : (int)strlen(msg), msg);
  }
  uv_stop(run->vm->host->loop);
}

/* [-0, +(1|0), m] Pushes onto L a token of the runtime's
 * moonhive.workflows.grant() (the resume path's capability), returning 0;
 * or prints why not and returns -1, pushing nothing. */
static int push_grant(mh_host *host, lua_State *L) {
  char err[512];
  if (mh_runtime_push(host, "moonhive.workflows", "grant", err, sizeof err) != 0) {
    fprintf(stderr, "moonhive: %s\n", err);
    return -1;
  }
  lua_State *R = host->runtime->L;                  /* R: grant */
  int ok = lua_pcall(R, 0, 1, 0) == LUA_OK && lua_type(R, -1) == LUA_TSTRING; /* R: token|msg */
  if (ok) {
    lua_pushstring(L, lua_tostring(R, -1));
  } else {
    fprintf(stderr, "moonhive: cannot prepare the resume: %s\n", luaL_tolstring(R, -1, NULL)); /* R: msg text */
    lua_pop(R, 1);
  }
  lua_pop(R, 1);
  return ok ? 0 : -1;
}

int mh_cmd_runs_resume(int argc, char **argv) {
  mh_limits limits;
  if (mh_cli_limits_init(&limits) != 0) return 2;
  int json = 0;
  const char *id = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = 1;
      continue;
    }
    int r = mh_cli_limit_option(argc, argv, &i, &limits);
    if (r < 0) return 2;
    if (r > 0) { i--; continue; }
    if (argv[i][0] == '-' || id) {
      fprintf(stderr, "moonhive: runs resume takes one run id and --json or limit options ('%s')\n", argv[i]);
      return 2;
    }
    id = argv[i];
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  host.limits = limits;
  int code = 1;
  mh_vm *vm = mh_vm_new(&host, &limits, ".");
  if (vm == NULL) {
    fprintf(stderr, "moonhive: cannot create a sandbox (memory limit too small?)\n");
  } else if (mh_vm_load(vm->L, resume_stage, sizeof resume_stage - 1, "=moonhive runs resume", 0) != LUA_OK) {
    fprintf(stderr, "moonhive: %s\n", lua_tostring(vm->L, -1));
    lua_pop(vm->L, 1);
  } else {
    lua_pushboolean(vm->L, json);
    if (id) lua_pushstring(vm->L, id);
    else lua_pushnil(vm->L);
    resumed r = {0, 1};
    if (push_grant(&host, vm->L) != 0) {
      lua_settop(vm->L, 0);
    } else if (mh_run_start(vm, 3, resume_done, &r) == NULL) {
      fprintf(stderr, "moonhive: cannot start the resume: memory limit too small\n");
    } else {
      while (!r.finished) uv_run(&loop, UV_RUN_DEFAULT);
      code = r.code;
    }
  }
  mh_host_close(&host);
  if (vm) mh_vm_free(vm);
  uv_loop_close(&loop);
  return code;
}
