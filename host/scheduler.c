/* scheduler.c — the scheduler: starts runs, owns every lua_resume of a run, links
 * async operations to runs, enforces deadlines while runs wait, and turns a
 * run's end into a result or one clear error with a traceback.
 *
 * Runs that are ready to continue sit in the host's ready queue; one uv_idle
 * handle (active only while the queue is non-empty) drains it, so no Lua code
 * ever runs inside a native callback (curl's, a timer's): callbacks only call
 * mh_op_wake. */
#include "scheduler.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "limits_check.h"
#include "log.h"

const char mh_wait_sentinel = 0;

static const char *const state_names[] = {"ready", "running", "waiting", "ok", "error", "cancelled"};

uintptr_t *mh_thread_flags(lua_State *L) {
  return (uintptr_t *)lua_getextraspace(L);
}

mh_run *mh_run_current(lua_State *L) {
  return mh_vm_of(L)->current;
}

/* ---- the ready queue ---- */

static void ready_drain(uv_idle_t *idle);

static void ready_push(mh_run *run) {
  if (run->queued) return;
  mh_host *host = run->vm->host;
  run->queued = 1;
  run->ready_next = NULL;
  if (host->ready_tail) host->ready_tail->ready_next = run;
  else host->ready_head = run;
  host->ready_tail = run;
  if (!uv_is_active((uv_handle_t *)&host->ready_idle)) uv_idle_start(&host->ready_idle, ready_drain);
}

void mh_sched_init(mh_host *host) {
  uv_idle_init(host->loop, &host->ready_idle);
  host->ready_idle.data = host;
}

void mh_sched_close(mh_host *host) {
  for (mh_run *run = host->runs; run; run = run->live_next) mh_run_cancel(run, MH_BREAK_CANCEL);
  while (host->live_runs > 0) uv_run(host->loop, UV_RUN_ONCE);
  uv_idle_stop(&host->ready_idle);
  uv_close((uv_handle_t *)&host->ready_idle, NULL);
}

/* ---- limits ---- */

const char *mh_break_message(mh_vm *vm, mh_break reason, char *buf, size_t len) {
  char amount[32];
  switch (reason) {
    case MH_BREAK_MEMORY:
      mh_format_size(vm->mem_limit, amount, sizeof amount);
      snprintf(buf, len, "memory limit of %s exceeded", amount);
      return buf;
    case MH_BREAK_CPU: return "CPU budget exceeded";
    case MH_BREAK_DEADLINE:
      mh_format_duration(vm->limits.deadline_ns, amount, sizeof amount);
      snprintf(buf, len, "deadline of %s exceeded", amount);
      return buf;
    case MH_BREAK_CANCEL: return "run cancelled";
    case MH_BREAK_TOKENS:
      snprintf(buf, len, "token budget of %llu exceeded", (unsigned long long)vm->limits.tokens);
      return buf;
    case MH_BREAK_COST:
      snprintf(buf, len, "cost budget of $%.4g exceeded", vm->limits.cost);
      return buf;
    default: return "no limit broken";
  }
}

