/* scheduler.h — runs and async operations: the one place that resumes coroutines.
 *
 * A run is a coroutine of a vm with its own CPU budget and deadline. A native
 * async call (sleep, http) validates its arguments, calls mh_async_begin,
 * creates its operation, links it with mh_op_attach and returns
 * mh_op_wait(...): the coroutine yields a private sentinel up to the
 * scheduler. The native's completion calls mh_op_wake; the scheduler later
 * resumes the run from its ready queue, and the native's continuation calls
 * mh_op_resumed (which raises if the run was cancelled or broke a limit while
 * waiting, or if the op was released meanwhile) and pushes its results.
 *
 * Ownership. An op whose continuation can only run while the op is alive
 * (sleep, task.wait: the waiting coroutine is marked blocked, and a blocked
 * coroutine is never resumed by scripts again once its wait is cancelled)
 * may live in host memory that its cancel hook frees. An op that calls back
 * into script code (http's stream callbacks, inside which a script may yield
 * its coroutine and resume it much later) lives in a userdata from
 * mh_op_new, so a late continuation finds a released op, never freed memory.
 * The native owns what the op holds (timers, curl handles, buffers) and lets
 * it go in its type's cancel hook, which must call mh_op_detach. The
 * scheduler owns the link: when a run ends, every op still attached is
 * cancelled; a Lua-owned op collected while attached is cancelled too. */
#ifndef MH_SCHED_H
#define MH_SCHED_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "host.h"
#include "vm.h"

typedef struct mh_op mh_op;
typedef struct mh_run mh_run;

typedef struct mh_op_type {
  const char *name;            /* for log lines and errors: "sleep", "http" */
  void (*cancel)(mh_op *op);   /* stop the native work and detach (mh_op_detach); may free op */
} mh_op_type;

struct mh_op {
  const mh_op_type *type;
  mh_run *run;                 /* NULL once detached */
  mh_op *prev, *next;          /* in run->ops */
  int released;                /* detached for good: its native work is over */
};

typedef enum {
  MH_RUN_READY, MH_RUN_RUNNING, MH_RUN_WAITING,
  MH_RUN_OK, MH_RUN_ERROR, MH_RUN_CANCELLED
} mh_run_state;

typedef enum {
  MH_BREAK_NONE, MH_BREAK_MEMORY, MH_BREAK_CPU, MH_BREAK_DEADLINE, MH_BREAK_CANCEL,
  MH_BREAK_TOKENS, MH_BREAK_COST
} mh_break;

typedef void (*mh_run_done_fn)(mh_run *run, void *ud);

struct mh_run {
  unsigned long long id;
  mh_vm *vm;
  lua_State *co;               /* the run's coroutine (a thread of vm->L) */
  int co_ref;                  /* registry ref keeping co alive; LUA_NOREF once released */
  mh_run_state state;
  mh_break broken;             /* the limit this run broke, if any */
  int nargs;                   /* arguments waiting on co's stack for the first resume */
  int nres;                    /* results on co's stack once state is MH_RUN_OK */
  uint64_t cpu_used_ns, resumed_at_ns, cpu_budget_ns, deadline_at_ns;
  mh_timer deadline;           /* in host->timers while the run has a deadline */
  mh_op *ops;                  /* every op attached to this run */
  mh_op *waiting;              /* the op the coroutine is yielded on */
  mh_run *ready_next;          /* in host's ready queue */
  int queued;
  int started;                 /* resumed at least once */
  char *error;                 /* message and traceback once state is MH_RUN_ERROR/CANCELLED */
  mh_run_done_fn done;
  void *done_ud;
  mh_run *parent;              /* the run that spawned this one (task.spawn), or NULL */
  mh_run *children;            /* runs this one spawned that are still alive */
  mh_run *sibling_prev, *sibling_next;
  mh_run *live_prev, *live_next; /* in host->runs */
  uint64_t tokens_in, tokens_out;  /* model usage of this run and its tasks */
  double cost;
  int calls;
  char record_id[40];          /* the recorded agent run this run works for ("" if none); tasks inherit it */
  char record_step[24];        /* the workflow step attempt ("3.2.1#2") whose agent run records its model
                                * and tool calls ("" if none); tasks inherit it */
  double record_step_at;       /* when that attempt began (seconds since the epoch) */
  void (*on_record)(mh_run *run, void *ud); /* told once the run binds its record (mod_runs.c); not inherited */
  void *on_record_ud;
};

