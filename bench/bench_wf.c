/* bench_wf.c — what the durable workflow journal costs, for `make bench`
 * (BENCH_ONLY=journal).
 *
 * A workflow whose steps are K cheap wf:tool("calculator") calls, against
 * the same K tool calls made by a plain script (tool.invoke, no workflow):
 * the difference per step is what a journaled step costs — the engine's
 * bookkeeping, the bridge to the runtime, the SQLite commit. Measured for
 * one run of K steps in sequence (each step waits for its commit) and for
 * R concurrent runs, under MOONHIVE_DURABILITY=normal and full (an fsync
 * per commit). Each measurement runs in a fresh child process with a fresh
 * database under $MOONHIVE_DATA.
 *
 * Usage: bench_wf (with MOONHIVE_DATA pointing at a scratch dir). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "scheduler.h"
#include "vm.h"

#include "bench_common.h"

static const char WORKFLOW_SCRIPT[] =
  "local k = ...\n"
  "if not rawget(_G, 'WF') then\n"
  "  WF = workflow{name = 'steps', run = function(wf, n)\n"
  "    for i = 1, n do wf:tool('calculator', {expression = '1+2'}) end\n"
  "    return n\n"
  "  end}\n"
  "end\n"
  "local report = require('workflow').start(WF, k, {source = 'bench_wf'})\n"
  "assert(report.status == 'succeeded', report.error)\n";

static const char PLAIN_SCRIPT[] =
  "local k = ...\n"
  "local toolmod, agentmod = require 'tool', require 'agent'\n"
  "local calc = require 'tools.calculator'\n"
  "local ctx = setmetatable({agent = {name = 'plain', memory = {}, tools = {}, tools_by_name = {}},\n"
  "                          memory = {}, depth = 0}, agentmod.Ctx)\n"
  "for i = 1, k do\n"
  "  local ok, r = toolmod.invoke(calc, {expression = '1+2'}, ctx)\n"
  "  assert(ok, r)\n"
  "end\n";

typedef struct journal_case {
  int runs, steps;       /* concurrent runs, steps each */
  int workflow;          /* 1: the workflow, 0: the plain script */
  const char *durability;
} journal_case;

enum { FIG_WALL, FIG_CPU, FIG_FAILED, FIGS };

static int fresh_dir(char *out, size_t outlen) {
  const char *base = getenv("MOONHIVE_DATA");
  snprintf(out, outlen, "%s/wf-XXXXXX", base ? base : "/tmp");
  return mkdtemp(out) ? 0 : -1;
}

/* Starts n runs of the chunk on top of vm's stack, each given k. */
static void run_script(mh_host *host, mh_vm *vm, int n, int k, counter *c) {
  for (int i = 0; i < n; i++) {
    lua_pushvalue(vm->L, -1);
    lua_pushinteger(vm->L, k);
    mh_run_start(vm, 1, count_done, c);
  }
  while (c->done < n) uv_run(host->loop, UV_RUN_ONCE);
}

static void measure(void *ud, double *out) {
  const journal_case *jc = ud;
  char dir[512];
  if (fresh_dir(dir, sizeof dir) != 0) _exit(1);
  setenv("MOONHIVE_DATA", dir, 1);
  setenv("MOONHIVE_DURABILITY", jc->durability, 1);
  uv_loop_t loop;
  mh_host host;
  uv_loop_init(&loop);
  mh_host_init(&host, &loop);
  host.limits.deadline_ns = 0;
  host.limits.cpu_ns = 0;
  host.limits.memory = (size_t)2 << 30;
  mh_vm *vm = mh_vm_new(&host, &host.limits, NULL);
  const char *code = jc->workflow ? WORKFLOW_SCRIPT : PLAIN_SCRIPT;
  if (mh_vm_load(vm->L, code, strlen(code), "=bench_wf", 0) != LUA_OK) {
    fprintf(stderr, "bench: %s\n", lua_tostring(vm->L, -1));
    _exit(1);
  }
  counter warm = {0, 0, 0};
  run_script(&host, vm, 1, 2, &warm); /* loads the modules, opens the store and the runtime */
  counter c = {0, 0, 0};
  double c0 = cpu_us(), t0 = now_us();
  run_script(&host, vm, jc->runs, jc->steps, &c);
  out[FIG_WALL] = now_us() - t0;
  out[FIG_CPU] = cpu_us() - c0;
  out[FIG_FAILED] = c.failed + warm.failed;
}

static void medians(journal_case *jc, int reps, double *fig) {
  double samples[FIGS][9];
  for (int r = 0; r < reps; r++) {
    double got[FIGS];
    in_child(measure, jc, got, FIGS);
    for (int f = 0; f < FIGS; f++) samples[f][r] = got[f];
  }
  for (int f = 0; f < FIGS; f++) fig[f] = median(samples[f], reps);
}

int main(void) {
  struct { int runs, steps, reps; const char *durability; } plan[] = {
    {1, 1000, 5, "normal"}, {100, 20, 5, "normal"}, {1, 200, 3, "full"}, {100, 20, 3, "full"},
  };
  printf("journal: wf:tool('calculator') steps of a workflow vs the same tool calls in a plain script; medians\n");
  for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
    journal_case wf = {plan[i].runs, plan[i].steps, 1, plan[i].durability};
    journal_case plain = wf;
    plain.workflow = 0;
    double w[FIGS], p[FIGS];
    medians(&wf, plan[i].reps, w);
    medians(&plain, plan[i].reps, p);
    double steps = (double)plan[i].runs * plan[i].steps;
    printf("journal: %d run%s x %d steps, MOONHIVE_DURABILITY=%s: %.1f us/step wall, %.1f CPU us/step "
           "(plain tool call %.1f wall, %.1f CPU): a journaled step costs %.1f us wall, %.1f us CPU%s\n",
           plan[i].runs, plan[i].runs == 1 ? "" : "s concurrently", plan[i].steps, plan[i].durability,
           w[FIG_WALL] / steps, w[FIG_CPU] / steps, p[FIG_WALL] / steps, p[FIG_CPU] / steps,
           (w[FIG_WALL] - p[FIG_WALL]) / steps, (w[FIG_CPU] - p[FIG_CPU]) / steps,
           w[FIG_FAILED] + p[FIG_FAILED] > 0 ? ", SOME FAILED" : "");
  }
  return 0;
}
