/* registry.c — hot reload's C side (see registry.h): the watched folders, a
 * check of each changed file in a sandbox of its own, and the calls that
 * keep the runtime's table (lua/moonhive/registry.lua) current.
 *
 * A check reads the file, names its text by SHA-256 (a text already seen
 * at that path is not checked again), compiles it and runs its top level
 * under a CPU budget and a deadline; the sandbox is released to that run
 * and freed when it ends. While a file is being checked, a further change
 * only marks it; the check's result then counts only if the file still
 * holds the text that was checked, else the file is checked again. */
#include "registry.h"

#include <ctype.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "log.h"
#include "mod_crypto.h"
#include "mod_versions.h"
#include "runtime.h"
#include "scheduler.h"
#include "watch.h"

#define MAX_ROOTS 5 /* agents/, workflows/, the shipped ones, the extra file */
#define CHECK_CPU_NS (5ull * 1000000000ull)        /* a file's top level gets at most this CPU... */
#define CHECK_DEADLINE_NS (10ull * 1000000000ull)  /* ...and this long */

typedef struct root {
  char dir[PATH_MAX];  /* the folder's real path */
  const char *kind;    /* what its files must return: "agent", "workflow" or "any" */
  char only[256];      /* "": every NAME.lua in it; else only this file */
  int shipped;         /* a folder shipped with moonhive */
} root;

typedef struct check {  /* one file being loaded in a sandbox of its own */
  mh_registry *reg;     /* NULL once the registry has closed */
  struct check *next;
  mh_run *run;          /* its top level running; NULL once ended */
  char *source;         /* the text (host memory, freed with the check) */
  size_t len;
  char hash[65];
  const char *kind;     /* what it must return */
  int again, initial;
  char path[PATH_MAX];
} check;

struct mh_registry {
  mh_host *host;
  mh_watch *watch;
  mh_registry_fn fn;
  void *ud;
  root roots[MAX_ROOTS];
  int nroots;
  check *checks;
  int initial_pending, ready, opening;
  unsigned long generation;
  char cwd[PATH_MAX];
  char file_real[PATH_MAX], file_display[PATH_MAX];
};

static void handle_file(mh_registry *reg, const char *path, const char *kind, int initial);

/* ---- names ---- */

/* How path is shown: the extra file as given, others relative to the
 * working folder when inside it. */
static const char *display_of(const mh_registry *reg, const char *path) {
  if (reg->file_real[0] && strcmp(path, reg->file_real) == 0) return reg->file_display;
  size_t n = strlen(reg->cwd);
  if (n > 1 && strncmp(path, reg->cwd, n) == 0 && path[n] == '/') return path + n + 1;
  return path;
}

/* The name runs use: the file's stem ("coder" for .../agents/coder.lua). */
static void stem_of(const char *path, char *out, size_t outlen) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t n = strlen(base);
  if (n > 4 && strcmp(base + n - 4, ".lua") == 0) n -= 4;
  snprintf(out, outlen, "%.*s", (int)n, base);
}

static int wanted(const root *r, const char *name) {
  size_t n = strlen(name);
  if (name[0] == '.' || n <= 4 || strcmp(name + n - 4, ".lua") != 0) return 0;
  return r->only[0] == '\0' || strcmp(name, r->only) == 0;
}

static const char *article_kind(const char *kind) {
  if (strcmp(kind, "agent") == 0) return "an agent{}";
  if (strcmp(kind, "workflow") == 0) return "a workflow{}";
  return "an agent{} or a workflow{}";
}

/* The line of the last `return` statement (what a file's definition is
 * returned from), or 1. */
static int last_return_line(const char *s, size_t len) {
  int line = 1, found = 1;
  size_t i = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && (s[j] == ' ' || s[j] == '\t')) j++;
    if (len - j >= 6 && memcmp(s + j, "return", 6) == 0 &&
        (len - j == 6 || !(s[j + 6] == '_' || isalnum((unsigned char)s[j + 6]))))
      found = line;
    while (i < len && s[i] != '\n') i++;
    i++;
    line++;
  }
  return found;
}

