/* cli_serve.c — `moonhive serve [--host IP] [--port N]`: the HTTP service
 * (server.h) on the host's loop until SIGTERM or SIGINT, then a graceful
 * shutdown: stop accepting, let requests in flight finish, exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "host.h"
#include "log.h"
#include "server.h"

const char mh_help_serve[] =
  "usage: moonhive serve [--host IP] [--port N]\n"
  "\n"
  "Runs the HTTP service: the API under /v1, /health, /metrics. It listens on\n"
  "127.0.0.1:8080 unless told otherwise (--port 0 picks a free port; the address\n"
  "is printed on stdout). One JSON line per request goes to stderr\n"
  "(MOONHIVE_ACCESS_LOG=off to silence). SIGTERM or SIGINT stops accepting,\n"
  "lets requests in flight finish (MOONHIVE_SHUTDOWN_GRACE_MS, default 10000,\n"
  "then they are cancelled) and exits 0. Limits: MOONHIVE_HTTP_MAX_HEAD_BYTES,\n"
  "MOONHIVE_HTTP_MAX_HEADERS, MOONHIVE_HTTP_MAX_BODY_BYTES,\n"
  "MOONHIVE_HTTP_{HEAD,BODY,IDLE,SEND}_TIMEOUT_MS, MOONHIVE_HTTP_MAX_CONNECTIONS\n"
  "(see docs/service.md).\n";

typedef struct serve_state {
  uv_signal_t term, intr;
  mh_server *server;
  int stopping, stopped;
} serve_state;

static void closed(void *ud) {
  serve_state *st = ud;
  st->stopped = 1;
}

/* The first SIGTERM or SIGINT starts the shutdown; later ones change nothing
 * (the grace period bounds it). */
static void on_signal(uv_signal_t *h, int signum) {
  serve_state *st = h->data;
  fprintf(stderr, "{\"level\":\"info\",\"event\":\"%s\",\"signal\":\"%s\"}\n",
          st->stopping ? "shutdown already under way" : "shutdown", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  if (st->stopping) return;
  st->stopping = 1;
  mh_server_shutdown(st->server, closed, st);
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
  int port = 8080;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "--host") == 0 || strcmp(a, "--port") == 0) && i + 1 >= argc) {
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
  serve_state st = {0};
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
    const char *fmt = strchr(ip, ':') ? "http://[%s]:%d/" : "http://%s:%d/";
    char url[128];
    snprintf(url, sizeof url, fmt, ip, mh_server_port(st.server));
    printf("moonhive serving on %s (dashboard: %s)\n", url, url);
    fflush(stdout);
    fprintf(stderr, "{\"level\":\"info\",\"event\":\"listening\",\"url\":\"%s\"}\n", url);
    uv_signal_init(&loop, &st.term);
    uv_signal_init(&loop, &st.intr);
    st.term.data = st.intr.data = &st;
    uv_signal_start(&st.term, on_signal, SIGTERM);
    uv_signal_start(&st.intr, on_signal, SIGINT);
    while (!st.stopped) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&st.term, NULL);
    uv_close((uv_handle_t *)&st.intr, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    signal(SIGTERM, SIG_IGN); /* already stopping: a second signal must not cut the teardown short */
    signal(SIGINT, SIG_IGN);
  }
  mh_server_free(st.server);
  mh_host_close(&host);
  uv_loop_close(&loop);
  return code;
}
