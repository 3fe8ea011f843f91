/* bench_w3.c — issue 4's W3 workload for `make bench`.
 *
 * One W3 run = three agents in sequence (researcher -> coder -> reviewer),
 * each making one model call to the local OpenAI-compatible mock server and
 * passing its reply on to the next. Measured for N concurrent runs at a mock
 * latency of 0 and 50 ms, three times in the same bench run:
 *
 *   moonhive  a sandboxed script: three agent{} values chained by a fourth
 *             agent's run function, N runs of it in one sandbox; each run is
 *             recorded (runs, events) in SQLite as `moonhive run` does
 *   workflow  the same three agents as the steps of a durable workflow
 *             (wf:call each), N runs of it: each step's model call an
 *             event of the workflow run, and a journal entry committed
 *             before the next step
 *   plain C   the same three calls per run from C, on the same libcurl-multi
 *             on libuv transport, requests built and replies parsed with
 *             cJSON; nothing recorded
 *
 * Figures: wall time, CPU µs per step (one model call), peak RSS per
 * concurrent run, and wall as a ratio of the ideal 3 x latency. The model
 * concurrency cap and the per-origin connection cap are lifted for both sides
 * (MOONHIVE_LLM_CONCURRENCY, MOONHIVE_HTTP_HOST_CONNECTIONS=0), so N runs
 * really are N at once. Each measurement runs in a fresh child process;
 * the sides take turns, round after round, and each CPU ratio is the
 * median of the rounds' own ratios (this machine's speed drifts by a third
 * within a minute, which a ratio of medians taken minutes apart absorbs).
 *
 * Usage: bench_w3 MOCK_LLM_PORT (with MOONHIVE_DATA pointing at a scratch dir)
 * BENCH_W3=N:LATENCY_MS:REPS measures that one case only (for a profiler). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>

#include "host.h"
#include "http_client.h"
#include "scheduler.h"
#include "vm.h"

#include "bench_common.h"

static const char *const SYSTEM[3] = {
  "You are a researcher: list the facts a developer needs for the task.",
  "You are a coder: write the code the facts call for.",
  "You are a reviewer: review the code and give a verdict.",
};

static const char TASK[] = "write a function that adds two numbers";

typedef struct w3_config {
  int n, latency_ms, port;
} w3_config;

enum { FIG_WALL, FIG_CPU_STEP, FIG_RSS_RUN, FIG_FAILED, FIGS };

static void child_host(mh_host *host, uv_loop_t *loop, const w3_config *cfg) {
  char base[96];
  snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", cfg->port);
  setenv("OPENAI_BASE_URL", base, 1);
  setenv("MOONHIVE_LLM_CONCURRENCY", "1000000", 1);
  setenv("MOONHIVE_HTTP_HOST_CONNECTIONS", "0", 1);
  uv_loop_init(loop);
  mh_host_init(host, loop);
  host->limits.deadline_ns = 0;
  host->limits.cpu_ns = 0;
  host->limits.memory = (size_t)4 << 30;
}

static void suffix_for(const w3_config *cfg, char *out, size_t outlen) {
  if (cfg->latency_ms > 0) snprintf(out, outlen, " [delay:%d]", cfg->latency_ms);
  else out[0] = '\0';
}

static void warm_connections(mh_host *host, const w3_config *cfg);

/* ---- moonhive: agents in a sandbox ---- */

/* The three agents, defined once per sandbox (then W3 exists): the first
 * lines of both scripts below. */
#define W3_AGENTS \
  "if not rawget(_G, 'W3') then\n" \
  "  local suffix = %s\n" \
  "  local function step(name, system) return agent{name = name, model = 'openai/m', system = system} end\n" \
  "  local researcher = step('researcher', %s)\n" \
  "  local coder = step('coder', %s)\n" \
  "  local reviewer = step('reviewer', %s)\n"

/* One pipeline: a fourth agent chains the three. */
static const char W3_SCRIPT[] =
  W3_AGENTS
  "  W3 = agent{name = 'w3', run = function(self, input, ctx)\n"
  "    local facts = researcher:run(input .. suffix, {ctx = ctx})\n"
  "    local code = coder:run(facts .. suffix, {ctx = ctx})\n"
  "    return reviewer:run(code .. suffix, {ctx = ctx})\n"
  "  end}\n"
  "end\n"
  "local out = W3:run(%s)\n"
  "assert(out:find('mock: ', 1, true), out)\n";