/* A check's error as "display:line: message": Lua's own position when the
 * message starts with the file, else the file's line in the traceback, else
 * the line of its last return (`return agent{...}` is a tail call, so a
 * definition's error has no frame of the file). */
static void format_error(const check *c, const char *display, const char *raw, char *out, size_t outlen) {
  /* An error raised at level 2 by agent{} / workflow{} lands, through the
   * tail calls, on the check's own stage: that position says nothing. */
  static const char stage[] = "reload check:";
  if (strncmp(raw, stage, sizeof stage - 1) == 0) {
    const char *rest = strstr(raw, ": ");
    if (rest) raw = rest + 2;
  }
  const char *cut = strstr(raw, "\nstack traceback:");
  int mlen = (int)(cut ? (size_t)(cut - raw) : strlen(raw));
  size_t dl = strlen(display);
  if ((size_t)mlen > dl && strncmp(raw, display, dl) == 0 && raw[dl] == ':') {
    snprintf(out, outlen, "%.*s", mlen, raw);
    return;
  }
  int line = 0;
  for (const char *p = cut; p && !line && (p = strstr(p, "\n\t")) != NULL; p += 2)
    if (strncmp(p + 2, display, dl) == 0 && p[2 + dl] == ':') line = atoi(p + 3 + dl);
  if (line <= 0) line = c->source ? last_return_line(c->source, c->len) : 1;
  snprintf(out, outlen, "%s:%d: %.*s", display, line, mlen, raw);
}

/* ---- the runtime's table ---- */

typedef struct rt_call {  /* one call of a moonhive.registry function */
  mh_registry *reg;
  const char *fn;
  const char *fields[9][2];  /* name, value (NULL values are left out) */
  const char *source;
  size_t len;
  int listed;
  int truthy;               /* what it returned: true? */
  char result[65];          /* ...a hash, or "" */
  char *text;               /* ...any string (malloc'd), when want_text */
  int want_text;
} rt_call;

/* [-0, +1, e] Pushes moonhive.registry's function fn on the runtime's stack. */
static void push_registry_fn(lua_State *R, mh_registry *reg, const char *fn) {
  char err[256];
  if (mh_runtime_push(reg->host, "moonhive.registry", fn, err, sizeof err) != 0) luaL_error(R, "%s", err);
}

/* [-1, +0, e] lua_pcall target in the runtime: registry[fn]{fields} */
static int rt_call_protected(lua_State *R) {
  rt_call *c = lua_touserdata(R, 1);
  push_registry_fn(R, c->reg, c->fn);
  lua_createtable(R, 0, 12);                            /* fn req */
  for (int i = 0; i < 9 && c->fields[i][0]; i++) {
    if (c->fields[i][1] == NULL) continue;
    lua_pushstring(R, c->fields[i][1]);
    lua_setfield(R, -2, c->fields[i][0]);
  }
  if (c->source) {
    lua_pushlstring(R, c->source, c->len);
    lua_setfield(R, -2, "source");
  }
  lua_pushboolean(R, c->listed);
  lua_setfield(R, -2, "listed");
  lua_call(R, 1, 1);                                    /* result */
  c->truthy = lua_toboolean(R, -1);
  if (lua_type(R, -1) == LUA_TSTRING) {
    snprintf(c->result, sizeof c->result, "%s", lua_tostring(R, -1));
    if (c->want_text) c->text = strdup(lua_tostring(R, -1));
  }
  return 0;
}

/* Runs fn(ud) protected on the runtime's main thread: 0, or -1 with err
 * filled (no runtime, or fn raised). */
static int in_runtime(mh_registry *reg, lua_CFunction fn, void *ud, char *err, size_t errlen) {
  mh_vm *rt = mh_runtime(reg->host, err, errlen);
  if (rt == NULL) return -1;
  lua_State *R = rt->L;
  lua_pushcfunction(R, fn);
  lua_pushlightuserdata(R, ud);
  if (lua_pcall(R, 1, 0, 0) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(R, -1));
    lua_pop(R, 1);
    return -1;
  }
  return 0;
}