int mh_raise_broken(lua_State *L, mh_run *run) {
  char buf[96];
  const char *msg = mh_break_message(run->vm, run->broken, buf, sizeof buf);
  /* Position: the Lua function running (inside a hook, level 0) or, from a
   * native, its caller. */
  lua_Debug ar;
  int level = (lua_getstack(L, 0, &ar) && lua_getinfo(L, "l", &ar) && ar.currentline > 0) ? 0 : 1;
  luaL_where(L, level);
  lua_pushstring(L, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

static void deadline_fired(mh_timer *timer) {
  mh_run *run = (mh_run *)((char *)timer - offsetof(mh_run, deadline));
  if (run->broken == MH_BREAK_NONE) run->broken = MH_BREAK_DEADLINE;
  if (run->state == MH_RUN_WAITING) ready_push(run);
}

/* ---- starting and ending runs ---- */

/* [-0, +2, m] lua_pcall target: a new thread and its registry ref. */
static int new_thread_protected(lua_State *L) {
  lua_newthread(L);
  lua_pushvalue(L, -1);
  lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
  return 2;
}

/* Threads of the trusted runtime are used again: a bridge call is a run
 * of its own, and making a thread, growing its stack and collecting it
 * cost about 8,000 instructions a call. Only a thread whose function
 * returned (nothing open on it) and that no script can hold goes back; a
 * sandbox's threads never do, since a script may keep one
 * (coroutine.running()) and would then see another run in it. */
#define SPARES_MAX ((int)(sizeof ((mh_vm *)0)->spare_refs / sizeof(int)))

static void spare_keep(mh_run *run) {
  mh_vm *vm = run->vm;
  lua_settop(run->co, 0);
  vm->spare_refs[vm->spares++] = run->co_ref;
  run->co_ref = LUA_NOREF;
}

/* [-0, +0, -] A spare thread for a new run (its ref in *ref), or NULL. */
static lua_State *spare_take(mh_vm *vm, int *ref) {
  if (vm->spares == 0) return NULL;
  *ref = vm->spare_refs[--vm->spares];
  lua_rawgeti(vm->L, LUA_REGISTRYINDEX, *ref);
  lua_State *co = lua_tothread(vm->L, -1);
  lua_pop(vm->L, 1);
  lua_sethook(co, lua_gethook(vm->L), lua_gethookmask(vm->L), lua_gethookcount(vm->L)); /* as a new one */
  return co;
}

mh_run *mh_run_start(mh_vm *vm, int nargs, mh_run_done_fn done, void *ud) {
  lua_State *L = vm->L;
  mh_run *run = calloc(1, sizeof *run);
  if (run != NULL && (run->co = spare_take(vm, &run->co_ref)) == NULL) {
    lua_pushcfunction(L, new_thread_protected);
    if (lua_pcall(L, 0, 2, 0) != LUA_OK) {
      free(run);
      run = NULL;
      lua_pop(L, 1);
    } else {
      run->co = lua_tothread(L, -2);
      run->co_ref = (int)lua_tointeger(L, -1);
      lua_pop(L, 2);
    }
  }
  if (run == NULL) {
    lua_pop(L, nargs + 1);
    return NULL;
  }
  if (!lua_checkstack(run->co, nargs + 1)) {
    luaL_unref(L, LUA_REGISTRYINDEX, run->co_ref);
    free(run);
    lua_pop(L, nargs + 1);
    return NULL;
  }
  lua_xmove(L, run->co, nargs + 1);
  *mh_thread_flags(run->co) = MH_THREAD_ROOT;
  run->vm = vm;
  run->id = ++vm->host->next_run_id;
  run->nargs = nargs;
  run->cpu_budget_ns = vm->limits.cpu_ns;
  run->done = done;
  run->done_ud = ud;
  run->state = MH_RUN_READY;
  mh_timer_init(&run->deadline, deadline_fired);
  if (vm->limits.deadline_ns) {
    run->deadline_at_ns = uv_hrtime() + vm->limits.deadline_ns;
    mh_timer_start(&vm->host->timers, &run->deadline, (vm->limits.deadline_ns + 999999) / 1000000);
  }
  vm->host->live_runs++;
  vm->live_runs++;
  run->live_next = vm->host->runs;
  if (vm->host->runs) vm->host->runs->live_prev = run;
  vm->host->runs = run;
  MH_DEBUG("run %llu start", run->id);
  ready_push(run);
  return run;
}

/* A run of the trusted runtime counts instructions only when it has limits
 * to keep (mh_vm_hook); sandbox threads always do. */
static void hook_if_limited(mh_run *run) {
  if (run->vm->trusted && (run->cpu_budget_ns || run->deadline_at_ns)) mh_vm_hook(run->co);
}

mh_run *mh_run_spawn(mh_run *parent, int nargs, mh_run_done_fn done, void *ud) {
  mh_run *run = mh_run_start(parent->vm, nargs, done, ud);
  if (run == NULL) return NULL;
  run->parent = parent;
  memcpy(run->record_id, parent->record_id, sizeof run->record_id);
  memcpy(run->record_step, parent->record_step, sizeof run->record_step);
  run->record_step_at = parent->record_step_at;
  run->sibling_next = parent->children;
  if (parent->children) parent->children->sibling_prev = run;
  parent->children = run;
  if (parent->deadline_at_ns) {
    uint64_t now = uv_hrtime();
    run->deadline_at_ns = parent->deadline_at_ns;
    mh_timer_start(&parent->vm->host->timers, &run->deadline,
                   parent->deadline_at_ns > now ? (parent->deadline_at_ns - now + 999999) / 1000000 : 0);
  }
  hook_if_limited(run);
  return run;
}

mh_break mh_run_add_usage(mh_run *run, uint64_t in, uint64_t out, double cost) {
  mh_break broke = MH_BREAK_NONE;
  const mh_limits *lim = &run->vm->limits;
  for (mh_run *r = run; r; r = r->parent) {
    r->tokens_in += in;
    r->tokens_out += out;
    r->cost += cost;
    r->calls++;
    mh_break over = MH_BREAK_NONE;
    if (lim->tokens && r->tokens_in + r->tokens_out > lim->tokens) over = MH_BREAK_TOKENS;
    else if (lim->cost > 0 && r->cost > lim->cost) over = MH_BREAK_COST;
    if (over == MH_BREAK_NONE) continue;
    if (broke == MH_BREAK_NONE) broke = over;
    /* The budget is the whole run's: an ancestor over it stops too. */
    if (r != run && r->broken == MH_BREAK_NONE) {
      r->broken = over;
      if (r->state == MH_RUN_WAITING) ready_push(r);
    }
  }
  if (broke != MH_BREAK_NONE && run->broken == MH_BREAK_NONE) run->broken = broke;
  return broke;
}

void mh_run_inherit_limits(mh_run *run, const mh_run *from) {
  run->cpu_budget_ns = from->cpu_budget_ns;
  if (from->deadline_at_ns) {
    uint64_t now = uv_hrtime();
    run->deadline_at_ns = from->deadline_at_ns;
    mh_timer_start(&run->vm->host->timers, &run->deadline,
                   from->deadline_at_ns > now ? (from->deadline_at_ns - now + 999999) / 1000000 : 0);
  }
  hook_if_limited(run);
}

/* Unlinks a run from its parent and cancels its own children. */
static void family_leave(mh_run *run) {
  mh_run *p = run->parent;
  if (p) {
    if (run->sibling_prev) run->sibling_prev->sibling_next = run->sibling_next;
    else p->children = run->sibling_next;
    if (run->sibling_next) run->sibling_next->sibling_prev = run->sibling_prev;
    run->parent = run->sibling_prev = run->sibling_next = NULL;
  }
  while (run->children) {
    mh_run *child = run->children;
    run->children = child->sibling_next;
    child->parent = child->sibling_prev = child->sibling_next = NULL;
    mh_run_cancel(child, MH_BREAK_CANCEL);
  }
}

/* [-0, +1, e] lua_pcall target: (thread, message) -> message with traceback */
static int traceback_protected(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_traceback(L, co, lua_touserdata(L, 2), 0);
  return 1;
}

/* Builds run->error from the error object on top of co's stack. */
/* Builds run->error from `message`, or else from the error object on top of
 * co's stack, plus a traceback. Allocates nothing on co. */
static void describe_error(mh_run *run, int status, const char *message) {
  mh_vm *vm = run->vm;
  lua_State *co = run->co;
  char buf[128], other[64];
  const char *msg;
  if (!message && run->broken == MH_BREAK_NONE && mh_vm_is_memory_error(co, status)) run->broken = MH_BREAK_MEMORY;
  if (message) {
    msg = message;
  } else if (run->broken == MH_BREAK_MEMORY || (run->broken != MH_BREAK_NONE && lua_type(co, -1) != LUA_TSTRING)) {
    msg = mh_break_message(vm, run->broken, buf, sizeof buf);
  } else if (lua_type(co, -1) == LUA_TSTRING) {
    msg = lua_tostring(co, -1);
  } else if (lua_type(co, -1) == LUA_TNUMBER) {
    if (lua_isinteger(co, -1)) snprintf(other, sizeof other, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(co, -1));
    else snprintf(other, sizeof other, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(co, -1));
    msg = other;
  } else {
    snprintf(other, sizeof other, "(error object is a %s value)", luaL_typename(co, -1));
    msg = other;
  }
  /* A task or runtime run cancelled by whoever started it (the usual end of
   * a watcher or a timer) needs no traceback: building one cost more than
   * the rest of such a run. */
  if (run->broken == MH_BREAK_CANCEL && (run->parent || vm->trusted)) {
    run->error = strdup(msg);
    return;
  }
  char *copy = strdup(msg);
  /* The traceback needs a little memory even when the run hit the cap. */
  size_t saved_limit = vm->mem_limit;
  if (saved_limit) vm->mem_limit = vm->mem_used + MH_ERROR_HEADROOM;
  lua_State *L = vm->L;
  lua_pushcfunction(L, traceback_protected);
  lua_rawgeti(L, LUA_REGISTRYINDEX, run->co_ref);
  lua_pushlightuserdata(L, copy ? copy : (char *)"error");
  if (lua_pcall(L, 2, 1, 0) == LUA_OK) run->error = strdup(lua_tostring(L, -1));
  lua_pop(L, 1);
  vm->mem_limit = saved_limit;
  if (run->error == NULL) run->error = copy, copy = NULL;
  free(copy);
}

static void run_finish(mh_run *run, mh_run_state state) {
  mh_vm *vm = run->vm;
  run->state = state;
  while (run->ops) {
    mh_op *op = run->ops;
    MH_DEBUG("run %llu cleanup %s", run->id, op->type->name);
    op->type->cancel(op); /* detaches (and may free) op */
    assert(run->ops != op);
  }
  run->waiting = NULL;
  mh_timer_stop(&vm->host->timers, &run->deadline);
  family_leave(run);
  *mh_thread_flags(run->co) = MH_THREAD_ROOT; /* still: scripts may never resume it */
  vm->host->live_runs--;
  vm->live_runs--;
  if (run->live_prev) run->live_prev->live_next = run->live_next;
  else vm->host->runs = run->live_next;
  if (run->live_next) run->live_next->live_prev = run->live_prev;
  MH_DEBUG("run %llu done %s", run->id, state_names[state]);
  vm->finishing++;
  if (run->done) run->done(run, run->done_ud);
  vm->finishing--;
  if (vm->trusted && state == MH_RUN_OK && lua_status(run->co) == LUA_OK && vm->spares < SPARES_MAX)
    spare_keep(run);
  luaL_unref(vm->L, LUA_REGISTRYINDEX, run->co_ref); /* (LUA_NOREF when kept: a no-op) */
  run->co_ref = LUA_NOREF;
  free(run->error);
  free(run);
  if (vm->released && vm->live_runs == 0 && vm->finishing == 0) mh_vm_free(vm);
}

void mh_vm_release(mh_vm *vm) {
  vm->released = 1;
  if (vm->live_runs == 0 && vm->finishing == 0) mh_vm_free(vm);
}

static void run_fail(mh_run *run, int status, const char *message) {
  describe_error(run, status, message);
  run_finish(run, run->broken == MH_BREAK_CANCEL ? MH_RUN_CANCELLED : MH_RUN_ERROR);
}

/* Resumes a run; *clock is the time now (ns) and is updated to the time after. */
static void run_resume(mh_run *run, uint64_t *clock) {
  mh_vm *vm = run->vm;
  lua_State *co = run->co;
  if (run->broken != MH_BREAK_NONE && !run->started) {
    /* Stopped before it ever ran. */
    char buf[96];
    run_fail(run, LUA_ERRRUN, mh_break_message(vm, run->broken, buf, sizeof buf));
    return;
  }
  mh_vm_collect_if_near_cap(vm, vm->L);
#ifdef MH_STACK_CHECKS
  int main_top = lua_gettop(vm->L);
#endif
  int nargs = run->nargs, nres = 0;
  run->nargs = 0;
  run->started = 1;
  run->state = MH_RUN_RUNNING;
  mh_run *outer = vm->current;
  vm->current = run;
  MH_DEBUG("run %llu resume", run->id);
  run->resumed_at_ns = *clock;
  int status = lua_resume(co, NULL, nargs, &nres);
  *clock = uv_hrtime();
  run->cpu_used_ns += *clock - run->resumed_at_ns;
  vm->current = outer;
#ifdef MH_STACK_CHECKS
  assert(lua_gettop(vm->L) == main_top);
#endif
  if (status == LUA_YIELD) {
    int is_wait = nres == 1 && lua_touserdata(co, -1) == &mh_wait_sentinel && run->waiting;
    lua_pop(co, nres);
    if (is_wait) {
      run->state = MH_RUN_WAITING;
      MH_DEBUG("run %llu yield %s", run->id, run->waiting->type->name);
      return;
    }
    run_fail(run, LUA_ERRRUN, "attempt to yield from outside a coroutine (use coroutine.wrap to make one)");
    return;
  }
  if (status == LUA_OK) {
    run->nres = nres;
    run_finish(run, MH_RUN_OK);
    return;
  }
  run_fail(run, status, NULL);
}

static void ready_drain(uv_idle_t *idle) {
  mh_host *host = idle->data;
  /* Take the current batch; runs made ready meanwhile wait for the next turn. */
  mh_run *run = host->ready_head;
  host->ready_head = host->ready_tail = NULL;
  uint64_t clock = uv_hrtime();
  while (run) {
    mh_run *next = run->ready_next;
    run->queued = 0;
    run->ready_next = NULL;
    run_resume(run, &clock);
    run = next;
  }
  if (host->ready_head == NULL) uv_idle_stop(idle);
}

void mh_run_cancel(mh_run *run, mh_break reason) {
  if (run->state >= MH_RUN_OK) return;
  if (run->broken == MH_BREAK_NONE) run->broken = reason;
  MH_DEBUG("run %llu cancel", run->id);
  if (run->state == MH_RUN_WAITING) ready_push(run);
}

/* ---- async operations ---- */

mh_run *mh_async_begin(lua_State *L, const char *what) {
  mh_run *run = mh_run_current(L);
  if (run == NULL) luaL_error(L, "%s can only be called while a script runs", what);
  /* A broken limit or an interrupt stops the run here; the clock-based
   * limits are the hook's and the deadline timer's job (no clock read per call). */
  mh_host *host = run->vm->host;
  if (run->broken == MH_BREAK_NONE && host->interrupt && *host->interrupt) {
    *host->interrupt = 0;
    run->broken = MH_BREAK_CANCEL;
  }
  if (run->broken != MH_BREAK_NONE) mh_raise_broken(L, run);
  if (!lua_isyieldable(L))
    luaL_error(L, "%s cannot wait here: it was called from a metamethod, iterator, sort "
                  "comparator or module body; call it from plain script code", what);
  return run;
}

static const char OP_MT = 0; /* registry: metatable of op userdata */

/* __gc of an op: one collected while still attached is cancelled. */
static int op_gc(lua_State *L) {
  mh_op *op = lua_touserdata(L, 1);
  if (op && !op->released && op->type) op->type->cancel(op);
  return 0;
}

void *mh_op_new(lua_State *L, size_t size, const mh_op_type *type) {
  mh_op *op = lua_newuserdatauv(L, size, 0);
  memset(op, 0, size);
  op->type = type;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &OP_MT) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OP_MT);
  }
  lua_setmetatable(L, -2);
  return op;
}