/* The same agents as the three steps of a durable workflow. */
static const char W3_WORKFLOW[] =
  W3_AGENTS
  "  W3 = workflow{name = 'w3', run = function(wf, input)\n"
  "    local facts = wf:call(researcher, input .. suffix)\n"
  "    local code = wf:call(coder, facts .. suffix)\n"
  "    return wf:call(reviewer, code .. suffix)\n"
  "  end}\n"
  "end\n"
  "local report = require('workflow').start(W3, %s, {source = 'bench_w3'})\n"
  "assert(report.status == 'succeeded' and report.output:find('mock: ', 1, true), report.error)\n";

static void quoted(const char *s, char *out, size_t outlen) { snprintf(out, outlen, "'%s'", s); }

__attribute__((noinline)) /* a symbol of its own, for callgrind --toggle-collect */
static void run_moonhive(mh_host *host, mh_vm *vm, int n, counter *c) {
  for (int i = 0; i < n; i++) {
    lua_pushvalue(vm->L, -1);
    mh_run_start(vm, 0, count_done, c);
  }
  while (c->done < n) uv_run(host->loop, UV_RUN_ONCE);
}

/* The measured runs, apart from the warm-up: callgrind --toggle-collect=run_timed */
__attribute__((noinline)) static void run_timed(mh_host *host, mh_vm *vm, int n, counter *c) {
  run_moonhive(host, vm, n, c);
}

/* Measures N runs of script (W3_SCRIPT or W3_WORKFLOW, filled in). */
static void measure_script(const w3_config *cfg, const char *script, double *out) {
  uv_loop_t loop;
  mh_host host;
  child_host(&host, &loop, cfg);
  char suffix[64], qs[80], q0[160], q1[160], q2[160], qt[96], code[2048];
  suffix_for(cfg, suffix, sizeof suffix);
  quoted(suffix, qs, sizeof qs);
  quoted(SYSTEM[0], q0, sizeof q0);
  quoted(SYSTEM[1], q1, sizeof q1);
  quoted(SYSTEM[2], q2, sizeof q2);
  quoted(TASK, qt, sizeof qt);
  snprintf(code, sizeof code, script, qs, q0, q1, q2, qt);
  mh_vm *vm = mh_vm_new(&host, &host.limits, NULL);
  if (mh_vm_load(vm->L, code, strlen(code), "=w3", 0) != LUA_OK) {
    fprintf(stderr, "bench: %s\n", lua_tostring(vm->L, -1));
    _exit(1);
  }
  counter warm = {0, 0, 0};
  run_moonhive(&host, vm, 1, &warm); /* defines the agents, opens the store and the runtime */
  long rss0 = rss_kib();
  warm_connections(&host, cfg);
  counter c = {0, 0, 0};
  double c0 = cpu_us(), t0 = now_us();
  run_timed(&host, vm, cfg->n, &c);
  out[FIG_WALL] = now_us() - t0;
  out[FIG_CPU_STEP] = (cpu_us() - c0) / (3.0 * cfg->n);
  out[FIG_RSS_RUN] = (double)(peak_rss_kib() - rss0) * 1024 / cfg->n;
  out[FIG_FAILED] = c.failed + warm.failed;
}

static void measure_moonhive(void *ud, double *out) { measure_script(ud, W3_SCRIPT, out); }
static void measure_workflow(void *ud, double *out) { measure_script(ud, W3_WORKFLOW, out); }

/* ---- plain C: the same calls, no Lua ---- */

typedef struct plain_run {
  mh_http_transfer xfer;
  struct mh_http *http;
  const w3_config *cfg;
  const char *url;
  struct curl_slist *headers;
  int step, *finished, *failed;
  char *request;
  bench_buf reply;
} plain_run;

/* Posts step r->step with `input` as the user message. */
static void plain_post(plain_run *r, const char *input) {
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "model", "m");
  cJSON *messages = cJSON_AddArrayToObject(req, "messages");
  cJSON *sys = cJSON_CreateObject(), *user = cJSON_CreateObject();
  cJSON_AddStringToObject(sys, "role", "system");
  cJSON_AddStringToObject(sys, "content", SYSTEM[r->step]);
  cJSON_AddStringToObject(user, "role", "user");
  cJSON_AddStringToObject(user, "content", input);
  cJSON_AddItemToArray(messages, sys);
  cJSON_AddItemToArray(messages, user);
  free(r->request);
  r->request = cJSON_PrintUnformatted(req);
  cJSON_Delete(req);
  r->reply.len = 0;
  curl_easy_setopt(r->xfer.easy, CURLOPT_POSTFIELDS, r->request);
  mh_http_start(r->http, &r->xfer, r->url);
}

