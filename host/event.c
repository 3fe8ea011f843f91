/* event.c — task.event(): a one-shot latch any run of one state can wait
 * on, and any run can set.
 *
 *   local ev = task.event()
 *   ev:wait()          -- waits until someone calls ev:set() (at once if set)
 *   ev:set()           -- wakes every waiter; the event stays set
 *   ev:is_set()
 *
 * Unlike a semaphore, whoever sets the event need not have waited on it:
 * it is how one task (the runtime's workflow watch loop) wakes the runs
 * that wait for news of their workflow run. A waiter is an op attached to
 * the run that waits, so a run that ends or is cancelled while waiting
 * simply leaves the queue. */
#include <stdlib.h>

#include <lauxlib.h>

#include "mod_task.h"
#include "scheduler.h"

static const char EVENT_MT = 0; /* registry: metatable of events */

typedef struct event event;

typedef struct waiter {       /* host memory; its continuation runs only while it lives */
  mh_op op;
  event *ev;
  lua_State *state;           /* the state's main thread, to let go of ev_ref */
  int ev_ref;                 /* keeps the event alive while the waiter exists */
  struct waiter *prev, *next; /* in ev's queue */
} waiter;

struct event {                /* a userdata: alive while a script or a waiter refers to it */
  int set;
  waiter *head;
};

/* The one release point of a waiter (woken or cancelled): unlink, free. */
static void waiter_release(mh_op *op) {
  waiter *w = (waiter *)op;
  mh_op_detach(op);
  if (w->prev) w->prev->next = w->next;
  else if (w->ev->head == w) w->ev->head = w->next;
  if (w->next) w->next->prev = w->prev;
  luaL_unref(w->state, LUA_REGISTRYINDEX, w->ev_ref);
  free(w);
}

static const mh_op_type waiter_type = {"event", waiter_release};

static event *check_event(lua_State *L) { return mh_task_check(L, 1, &EVENT_MT, "event"); }

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  waiter *w = (waiter *)ctx;
  mh_op_resumed(L, &w->op); /* raises (releasing w) if the run was stopped meanwhile */
  waiter_release(&w->op);
  return 0;
}

/* ev:wait() [-1, +0, v] */
static int event_wait(lua_State *L) {
  event *ev = check_event(L);
  if (ev->set) return 0;
  mh_run *run = mh_async_begin(L, "event:wait");
  lua_settop(L, 1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);          /* the waiter keeps ev alive */
  waiter *w = calloc(1, sizeof *w);
  if (w == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "event: out of memory");
  }
  w->ev = ev;
  w->ev_ref = ref;
  w->state = run->vm->L;
  w->next = ev->head;
  if (ev->head) ev->head->prev = w;
  ev->head = w;
  mh_op_attach(run, &w->op, &waiter_type);
  return mh_op_wait(L, &w->op, (lua_KContext)w, wait_k);
}

/* ev:set() [-1, +0, v]: wakes every waiter (each leaves the queue as it
 * resumes, or when its run ends first) */
static int event_set(lua_State *L) {
  event *ev = check_event(L);
  ev->set = 1;
  for (waiter *w = ev->head; w; w = w->next) mh_op_wake(&w->op);
  return 0;
}

/* ev:is_set() -> boolean [-1, +1, v] */
static int event_is_set(lua_State *L) {
  lua_pushboolean(L, check_event(L)->set);
  return 1;
}

/* task.event() [-0, +1, m] */
int mh_task_event(lua_State *L) {
  event *ev = lua_newuserdatauv(L, sizeof *ev, 0);
  ev->set = 0;
  ev->head = NULL;
  static const luaL_Reg methods[] = {
    {"wait", event_wait}, {"set", event_set}, {"is_set", event_is_set}, {NULL, NULL}};
  mh_task_set_mt(L, &EVENT_MT, "event", methods);
  return 1;
}
