/* bench_host.c — the host's figures for `make bench` (issue: host foundation).
 *
 *   state     creating a sandbox and loading a small script (median µs)
 *   memory    an idle sandbox, and one suspended run (bytes, via mallinfo2)
 *   sleep     10,000 concurrent runs doing sleep(10) ten times: wall time as a
 *             ratio of the ideal 100 ms, peak RSS per run
 *   http      keep-alive GETs to a local server through the `http` module
 *             beside the same libcurl-multi-on-libuv transport driven from
 *             plain C (no Lua; it keeps each response's headers and body, as
 *             the module does): requests/s, CPU µs per request, the ratio;
 *             and the curve of CPU per request by concurrency, capped and not
 *
 *   llm       CPU per model call (non-streamed, and streamed in 100 chunks)
 *             beside a bare http request of the same size, against the mock
 *             LLM server; 1000 concurrent calls: calls/s and peak RSS
 *
 * Usage: bench_host [PORT [MOCK_LLM_PORT]]
 * Every figure is the median of several repetitions. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>

#include "evaluate.h"
#include "host.h"
#include "http_client.h"
#include "scheduler.h"
#include "vm.h"

#include "bench_common.h"

#define REPEAT 5

static const char small_script[] =
  "-- a small agent-like script\n"
  "local M = {name = 'greeter', model = 'mock/default'}\n"
  "function M.greet(who)\n"
  "  return string.format('hello, %s', who)\n"
  "end\n"
  "function M.run(input)\n"
  "  local words = {}\n"
  "  for w in input:gmatch('%S+') do words[#words + 1] = w end\n"
  "  return M.greet(table.concat(words, ' '))\n"
  "end\n"
  "return M\n";

/* ---- state creation and memory ---- */

static void bench_state(mh_host *host) {
  enum { N = 2000 };
  static double samples[N];
  for (int i = 0; i < N; i++) {
    double t0 = now_us();
    mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
    mh_vm_load(vm->L, small_script, sizeof small_script - 1, "=bench", 0);
    samples[i] = now_us() - t0;
    lua_pop(vm->L, 1);
    mh_vm_free(vm);
  }
  printf("state: create a sandbox + load a small script: median %.1f us (target <= 150)\n", median(samples, N));

  double idle[REPEAT];
  for (int r = 0; r < REPEAT; r++) {
    size_t before = mallinfo2().uordblks;
    mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
    lua_gc(vm->L, LUA_GCCOLLECT);
    idle[r] = (double)(mallinfo2().uordblks - before);
    mh_vm_free(vm);
  }
  printf("memory: idle sandbox: %.1f KiB (target <= 64)\n", median(idle, REPEAT) / 1024);
}

static void bench_suspended_run(mh_host *host) {
  enum { N = 10000 };
  double per_run[REPEAT];
  for (int r = 0; r < REPEAT; r++) {
    mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
    /* One compiled function shared by every run, as runs of one definition are. */
    mh_vm_load(vm->L, "sleep(1e9)", 10, "=bench", 0);
    lua_gc(vm->L, LUA_GCCOLLECT);
    size_t before = mallinfo2().uordblks;
    counter c = {0, 0, 1}; /* these runs end by cancellation */
    mh_run *runs[N];
    for (int i = 0; i < N; i++) {
      lua_pushvalue(vm->L, -1);
      runs[i] = mh_run_start(vm, 0, count_done, &c);
    }
    while (host->ready_head) uv_run(host->loop, UV_RUN_NOWAIT);
    lua_gc(vm->L, LUA_GCCOLLECT);
    per_run[r] = (double)(mallinfo2().uordblks - before) / N;
    for (int i = 0; i < N; i++) mh_run_cancel(runs[i], MH_BREAK_CANCEL);
    while (c.done < N) uv_run(host->loop, UV_RUN_ONCE);
    lua_pop(vm->L, 1);
    mh_vm_free(vm);
  }
  printf("memory: suspended run (waiting in sleep): %.0f bytes (target <= 4096)\n", median(per_run, REPEAT));
}

/* ---- 10,000 runs sleeping ---- */

/* One repetition of the sleepers, in a child process so its RSS starts
 * fresh: out = {wall as a ratio of the ideal, RSS bytes per run}. */
static void sleepers_once(void *ud, double *out);

static void bench_sleepers(mh_host *host) {
  double ratio[REPEAT], rss[REPEAT];
  for (int r = 0; r < REPEAT; r++) {
    double got[2];
    in_child(sleepers_once, host, got, 2);
    ratio[r] = got[0];
    rss[r] = got[1];
  }
  printf("sleep: 10000 runs x sleep(10) x 10: wall %.3f x the ideal 100 ms (target <= 1.2); peak RSS %.0f bytes per run\n",
         median(ratio, REPEAT), median(rss, REPEAT));
}

