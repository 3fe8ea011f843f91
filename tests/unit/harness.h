/* harness.h — shared helpers for the C unit tests: a host with one loop, a
 * sandbox, and "evaluate this code to the end" returning state, rendered
 * output and error text. Header-only; each test file includes it once. */
#ifndef MH_TEST_HARNESS_H
#define MH_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>

#include "evaluate.h"
#include "host.h"
#include "scheduler.h"
#include "vm.h"

typedef struct outcome {
  int done;
  mh_run_state state;
  char *output;
  char *error;
} outcome;

static void outcome_clear(outcome *o) {
  free(o->output);
  free(o->error);
  memset(o, 0, sizeof *o);
}

static void record_outcome(mh_run *run, void *ud) {
  outcome *o = ud;
  o->done = 1;
  o->state = run->state;
  if (run->state == MH_RUN_OK) {
    size_t len;
    int n;
    const char *text = mh_eval_output(run, &len, &n);
    o->output = strndup(text, len);
  } else {
    o->error = strdup(run->error ? run->error : "?");
  }
}

typedef struct fixture {
  uv_loop_t loop;
  mh_host host;
  mh_vm *vm;
} fixture;

static void fixture_open(fixture *f, const mh_limits *limits) {
  uv_loop_init(&f->loop);
  mh_host_init(&f->host, &f->loop);
  mh_limits lim;
  mh_limits_default(&lim);
  if (limits) lim = *limits;
  f->host.limits = lim;
  f->vm = mh_vm_new(&f->host, &lim, NULL);
  assert_non_null(f->vm);
}

static void fixture_close(fixture *f) {
  mh_host_close(&f->host);
  mh_vm_free(f->vm);
  assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left open */
}

/* Starts code as an eval run (results rendered); NULL if it does not compile
 * (then o->error holds the message). */
static mh_run *start_code(fixture *f, const char *code, outcome *o) {
  int incomplete;
  memset(o, 0, sizeof *o);
  if (mh_eval_compile(f->vm->L, code, strlen(code), "=test", 0, &incomplete) != LUA_OK) {
    o->done = 1;
    o->state = MH_RUN_ERROR;
    o->error = strdup(lua_tostring(f->vm->L, -1));
    lua_pop(f->vm->L, 1);
    return NULL;
  }
  mh_run *run = mh_eval_start(f->vm, record_outcome, o);
  assert_non_null(run);
  return run;
}

static void run_until_done(fixture *f, outcome *o) {
  while (!o->done) uv_run(&f->loop, UV_RUN_ONCE);
}

/* Evaluates code to its end in f's sandbox. */
static void eval_in(fixture *f, const char *code, outcome *o) {
  start_code(f, code, o);
  run_until_done(f, o);
}

/* Evaluates code in a fresh sandbox with the given limits (NULL: defaults). */
static void eval_fresh(const mh_limits *limits, const char *code, outcome *o) {
  fixture f;
  fixture_open(&f, limits);
  eval_in(&f, code, o);
  fixture_close(&f);
}

#define assert_ok_output(o, expected) do { \
    if ((o)->state != MH_RUN_OK) fail_msg("expected success, got: %s", (o)->error ? (o)->error : "?"); \
    assert_string_equal((o)->output, (expected)); \
  } while (0)

#define assert_error_contains(o, needle) do { \
    if ((o)->state == MH_RUN_OK) fail_msg("expected an error containing '%s', got output: %s", (needle), (o)->output); \
    if (strstr((o)->error, (needle)) == NULL) fail_msg("error '%s' does not contain '%s'", (o)->error, (needle)); \
  } while (0)

#endif
