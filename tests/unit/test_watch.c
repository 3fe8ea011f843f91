/* test_watch.c — the folder watcher of hot reload (host/watch.c): changes
 * written back to back come as one batch with each path once; renames and
 * removals are reported; the uv_fs_poll fallback (MOONHIVE_WATCH=poll) sees
 * new files and files written in place; a missing folder is an error; and
 * closing leaves no handle open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "watch.h"

#define MAX_SEEN 64

typedef struct seen {
  int batches;
  int n;
  char paths[MAX_SEEN][PATH_MAX];
} seen;

static void on_batch(mh_watch *w, const char *const *paths, int n, void *ud) {
  (void)w;
  seen *s = ud;
  s->batches++;
  for (int i = 0; i < n && s->n < MAX_SEEN; i++) snprintf(s->paths[s->n++], PATH_MAX, "%s", paths[i]);
}

static int count(const seen *s, const char *path) {
  int c = 0;
  for (int i = 0; i < s->n; i++) c += strcmp(s->paths[i], path) == 0;
  return c;
}

static void write_file(const char *dir, const char *name, const char *text) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

typedef struct guard {
  int over, ticks;
  void (*poke)(const char *dir, int tick);
  const char *dir;
} guard;

static void tick(uv_timer_t *t) {
  guard *g = t->data;
  if (++g->ticks >= 100) g->over = 1; /* 10 s */
  else if (g->poke) g->poke(g->dir, g->ticks);
}

/* Turns the loop until cond(s) holds, calling poke (when given) every
 * 100 ms meanwhile; fails after 10 s. */
static void run_until(uv_loop_t *loop, seen *s, int (*cond)(const seen *s, const char *dir), const char *dir,
                      void (*poke)(const char *dir, int tick)) {
  uv_timer_t t;
  guard g = {0, 0, poke, dir};
  uv_timer_init(loop, &t);
  t.data = &g;
  uv_timer_start(&t, tick, 100, 100);
  while (!cond(s, dir) && !g.over) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  if (!cond(s, dir)) fail_msg("the watcher did not report what was expected (%d paths seen)", s->n);
}

static void finish(uv_loop_t *loop, mh_watch *w) {
  mh_watch_close(w);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(loop), 0); /* no handle left open */
}

static void make_dir(char *dir) {
  snprintf(dir, PATH_MAX, "/tmp/moonhive-watch-XXXXXX");
  assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static int saw_a_and_b(const seen *s, const char *dir) {
  char a[PATH_MAX + 8], b[PATH_MAX + 8];
  snprintf(a, sizeof a, "%s/a.lua", dir);
  snprintf(b, sizeof b, "%s/b.lua", dir);
  return count(s, a) >= 1 && count(s, b) >= 1;
}

static void test_events_come_in_one_batch(void **state) {
  (void)state;
  char dir[PATH_MAX], err[256];
  make_dir(dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  seen s = {0};
  mh_watch *w = mh_watch_new(&loop, on_batch, &s);
  assert_non_null(w);
  assert_int_equal(mh_watch_dir(w, dir, err, sizeof err), 0);
  assert_int_equal(mh_watch_polling(w), 0);
  write_file(dir, "a.lua", "return 1");
  write_file(dir, "a.lua", "return 2");
  write_file(dir, "b.lua", "return 3");
  run_until(&loop, &s, saw_a_and_b, dir, NULL);
  char a[PATH_MAX + 8];
  snprintf(a, sizeof a, "%s/a.lua", dir);
  assert_int_equal(s.batches, 1);
  assert_int_equal(count(&s, a), 1);
  finish(&loop, w);
  remove_dir(dir);
}

static int saw_moved(const seen *s, const char *dir) {
  char c[PATH_MAX + 8], d[PATH_MAX + 8];
  snprintf(c, sizeof c, "%s/c.lua", dir);
  snprintf(d, sizeof d, "%s/d.lua", dir);
  return count(s, c) >= 1 && count(s, d) >= 1;
}

static void test_renames_and_removals(void **state) {
  (void)state;
  char dir[PATH_MAX], err[256], from[PATH_MAX + 16], to[PATH_MAX + 16];
  make_dir(dir);
  write_file(dir, "c.lua", "return 1");
  write_file(dir, "d.lua", "return 1");
  uv_loop_t loop;
  uv_loop_init(&loop);
  seen s = {0};
  mh_watch *w = mh_watch_new(&loop, on_batch, &s);
  assert_int_equal(mh_watch_dir(w, dir, err, sizeof err), 0);
  /* an editor's save: a temporary file renamed over c.lua; d.lua removed */
  write_file(dir, ".c.lua.swp", "return 2");
  snprintf(from, sizeof from, "%s/.c.lua.swp", dir);
  snprintf(to, sizeof to, "%s/c.lua", dir);
  assert_int_equal(rename(from, to), 0);
  snprintf(to, sizeof to, "%s/d.lua", dir);
  assert_int_equal(unlink(to), 0);
  run_until(&loop, &s, saw_moved, dir, NULL);
  finish(&loop, w);
  remove_dir(dir);
}

static int saw_e_written(const seen *s, const char *dir) {
  char e[PATH_MAX + 8];
  snprintf(e, sizeof e, "%s/e.lua", dir);
  return count(s, e) >= 1;
}

static int saw_folder(const seen *s, const char *dir) {
  return count(s, dir) >= 1;
}

static void write_e(const char *dir, int tick) {
  char text[32];
  snprintf(text, sizeof text, "return %d", tick);
  write_file(dir, "e.lua", text);
}

static void test_polling_fallback(void **state) {
  (void)state;
  char dir[PATH_MAX], err[256];
  make_dir(dir);
  setenv("MOONHIVE_WATCH", "poll", 1);
  uv_loop_t loop;
  uv_loop_init(&loop);
  seen s = {0};
  mh_watch *w = mh_watch_new(&loop, on_batch, &s);
  unsetenv("MOONHIVE_WATCH");
  assert_int_equal(mh_watch_dir(w, dir, err, sizeof err), 0);
  assert_int_equal(mh_watch_polling(w), 1);
  /* a new file: the folder changed (read it again), and the file is polled
   * from then on. A poll's first reading happens in the background, so the
   * file is written again until the change is seen. */
  run_until(&loop, &s, saw_folder, dir, write_e);
  s.n = 0;
  run_until(&loop, &s, saw_e_written, dir, write_e);
  finish(&loop, w);
  remove_dir(dir);
}

static void test_missing_folder(void **state) {
  (void)state;
  char err[256];
  uv_loop_t loop;
  uv_loop_init(&loop);
  seen s = {0};
  mh_watch *w = mh_watch_new(&loop, on_batch, &s);
  assert_int_equal(mh_watch_dir(w, "/nonexistent/moonhive-watch", err, sizeof err), -1);
  assert_non_null(strstr(err, "cannot watch /nonexistent/moonhive-watch"));
  finish(&loop, w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_events_come_in_one_batch),
    cmocka_unit_test(test_renames_and_removals),
    cmocka_unit_test(test_polling_fallback),
    cmocka_unit_test(test_missing_folder),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
