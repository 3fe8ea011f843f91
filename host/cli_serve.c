/* cli_serve.c — `moonhive serve [--host IP] [--port N] [--watch]`: the HTTP
 * service (server.h) on the host's loop until SIGTERM or SIGINT.
 *
 * At the start it loads the project's agents and workflows (and the shipped
 * ones) into the reload registry, listens, and resumes every unfinished
 * workflow run it can take over. On SIGTERM or SIGINT it stops accepting,
 * lets requests in flight finish and workflow runs reach their next
 * journaled point (within MOONHIVE_SHUTDOWN_GRACE_MS; then what is left is
 * cancelled, and a workflow run resumes at the next start), and exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "host.h"
#include "log.h"
#include "mod_launch.h"
#include "registry.h"
#include "runtime.h"
#include "scheduler.h"
#include "server.h"

const char mh_help_serve[] =
  "usage: moonhive serve [--host IP] [--port N] [--watch]\n"
  "\n"
  "Runs the HTTP service: the dashboard at /, the API under /v1, /health,\n"
  "/metrics. It listens on 127.0.0.1:8080 unless told otherwise (--port 0 picks\n"
  "a free port); the address and the dashboard's, with a key for this process\n"
  "only, are printed on stdout. Agents and workflows come from the project's\n"
  "agents/ and workflows/, then the ones shipped with moonhive; --watch reloads\n"
  "them as their files change (runs in flight keep their version). Unfinished\n"
  "workflow runs resume at the start; queued ones (run --enqueue) and those\n"
  "whose process died (lease expired) are taken every second. One JSON line per request goes to stderr\n"
  "(MOONHIVE_ACCESS_LOG=off to silence). SIGTERM or SIGINT stops accepting,\n"
  "lets requests in flight finish and workflow runs reach a journaled point\n"
  "(MOONHIVE_SHUTDOWN_GRACE_MS, default 10000, then they are cancelled) and\n"
  "exits 0. Runs get the limits of MOONHIVE_MEMORY_LIMIT (per definition),\n"
  "MOONHIVE_CPU_LIMIT and MOONHIVE_DEADLINE. Limits: MOONHIVE_HTTP_MAX_HEAD_BYTES,\n"
  "MOONHIVE_HTTP_MAX_HEADERS, MOONHIVE_HTTP_MAX_BODY_BYTES,\n"
  "MOONHIVE_HTTP_{HEAD,BODY,IDLE,SEND}_TIMEOUT_MS, MOONHIVE_HTTP_MAX_CONNECTIONS\n"
  "(see docs/service.md).\n";

#define POLL_MS 1000 /* how often the service looks for queued and abandoned workflow runs */

typedef struct serve_state {
  uv_signal_t term, intr;
  uv_timer_t grace;          /* for the launched runs to reach a journaled point */
  uv_timer_t poll;           /* every POLL_MS: queued and abandoned workflow runs */
  mh_host *host;
  mh_server *server;
  mh_launcher *launcher;     /* NULL without a registry */
  int stopping, stopped, grace_over;
  int resuming;              /* the automatic resume or a poll is under way */
  unsigned grace_ms;
  char last_failure[256];    /* the resume's or poll's last failure, as logged */
  uint64_t last_failure_at;  /* when it was logged (loop ms) */
  unsigned failure_repeats;  /* the same failure since, not logged */
} serve_state;

static void closed(void *ud) {
  serve_state *st = ud;
  st->stopped = 1;
}

static void grace_over(uv_timer_t *t) {
  serve_state *st = t->data;
  st->grace_over = 1;
}

/* [-0, +1, -] Calls module's fn() in the runtime at once (fn must not wait),
 * for one result: 0 with it on the runtime's stack, or -1 (logged, nothing
 * pushed). */
static int call_runtime(mh_host *host, const char *module, const char *fn) {
  char err[256];
  if (mh_runtime_push(host, module, fn, err, sizeof err) != 0) {
    mh_log(MH_LOG_ERROR, "serve: %s", err);
    return -1;
  }
  lua_State *R = host->runtime->L;
  if (lua_pcall(R, 0, 1, 0) != LUA_OK) {
    mh_log(MH_LOG_ERROR, "serve: %s.%s failed: %s", module, fn, lua_tostring(R, -1));
    lua_pop(R, 1);
    return -1;
  }
  return 0;
}

/* moonhive.service.launcher's fn(), its result dropped */
static void call_launcher(mh_host *host, const char *fn) {
  if (call_runtime(host, "moonhive.service.launcher", fn) == 0) lua_pop(host->runtime->L, 1);
}