mh_op *mh_op_at(lua_State *L, int idx) {
  return lua_touserdata(L, idx);
}

void mh_op_attach(mh_run *run, mh_op *op, const mh_op_type *type) {
  if (type) op->type = type;
  op->released = 0;
  op->run = run;
  op->prev = NULL;
  op->next = run->ops;
  if (run->ops) run->ops->prev = op;
  run->ops = op;
}

void mh_op_detach(mh_op *op) {
  mh_run *run = op->run;
  op->released = 1;
  if (run == NULL) return;
  if (op->prev) op->prev->next = op->next;
  else run->ops = op->next;
  if (op->next) op->next->prev = op->prev;
  if (run->waiting == op) run->waiting = NULL;
  op->run = NULL;
  op->prev = op->next = NULL;
}

int mh_op_wait(lua_State *L, mh_op *op, lua_KContext ctx, lua_KFunction k) {
  op->run->waiting = op;
  lua_pushlightuserdata(L, (void *)&mh_wait_sentinel);
  return lua_yieldk(L, 1, ctx, k);
}

void mh_op_wake(mh_op *op) {
  mh_run *run = op->run;
  if (run && run->waiting == op && run->state == MH_RUN_WAITING) ready_push(run);
}

void mh_op_check_owner(lua_State *L, mh_op *op) {
  if (op->released || op->run == NULL)
    luaL_error(L, "this %s call was cancelled (its run ended or it could not wait)", op->type->name);
  if (op->run != mh_run_current(L))
    luaL_error(L, "a coroutine waiting in %s cannot be continued from another run", op->type->name);
}

void mh_op_resumed(lua_State *L, mh_op *op) {
  mh_op_check_owner(L, op);
  mh_run *run = op->run;
  if (run->waiting == op) run->waiting = NULL;
  if (run->broken != MH_BREAK_NONE) {
    op->type->cancel(op); /* detaches and may free op: do not touch it after */
    mh_raise_broken(L, run);
  }
}