/* Runs the call; 0, or -1 after logging why it failed. */
static int rt_run(rt_call *c) {
  char err[512];
  if (in_runtime(c->reg, rt_call_protected, c, err, sizeof err) == 0) return 0;
  mh_report(MH_LOG_ERROR, "reload", "the registry failed: %s", err);
  return -1;
}

static void notify(mh_registry *reg, mh_reg_event ev, const char *path) {
  if (ev == MH_REG_LOADED || ev == MH_REG_REMOVED) reg->generation++;
  if (!reg->opening && reg->fn) reg->fn(reg, ev, path, reg->ud);
}

/* ---- checks ---- */

static void check_free(check *c) {
  free(c->source);
  free(c);
}

static void unlink_check(mh_registry *reg, check *c) {
  for (check **p = &reg->checks; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      return;
    }
}

/* The first loading of every file has ended when the last initial check does. */
static void initial_done(mh_registry *reg, check *c) {
  if (!c->initial) return;
  c->initial = 0;
  if (--reg->initial_pending == 0) {
    reg->ready = 1;
    notify(reg, MH_REG_READY, NULL);
  }
}

/* A check has ended: kind is what the file returned, or error says why it
 * did not load. Updates the entry, reports, frees c. */
/* Is path in a folder shipped with moonhive? */
static int shipped_path(const mh_registry *reg, const char *path) {
  for (int i = 0; i < reg->nroots; i++) {
    size_t n = strlen(reg->roots[i].dir);
    if (reg->roots[i].shipped && strncmp(path, reg->roots[i].dir, n) == 0 && path[n] == '/') return 1;
  }
  return 0;
}

static void settle(check *c, const char *kind, const char *title, const char *description, const char *error) {
  mh_registry *reg = c->reg;
  const char *shipped = shipped_path(reg, c->path) ? "yes" : NULL;
  unlink_check(reg, c);
  if (c->again) { /* counts only if the file still holds what was checked */
    size_t len;
    char err[64], hash[65] = "";
    char *now = mh_read_file(c->path, &len, err, sizeof err);
    if (now) mh_sha256_hex(now, len, hash);
    free(now);
    if (strcmp(hash, c->hash) != 0) {
      rt_call forget = {.reg = reg, .fn = "seen", .fields = {{"path", c->path}}};
      rt_run(&forget); /* the next reading counts as new */
      char path[PATH_MAX];
      const char *want = c->kind;
      snprintf(path, sizeof path, "%s", c->path);
      initial_done(reg, c);
      check_free(c);
      handle_file(reg, path, want, 0);
      return;
    }
  }
  const char *display = display_of(reg, c->path);
  char name[256];
  stem_of(c->path, name, sizeof name);
  if (error == NULL) {
    rt_call call = {.reg = reg, .fn = "loaded", .source = c->source, .len = c->len,
                    .listed = strcmp(c->kind, "any") != 0,
                    .fields = {{"path", c->path}, {"display", display}, {"kind", kind}, {"name", name},
                               {"title", title}, {"description", description}, {"hash", c->hash},
                               {"shipped", shipped}}};
    if (rt_run(&call) == 0) {
      if (reg->ready)
        mh_report(MH_LOG_INFO, "reload", "%s: version %.12s loaded%s%.12s%s", display, c->hash,
                call.result[0] ? " (was " : "", call.result, call.result[0] ? ")" : "");
      notify(reg, MH_REG_LOADED, c->path);
    }
  } else {
    const char *want = strcmp(c->kind, "any") == 0 ? NULL : c->kind;
    rt_call call = {.reg = reg, .fn = "failed", .listed = want != NULL,
                    .fields = {{"path", c->path}, {"display", display}, {"kind", want}, {"name", name},
                               {"hash", c->hash}, {"error", error}, {"shipped", shipped}}};
    rt_run(&call);
    if (call.result[0]) mh_report(MH_LOG_WARN, "reload", "%s (keeping version %.12s)", error, call.result);
    else mh_report(MH_LOG_WARN, "reload", "%s (no version loaded)", error);
    notify(reg, MH_REG_FAILED, c->path);
  }
  fflush(stderr);
  initial_done(reg, c);
  check_free(c);
}

