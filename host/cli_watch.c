/* cli_watch.c — `moonhive run --watch FILE.lua [ARGS...]`: runs an agent or
 * workflow file again each time it, or an agent or workflow file a run of it
 * used, changes; runs in flight finish on the version they started with.
 *
 * The project's agents/ and workflows/ and FILE are kept by the reload
 * registry (registry.h). Each run gets a sandbox of its own, with FILE's
 * current version loaded and every current version pinned, released to the
 * run (freed when it ends). An edit that does not load is reported by the
 * registry and starts nothing. SIGINT or SIGTERM stops: runs in flight are
 * cancelled (a workflow run stays resumable) and the status is 0. */
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "cli.h"
#include "host.h"
#include "mod_versions.h"
#include "registry.h"
#include "scheduler.h"
#include "vm.h"

/* Runs FILE's definition: an agent with ARGS as its task, a workflow with
 * ARGS (or --input JSON) as its input, as `moonhive run` does. */
static const char watch_stage[] =
  "local chunk, hash, json_out, file, source = ...\n"
  "local def = chunk()\n"
  "if require('agent').is_agent(def) then\n"
  "  def.version = hash\n"
  "  return require('agent').main(def, json_out, select(6, ...))\n"
  "end\n"
  "if require('workflow').is_workflow(def) then\n"
  "  return require('workflow').main(def, json_out, file, source, select(6, ...))\n"
  "end\n"
  "error(file .. ' no longer returns an agent{} or a workflow{}', 0)\n";

typedef struct watcher watcher;

typedef struct watch_run {
  watcher *w;
  struct watch_run *next;
  mh_vm *vm;           /* released to the run: valid until its done callback returns */
  int n;
  char hash[65];
} watch_run;

struct watcher {
  mh_host *host;
  mh_registry *reg;
  mh_limits limits;
  const char *file;    /* as given */
  char *script_dir;
  int json, argc;
  char **argv;
  watch_run *runs;     /* in flight */
  int started, live, stopping, stop_signal;
  char **used;         /* real paths of files the finished runs loaded */
  int nused, capused;
  uv_signal_t sigint, sigterm;
};

/* ---- what runs used ---- */

static void add_used(const char *real, void *ud) {
  watcher *w = ud;
  for (int i = 0; i < w->nused; i++)
    if (strcmp(w->used[i], real) == 0) return;
  if (w->nused == w->capused) {
    int cap = w->capused ? w->capused * 2 : 16;
    char **bigger = realloc(w->used, (size_t)cap * sizeof *bigger);
    if (bigger == NULL) return;
    w->used = bigger;
    w->capused = cap;
  }
  if ((w->used[w->nused] = strdup(real)) != NULL) w->nused++;
}

/* Did a run of this watch (in flight or finished) load a module from path? */
static int used(watcher *w, const char *path) {
  for (int i = 0; i < w->nused; i++)
    if (strcmp(w->used[i], path) == 0) return 1;
  for (watch_run *r = w->runs; r; r = r->next)
    if (mh_versions_used(r->vm->L, path)) return 1;
  return 0;
}

/* ---- runs ---- */

static void run_done(mh_run *run, void *ud) {
  watch_run *r = ud;
  watcher *w = r->w;
  mh_versions_each(r->vm->L, add_used, w);
  for (watch_run **p = &w->runs; *p; p = &(*p)->next)
    if (*p == r) {
      *p = r->next;
      break;
    }
  w->live--;
  fflush(stdout);
  if (run->state == MH_RUN_OK) {
    fprintf(stderr, "[watch] run %d succeeded (version %.12s)\n", r->n, r->hash);
  } else if (!w->stopping) {
    fprintf(stderr, "[watch] run %d %s (version %.12s): %s\n", r->n,
            run->state == MH_RUN_CANCELLED ? "cancelled" : "failed", r->hash, run->error ? run->error : "");
  }
  fflush(stderr);
  free(r);
}

/* Starts a run of FILE's current version in a sandbox of its own. why says
 * what changed (NULL for the first run). */