static void plain_done(mh_http_transfer *t, CURLcode rc) {
  plain_run *r = (plain_run *)t;
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  const char *content = NULL;
  cJSON *reply = NULL;
  if (rc == CURLE_OK && status == 200 && r->reply.data) {
    r->reply.data[r->reply.len] = '\0';
    reply = cJSON_ParseWithLength(r->reply.data, r->reply.len);
    cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(reply, "choices"), 0);
    content = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "message"), "content"));
  }
  if (content == NULL) {
    if ((*r->failed)++ == 0) fprintf(stderr, "bench: plain W3 call failed: %s, HTTP %ld\n", curl_easy_strerror(rc), status);
    (*r->finished)++;
  } else if (++r->step < 3) {
    char suffix[64], *next;
    suffix_for(r->cfg, suffix, sizeof suffix);
    size_t len = strlen(content) + strlen(suffix) + 1;
    next = malloc(len);
    snprintf(next, len, "%s%s", content, suffix);
    plain_post(r, next);
    free(next);
  } else {
    (*r->finished)++;
  }
  cJSON_Delete(reply);
}

static void run_plain(mh_host *host, const w3_config *cfg, int n, int *failed) {
  struct mh_http *http = mh_http_client(host);
  char url[96], suffix[64], first[160];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", cfg->port);
  suffix_for(cfg, suffix, sizeof suffix);
  snprintf(first, sizeof first, "%s%s", TASK, suffix);
  plain_run *runs = calloc((size_t)n, sizeof *runs);
  int finished = 0;
  for (int i = 0; i < n; i++) {
    plain_run *r = &runs[i];
    r->http = http;
    r->cfg = cfg;
    r->url = url;
    r->finished = &finished;
    r->failed = failed;
    r->xfer.done = plain_done;
    r->xfer.easy = curl_easy_init();
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(r->xfer.easy, CURLOPT_URL, url);
    curl_easy_setopt(r->xfer.easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->xfer.easy, CURLOPT_WRITEFUNCTION, bench_keep);
    curl_easy_setopt(r->xfer.easy, CURLOPT_WRITEDATA, &r->reply);
    curl_easy_setopt(r->xfer.easy, CURLOPT_NOSIGNAL, 1L);
    plain_post(r, first);
  }
  while (finished < n) uv_run(host->loop, UV_RUN_ONCE);
  for (int i = 0; i < n; i++) {
    curl_easy_cleanup(runs[i].xfer.easy);
    curl_slist_free_all(runs[i].headers);
    free(runs[i].request);
    free(runs[i].reply.data);
  }
  free(runs);
}

/* Opens the N keep-alive connections the measured phase will reuse (the
 * client and the http module share them), as a running service has them:
 * N connections at once would otherwise overflow the server's accept queue
 * and add the kernel's one-second SYN retries to the wall time. Their memory
 * still counts in the RSS per run. */
static void warm_connections(mh_host *host, const w3_config *cfg) {
  w3_config quick = *cfg;
  int failed = 0;
  quick.latency_ms = 0;
  run_plain(host, &quick, cfg->n, &failed);
}

static void measure_plain(void *ud, double *out) {
  const w3_config *cfg = ud;
  uv_loop_t loop;
  mh_host host;
  child_host(&host, &loop, cfg);
  int failed = 0;
  run_plain(&host, cfg, 1, &failed); /* warm the client */
  long rss0 = rss_kib();
  warm_connections(&host, cfg);
  double c0 = cpu_us(), t0 = now_us();
  run_plain(&host, cfg, cfg->n, &failed);
  out[FIG_WALL] = now_us() - t0;
  out[FIG_CPU_STEP] = (cpu_us() - c0) / (3.0 * cfg->n);
  out[FIG_RSS_RUN] = (double)(peak_rss_kib() - rss0) * 1024 / cfg->n;
  out[FIG_FAILED] = failed;
}

/* ---- report ---- */

/* The measured sides of one case; want[i] says whether side i is measured. */
enum { SIDE_MOONHIVE, SIDE_WORKFLOW, SIDE_PLAIN, SIDES };
static void (*const side_measure[SIDES])(void *, double *) = {measure_moonhive, measure_workflow, measure_plain};

