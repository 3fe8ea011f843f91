/* timers.c — bucketed timers behind one uv_timer (timers.h). */
#include "timers.h"

#include <stdlib.h>

struct mh_timer_bucket {
  uint64_t due;           /* loop time (ms) */
  size_t index;           /* position in the heap */
  mh_timer *head, *tail;
};

/* ---- the heap of buckets ---- */

static void place(mh_timers *ts, size_t i, mh_timer_bucket *b) {
  ts->heap[i] = b;
  b->index = i;
}

static void sift_up(mh_timers *ts, size_t i) {
  mh_timer_bucket *b = ts->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (ts->heap[parent]->due <= b->due) break;
    place(ts, i, ts->heap[parent]);
    i = parent;
  }
  place(ts, i, b);
}

static void sift_down(mh_timers *ts, size_t i) {
  mh_timer_bucket *b = ts->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= ts->len) break;
    if (child + 1 < ts->len && ts->heap[child + 1]->due < ts->heap[child]->due) child++;
    if (ts->heap[child]->due >= b->due) break;
    place(ts, i, ts->heap[child]);
    i = child;
  }
  place(ts, i, b);
}

static void on_uv_timer(uv_timer_t *handle);

/* Points the uv_timer at the earliest bucket, or stops it. */
static void rearm(mh_timers *ts) {
  if (ts->len == 0) {
    uv_timer_stop(&ts->uv);
    return;
  }
  uint64_t now = uv_now(ts->uv.loop), due = ts->heap[0]->due;
  uv_timer_start(&ts->uv, on_uv_timer, due > now ? due - now : 0, 0);
}

/* Takes a bucket out of the heap and the cache and frees it. */
static void drop_bucket(mh_timers *ts, mh_timer_bucket *b) {
  size_t i = b->index;
  int was_first = i == 0;
  ts->len--;
  if (i < ts->len) {
    place(ts, i, ts->heap[ts->len]);
    if (i > 0 && ts->heap[(i - 1) / 2]->due > ts->heap[i]->due) sift_up(ts, i);
    else sift_down(ts, i);
  }
  if (ts->recent[b->due % MH_TIMER_CACHE] == b) ts->recent[b->due % MH_TIMER_CACHE] = NULL;
  free(b);
  if (was_first) rearm(ts);
}

/* The bucket for `due`: a recent one, or a new one in the heap. */
static mh_timer_bucket *bucket_for(mh_timers *ts, uint64_t due) {
  mh_timer_bucket *b = ts->recent[due % MH_TIMER_CACHE];
  if (b && b->due == due) return b;
  if (ts->len == ts->cap) {
    size_t cap = ts->cap ? ts->cap * 2 : 64;
    mh_timer_bucket **grown = realloc(ts->heap, cap * sizeof *grown);
    if (grown == NULL) return NULL;
    ts->heap = grown;
    ts->cap = cap;
  }
  b = calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  b->due = due;
  place(ts, ts->len++, b);
  sift_up(ts, b->index);
  ts->recent[due % MH_TIMER_CACHE] = b;
  if (b->index == 0) rearm(ts);
  return b;
}

static void unlink_timer(mh_timer *t) {
  mh_timer_bucket *b = t->bucket;
  if (t->prev) t->prev->next = t->next;
  else b->head = t->next;
  if (t->next) t->next->prev = t->prev;
  else b->tail = t->prev;
  t->bucket = NULL;
  t->prev = t->next = NULL;
}

static void on_uv_timer(uv_timer_t *handle) {
  mh_timers *ts = handle->data;
  uint64_t now = uv_now(handle->loop);
  while (ts->len > 0 && ts->heap[0]->due <= now) {
    mh_timer_bucket *b = ts->heap[0];
    /* Out of the heap and the cache first: a timer restarted for the same
     * millisecond from a callback goes to a new bucket and the next turn. */
    ts->len--;
    if (ts->len > 0) {
      place(ts, 0, ts->heap[ts->len]);
      sift_down(ts, 0);
    }
    if (ts->recent[b->due % MH_TIMER_CACHE] == b) ts->recent[b->due % MH_TIMER_CACHE] = NULL;
    b->index = (size_t)-1;
    mh_timer *t;
    while ((t = b->head) != NULL) {
      unlink_timer(t);
      t->fire(t);
    }
    free(b);
  }
  rearm(ts);
}

/* ---- public ---- */

void mh_timers_init(mh_timers *ts, uv_loop_t *loop) {
  ts->heap = NULL;
  ts->len = ts->cap = 0;
  for (int i = 0; i < MH_TIMER_CACHE; i++) ts->recent[i] = NULL;
  uv_timer_init(loop, &ts->uv);
  ts->uv.data = ts;
}

void mh_timers_close(mh_timers *ts) {
  while (ts->len > 0) { /* timers still started: forget them (owners are gone) */
    mh_timer_bucket *b = ts->heap[--ts->len];
    while (b->head) unlink_timer(b->head);
    free(b);
  }
  uv_timer_stop(&ts->uv);
  uv_close((uv_handle_t *)&ts->uv, NULL);
  free(ts->heap);
  ts->heap = NULL;
  ts->cap = 0;
}

void mh_timer_init(mh_timer *t, void (*fire)(mh_timer *t)) {
  t->bucket = NULL;
  t->prev = t->next = NULL;
  t->fire = fire;
}

int mh_timer_start(mh_timers *ts, mh_timer *t, uint64_t ms) {
  mh_timer_stop(ts, t);
  mh_timer_bucket *b = bucket_for(ts, uv_now(ts->uv.loop) + ms);
  if (b == NULL) return -1;
  t->bucket = b;
  t->next = NULL;
  t->prev = b->tail;
  if (b->tail) b->tail->next = t;
  else b->head = t;
  b->tail = t;
  return 0;
}

void mh_timer_stop(mh_timers *ts, mh_timer *t) {
  mh_timer_bucket *b = t->bucket;
  if (b == NULL) return;
  unlink_timer(t);
  if (b->head == NULL && b->index != (size_t)-1) drop_bucket(ts, b);
}
