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
#include "runtime.h"
#include "scheduler.h"
#include "vm.h"

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void mh_find_shipped_dir(const char *name, const char *env_name, char *out, size_t outlen) {
  const char *env = getenv(env_name);
  if (env && *env) {
    snprintf(out, outlen, "%s", env);
    return;
  }
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  if (uv_exepath(exe, &len) != 0) return;
  char *slash = strrchr(exe, '/');
  if (slash == NULL) return;
  *slash = '\0';
  char candidate[PATH_MAX + 64];
  static const char *const forms[] = {"%s/%s", "%s/../../%s", "%s/../share/moonhive/%s"};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    snprintf(candidate, sizeof candidate, forms[i], exe, name);
    if (is_dir(candidate) && outlen >= PATH_MAX && realpath(candidate, out)) return;
  }
}

/* Provider keys and the JWT secret are read once into host memory.
 * Subprocesses the host starts get an empty environment, and scripts cannot
 * read the environment. */
static void read_secrets(mh_host *host) {
  static const char *const names[MH_SECRET_COUNT] = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MOONHIVE_JWT_SECRET"};
  for (int i = 0; i < MH_SECRET_COUNT; i++) {
    const char *v = getenv(names[i]);
    host->secrets[i] = v && *v ? strdup(v) : NULL;
  }
}

const char *mh_host_secret(mh_host *host, mh_secret_id id) {
  return host->secrets[id];
}

int mh_host_init(mh_host *host, uv_loop_t *loop) {
  memset(host, 0, sizeof *host);
  host->loop = loop;
  mh_limits_default(&host->limits);
  mh_timers_init(&host->timers, loop);
  mh_sched_init(host);
  mh_find_shipped_dir("stdlib", "MOONHIVE_STDLIB", host->stdlib_dir, sizeof host->stdlib_dir);
  mh_find_shipped_dir("lua", "MOONHIVE_RUNTIME", host->runtime_dir, sizeof host->runtime_dir);
  mh_find_shipped_dir("agents", "MOONHIVE_ROLES", host->roles_dir, sizeof host->roles_dir);
  read_secrets(host);
  const char *data = getenv("MOONHIVE_DATA");
  snprintf(host->data_dir, sizeof host->data_dir, "%s", data && *data ? data : ".moonhive");
  const char *project = getenv("MOONHIVE_PROJECT");
  if (project && *project) snprintf(host->project_dir, sizeof host->project_dir, "%s", project);
  else if (getcwd(host->project_dir, sizeof host->project_dir) == NULL) host->project_dir[0] = '\0';
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
  mh_runtime_shutdown(host);
  if (host->runtime) {
    mh_vm_free(host->runtime);
    host->runtime = NULL;
  }
  for (int i = 0; i < MH_SECRET_COUNT; i++) {
    if (host->secrets[i]) explicit_bzero(host->secrets[i], strlen(host->secrets[i]));
    free(host->secrets[i]);
    host->secrets[i] = NULL;
  }
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
