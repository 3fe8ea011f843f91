/* timers.h — many timers on one uv_timer: a binary min-heap in an array.
 *
 * Thousands of runs sleeping at once would otherwise each hold a uv_timer, and
 * libuv's pointer-linked timer heap and per-handle close callbacks dominate
 * the cost of a sleep. Here a timer is a small struct embedded in its owner
 * (a sleep, a run's deadline); starting and stopping it never allocates per
 * timer after the heap has grown, and owners free themselves synchronously. */
#ifndef MH_TIMERS_H
#define MH_TIMERS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mh_timer mh_timer;

struct mh_timer {
  uint64_t due;                  /* loop time (ms) at which it fires */
  uint64_t seq;                  /* start order, so equal due times fire FIFO */
  size_t index;                  /* position in the heap; MH_TIMER_IDLE when not started */
  void (*fire)(mh_timer *timer); /* called from the loop; the timer is already stopped */
};

#define MH_TIMER_IDLE ((size_t)-1)

typedef struct mh_timers {
  uv_timer_t uv;
  mh_timer **heap;
  size_t len, cap;
  uint64_t next_seq;
} mh_timers;

void mh_timers_init(mh_timers *ts, uv_loop_t *loop);
/* Closes the uv_timer; every timer must be stopped by then. */
void mh_timers_close(mh_timers *ts);
/* Initialises a timer (not started). */
void mh_timer_init(mh_timer *t, void (*fire)(mh_timer *t));
/* Starts (or restarts) t to fire after ms. Returns 0, or -1 when memory runs out. */
int mh_timer_start(mh_timers *ts, mh_timer *t, uint64_t ms);
/* Stops t; harmless when it is not started. */
void mh_timer_stop(mh_timers *ts, mh_timer *t);

#endif