static void sleepers_once(void *ud, double *out) {
  enum { N = 10000 };
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host child;
  mh_host_init(&child, &loop);
  child.limits = ((mh_host *)ud)->limits;
  mh_host *host = &child;
  {
    mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
    long rss0 = rss_kib();
    counter c = {0, 0, 0};
    mh_vm_load(vm->L, "for i = 1, 10 do sleep(10) end", 30, "=bench", 0);
    double t0 = now_us();
    for (int i = 0; i < N; i++) {
      lua_pushvalue(vm->L, -1);
      mh_run_start(vm, 0, count_done, &c);
    }
    long peak = 0;
    while (c.done < N) {
      uv_run(host->loop, UV_RUN_ONCE);
      long now = rss_kib();
      if (now > peak) peak = now;
    }
    out[0] = (now_us() - t0) / 100000.0;
    out[1] = (double)(peak - rss0) * 1024 / N;
    lua_pop(vm->L, 1);
    mh_vm_free(vm);
  }
}

/* ---- HTTP ---- */

/* The plain client keeps what the http module hands back: the header lines
 * and the body of each response, in buffers reused across its requests. */
typedef struct plain_client {
  mh_http_transfer xfer;
  struct mh_http *http;
  int left;
  int *finished;
  const char *url;
  bench_buf head, body;
} plain_client;

static void plain_done(mh_http_transfer *t, CURLcode rc) {
  plain_client *c = (plain_client *)t;
  if (rc != CURLE_OK) fprintf(stderr, "bench: plain transfer failed: %s\n", curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200 || c->body.len != 12) fprintf(stderr, "bench: plain transfer got %ld, %zu bytes\n", status, c->body.len);
  c->head.len = c->body.len = 0;
  if (--c->left > 0) mh_http_start(c->http, &c->xfer, c->url);
  else (*c->finished)++;
}


/* The same transport with no Lua: clients issue `per` sequential GETs. */
static void plain_http(mh_host *host, const char *url, int clients, int per, double *cpu_per_req, double *rps) {
  struct mh_http *http = mh_http_client(host);
  plain_client *cs = calloc((size_t)clients, sizeof *cs);
  int finished = 0;
  double c0 = cpu_us(), t0 = now_us();
  for (int i = 0; i < clients; i++) {
    cs[i].http = http;
    cs[i].left = per;
    cs[i].finished = &finished;
    cs[i].url = url;
    cs[i].xfer.done = plain_done;
    cs[i].xfer.easy = curl_easy_init();
    curl_easy_setopt(cs[i].xfer.easy, CURLOPT_URL, url);
    curl_easy_setopt(cs[i].xfer.easy, CURLOPT_WRITEFUNCTION, bench_keep);
    curl_easy_setopt(cs[i].xfer.easy, CURLOPT_WRITEDATA, &cs[i].body);
    curl_easy_setopt(cs[i].xfer.easy, CURLOPT_HEADERFUNCTION, bench_keep);
    curl_easy_setopt(cs[i].xfer.easy, CURLOPT_HEADERDATA, &cs[i].head);
    curl_easy_setopt(cs[i].xfer.easy, CURLOPT_NOSIGNAL, 1L);
    mh_http_start(http, &cs[i].xfer, url);
  }
  while (finished < clients) uv_run(host->loop, UV_RUN_ONCE);
  double wall = now_us() - t0, cpu = cpu_us() - c0;
  *cpu_per_req = cpu / (clients * per);
  *rps = clients * per / (wall / 1e6);
  for (int i = 0; i < clients; i++) {
    curl_easy_cleanup(cs[i].xfer.easy);
    free(cs[i].head.data);
    free(cs[i].body.data);
  }
  free(cs);
}

static void lua_http(mh_host *host, const char *url, int clients, int per, double *cpu_per_req, double *rps) {
  mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
  char code[512];
  snprintf(code, sizeof code,
           "for i = 1, %d do local r, err = http.get('%s') "
           "if not r or r.status ~= 200 then error(err or r.status) end end", per, url);
  mh_vm_load(vm->L, code, strlen(code), "=bench", 0);
  counter c = {0, 0, 0};
  double c0 = cpu_us(), t0 = now_us();
  for (int i = 0; i < clients; i++) {
    lua_pushvalue(vm->L, -1);
    mh_run_start(vm, 0, count_done, &c);
  }
  while (c.done < clients) uv_run(host->loop, UV_RUN_ONCE);
  double wall = now_us() - t0, cpu = cpu_us() - c0;
  *cpu_per_req = cpu / (clients * per);
  *rps = clients * per / (wall / 1e6);
  lua_pop(vm->L, 1);
  mh_vm_free(vm);
}