static void start_run(watcher *w, const char *why) {
  watch_run *r = calloc(1, sizeof *r);
  mh_vm *vm = r ? mh_vm_new(w->host, &w->limits, w->script_dir) : NULL;
  const char *problem = NULL;
  if (vm == NULL) problem = "cannot create a sandbox (memory limit too small?)";
  else if (mh_registry_pin(w->reg, vm) != 0) problem = "cannot pin the current versions (memory limit too small?)";
  lua_State *L = vm ? vm->L : NULL;
  if (!problem && (!lua_checkstack(L, w->argc + 8) ||
                   mh_vm_load(L, watch_stage, sizeof watch_stage - 1, "=moonhive run --watch", 0) != LUA_OK)) {
    problem = "cannot load the run (memory limit too small?)";
  }
  char chunkname[PATH_MAX + 2];
  snprintf(chunkname, sizeof chunkname, "@%s", w->file);
  int status = problem ? -1 : mh_registry_load(w->reg, mh_registry_file(w->reg), L, chunkname, r->hash);
  if (!problem && status != LUA_OK) {
    if (status != -1) fprintf(stderr, "[watch] %s\n", lua_tostring(L, -1));
    problem = status == -1 ? "no version of it loads yet (--watch runs a file that returns an agent{} or a "
                             "workflow{}); waiting for a save"
                           : "cannot load its current version";
  }
  if (problem) {
    fprintf(stderr, "[watch] %s: %s\n", w->file, problem);
    if (vm) mh_vm_free(vm);
    free(r);
    return;
  }
  /* stage chunk source: arg = {[0] = FILE, ARGS...} in the file's environment */
  lua_getupvalue(L, -2, 1);
  lua_createtable(L, w->argc, 1);
  lua_pushstring(L, w->file);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < w->argc; i++) {
    lua_pushstring(L, w->argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "arg");
  lua_pop(L, 1);
  lua_pushstring(L, r->hash);
  lua_insert(L, -2);                                  /* stage chunk hash source */
  lua_pushboolean(L, w->json);
  lua_insert(L, -2);
  lua_pushstring(L, w->file);
  lua_insert(L, -2);                                  /* stage chunk hash json file source */
  for (int i = 0; i < w->argc; i++) lua_pushstring(L, w->argv[i]);
  r->w = w;
  r->vm = vm;
  r->n = ++w->started;
  mh_run *run = mh_run_start(vm, 5 + w->argc, run_done, r);
  if (run == NULL) {
    fprintf(stderr, "[watch] %s: cannot start a run (memory limit too small?)\n", w->file);
    mh_vm_free(vm);
    free(r);
    return;
  }
  mh_vm_release(vm);
  r->next = w->runs;
  w->runs = r;
  if (why && w->live > 0)
    fprintf(stderr, "[watch] %s changed: run %d on version %.12s (%d still running on older versions)\n", why, r->n,
            r->hash, w->live);
  else if (why)
    fprintf(stderr, "[watch] %s changed: run %d on version %.12s\n", why, r->n, r->hash);
  else
    fprintf(stderr, "[watch] run %d on version %.12s\n", r->n, r->hash);
  fflush(stderr);
  w->live++;
}

/* ---- events ---- */

static const char *shown(watcher *w, const char *path) {
  if (strcmp(path, mh_registry_file(w->reg)) == 0) return w->file;
  char cwd[PATH_MAX];
  size_t n = getcwd(cwd, sizeof cwd) ? strlen(cwd) : 0;
  return n && strncmp(path, cwd, n) == 0 && path[n] == '/' ? path + n + 1 : path;
}

static void on_registry(mh_registry *reg, mh_reg_event ev, const char *path, void *ud) {
  (void)reg;
  watcher *w = ud;
  if (w->stopping) return;
  int is_file = path && strcmp(path, mh_registry_file(w->reg)) == 0;
  if (ev == MH_REG_READY) {
    if (w->started == 0) start_run(w, NULL);
  } else if (ev == MH_REG_LOADED && (is_file || used(w, path))) {
    if (mh_registry_ready(w->reg)) start_run(w, shown(w, path));
  } else if (ev == MH_REG_REMOVED && is_file) {
    fprintf(stderr, "[watch] %s is gone; waiting for it to come back\n", w->file);
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  watcher *w = h->data;
  w->stopping = 1;
  w->stop_signal = signum;
  uv_stop(h->loop);
}

static void close_signal(uv_signal_t *h) {
  uv_signal_stop(h);
  uv_close((uv_handle_t *)h, NULL);
}

int mh_cli_run_watch(const char *file, int argc, char **argv, const mh_limits *limits, int json) {
  FILE *probe = fopen(file, "r");
  if (probe == NULL) {
    fprintf(stderr, "moonhive: cannot open %s\n", file);
    return 1;
  }
  fclose(probe);
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  host.limits = *limits;
  char *dir_copy = strdup(file);
  watcher w = {.host = &host, .limits = *limits, .file = file, .json = json, .argc = argc, .argv = argv,
               .script_dir = dir_copy ? strdup(dirname(dir_copy)) : NULL};
  free(dir_copy);
  char err[PATH_MAX + 256];
  w.reg = mh_registry_open(&host, file, 0, on_registry, &w, err, sizeof err);
  int code = 0;
  if (w.reg == NULL) {
    fprintf(stderr, "moonhive: %s\n", err);
    code = 1;
  } else {
    uv_signal_init(&loop, &w.sigint);
    uv_signal_init(&loop, &w.sigterm);
    w.sigint.data = w.sigterm.data = &w;
    uv_signal_start(&w.sigint, on_signal, SIGINT);
    uv_signal_start(&w.sigterm, on_signal, SIGTERM);
    fprintf(stderr, "[watch] watching %s and the project's agents/ and workflows/%s (Ctrl-C stops)\n", file,
            mh_registry_polling(w.reg) ? ", polling" : "");
    fflush(stderr);
    if (mh_registry_ready(w.reg)) start_run(&w, NULL);
    while (!w.stopping) uv_run(&loop, UV_RUN_DEFAULT);
    fflush(stdout);
    if (w.live > 0)
      fprintf(stderr, "[watch] stopped; %d run%s in flight cancelled (moonhive runs resume continues a workflow run)\n",
              w.live, w.live == 1 ? "" : "s");
    else
      fprintf(stderr, "[watch] stopped\n");
    mh_registry_close(w.reg);
    close_signal(&w.sigint);
    close_signal(&w.sigterm);
  }
  mh_host_close(&host);
  uv_loop_close(&loop);
  for (int i = 0; i < w.nused; i++) free(w.used[i]);
  free(w.used);
  free(w.script_dir);
  return code;
}