/* Fails check c with a message of the host's (not the file's). */
static void settle_host_error(check *c, const char *what) {
  char msg[PATH_MAX + 256];
  snprintf(msg, sizeof msg, "%s:1: %s", display_of(c->reg, c->path), what);
  settle(c, NULL, NULL, NULL, msg);
}

/* What the check's top level returned, or the run's error. */
static void check_done(mh_run *run, void *ud) {
  check *c = ud;
  c->run = NULL;
  if (c->reg == NULL) {
    check_free(c);
    return;
  }
  const char *display = display_of(c->reg, c->path);
  char msg[PATH_MAX + 1024], title[256] = "", description[1024] = "", kind[16] = "";
  if (run->state != MH_RUN_OK) {
    format_error(c, display, run->error ? run->error : "the check failed", msg, sizeof msg);
    settle(c, NULL, NULL, NULL, msg);
    return;
  }
  lua_State *co = run->co;
  int base = lua_gettop(co) - run->nres;
  if (run->nres >= 1 && lua_type(co, base + 1) == LUA_TSTRING) {
    snprintf(kind, sizeof kind, "%s", lua_tostring(co, base + 1));
    if (run->nres >= 2 && lua_type(co, base + 2) == LUA_TSTRING)
      snprintf(title, sizeof title, "%s", lua_tostring(co, base + 2));
    if (run->nres >= 3 && lua_type(co, base + 3) == LUA_TSTRING)
      snprintf(description, sizeof description, "%s", lua_tostring(co, base + 3));
  }
  int line = last_return_line(c->source, c->len);
  if (kind[0] == '\0') {
    const char *what = run->nres >= 2 && lua_type(co, base + 2) == LUA_TSTRING ? lua_tostring(co, base + 2) : "?";
    snprintf(msg, sizeof msg, "%s:%d: returns %s%s, not %s", display, line, strcmp(what, "nothing") == 0 ? "" : "a ",
             what, article_kind(c->kind));
  } else if (strcmp(c->kind, "any") != 0 && strcmp(kind, c->kind) != 0) {
    snprintf(msg, sizeof msg, "%s:%d: returns %s, not %s (files in %ss/ define %ss)", display, line,
             article_kind(kind), article_kind(c->kind), c->kind, c->kind);
  } else {
    settle(c, kind, title, description, NULL);
    return;
  }
  settle(c, NULL, NULL, NULL, msg);
}

static void discard_print(void *ud, const char *s, size_t len) {
  (void)ud, (void)s, (void)len;
}

/* The check's top level: what the file returns, classified. */
static const char check_stage[] =
  "local value = (...)()\n"
  "if require('agent').is_agent(value) then return 'agent', value.name, value.description end\n"
  "if require('workflow').is_workflow(value) then return 'workflow', value.name, value.description end\n"
  "return nil, value == nil and 'nothing' or type(value)\n";

/* Loads c's text into a new sandbox and starts its top level. */
static void check_start(mh_registry *reg, check *c) {
  mh_limits limits = reg->host->limits;
  if (limits.cpu_ns == 0 || limits.cpu_ns > CHECK_CPU_NS) limits.cpu_ns = CHECK_CPU_NS;
  if (limits.deadline_ns == 0 || limits.deadline_ns > CHECK_DEADLINE_NS) limits.deadline_ns = CHECK_DEADLINE_NS;
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", c->path);
  mh_vm *vm = mh_vm_new(reg->host, &limits, dirname(dir));
  if (vm == NULL) {
    settle_host_error(c, "cannot create a sandbox to load it (memory limit too small?)");
    return;
  }
  vm->print = discard_print;
  lua_State *L = vm->L;
  char chunkname[PATH_MAX + 2];
  snprintf(chunkname, sizeof chunkname, "@%s", display_of(reg, c->path));
  size_t skip = mh_shebang_len(c->source, c->len);
  if (mh_vm_load(L, check_stage, sizeof check_stage - 1, "=reload check", 0) != LUA_OK) {
    mh_vm_free(vm);
    settle_host_error(c, "cannot load it: memory limit too small");
    return;
  }
  if (mh_vm_load(L, c->source + skip, c->len - skip, chunkname, 0) != LUA_OK) {
    char msg[PATH_MAX + 1024];
    format_error(c, display_of(reg, c->path), lua_tostring(L, -1), msg, sizeof msg);
    mh_vm_free(vm);
    settle(c, NULL, NULL, NULL, msg);
    return;
  }
  c->run = mh_run_start(vm, 1, check_done, c);
  if (c->run == NULL) {
    mh_vm_free(vm);
    settle_host_error(c, "cannot run it: memory limit too small");
    return;
  }
  mh_vm_release(vm);
}

