/* semaphore.c — task.semaphore(n): at most n holders at once, in any runs of
 * one state; the others wait their turn in order.
 *
 *   local sem = task.semaphore(4)
 *   sem:acquire()      -- waits while 4 permits are held
 *   ...                -- the work
 *   sem:release()
 *
 * A permit is an op attached to the run that holds it, so a run that ends or
 * is cancelled while holding (or waiting for) a permit gives it back: no
 * permit leaks, whatever the script does. Used by the LLM runtime for the
 * per-provider concurrency limit. */
#include <stdlib.h>

#include <lauxlib.h>

#include "mod_task.h"
#include "scheduler.h"

static const char SEM_MT = 0; /* registry: metatable of semaphores */

typedef struct semaphore semaphore;

typedef struct permit {      /* host memory; its continuation runs only while it lives */
  mh_op op;
  semaphore *sem;
  lua_State *state;           /* the state's main thread, to let go of sem_ref */
  int sem_ref;                /* keeps the semaphore alive while the permit exists */
  struct permit *prev, *next; /* in sem's queue while waiting */
  int held;
} permit;

struct semaphore {           /* a userdata: alive while any holder's stack refers to it */
  lua_Integer free;
  permit *head, *tail;
};

static void unqueue(permit *p) {
  semaphore *s = p->sem;
  if (p->prev) p->prev->next = p->next;
  else s->head = p->next;
  if (p->next) p->next->prev = p->prev;
  else s->tail = p->prev;
  p->prev = p->next = NULL;
}

/* A permit came free: the first waiter gets it, else it is counted. */
static void pass_on(semaphore *s) {
  permit *next = s->head;
  if (next == NULL) {
    s->free++;
    return;
  }
  unqueue(next);
  next->held = 1;
  mh_op_wake(&next->op);
}

/* The one release point of a permit (held or waiting): detach, hand on, free. */
static void permit_release(mh_op *op) {
  permit *p = (permit *)op;
  mh_op_detach(op);
  if (p->held) pass_on(p->sem);
  else unqueue(p);
  luaL_unref(p->state, LUA_REGISTRYINDEX, p->sem_ref);
  free(p);
}

static const mh_op_type permit_type = {"semaphore", permit_release};

static semaphore *check_sem(lua_State *L) { return mh_task_check(L, 1, &SEM_MT, "semaphore"); }

static int acquire_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  permit *p = (permit *)ctx;
  mh_op_resumed(L, &p->op); /* raises (releasing p) if the run was stopped meanwhile */
  return 0;                 /* held: it stays attached until release or the run's end */
}

/* sem:acquire() [-1, +0, v] */
static int sem_acquire(lua_State *L) {
  semaphore *s = check_sem(L);
  mh_run *run = mh_async_begin(L, "semaphore:acquire");
  lua_settop(L, 1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);          /* the permit keeps sem alive */
  permit *p = calloc(1, sizeof *p);
  if (p == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "semaphore: out of memory");
  }
  p->sem = s;
  p->sem_ref = ref;
  p->state = run->vm->L;
  mh_op_attach(run, &p->op, &permit_type);
  if (s->free > 0 && s->head == NULL) {
    s->free--;
    p->held = 1;
    return 0;
  }
  p->prev = s->tail;
  if (s->tail) s->tail->next = p;
  else s->head = p;
  s->tail = p;
  return mh_op_wait(L, &p->op, (lua_KContext)p, acquire_k);
}

/* sem:release() [-1, +0, v]: gives back a permit this run holds */
static int sem_release(lua_State *L) {
  semaphore *s = check_sem(L);
  mh_run *run = mh_run_current(L);
  for (mh_op *op = run ? run->ops : NULL; op; op = op->next) {
    if (op->type == &permit_type && ((permit *)op)->sem == s && ((permit *)op)->held) {
      permit_release(op);
      return 0;
    }
  }
  return luaL_error(L, "semaphore:release: this run holds no permit of this semaphore");
}

/* sem:available() -> permits free now [-1, +1, v] */
static int sem_available(lua_State *L) {
  lua_pushinteger(L, check_sem(L)->free);
  return 1;
}

/* task.semaphore(n) [-1, +1, e] */
int mh_task_semaphore(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1, 1, "at least one permit");
  semaphore *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->free = n;
  s->head = s->tail = NULL;
  static const luaL_Reg methods[] = {
    {"acquire", sem_acquire}, {"release", sem_release}, {"available", sem_available}, {NULL, NULL}};
  mh_task_set_mt(L, &SEM_MT, "semaphore", methods);
  return 1;
}
