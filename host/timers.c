/* timers.c — the array min-heap of timers behind one uv_timer (timers.h). */
#include "timers.h"

#include <stdlib.h>

static int earlier(const mh_timer *a, const mh_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(mh_timers *ts, size_t i, mh_timer *t) {
  ts->heap[i] = t;
  t->index = i;
}

static void sift_up(mh_timers *ts, size_t i) {
  mh_timer *t = ts->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(t, ts->heap[parent])) break;
    place(ts, i, ts->heap[parent]);
    i = parent;
  }
  place(ts, i, t);
}

static void sift_down(mh_timers *ts, size_t i) {
  mh_timer *t = ts->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= ts->len) break;
    if (child + 1 < ts->len && earlier(ts->heap[child + 1], ts->heap[child])) child++;
    if (!earlier(ts->heap[child], t)) break;
    place(ts, i, ts->heap[child]);
    i = child;
  }
  place(ts, i, t);
}

static void remove_at(mh_timers *ts, size_t i) {
  mh_timer *gone = ts->heap[i];
  gone->index = MH_TIMER_IDLE;
  ts->len--;
  if (i == ts->len) return;
  place(ts, i, ts->heap[ts->len]);
  if (i > 0 && earlier(ts->heap[i], ts->heap[(i - 1) / 2])) sift_up(ts, i);
  else sift_down(ts, i);
}

static void on_uv_timer(uv_timer_t *handle);

/* Points the uv_timer at the earliest timer, or stops it. */
static void rearm(mh_timers *ts) {
  if (ts->len == 0) {
    uv_timer_stop(&ts->uv);
    return;
  }
  uint64_t now = uv_now(ts->uv.loop), due = ts->heap[0]->due;
  uv_timer_start(&ts->uv, on_uv_timer, due > now ? due - now : 0, 0);
}

static void on_uv_timer(uv_timer_t *handle) {
  mh_timers *ts = handle->data;
  uint64_t now = uv_now(handle->loop), started_before = ts->next_seq;
  /* Fire only timers started before this turn, so one restarted with 0 ms
   * inside a callback waits for the next turn. */
  while (ts->len > 0 && ts->heap[0]->due <= now && ts->heap[0]->seq < started_before) {
    mh_timer *t = ts->heap[0];
    remove_at(ts, 0);
    t->fire(t);
  }
  rearm(ts);
}

void mh_timers_init(mh_timers *ts, uv_loop_t *loop) {
  ts->heap = NULL;
  ts->len = ts->cap = 0;
  ts->next_seq = 0;
  uv_timer_init(loop, &ts->uv);
  ts->uv.data = ts;
}

void mh_timers_close(mh_timers *ts) {
  uv_timer_stop(&ts->uv);
  uv_close((uv_handle_t *)&ts->uv, NULL);
  free(ts->heap);
  ts->heap = NULL;
  ts->len = ts->cap = 0;
}

void mh_timer_init(mh_timer *t, void (*fire)(mh_timer *t)) {
  t->due = 0;
  t->seq = 0;
  t->index = MH_TIMER_IDLE;
  t->fire = fire;
}

int mh_timer_start(mh_timers *ts, mh_timer *t, uint64_t ms) {
  mh_timer_stop(ts, t);
  if (ts->len == ts->cap) {
    size_t cap = ts->cap ? ts->cap * 2 : 64;
    mh_timer **grown = realloc(ts->heap, cap * sizeof *grown);
    if (grown == NULL) return -1;
    ts->heap = grown;
    ts->cap = cap;
  }
  t->due = uv_now(ts->uv.loop) + ms;
  t->seq = ts->next_seq++;
  place(ts, ts->len++, t);
  sift_up(ts, t->index);
  if (t->index == 0) rearm(ts);
  return 0;
}

void mh_timer_stop(mh_timers *ts, mh_timer *t) {
  if (t->index == MH_TIMER_IDLE) return;
  int was_first = t->index == 0;
  remove_at(ts, t->index);
  if (was_first) rearm(ts);
}
