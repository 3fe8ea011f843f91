/* mod_launch.c — `require "launch"` (the trusted runtime only): the service
 * starts agent and workflow runs on the reload registry's current versions.
 *
 *   local h, err = launch.start{kind = "agent"|"workflow", path = REAL_PATH,
 *                               display = "agents/x.lua", input = JSON_TEXT, stream = bool}
 *   local h, err = launch.start{kind = "resume", id = RUN_ID, token = TOKEN}
 *       starts the run and waits until it has recorded itself (h:id()), or
 *       ended before that (nil and its error)
 *   h:id()          the recorded run's id
 *   h:wait()        waits for its end: its report (JSON text), or nil and the error
 *   h:tokens()      (stream = true) waits for model tokens: the text streamed
 *                   since the last call, or nil once the run has ended
 *   h:cancel()      asks the run to stop
 *   launch.live()   how many launched runs are running
 *
 * Sandboxes. The runs of one definition version share one sandbox (DESIGN:
 * a sandbox per definition, a coroutine per run): it is made on the first
 * launch with every current version pinned, the definition compiled once,
 * and kept until the registry changes (any file loads or goes), when the
 * next launch makes a new one and the old one is released to its runs.
 * Resumed workflow runs share one sandbox per registry generation.
 *
 * Ownership. A launch has two holds: its run (until the done callback) and
 * the runtime's handle (until collected); the last one frees it. A waiter
 * (one at a time) is an op of the runtime run that waits; it is released by
 * its continuation or its cancel hook. The stream function handed to the
 * sandbox reaches the launch through a box that the run's end empties, so a
 * script that keeps it can never reach freed memory. */
#include "mod_launch.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "log.h"
#include "membuf.h"
#include "runtime.h"
#include "scheduler.h"
#include "vm.h"

#define HANDLE_MT "moonhive.launch"
#define BOX_MT "moonhive.launch.stream"

typedef struct launch launch;

typedef struct slot {       /* a sandbox shared by the runs of one definition version */
  struct slot *next;
  mh_vm *vm;
  int entry_ref;            /* vm registry: the function each run starts with */
  unsigned long generation; /* the registry's, when it was made */
  char path[PATH_MAX];      /* the definition's real path; "" for resumes */
} slot;

struct mh_launcher {
  mh_host *host;
  mh_registry *reg;
  slot *slots;
  launch *live;             /* launches whose run is running */
  int nlive;
};

enum { WANT_ID, WANT_END, WANT_TOKENS };

typedef struct waiter {
  mh_op op;
  launch *l;
  int want;
} waiter;

typedef struct stream_box {
  launch *l;                /* NULL once the run has ended */
} stream_box;

struct launch {
  mh_launcher *owner;       /* NULL once the launcher is gone */
  launch *prev, *next;      /* in owner->live while the run runs */
  mh_run *run;              /* NULL once ended */
  mh_vm *vm;
  waiter *waiter;
  int handle;               /* the runtime's handle holds it */
  int ended, ok;
  char kind[16];
  char id[40];
  mh_membuf tokens;         /* streamed, not yet taken */
  char *result;             /* the report (ok) or the error, once ended */
  size_t result_len;
  stream_box *box;
  int box_ref;              /* vm registry: the box, while the run runs */
};

/* What every run starts with. Made once per sandbox from (chunk, source,
 * display, hash): the definition's text compiled, or nils for resumes; the
 * definition's top level runs inside the first run (under its limits). */
static const char entry_factory[] =
  "local chunk, source, display, hash = ...\n"
  "local def\n"
  "return function(kind, input_json, stream, id, token)\n"
  "  local json = require('json')\n"
  "  if kind == 'resume' then return json.encode(require('workflow').resume(id, token)) end\n"
  "  local input, err = json.decode(input_json)\n"
  "  if err then error('the input is not JSON: ' .. err, 0) end\n"
  "  if def == nil then def = chunk() end\n"
  "  if kind == 'agent' then\n"
  "    local agent = require('agent')\n"
  "    if not agent.is_agent(def) then error(display .. ' does not return an agent{}', 0) end\n"
  "    def.version = hash\n"
  "    local on_event = stream and function(ev) if ev.kind == 'token' then stream(ev.text) end end\n"
  "    local ok, out, report = pcall(def.run, def, input, { on_event = on_event })\n"
  "    if not ok then\n"
  "      return json.encode({ run_id = runs.current(), agent = def.name, status = 'failed', error = tostring(out) })\n"
  "    end\n"
  "    report.output = out\n"
  "    return json.encode(report)\n"
  "  end\n"
  "  local workflow = require('workflow')\n"
  "  if not workflow.is_workflow(def) then error(display .. ' does not return a workflow{}', 0) end\n"
  "  return json.encode(workflow.start(def, input, { source = source, path = display }))\n"
  "end\n";