/* path changed (or is read for the first time): check it unless its text
 * was the last seen there; a file that is gone leaves the registry. */
static void handle_file(mh_registry *reg, const char *path, const char *kind, int initial) {
  for (check *c = reg->checks; c; c = c->next)
    if (strcmp(c->path, path) == 0) {
      c->again = 1;
      return;
    }
  char err[PATH_MAX + 128];
  size_t len = 0;
  char *text = mh_read_file(path, &len, err, sizeof err);
  if (text == NULL && access(path, F_OK) != 0) {
    rt_call call = {.reg = reg, .fn = "removed", .fields = {{"path", path}}};
    if (rt_run(&call) == 0 && call.result[0]) {
      mh_report(MH_LOG_INFO, "reload", "%s: removed (it was version %.12s)", display_of(reg, path), call.result);
      notify(reg, MH_REG_REMOVED, path);
    }
    return;
  }
  check *c = calloc(1, sizeof *c);
  if (c == NULL) {
    free(text);
    return;
  }
  c->reg = reg;
  c->source = text;
  c->len = len;
  c->kind = kind;
  c->initial = initial;
  snprintf(c->path, sizeof c->path, "%s", path);
  if (text) mh_sha256_hex(text, len, c->hash);
  rt_call seen = {.reg = reg, .fn = "seen", .fields = {{"path", path}, {"hash", c->hash}}};
  if (text && (rt_run(&seen) != 0 || !seen.truthy)) { /* nothing new */
    check_free(c);
    return;
  }
  c->next = reg->checks;
  reg->checks = c;
  if (initial) reg->initial_pending++;
  if (text == NULL) {
    char msg[sizeof err + 16];
    snprintf(msg, sizeof msg, "%s:1: %s", display_of(reg, path), err);
    settle(c, NULL, NULL, NULL, msg);
    return;
  }
  check_start(reg, c);
}

/* Reads root's folder again: every file in it, and every entry of it that
 * is gone. */
static void rescan(mh_registry *reg, const root *r, int initial) {
  char path[PATH_MAX];
  if (r->only[0]) {
    if (snprintf(path, sizeof path, "%s/%s", r->dir, r->only) < (int)sizeof path)
      handle_file(reg, path, r->kind, initial);
    return;
  }
  uv_fs_t req;
  if (uv_fs_scandir(reg->host->loop, &req, r->dir, 0, NULL) >= 0) {
    uv_dirent_t ent;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
      if (!wanted(r, ent.name) || ent.type == UV_DIRENT_DIR ||
          snprintf(path, sizeof path, "%s/%s", r->dir, ent.name) >= (int)sizeof path)
        continue;
      handle_file(reg, path, r->kind, initial);
    }
  }
  uv_fs_req_cleanup(&req);
  rt_call call = {.reg = reg, .fn = "paths", .want_text = 1, .fields = {{"dir", r->dir}}};
  if (rt_run(&call) != 0 || call.text == NULL) return;
  for (char *line = call.text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    if (access(line, F_OK) != 0) handle_file(reg, line, r->kind, 0);
  }
  free(call.text);
}

