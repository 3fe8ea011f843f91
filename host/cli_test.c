/* cli_test.c — `moonhive test [BUSTED OPTIONS] [PATHS...]`: runs a project's
 * busted specs with moonhive's test fixture (`require "moonhive.test"`,
 * testkit/moonhive/test.lua) on the Lua path.
 *
 * It finds busted on PATH, moves to the project ($MOONHIVE_PROJECT, else the
 * working directory), adds spec/ and tests/ (those that exist) when no path
 * is named, tells the fixture where this binary and the shipped folders are
 * (MOONHIVE_BIN, MOONHIVE_PROJECT, MOONHIVE_STDLIB, MOONHIVE_RUNTIME), and
 * becomes busted (execv): busted's exit status is the command's. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cli.h"
#include "host.h"

const char mh_help_test[] =
  "usage: moonhive test [BUSTED OPTIONS] [PATHS...]\n"
  "\n"
  "Runs the project's busted specs (default: spec/ and tests/, those that exist)\n"
  "with moonhive's test fixture: in a spec, `local mh = require \"moonhive.test\"`\n"
  "scripts a mock model's replies and tool calls, runs agents and scripts with\n"
  "this moonhive, and returns their output, tool calls and the requests the\n"
  "model received (docs/testing.md). The project is $MOONHIVE_PROJECT or the\n"
  "working directory; PATHS are relative to it. Options (-o TAP, --filter=NAME,\n"
  "-t TAG, ...) go to busted, which must be on PATH (Debian: lua-busted).\n"
  "The exit status is busted's: 0 when every spec passed.\n";

/* busted's options that take their value as the next argument */
static int takes_value(const char *opt) {
  static const char *const with_value[] = {
    "-p", "--pattern", "--exclude-pattern", "-e", "-o", "--output", "-C", "--directory", "-f",
    "--config-file", "--coverage-config-file", "-t", "--tags", "--exclude-tags", "--filter",
    "--filter-out", "-m", "--lpath", "--cpath", "-r", "--run", "--repeat", "--seed", "--lang",
    "--loaders", "--helper", "--lua", "-Xoutput", "-Xhelper", NULL};
  for (int i = 0; with_value[i]; i++)
    if (strcmp(opt, with_value[i]) == 0) return 1;
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The full path of an executable `prog` on PATH into out; 0, or -1 if none. */
static int find_on_path(const char *prog, char *out, size_t outlen) {
  const char *path = getenv("PATH");
  if (path == NULL) path = "/usr/local/bin:/usr/bin:/bin";
  for (const char *p = path;; p++) {
    const char *end = strchr(p, ':');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    struct stat st;
    int len = n ? snprintf(out, outlen, "%.*s/%s", (int)n, p, prog) : snprintf(out, outlen, "./%s", prog);
    if (len > 0 && (size_t)len < outlen && stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0)
      return 0;
    if (end == NULL) return -1;
    p = end;
  }
}

/* Puts DIR/?.lua and DIR/?/init.lua first on every Lua path variable that is
 * set, and on LUA_PATH (with ";;", the default path) when it is not, so the
 * fixture is found whichever Lua busted runs on. 0 or -1. */
static int prepend_lua_path(const char *dir) {
  static const char *const vars[] = {"LUA_PATH_5_4", "LUA_PATH_5_3", "LUA_PATH_5_2", "LUA_PATH"};
  char value[PATH_MAX * 3 + 4096];
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *old = getenv(vars[i]);
    if (old == NULL && strcmp(vars[i], "LUA_PATH") != 0) continue;
    int n = snprintf(value, sizeof value, "%s/?.lua;%s/?/init.lua;%s", dir, dir, old ? old : ";");
    if (n < 0 || (size_t)n >= sizeof value || setenv(vars[i], value, 1) != 0) return -1;
  }
  return 0;
}

int mh_cmd_test(int argc, char **argv) {
  char busted[PATH_MAX], testkit[PATH_MAX] = "", dir[PATH_MAX] = "", exe[PATH_MAX];
  if (find_on_path("busted", busted, sizeof busted) != 0) {
    fprintf(stderr, "moonhive: busted was not found on PATH; install it (Debian: apt-get install lua-busted, "
                    "or luarocks install busted)\n");
    return 1;
  }
  mh_find_shipped_dir("testkit", "MOONHIVE_TESTKIT", testkit, sizeof testkit);
  if (!testkit[0]) {
    fprintf(stderr, "moonhive: the test fixture (testkit/) was not found next to the binary or under "
                    "PREFIX/share/moonhive; set MOONHIVE_TESTKIT\n");
    return 1;
  }
  const char *project = getenv("MOONHIVE_PROJECT");
  if (project && *project && chdir(project) != 0) {
    fprintf(stderr, "moonhive: cannot enter the project %s: %s\n", project, strerror(errno));
    return 1;
  }
  size_t exelen = sizeof exe;
  if (getcwd(dir, sizeof dir) == NULL || uv_exepath(exe, &exelen) != 0 || setenv("MOONHIVE_PROJECT", dir, 1) != 0 ||
      setenv("MOONHIVE_BIN", exe, 1) != 0 || prepend_lua_path(testkit) != 0) {
    fprintf(stderr, "moonhive: cannot prepare the environment of the tests\n");
    return 1;
  }
  static const char *const shipped[][2] = {{"stdlib", "MOONHIVE_STDLIB"}, {"lua", "MOONHIVE_RUNTIME"}};
  for (size_t i = 0; i < 2; i++) {
    char found[PATH_MAX] = "";
    mh_find_shipped_dir(shipped[i][0], shipped[i][1], found, sizeof found);
    if (found[0]) setenv(shipped[i][1], found, 1);
  }

  int have_path = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      have_path = i + 1 < argc;
      break;
    }
    if (argv[i][0] == '-' && argv[i][1] != '\0') {
      if (takes_value(argv[i])) i++;
      continue;
    }
    have_path = 1;
  }
  int spec = !have_path && is_dir("spec"), tests = !have_path && is_dir("tests");
  if (!have_path && !spec && !tests) {
    fprintf(stderr, "moonhive: no spec/ or tests/ folder in %s; name the spec files or folders to run "
                    "(moonhive test PATH...)\n", dir);
    return 1;
  }
  char **args = calloc((size_t)argc + 4, sizeof *args);
  if (args == NULL) {
    fprintf(stderr, "moonhive: out of memory\n");
    return 1;
  }
  int n = 0;
  args[n++] = busted;
  for (int i = 0; i < argc; i++) args[n++] = argv[i];
  if (spec) args[n++] = (char *)"spec";
  if (tests) args[n++] = (char *)"tests";
  args[n] = NULL;
  fflush(stdout);
  execv(busted, args);
  fprintf(stderr, "moonhive: cannot run %s: %s\n", busted, strerror(errno));
  free(args);
  return 1;
}
