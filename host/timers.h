/* timers.h — many timers on one uv_timer.
 *
 * Thousands of runs sleeping at once would otherwise each hold a uv_timer;
 * libuv's pointer-linked timer heap and per-handle close callbacks then
 * dominate the cost of a sleep. Here timers due at the same loop millisecond
 * share a bucket (a FIFO list), buckets sit in an array min-heap, and one
 * uv_timer points at the earliest bucket. Runs resumed in the same loop turn
 * that sleep equally land in one bucket, so starting and firing are O(1) for
 * them. A timer is a small struct embedded in its owner (a sleep, a run's
 * deadline); owners free themselves synchronously. */
#ifndef MH_TIMERS_H
#define MH_TIMERS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mh_timer mh_timer;
typedef struct mh_timer_bucket mh_timer_bucket;

struct mh_timer {
  mh_timer_bucket *bucket;       /* NULL when not started */
  mh_timer *prev, *next;         /* in the bucket's list */
  void (*fire)(mh_timer *timer); /* called from the loop; the timer is already stopped */
};

#define MH_TIMER_CACHE 16

typedef struct mh_timers {
  uv_timer_t uv;
  mh_timer_bucket **heap;        /* buckets by due time */
  size_t len, cap;
  mh_timer_bucket *recent[MH_TIMER_CACHE]; /* buckets by due % 16, to join */
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