static void on_changes(mh_watch *w, const char *const *paths, int n, void *ud) {
  (void)w;
  mh_registry *reg = ud;
  for (int i = 0; i < n; i++) {
    const char *slash = strrchr(paths[i], '/');
    for (int k = 0; k < reg->nroots; k++) {
      const root *r = &reg->roots[k];
      if (strcmp(paths[i], r->dir) == 0) {
        rescan(reg, r, 0);
      } else if (slash && (size_t)(slash - paths[i]) == strlen(r->dir) &&
                 strncmp(paths[i], r->dir, (size_t)(slash - paths[i])) == 0 && wanted(r, slash + 1)) {
        handle_file(reg, paths[i], r->kind, 0);
      }
    }
  }
}

/* ---- opening and closing ---- */

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Adds root dir (resolved) unless it is one already; 1 if added. */
static int add_root(mh_registry *reg, const char *dir, const char *kind, const char *only, int shipped) {
  char real[PATH_MAX];
  if (reg->nroots == MAX_ROOTS || realpath(dir, real) == NULL || !is_dir(real)) return 0;
  for (int i = 0; i < reg->nroots; i++)
    if (strcmp(reg->roots[i].dir, real) == 0) return 0;
  root *r = &reg->roots[reg->nroots++];
  snprintf(r->dir, sizeof r->dir, "%s", real);
  r->kind = kind;
  snprintf(r->only, sizeof r->only, "%s", only ? only : "");
  r->shipped = shipped;
  return 1;
}

