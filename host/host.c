/* host.c — the process context: loop, scheduler handle, stdlib and data
 * directories, and the orderly close of everything the host opened. */
#include "host.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mod_http.h"
#include "scheduler.h"

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* stdlib/ next to the binary (a checkout), else ../share/moonhive/stdlib
 * (an install), else MOONHIVE_STDLIB when set. */
static void find_stdlib(mh_host *host) {
  const char *env = getenv("MOONHIVE_STDLIB");
  if (env && *env) {
    snprintf(host->stdlib_dir, sizeof host->stdlib_dir, "%s", env);
    return;
  }
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  if (uv_exepath(exe, &len) != 0) return;
  char *slash = strrchr(exe, '/');
  if (slash == NULL) return;
  *slash = '\0';
  char candidate[PATH_MAX + 32];
  static const char *const forms[] = {"%s/stdlib", "%s/../../stdlib", "%s/../share/moonhive/stdlib"};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    snprintf(candidate, sizeof candidate, forms[i], exe);
    if (is_dir(candidate) && realpath(candidate, host->stdlib_dir)) return;
  }
}

int mh_host_init(mh_host *host, uv_loop_t *loop) {
  memset(host, 0, sizeof *host);
  host->loop = loop;
  mh_limits_default(&host->limits);
  mh_timers_init(&host->timers, loop);
  mh_sched_init(host);
  find_stdlib(host);
  const char *data = getenv("MOONHIVE_DATA");
  snprintf(host->data_dir, sizeof host->data_dir, "%s", data && *data ? data : ".moonhive");
  return 0;
}

int mh_host_ensure_data_dir(mh_host *host) {
  if (mkdir(host->data_dir, 0700) == 0 || errno == EEXIST) return 0;
  return -1;
}

static void close_leftover(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

void mh_host_close(mh_host *host) {
  mh_sched_close(host); /* first: runs still alive are cancelled and release their ops */
  if (host->http) {
    mh_http_shutdown(host->http);
    host->http = NULL;
  }
  mh_timers_close(&host->timers);
  uv_run(host->loop, UV_RUN_DEFAULT);
  /* Anything still open is a bug elsewhere; close it rather than leak. */
  uv_walk(host->loop, close_leftover, NULL);
  uv_run(host->loop, UV_RUN_DEFAULT);
}
