/* mod_time.c — `require "time"`: sleep on a libuv timer, wall and monotonic
 * clocks. `sleep` is also a global in every sandbox. */
#include "mod_time.h"

#include <stddef.h>
#include <stdlib.h>
#include <sys/time.h>

#include <lauxlib.h>

#include "scheduler.h"

typedef struct sleep_op {
  mh_op op;
  mh_timer timer;
  mh_timers *timers;
} sleep_op;

/* The one release point of a sleep: detach, stop, free. Its continuation can
 * only run while it lives (scheduler.h, "Ownership"). */
static void sleep_release(mh_op *op) {
  sleep_op *s = (sleep_op *)op;
  mh_op_detach(op);
  mh_timer_stop(s->timers, &s->timer);
  free(s);
}

static const mh_op_type sleep_type = {"sleep", sleep_release};

static void sleep_fired(mh_timer *timer) {
  sleep_op *s = (sleep_op *)((char *)timer - offsetof(sleep_op, timer));
  mh_op_wake(&s->op);
}

/* [-0, +0, v] continuation: the timer fired (or the run broke a limit) */
static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  sleep_op *s = (sleep_op *)ctx;
  mh_op_resumed(L, &s->op); /* raises (after releasing s) if the run broke a limit */
  sleep_release(&s->op);
  return 0;
}

/* sleep(ms) [-1, +0, v] */
int mh_time_sleep(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0 && ms <= 1e12, 1, "milliseconds between 0 and 1e12 expected");
  mh_run *run = mh_async_begin(L, "sleep");
  sleep_op *s = calloc(1, sizeof *s);
  if (s == NULL) return luaL_error(L, "sleep: out of memory");
  s->timers = &run->vm->host->timers;
  mh_timer_init(&s->timer, sleep_fired);
  if (mh_timer_start(s->timers, &s->timer, (uint64_t)(ms + 0.5)) != 0) {
    free(s);
    return luaL_error(L, "sleep: out of memory");
  }
  mh_op_attach(run, &s->op, &sleep_type);
  return mh_op_wait(L, &s->op, (lua_KContext)s, sleep_k);
}

/* time.now() -> seconds since the epoch, with microseconds [-0, +1, -] */
static int time_now(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6);
  return 1;
}

/* time.monotonic() -> milliseconds from an arbitrary start [-0, +1, -] */
static int time_monotonic(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

int luaopen_mh_time(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sleep", mh_time_sleep}, {"now", time_now}, {"monotonic", time_monotonic}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