/* ---- launches ---- */

static void launch_release(launch *l) {
  if (l->run || l->handle) return;
  mh_membuf_free(&l->tokens);
  free(l->result);
  free(l);
}

static void wake(launch *l, int why) {
  if (l->waiter && (l->ended || l->waiter->want == why)) mh_op_wake(&l->waiter->op);
}

/* The sandbox's run bound itself to its record (mh_runs_bind_record). */
static void on_record(mh_run *run, void *ud) {
  launch *l = ud;
  snprintf(l->id, sizeof l->id, "%s", run->record_id);
  run->on_record = NULL;
  wake(l, WANT_ID);
}

/* Tells the runtime (lua/moonhive/service/launcher.lua's ended) that the
 * run with id ended: ok, and the report or the error. */
static void tell_runtime(mh_host *host, const launch *l) {
  char err[256];
  if (mh_runtime_push(host, "moonhive.service.launcher", "ended", err, sizeof err) != 0) {
    mh_log(MH_LOG_ERROR, "serve: %s", err);
    return;
  }
  lua_State *R = host->runtime->L;                         /* R: ended */
  lua_pushstring(R, l->id);
  lua_pushstring(R, l->kind);
  lua_pushboolean(R, l->ok);
  lua_pushlstring(R, l->result ? l->result : "", l->result ? l->result_len : 0);
  if (lua_pcall(R, 4, 0, 0) != LUA_OK) {
    mh_log(MH_LOG_ERROR, "serve: recording the end of run %s failed: %s", l->id, lua_tostring(R, -1));
    lua_pop(R, 1);
  }
}

static void launch_done(mh_run *run, void *ud) {
  launch *l = ud;
  lua_State *co = run->co;
  const char *text = NULL;
  size_t len = 0;
  if (run->state == MH_RUN_OK && run->nres >= 1 && lua_type(co, lua_gettop(co) - run->nres + 1) == LUA_TSTRING) {
    text = lua_tolstring(co, lua_gettop(co) - run->nres + 1, &len);
    l->ok = 1;
  } else {
    text = run->error ? run->error : "the run failed";
    const char *cut = strstr(text, "\nstack traceback:");
    len = cut ? (size_t)(cut - text) : strlen(text);
  }
  l->result = malloc(len + 1);
  if (l->result) {
    memcpy(l->result, text, len);
    l->result[len] = '\0';
    l->result_len = len;
  }
  if (l->box) {
    l->box->l = NULL;
    luaL_unref(l->vm->L, LUA_REGISTRYINDEX, l->box_ref);
    l->box = NULL;
  }
  l->ended = 1;
  l->run = NULL;
  if (l->owner) {
    mh_launcher *o = l->owner;
    if (l->prev) l->prev->next = l->next;
    else o->live = l->next;
    if (l->next) l->next->prev = l->prev;
    o->nlive--;
    if (l->id[0]) tell_runtime(o->host, l);
  }
  wake(l, WANT_END);
  launch_release(l);
}

/* stream(text) in the sandbox [-1, +0, v]: model tokens for h:tokens() */
static int stream_tokens(lua_State *L) {
  stream_box *box = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  launch *l = box->l;
  if (l == NULL || len == 0) return 0;
  if (mh_membuf_append(&l->tokens, text, len) != 0) return luaL_error(L, "stream: out of memory");
  wake(l, WANT_TOKENS);
  return 0;
}

/* ---- sandboxes ---- */

static void slot_free(slot *s) {
  luaL_unref(s->vm->L, LUA_REGISTRYINDEX, s->entry_ref);
  mh_vm_release(s->vm);
  free(s);
}