/* Adds a model call's usage to a run and every ancestor; returns the budget
 * it broke (MH_BREAK_TOKENS / MH_BREAK_COST, also set on the run), or
 * MH_BREAK_NONE. */
mh_break mh_run_add_usage(mh_run *run, uint64_t in, uint64_t out, double cost);

/* [-(nargs+1), +0, m] Starts a run of the function and arguments on top of
 * vm->L's stack. It first resumes on the next loop turn. `done` is called once
 * when the run ends (results are on run->co's stack for MH_RUN_OK); the run is
 * freed right after `done` returns. */
mh_run *mh_run_start(mh_vm *vm, int nargs, mh_run_done_fn done, void *ud);
/* [-(nargs+1), +0, m] Starts a child run of parent (same sandbox): it shares
 * the parent's deadline and is cancelled when the parent ends. */
mh_run *mh_run_spawn(mh_run *parent, int nargs, mh_run_done_fn done, void *ud);
/* Hands vm over to its runs: it is freed as soon as none of them is live
 * (at once when none is). The caller must not use vm afterwards. Used for a
 * sandbox per run (a reloaded version's run, a registry check). */
void mh_vm_release(mh_vm *vm);
/* Gives `run` (e.g. a call the runtime makes for a script) the CPU budget
 * and the deadline of `from`, so work done on a script's behalf is bounded
 * by that script's limits. */
void mh_run_inherit_limits(mh_run *run, const mh_run *from);
/* Asks a run to stop: it ends with "run cancelled" at its next instruction
 * or, when waiting, as soon as the loop turns. */
void mh_run_cancel(mh_run *run, mh_break reason);
/* The run a coroutine (or a coroutine it resumed) belongs to, or NULL. */
mh_run *mh_run_current(lua_State *L);
/* The error message for a broken limit ("CPU budget exceeded", ...). */
const char *mh_break_message(mh_vm *vm, mh_break reason, char *buf, size_t len);
/* [-0, +0, v] Raises the run's limit error. */
int mh_raise_broken(lua_State *L, mh_run *run);

/* For natives. [-0, +0, v] Checks that L may wait (inside a run, yieldable,
 * no limit broken) and returns the run; raises a clear error naming `what`. */
mh_run *mh_async_begin(lua_State *L, const char *what);
/* [-0, +1, m] Pushes a new Lua-owned op of `size` bytes (starting with its
 * mh_op) as a userdata and returns it zeroed, typed and not yet attached. */
void *mh_op_new(lua_State *L, size_t size, const mh_op_type *type);
/* The Lua-owned op in the userdata at stack index idx. */
mh_op *mh_op_at(lua_State *L, int idx);
/* Links an op to a run (no raising); type is set for host-memory ops. */
void mh_op_attach(mh_run *run, mh_op *op, const mh_op_type *type);
/* Unlinks an op from its run and marks it released; safe to call twice. */
void mh_op_detach(mh_op *op);
/* [-0, +0, -] Yields L until mh_op_wake(op); `k` continues with ctx (the op
 * itself for host-memory ops, its stack index for Lua-owned ones).
 * Use as `return mh_op_wait(L, op, ctx, k);`. */
int mh_op_wait(lua_State *L, mh_op *op, lua_KContext ctx, lua_KFunction k);
/* Marks an op complete (or progressed): resumes its run if it waits on it. */
void mh_op_wake(mh_op *op);
/* [-0, +0, v] Call first in a continuation: raises (after cancelling op) if
 * the run was cancelled or broke a limit while waiting; raises if the op was
 * released or belongs to another run (a coroutine resumed elsewhere). */
void mh_op_resumed(lua_State *L, mh_op *op);
/* [-0, +0, v] The checks of mh_op_resumed without the limit: the op is still
 * live and belongs to the run executing L. */
void mh_op_check_owner(lua_State *L, mh_op *op);

/* The sentinel value natives yield; coroutine wrappers pass it outward. */
extern const char mh_wait_sentinel;
/* Thread flags in the lua_State extra space. */
#define MH_THREAD_ROOT    ((uintptr_t)1)  /* a run's own coroutine */
#define MH_THREAD_BLOCKED ((uintptr_t)2)  /* waiting on a native op further down */
#define MH_THREAD_DEAD    ((uintptr_t)4)  /* its wait was cancelled: never resumable again */
uintptr_t *mh_thread_flags(lua_State *L);

/* Installs the idle handle that drains the ready queue. */
void mh_sched_init(mh_host *host);
/* Cancels every live run and turns the loop until all have ended, then
 * closes the scheduler's handle. */
void mh_sched_close(mh_host *host);

#endif