mh_registry *mh_registry_open(mh_host *host, const char *file, int flags, mh_registry_fn fn, void *ud, char *err,
                              size_t errlen) {
  mh_registry *reg = calloc(1, sizeof *reg);
  if (reg == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  reg->host = host;
  reg->fn = fn;
  reg->ud = ud;
  if (getcwd(reg->cwd, sizeof reg->cwd) == NULL) reg->cwd[0] = '\0';
  char dir[PATH_MAX + 16];
  snprintf(dir, sizeof dir, "%s/agents", host->project_dir);
  add_root(reg, dir, "agent", NULL, 0);
  snprintf(dir, sizeof dir, "%s/workflows", host->project_dir);
  add_root(reg, dir, "workflow", NULL, 0);
  if (flags & MH_REG_SHIPPED) {
    char shipped[PATH_MAX] = "";
    mh_find_shipped_dir("agents", "MOONHIVE_ROLES", shipped, sizeof shipped);
    if (shipped[0]) add_root(reg, shipped, "agent", NULL, 1);
    shipped[0] = '\0';
    mh_find_shipped_dir("workflows", "MOONHIVE_WORKFLOWS", shipped, sizeof shipped);
    if (shipped[0]) add_root(reg, shipped, "workflow", NULL, 1);
  }
  if (file) {
    char copy[PATH_MAX], base[PATH_MAX], real[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", file);
    snprintf(base, sizeof base, "%s", basename(copy));
    snprintf(copy, sizeof copy, "%s", file);
    const root dot_lua = {.kind = "any"};
    if (!wanted(&dot_lua, base) || realpath(dirname(copy), real) == NULL || !is_dir(real) ||
        snprintf(reg->file_real, sizeof reg->file_real, "%s/%s", real, base) >= (int)sizeof reg->file_real) {
      snprintf(err, errlen, "cannot watch %s: %s", file,
               wanted(&dot_lua, base) ? "its folder does not exist" : "the file's name must end in .lua");
      free(reg);
      return NULL;
    }
    snprintf(reg->file_display, sizeof reg->file_display, "%s", file);
    add_root(reg, real, "any", base, 0); /* unless agents/ or workflows/ holds it */
  }
  if (reg->nroots == 0) {
    snprintf(err, errlen, "nothing to watch: no agents/ or workflows/ folder in %s", host->project_dir);
    free(reg);
    return NULL;
  }
  reg->watch = mh_watch_new(host->loop, on_changes, reg);
  if (reg->watch == NULL) {
    snprintf(err, errlen, "out of memory");
    free(reg);
    return NULL;
  }
  for (int i = 0; i < reg->nroots && !(flags & MH_REG_ONCE); i++) {
    if (mh_watch_dir(reg->watch, reg->roots[i].dir, err, errlen) != 0) {
      mh_watch_close(reg->watch);
      free(reg);
      return NULL;
    }
  }
  reg->opening = 1;
  for (int i = 0; i < reg->nroots; i++) rescan(reg, &reg->roots[i], 1);
  reg->opening = 0;
  reg->ready = reg->initial_pending == 0;
  return reg;
}

void mh_registry_close(mh_registry *reg) {
  if (reg == NULL) return;
  mh_watch_close(reg->watch);
  for (check *c = reg->checks; c; c = c->next) {
    c->reg = NULL; /* its run's end frees it */
    if (c->run) mh_run_cancel(c->run, MH_BREAK_CANCEL);
  }
  free(reg);
}

int mh_registry_ready(const mh_registry *reg) {
  return reg->ready;
}

int mh_registry_polling(const mh_registry *reg) {
  return mh_watch_polling(reg->watch);
}

unsigned long mh_registry_generation(const mh_registry *reg) {
  return reg->generation;
}

const char *mh_registry_file(const mh_registry *reg) {
  return reg->file_real;
}

/* ---- starting runs on the current versions ---- */

typedef struct pin_call {
  mh_registry *reg;
  mh_vm *vm;
  int failed;
} pin_call;

/* [-1, +0, e] lua_pcall target in the runtime: every current version into the sandbox */
static int pins_protected(lua_State *R) {
  pin_call *p = lua_touserdata(R, 1);
  push_registry_fn(R, p->reg, "pins");
  lua_call(R, 0, 1);                                      /* list */
  for (lua_Integer i = 1; lua_rawgeti(R, -1, i) == LUA_TTABLE; i++) {
    lua_getfield(R, -1, "path");
    lua_getfield(R, -2, "source");
    lua_getfield(R, -3, "hash");                          /* list pin path source hash */
    size_t len;
    const char *source = lua_tolstring(R, -2, &len);
    if (mh_versions_pin(p->vm->L, lua_tostring(R, -3), source, len, lua_tostring(R, -1)) != 0) p->failed = 1;
    lua_pop(R, 4);                                        /* list */
  }
  return 0;
}

int mh_registry_pin(mh_registry *reg, mh_vm *vm) {
  char err[256];
  pin_call p = {reg, vm, 0};
  return in_runtime(reg, pins_protected, &p, err, sizeof err) != 0 || p.failed ? -1 : 0;
}

typedef struct load_call {
  mh_registry *reg;
  const char *path, *chunkname;
  lua_State *L;
  char *hash;
  int status;  /* -1 until something was pushed on L */
} load_call;

/* [-1, +0, e] lua_pcall target in the runtime: the entry's text compiled into L */
static int load_protected(lua_State *R) {
  load_call *lc = lua_touserdata(R, 1);
  push_registry_fn(R, lc->reg, "entry");
  lua_pushstring(R, lc->path);
  lua_call(R, 1, 1);                                      /* entry|nil */
  if (!lua_istable(R, -1) || lua_getfield(R, -1, "source") != LUA_TSTRING) return 0;
  lua_getfield(R, -2, "hash");                            /* entry source hash */
  snprintf(lc->hash, 65, "%s", lua_tostring(R, -1));
  size_t len;
  const char *source = lua_tolstring(R, -2, &len);
  size_t skip = mh_shebang_len(source, len);
  lc->status = mh_vm_load(lc->L, source + skip, len - skip, lc->chunkname, 0);
  if (lc->status == LUA_OK && mh_vm_pushtext(lc->L, source, len) != LUA_OK) {
    lua_pop(lc->L, 1);
    lc->status = -1;
  }
  return 0;
}

int mh_registry_load(mh_registry *reg, const char *path, lua_State *L, const char *chunkname, char hash[65]) {
  char err[256];
  load_call lc = {reg, path, chunkname, L, hash, -1};
  in_runtime(reg, load_protected, &lc, err, sizeof err); /* status says what reached L */
  return lc.status;
}