/* The first SIGTERM or SIGINT starts the shutdown; later ones change nothing
 * (the grace period bounds it). */
static void on_signal(uv_signal_t *h, int signum) {
  serve_state *st = h->data;
  fprintf(stderr, "{\"level\":\"info\",\"event\":\"%s\",\"signal\":\"%s\",\"runs\":%d}\n",
          st->stopping ? "shutdown already under way" : "shutdown", signum == SIGTERM ? "SIGTERM" : "SIGINT",
          st->launcher ? mh_launcher_live(st->launcher) : 0);
  if (st->stopping) return;
  st->stopping = 1;
  uv_timer_stop(&st->poll);
  if (st->launcher) call_launcher(st->host, "drain"); /* workflow runs stop at their next journaled point */
  mh_server_shutdown(st->server, closed, st);
  uv_timer_start(&st->grace, grace_over, st->grace_ms, 0);
}

/* A new session key for this process (moonhive.service.keys.session):
 * 0 with key filled, or -1 (none: turned off, or it failed). */
static int session_key(mh_host *host, char *key, size_t len) {
  if (call_runtime(host, "moonhive.service.keys", "session") != 0) return -1;
  lua_State *R = host->runtime->L;
  int ok = lua_type(R, -1) == LUA_TSTRING;
  if (ok) snprintf(key, len, "%s", lua_tostring(R, -1));
  lua_pop(R, 1);
  return ok ? 0 : -1;
}

/* Logs a failure of the resume or the poll. The poll runs every second,
 * so a store that keeps failing the same way is logged once a minute (with
 * how often it failed meanwhile), not every second. */
#define FAILURE_QUIET_MS 60000
static void report_failure(serve_state *st, const char *msg) {
  uint64_t now = uv_now(st->host->loop);
  if (strncmp(msg, st->last_failure, sizeof st->last_failure - 1) == 0 &&
      now - st->last_failure_at < FAILURE_QUIET_MS) {
    st->failure_repeats++;
    return;
  }
  if (st->failure_repeats)
    mh_log(MH_LOG_ERROR, "serve: the failure before repeated %u more times", st->failure_repeats);
  mh_log(MH_LOG_ERROR, "serve: resuming unfinished workflow runs failed: %s", msg);
  snprintf(st->last_failure, sizeof st->last_failure, "%s", msg);
  st->last_failure_at = now;
  st->failure_repeats = 0;
}

static void resumed(mh_run *run, void *ud) {
  serve_state *st = ud;
  st->resuming = 0;
  lua_State *co = run->co;
  if (run->state != MH_RUN_OK) {
    report_failure(st, run->error ? run->error : "");
  } else if (run->nres >= 2 && lua_isnil(co, lua_gettop(co) - run->nres + 1)) {
    const char *msg = lua_tostring(co, lua_gettop(co) - run->nres + 2);
    report_failure(st, msg ? msg : "");
  } else if (run->nres >= 1 && lua_tointeger(co, lua_gettop(co) - run->nres + 1) > 0) {
    fprintf(stderr, "{\"level\":\"info\",\"event\":\"resumed\",\"runs\":%lld}\n",
            (long long)lua_tointeger(co, lua_gettop(co) - run->nres + 1));
  }
}

/* Starts moonhive.service.launcher's fn, a run of the runtime: resume_all
 * (every unfinished workflow run this process can take over) or poll (the
 * queued ones and those whose lease expired). One at a time. */
static void start_resume(serve_state *st, const char *fn) {
  char err[256];
  if (st->resuming || st->stopping) return;
  if (mh_runtime_push(st->host, "moonhive.service.launcher", fn, err, sizeof err) != 0) {
    mh_log(MH_LOG_ERROR, "serve: %s", err);
    return;
  }
  st->resuming = mh_run_start(st->host->runtime, 0, resumed, st) != NULL;
}

static void poll_tick(uv_timer_t *t) { start_resume(t->data, "poll"); }

/* Loads the agents and workflows (the registry's first reading) and opens
 * the launcher on them; without any, the service runs without them. */
static mh_registry *open_registry(serve_state *st, int watch) {
  char err[PATH_MAX + 256];
  mh_registry *reg = mh_registry_open(st->host, NULL, MH_REG_SHIPPED | (watch ? 0 : MH_REG_ONCE), NULL, NULL, err,
                                      sizeof err);
  if (reg == NULL) {
    mh_report(MH_LOG_WARN, "no agents or workflows", "%s", err);
    return NULL;
  }
  while (!mh_registry_ready(reg)) uv_run(st->host->loop, UV_RUN_ONCE);
  st->launcher = mh_launcher_new(st->host, reg);
  return reg;
}