static void bench_http(mh_host *host, int port) {
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", port);
  if (getenv("BENCH_HTTP_PROFILE")) { /* one small round of each, for a profiler */
    double cpu, rps;
    plain_http(host, url, 100, 2, &cpu, &rps);
    lua_http(host, url, 200, 10, &cpu, &rps);
    plain_http(host, url, 200, 10, &cpu, &rps);
    return;
  }
  enum { REPS = 9 };
  double lua_cpu[REPS], lua_rps[REPS], c_cpu[REPS], c_rps[REPS], ratio[REPS];
  /* warm the connection cache once */
  double a, b;
  plain_http(host, url, 100, 2, &a, &b);
  /* Alternate which side goes first: the machine's other core also serves
   * the test server, so order effects would otherwise bias the ratio. */
  for (int r = 0; r < REPS; r++) {
    if (r % 2) plain_http(host, url, 1000, 20, &c_cpu[r], &c_rps[r]);
    lua_http(host, url, 1000, 20, &lua_cpu[r], &lua_rps[r]);
    if (!(r % 2)) plain_http(host, url, 1000, 20, &c_cpu[r], &c_rps[r]);
    ratio[r] = lua_cpu[r] / c_cpu[r];
  }
  printf("http: 1000 concurrent keep-alive clients x 20 GETs: http module %.0f req/s, %.1f CPU us/req; "
         "plain C libcurl-multi %.0f req/s, %.1f CPU us/req; ratio %.2f (target <= 1.3)\n",
         median(lua_rps, REPS), median(lua_cpu, REPS), median(c_rps, REPS), median(c_cpu, REPS),
         median(ratio, REPS));

  printf("http: CPU us per request by concurrency (64 connections per host, queueing the rest, vs no cap):\n");
  static const int conc[] = {100, 500, 1000, 2000, 4000};
  for (size_t i = 0; i < sizeof conc / sizeof conc[0]; i++) {
    double capped[3], uncapped[3], plain[3], rps;
    for (int r = 0; r < 3; r++) {
      mh_http_set_host_connections(mh_http_client(host), MH_HTTP_MAX_HOST_CONNECTIONS);
      lua_http(host, url, conc[i], 5, &capped[r], &rps);
      plain_http(host, url, conc[i], 5, &plain[r], &rps);
      mh_http_set_host_connections(mh_http_client(host), 0);
      lua_http(host, url, conc[i], 5, &uncapped[r], &rps);
    }
    printf("  %5d concurrent: http module capped %6.1f, uncapped %6.1f; plain C capped %6.1f us/req\n", conc[i],
           median(capped, 3), median(uncapped, 3), median(plain, 3));
  }
  mh_http_set_host_connections(mh_http_client(host), MH_HTTP_MAX_HOST_CONNECTIONS);
}

/* ---- model calls (issue: LLM bindings) ---- */

/* Runs `clients` runs of `code` (which loops itself) in one sandbox; returns
 * CPU µs spent per `calls_per_client` call. */
static double cpu_per_call(mh_host *host, const char *code, int clients, int calls_per_client) {
  mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
  if (mh_vm_load(vm->L, code, strlen(code), "=bench", 0) != LUA_OK) {
    fprintf(stderr, "bench: %s\n", lua_tostring(vm->L, -1));
    exit(1);
  }
  counter c = {0, 0, 0};
  double c0 = cpu_us();
  for (int i = 0; i < clients; i++) {
    lua_pushvalue(vm->L, -1);
    mh_run_start(vm, 0, count_done, &c);
  }
  while (c.done < clients) uv_run(host->loop, UV_RUN_ONCE);
  double cpu = cpu_us() - c0;
  lua_pop(vm->L, 1);
  mh_vm_free(vm);
  return cpu / (clients * calls_per_client);
}