/* Measures every wanted side reps times, interleaved (moonhive, workflow,
 * plain, moonhive, ...), so a machine that speeds up or slows down in the
 * middle of the case weighs on every side alike. fig[side]: the medians of
 * its figures; the CPU ratios are medians of each round's own ratio. */
static void measure_sides(w3_config *cfg, int reps, const int *want, double fig[SIDES][FIGS],
                          double *wf_per_mh, double *mh_per_plain) {
  double samples[SIDES][FIGS][9], wf_mh[9], mh_plain[9];
  for (int r = 0; r < reps; r++) {
    for (int side = 0; side < SIDES; side++) {
      double got[FIGS] = {0};
      if (want[side]) in_child(side_measure[side], cfg, got, FIGS);
      for (int f = 0; f < FIGS; f++) samples[side][f][r] = got[f];
    }
    wf_mh[r] = samples[SIDE_WORKFLOW][FIG_CPU_STEP][r] / samples[SIDE_MOONHIVE][FIG_CPU_STEP][r];
    mh_plain[r] = samples[SIDE_MOONHIVE][FIG_CPU_STEP][r] / samples[SIDE_PLAIN][FIG_CPU_STEP][r];
  }
  for (int side = 0; side < SIDES; side++)
    for (int f = 0; f < FIGS; f++) fig[side][f] = median(samples[side][f], reps);
  *wf_per_mh = median(wf_mh, reps);
  *mh_per_plain = median(mh_plain, reps);
}

static void print_side(const char *who, const double *fig, int n, int latency_ms) {
  printf("  %-8s wall %8.1f ms, %6.1f CPU us/step", who, fig[FIG_WALL] / 1e3, fig[FIG_CPU_STEP]);
  if (n >= 100) printf(", %7.0f bytes RSS/run", fig[FIG_RSS_RUN]); /* one run is below the allocator's noise */
  if (latency_ms > 0) printf(", %.2f x the ideal %d ms", fig[FIG_WALL] / 1e3 / (3.0 * latency_ms), 3 * latency_ms);
  if (fig[FIG_FAILED] > 0) printf(", %.0f FAILED", fig[FIG_FAILED]);
  printf("\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_w3 MOCK_LLM_PORT\n");
    return 2;
  }
  struct { int n, latency_ms, reps, workflow; } plan[] = {
    {1, 0, 9, 1}, {100, 0, 5, 0}, {1000, 0, 3, 1}, {1000, 50, 5, 1}, {5000, 50, 3, 0},
  };
  printf("w3: researcher -> coder -> reviewer, one mock call each (model concurrency and connections per origin "
         "uncapped); medians\n");
  size_t cases = sizeof plan / sizeof plan[0];
  const char *only = getenv("BENCH_W3");
  if (only && sscanf(only, "%d:%d:%d", &plan[0].n, &plan[0].latency_ms, &plan[0].reps) == 3 &&
      plan[0].n > 0 && plan[0].reps > 0 && plan[0].reps <= 9)
    cases = 1;
  const char *side = getenv("BENCH_W3_SIDE"); /* with BENCH_W3: only "moonhive", "workflow" or "plain" */
  for (size_t i = 0; i < cases; i++) {
    w3_config cfg = {plan[i].n, plan[i].latency_ms, atoi(argv[1])};
    int want[SIDES] = {!side || strcmp(side, "moonhive") == 0,
                       (plan[i].workflow || cases == 1) && (!side || strcmp(side, "workflow") == 0),
                       !side || strcmp(side, "plain") == 0};
    double fig[SIDES][FIGS], wf_per_mh, mh_per_plain;
    measure_sides(&cfg, plan[i].reps, want, fig, &wf_per_mh, &mh_per_plain);
    double *mh = fig[SIDE_MOONHIVE], *wf = fig[SIDE_WORKFLOW], *plain = fig[SIDE_PLAIN];
    printf("w3: N = %d concurrent runs, mock latency %d ms: moonhive/plain C CPU per step %.2f", cfg.n,
           cfg.latency_ms, mh_per_plain);
    if (wf[FIG_CPU_STEP] > 0) printf(", workflow/moonhive %.2f", wf_per_mh);
    printf(" (medians of each round's ratio)\n");
    print_side("moonhive", mh, cfg.n, cfg.latency_ms);
    if (wf[FIG_CPU_STEP] > 0) print_side("workflow", wf, cfg.n, cfg.latency_ms);
    print_side("plain C", plain, cfg.n, cfg.latency_ms);
  }
  return 0;
}