static int parse_port(const char *v, int *port) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < 0 || n > 65535) return -1;
  *port = (int)n;
  return 0;
}

int mh_cmd_serve(int argc, char **argv) {
  const char *ip = "127.0.0.1";
  int port = 8080, watch = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--watch") == 0) {
      watch = 1;
    } else if ((strcmp(a, "--host") == 0 || strcmp(a, "--port") == 0) && i + 1 >= argc) {
      fprintf(stderr, "moonhive serve: %s needs a value\n", a);
      return 2;
    } else if (strcmp(a, "--host") == 0) {
      ip = argv[++i];
    } else if (strcmp(a, "--port") == 0) {
      if (parse_port(argv[++i], &port) != 0) {
        fprintf(stderr, "moonhive serve: --port expects a number from 0 to 65535, not '%s'\n", argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "moonhive serve: unknown option '%s' (see moonhive help serve)\n", a);
      return 2;
    }
  }
  char err[256];
  mh_server_limits limits;
  if (mh_server_limits_init(&limits, err, sizeof err) != 0) {
    fprintf(stderr, "moonhive serve: %s\n", err);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a client that hangs up mid-write is an error value, not a signal */
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  if (mh_cli_limits_init(&host.limits) != 0) {
    mh_host_close(&host);
    uv_loop_close(&loop);
    return 2;
  }
  mh_log_json(1); /* from here on stderr is the service's JSON log */
  serve_state st = {.host = &host};
  st.grace_ms = limits.shutdown_grace_ms;
  uv_timer_init(&loop, &st.grace);
  st.grace.data = &st;
  uv_timer_init(&loop, &st.poll);
  st.poll.data = &st;
  mh_registry *reg = open_registry(&st, watch);
  st.server = mh_server_new(&host, &limits);
  int code = 0;
  if (st.server == NULL) {
    fprintf(stderr, "moonhive serve: out of memory\n");
    code = 1;
  } else if (mh_server_listen(st.server, ip, port, err, sizeof err) != 0) {
    fprintf(stderr, "moonhive serve: %s\n", err);
    mh_server_shutdown(st.server, closed, &st);
    while (!st.stopped) uv_run(&loop, UV_RUN_ONCE);
    code = 1;
  } else {
    /* before the address is printed: whoever reads it may signal at once */
    uv_signal_init(&loop, &st.term);
    uv_signal_init(&loop, &st.intr);
    st.term.data = st.intr.data = &st;
    uv_signal_start(&st.term, on_signal, SIGTERM);
    uv_signal_start(&st.intr, on_signal, SIGINT);
    const char *fmt = strchr(ip, ':') ? "http://[%s]:%d/" : "http://%s:%d/";
    char url[128], key[128];
    snprintf(url, sizeof url, fmt, ip, mh_server_port(st.server));
    if (session_key(&host, key, sizeof key) == 0) printf("moonhive serving on %s (dashboard: %s#key=%s)\n", url, url, key);
    else printf("moonhive serving on %s (dashboard: %s)\n", url, url);
    fflush(stdout);
    if (st.launcher) {
      start_resume(&st, "resume_all");
      uv_timer_start(&st.poll, poll_tick, POLL_MS, POLL_MS);
    }
    fprintf(stderr, "{\"level\":\"info\",\"event\":\"listening\",\"url\":\"%s\"}\n", url);
    while (!st.stopped || (st.launcher && mh_launcher_live(st.launcher) > 0 && !st.grace_over))
      uv_run(&loop, UV_RUN_ONCE);
    if (st.launcher && mh_launcher_live(st.launcher) > 0) {
      fprintf(stderr, "{\"level\":\"warn\",\"event\":\"grace period over\",\"cancelled runs\":%d}\n",
              mh_launcher_live(st.launcher));
      mh_launcher_cancel_all(st.launcher);
      while (mh_launcher_live(st.launcher) > 0) uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&st.term, NULL);
    uv_close((uv_handle_t *)&st.intr, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    signal(SIGTERM, SIG_IGN); /* already stopping: a second signal must not cut the teardown short */
    signal(SIGINT, SIG_IGN);
  }
  uv_close((uv_handle_t *)&st.grace, NULL);
  uv_close((uv_handle_t *)&st.poll, NULL);
  mh_launcher_free(st.launcher);
  mh_registry_close(reg);
  mh_server_free(st.server);
  mh_host_close(&host);
  uv_loop_close(&loop);
  return code;
}