/* [-0, +1, -] on the sandbox's stack: its entry function, made now. Returns
 * 0, or -1 with err filled and nothing pushed. */
static int make_entry(mh_launcher *o, mh_vm *vm, const char *path, const char *display, char *err, size_t errlen) {
  lua_State *L = vm->L;
  if (mh_vm_load(L, entry_factory, sizeof entry_factory - 1, "=service run", 0) != LUA_OK) {
    snprintf(err, errlen, "cannot prepare the run: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  char hash[65] = "";
  if (path[0]) {
    char chunkname[PATH_MAX + 2];
    snprintf(chunkname, sizeof chunkname, "@%s", display);
    int status = mh_registry_load(o->reg, path, L, chunkname, hash);
    if (status != LUA_OK) {
      if (status == -1) snprintf(err, errlen, "%s has no version that loads", display);
      else snprintf(err, errlen, "%s", lua_tostring(L, -1));
      lua_settop(L, 0);
      return -1;
    }
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  lua_pushstring(L, display);
  lua_pushstring(L, hash);                                /* factory chunk source display hash */
  if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
    snprintf(err, errlen, "cannot prepare the run: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  return 0;
}

/* The sandbox for runs of path ("" for resumes) on the registry's current
 * versions: the one made earlier, or a new one. NULL with err filled. */
static slot *slot_for(mh_launcher *o, const char *path, const char *display, char *err, size_t errlen) {
  unsigned long gen = mh_registry_generation(o->reg);
  for (slot **p = &o->slots; *p;) { /* sandboxes of older versions go to their runs */
    if ((*p)->generation != gen) {
      slot *old = *p;
      *p = old->next;
      slot_free(old);
    } else {
      if (strcmp((*p)->path, path) == 0) return *p;
      p = &(*p)->next;
    }
  }
  slot *s = calloc(1, sizeof *s);
  char *dir_copy = path[0] ? strdup(path) : NULL;
  mh_vm *vm = s ? mh_vm_new(o->host, &o->host->limits, dir_copy ? dirname(dir_copy) : NULL) : NULL;
  free(dir_copy);
  if (vm == NULL || mh_registry_pin(o->reg, vm) != 0) {
    snprintf(err, errlen, "cannot create a sandbox for %s (memory limit too small?)", display);
    if (vm) mh_vm_free(vm);
    free(s);
    return NULL;
  }
  if (make_entry(o, vm, path, display, err, errlen) != 0) {
    mh_vm_free(vm);
    free(s);
    return NULL;
  }
  s->entry_ref = luaL_ref(vm->L, LUA_REGISTRYINDEX);
  s->vm = vm;
  s->generation = gen;
  snprintf(s->path, sizeof s->path, "%s", path);
  s->next = o->slots;
  o->slots = s;
  return s;
}

/* ---- the launcher ---- */

mh_launcher *mh_launcher_new(mh_host *host, mh_registry *reg) {
  mh_launcher *o = calloc(1, sizeof *o);
  if (o == NULL) return NULL;
  o->host = host;
  o->reg = reg;
  host->launcher = o;
  return o;
}

int mh_launcher_live(const mh_launcher *o) {
  return o->nlive;
}

void mh_launcher_cancel_all(mh_launcher *o) {
  for (launch *l = o->live; l; l = l->next) mh_run_cancel(l->run, MH_BREAK_CANCEL);
}

void mh_launcher_free(mh_launcher *o) {
  if (o == NULL) return;
  for (launch *l = o->live; l; l = l->next) l->owner = NULL;
  while (o->slots) {
    slot *s = o->slots;
    o->slots = s->next;
    slot_free(s);
  }
  if (o->host->launcher == o) o->host->launcher = NULL;
  free(o);
}

/* ---- the handle ---- */

typedef struct handle_ud {
  launch *l;
} handle_ud;

static launch *check_handle(lua_State *L) {
  handle_ud *u = luaL_checkudata(L, 1, HANDLE_MT);
  if (u->l == NULL) luaL_error(L, "launch: this run handle is closed");
  return u->l;
}

static void waiter_release(mh_op *op) {
  waiter *w = (waiter *)op;
  mh_op_detach(op);
  if (w->l->waiter == w) w->l->waiter = NULL;
  free(w);
}

static const mh_op_type waiter_type = {"launch", waiter_release};

/* [-0, +(1|2), -] what h:wait() answers once the run has ended */
static int push_end(lua_State *L, launch *l) {
  if (l->ok && l->result) {
    lua_pushlstring(L, l->result, l->result_len);
    return 1;
  }
  luaL_pushfail(L);
  lua_pushstring(L, l->result ? l->result : "the run failed (out of memory)");
  return 2;
}

/* [-0, +(1|2), -] what h:tokens() answers when tokens are there or the run ended */
static int push_tokens(lua_State *L, launch *l) {
  if (l->tokens.len == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, l->tokens.data, l->tokens.len);
  mh_membuf_consume(&l->tokens, l->tokens.len);
  return 1;
}

/* [-0, +(1|2), -] what launch.start answers once the run has its id or ended */
static int push_started(lua_State *L, launch *l, int handle_idx) {
  if (l->id[0]) {
    lua_pushvalue(L, handle_idx);
    return 1;
  }
  luaL_pushfail(L);
  lua_pushstring(L, l->result ? l->result : "the run ended before it started");
  return 2;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  waiter *w = (waiter *)ctx;
  mh_op_resumed(L, &w->op); /* raises (after releasing w) if the waiting run was cancelled */
  launch *l = w->l;
  int want = w->want;
  waiter_release(&w->op);
  if (want == WANT_ID) return push_started(L, l, 1);
  if (want == WANT_TOKENS) return push_tokens(L, l);
  return push_end(L, l);
}

/* Waits (yields) until l's condition `want`; the handle stays at index 1. */
static int wait_for(lua_State *L, launch *l, int want, const char *what) {
  mh_run *run = mh_async_begin(L, what);
  if (l->waiter) return luaL_error(L, "%s: someone else waits for this run already", what);
  waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return luaL_error(L, "%s: out of memory", what);
  w->l = l;
  w->want = want;
  l->waiter = w;
  mh_op_attach(run, &w->op, &waiter_type);
  return mh_op_wait(L, &w->op, (lua_KContext)w, wait_k);
}

/* h:id() [-1, +1, v] */
static int handle_id(lua_State *L) {
  launch *l = check_handle(L);
  lua_pushstring(L, l->id);
  return 1;
}

/* h:wait() [-1, +(1|2), v] */
static int handle_wait(lua_State *L) {
  launch *l = check_handle(L);
  if (l->ended) return push_end(L, l);
  return wait_for(L, l, WANT_END, "launch:wait");
}

/* h:tokens() [-1, +1, v] */
static int handle_tokens(lua_State *L) {
  launch *l = check_handle(L);
  if (l->tokens.len > 0 || l->ended) return push_tokens(L, l);
  return wait_for(L, l, WANT_TOKENS, "launch:tokens");
}

/* h:cancel() [-1, +0, -] */
static int handle_cancel(lua_State *L) {
  launch *l = check_handle(L);
  if (l->run) mh_run_cancel(l->run, MH_BREAK_CANCEL);
  return 0;
}

static int handle_gc(lua_State *L) {
  handle_ud *u = luaL_checkudata(L, 1, HANDLE_MT);
  launch *l = u->l;
  u->l = NULL;
  if (l) {
    l->handle = 0;
    launch_release(l);
  }
  return 0;
}

/* ---- launch.start ---- */

static const char *opt_string(lua_State *L, const char *field) {
  lua_getfield(L, 1, field);
  const char *s = lua_tostring(L, -1); /* the table keeps it alive */
  lua_pop(L, 1);
  return s;
}

typedef struct start_args {  /* what a run of the sandbox starts with */
  launch *l;
  int entry_ref, stream;
  const char *kind, *input, *id, *token;
} start_args;

static void push_or_nil(lua_State *S, const char *s) {
  if (s) lua_pushstring(S, s);
  else lua_pushnil(S);
}

/* [-1, +6, m] lua_pcall target on the sandbox (whose memory cap may say no):
 * the entry function and its arguments (kind, input, stream, id, token);
 * the stream function's box is kept in the registry until the run ends. */
static int push_start_protected(lua_State *S) {
  start_args *a = lua_touserdata(S, 1);
  lua_settop(S, 0);
  lua_rawgeti(S, LUA_REGISTRYINDEX, a->entry_ref);
  push_or_nil(S, a->kind);
  push_or_nil(S, a->input);
  if (a->stream) {
    stream_box *box = lua_newuserdatauv(S, sizeof *box, 0);
    box->l = NULL;
    lua_pushvalue(S, -1);
    a->l->box_ref = luaL_ref(S, LUA_REGISTRYINDEX);
    a->l->box = box;
    box->l = a->l;
    lua_pushcclosure(S, stream_tokens, 1);
  } else {
    lua_pushnil(S);
  }
  push_or_nil(S, a->id);
  push_or_nil(S, a->token);
  return 6;
}

/* launch.start{...} [-1, +(1|2), v] */
static int launch_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  mh_launcher *o = mh_vm_of(L)->host->launcher;
  if (o == NULL) return luaL_error(L, "launch: the service's registry is not open");
  const char *kind = opt_string(L, "kind");
  int resume = kind && strcmp(kind, "resume") == 0;
  if (!kind || (!resume && strcmp(kind, "agent") != 0 && strcmp(kind, "workflow") != 0))
    return luaL_error(L, "launch.start: kind must be agent, workflow or resume");
  const char *path = resume ? "" : opt_string(L, "path");
  const char *display = resume ? "resumed runs" : opt_string(L, "display");
  const char *input = opt_string(L, "input");
  const char *id = opt_string(L, "id"), *token = opt_string(L, "token");
  lua_getfield(L, 1, "stream");
  int stream = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!path || !display || (!resume && !input) || (resume && (!id || !token)))
    return luaL_error(L, resume ? "launch.start: a resume needs id and token"
                                : "launch.start: path, display and input (JSON text) expected");
  mh_async_begin(L, "launch.start");
  char err[PATH_MAX + 256];
  slot *s = slot_for(o, path, display, err, sizeof err);
  if (s == NULL) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  launch *l = calloc(1, sizeof *l);
  handle_ud *u = lua_newuserdatauv(L, sizeof *u, 0);       /* the handle, index 2 */
  u->l = NULL;
  luaL_setmetatable(L, HANDLE_MT);
  if (l == NULL) return luaL_error(L, "launch.start: out of memory");
  lua_State *S = s->vm->L;
  snprintf(l->kind, sizeof l->kind, "%s", kind);
  l->vm = s->vm;
  l->box_ref = LUA_NOREF;
  start_args a = {l, s->entry_ref, stream, kind, input, id, token};
  int base = lua_gettop(S);
  mh_run *run = NULL;
  if (lua_checkstack(S, 8)) {
    lua_pushcfunction(S, push_start_protected);
    lua_pushlightuserdata(S, &a);
    if (lua_pcall(S, 1, 6, 0) == LUA_OK) run = mh_run_start(s->vm, 5, launch_done, l); /* pops the six */
  }
  if (run == NULL) {
    lua_settop(S, base);
    if (l->box) luaL_unref(S, LUA_REGISTRYINDEX, l->box_ref);
    free(l);
    luaL_pushfail(L);
    lua_pushfstring(L, "cannot start a run of %s: its sandbox's memory limit is reached (MOONHIVE_MEMORY_LIMIT)",
                    display);
    return 2;
  }
  run->on_record = on_record;
  run->on_record_ud = l;
  l->run = run;
  l->owner = o;
  l->next = o->live;
  if (o->live) o->live->prev = l;
  o->live = l;
  o->nlive++;
  l->handle = 1;
  u->l = l;
  lua_replace(L, 1);                                       /* the handle at index 1 */
  lua_settop(L, 1);
  return wait_for(L, l, WANT_ID, "launch.start");
}

/* launch.live() [-0, +1, -] */
static int launch_live(lua_State *L) {
  mh_launcher *o = mh_vm_of(L)->host->launcher;
  lua_pushinteger(L, o ? o->nlive : 0);
  return 1;
}

int luaopen_mh_launch(lua_State *L) {
  if (luaL_newmetatable(L, HANDLE_MT)) {
    static const luaL_Reg methods[] = {{"id", handle_id},       {"wait", handle_wait}, {"tokens", handle_tokens},
                                       {"cancel", handle_cancel}, {NULL, NULL}};
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "launch");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"start", launch_start}, {"live", launch_live}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