static void bench_llm(mh_host *host, int port) {
  char base[96], code[1024];
  snprintf(base, sizeof base, "http://127.0.0.1:%d/v1", port);
  setenv("OPENAI_BASE_URL", base, 1);
  enum { CLIENTS = 50, CALLS = 40, REPS = 5 };
  double plain[REPS], call[REPS], splain[REPS], scall[REPS], r1[REPS], r2[REPS];
  for (int r = 0; r < REPS; r++) {
    snprintf(code, sizeof code,
             "local body = '{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello world\"}]}' "
             "for i = 1, %d do local res = http.post('%s/chat/completions', body, "
             "{headers = {['Content-Type'] = 'application/json'}}) assert(res.status == 200) end", CALLS, base);
    plain[r] = cpu_per_call(host, code, CLIENTS, CALLS);
    snprintf(code, sizeof code,
             "for i = 1, %d do assert(llm.chat{model = 'openai/m', messages = {{role = 'user', content = 'hello world'}}}) end",
             CALLS);
    call[r] = cpu_per_call(host, code, CLIENTS, CALLS);
    snprintf(code, sizeof code,
             "local words = ('w '):rep(150) "
             "local body = '{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
             "\"messages\":[{\"role\":\"user\",\"content\":\"' .. words .. '[chunks:100]\"}]}' "
             "for i = 1, %d do local n = 0 local res = http.post('%s/chat/completions', body, "
             "{headers = {['Content-Type'] = 'application/json'}, sse = function(e) n = n + 1 end}) "
             "assert(res.status == 200 and n >= 100, n) end", CALLS / 4, base);
    splain[r] = cpu_per_call(host, code, CLIENTS, CALLS / 4);
    snprintf(code, sizeof code,
             "local words = ('w '):rep(150) "
             "for i = 1, %d do local n = 0 assert(llm.chat{model = 'openai/m', stream = function() n = n + 1 end, "
             "messages = {{role = 'user', content = words .. '[chunks:100]'}}}) assert(n >= 100, n) end", CALLS / 4);
    scall[r] = cpu_per_call(host, code, CLIENTS, CALLS / 4);
    r1[r] = call[r] / plain[r];
    r2[r] = scall[r] / splain[r];
  }
  printf("llm: CPU per non-streamed call %.0f us vs a bare http request of the same size %.0f us: ratio %.2f (target <= 1.5)\n",
         median(call, REPS), median(plain, REPS), median(r1, REPS));
  printf("llm: CPU per streamed call of 100 chunks %.0f us vs bare http with SSE %.0f us: ratio %.2f (target <= 1.5)\n",
         median(scall, REPS), median(splain, REPS), median(r2, REPS));

  /* 1000 concurrent calls, each its own run; memory sampled as the loop
   * turns: RSS, and the bytes malloc has handed out (RSS alone cannot show
   * what the calls take, once earlier parts have grown the heap: its free
   * chunks are reused before a new page is touched) */
  long rss_peak = rss_kib();
  size_t heap0 = mallinfo2().uordblks, heap_peak = heap0;
  mh_vm *vm = mh_vm_new(host, &host->limits, NULL);
  snprintf(code, sizeof code,
           "assert(llm.chat{model = 'openai/m', messages = {{role = 'user', content = 'hello [delay:50]'}}})");
  mh_vm_load(vm->L, code, strlen(code), "=bench", 0);
  counter c = {0, 0, 0};
  double t0 = now_us();
  enum { N = 1000 };
  for (int i = 0; i < N; i++) {
    lua_pushvalue(vm->L, -1);
    mh_run_start(vm, 0, count_done, &c);
  }
  while (c.done < N) {
    uv_run(host->loop, UV_RUN_ONCE);
    long now = rss_kib();
    if (now > rss_peak) rss_peak = now;
    size_t heap = mallinfo2().uordblks;
    if (heap > heap_peak) heap_peak = heap;
  }
  double wall = now_us() - t0;
  lua_pop(vm->L, 1);
  mh_vm_free(vm);
  printf("llm: 1000 concurrent calls (mock latency 50 ms, %s at a time per provider): %.0f calls/s, "
         "peak heap in use %.1f MiB above the start (%.0f bytes per call), peak RSS %.1f MiB, %d failed\n",
         getenv("MOONHIVE_LLM_CONCURRENCY") ? getenv("MOONHIVE_LLM_CONCURRENCY") : "32",
         N / (wall / 1e6), (double)(heap_peak - heap0) / (1 << 20), (double)(heap_peak - heap0) / N,
         rss_peak / 1024.0, c.failed);
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  host.limits.deadline_ns = 0;
  host.limits.cpu_ns = 0;
  const char *only = getenv("BENCH_ONLY");
  /* sleepers first: each repetition forks, and a fresh heap makes its RSS honest */
  if (!only || strstr(only, "sleep")) bench_sleepers(&host);
  if (!only || strstr(only, "state")) bench_state(&host);
  if (!only || strstr(only, "memory")) bench_suspended_run(&host);
  if (argc > 1 && (!only || strstr(only, "http"))) bench_http(&host, atoi(argv[1]));
  if (argc > 2 && (!only || strstr(only, "llm"))) bench_llm(&host, atoi(argv[2]));
  mh_host_close(&host);
  uv_loop_close(&loop);
  return 0;
}
