/* test_scheduler.c — runs on one loop: ordering, many concurrent runs,
 * cancellation (waiting and not yet started), async calls inside script
 * coroutines, clear errors where a wait is impossible, and tracebacks that
 * name the script's file:line. Every fixture must close with no handle left. */
#include "harness.h"

#include "runtime.h"

static void test_sleeps_finish_in_time_order(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  outcome a, b, c;
  start_code(&f, "sleep(60) return 'a'", &a);
  start_code(&f, "sleep(10) return 'b'", &b);
  start_code(&f, "sleep(35) return 'c'", &c);
  int order[3], n = 0;
  outcome *all[3] = {&a, &b, &c};
  int seen[3] = {0};
  while (n < 3) {
    uv_run(&f.loop, UV_RUN_ONCE);
    for (int i = 0; i < 3; i++)
      if (all[i]->done && !seen[i]) seen[i] = 1, order[n++] = i;
  }
  assert_int_equal(order[0], 1);
  assert_int_equal(order[1], 2);
  assert_int_equal(order[2], 0);
  assert_ok_output(&a, "a");
  outcome_clear(&a); outcome_clear(&b); outcome_clear(&c);
  fixture_close(&f);
}

static void test_thousands_of_concurrent_runs(void **state) {
  (void)state;
  enum { N = 2000 };
  fixture f;
  fixture_open(&f, NULL);
  outcome *o = calloc(N, sizeof *o);
  for (int i = 0; i < N; i++) start_code(&f, "for i = 1, 3 do sleep(5) end return 'done'", &o[i]);
  assert_int_equal(f.host.live_runs, N);
  for (int i = 0; i < N; i++) run_until_done(&f, &o[i]);
  for (int i = 0; i < N; i++) {
    assert_ok_output(&o[i], "done");
    outcome_clear(&o[i]);
  }
  assert_int_equal(f.host.live_runs, 0);
  free(o);
  fixture_close(&f);
}

static void test_cancel_a_waiting_run(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  outcome o;
  mh_run *run = start_code(&f, "local ok = pcall(sleep, 100000) return 'swallowed'", &o);
  for (int i = 0; i < 3; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_int_equal(run->state, MH_RUN_WAITING);
  mh_run_cancel(run, MH_BREAK_CANCEL);
  run_until_done(&f, &o);
  assert_int_equal(o.state, MH_RUN_CANCELLED);
  assert_error_contains(&o, "run cancelled");
  outcome_clear(&o);
  fixture_close(&f); /* the sleep's timer must be closed */
}

static void test_cancel_before_start(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  outcome o;
  mh_run *run = start_code(&f, "error('this must never run')", &o);
  mh_run_cancel(run, MH_BREAK_CANCEL);
  run_until_done(&f, &o);
  assert_int_equal(o.state, MH_RUN_CANCELLED);
  assert_null(strstr(o.error, "never run"));
  outcome_clear(&o);
  fixture_close(&f);
}

static void test_async_inside_script_coroutines(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL, "local co = coroutine.wrap(function() sleep(5) return 'inner' end) return co()", &o);
  assert_ok_output(&o, "inner");
  outcome_clear(&o);
  eval_fresh(NULL,
             "local co = coroutine.create(function(a) sleep(1) local b = coroutine.yield(a + 1) sleep(1) return b * 2 end) "
             "local _, x = coroutine.resume(co, 1) local _, y = coroutine.resume(co, 10) "
             "return x, y, coroutine.status(co)", &o);
  assert_ok_output(&o, "2\t20\tdead");
  outcome_clear(&o);
  /* three levels deep, each waiting */
  eval_fresh(NULL,
             "local function level(n) if n == 0 then sleep(2) return 0 end "
             "return coroutine.wrap(function() sleep(1) return 1 + level(n - 1) end)() end "
             "return level(3)", &o);
  assert_ok_output(&o, "3");
  outcome_clear(&o);
  /* a generator that waits between values */
  eval_fresh(NULL,
             "local gen = coroutine.wrap(function() for i = 1, 3 do sleep(1) coroutine.yield(i) end end) "
             "return gen() + gen() + gen()", &o);
  assert_ok_output(&o, "6");
  outcome_clear(&o);
  /* errors inside a waiting coroutine come back through resume */
  eval_fresh(NULL,
             "local co = coroutine.create(function() sleep(1) error('inner failure') end) "
             "local ok, err = coroutine.resume(co) return ok, err:match('inner failure')", &o);
  assert_ok_output(&o, "false\tinner failure");
  outcome_clear(&o);
}

static void test_where_waiting_is_impossible(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL, "local t = {3, 1, 2} table.sort(t, function(a, b) sleep(1) return a < b end)", &o);
  assert_error_contains(&o, "sleep cannot wait here");
  outcome_clear(&o);
  eval_fresh(NULL, "return (('ab'):gsub('.', function(c) sleep(1) return c end))", &o);
  assert_error_contains(&o, "sleep cannot wait here");
  outcome_clear(&o);
  /* a coroutine resumed from a sort comparator cannot pass its wait out */
  eval_fresh(NULL,
             "local t = {2, 1} table.sort(t, function(a, b) "
             "return coroutine.wrap(function() sleep(1) return a < b end)() end)", &o);
  assert_error_contains(&o, "cannot wait");
  outcome_clear(&o);
  /* metamethods called from Lua code may wait */
  eval_fresh(NULL, "local t = setmetatable({}, {__index = function(_, k) sleep(1) return k .. '!' end}) return t.hi", &o);
  assert_ok_output(&o, "hi!");
  outcome_clear(&o);
}

static void test_blocked_coroutines_are_protected(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  /* Two runs sharing one environment: the second tries to resume a
   * coroutine the first is waiting inside. */
  lua_State *L = f.vm->L;
  mh_vm_new_env(L);
  int env = lua_gettop(L);
  int incomplete;
  outcome a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  const char *first = "co = coroutine.create(function() sleep(50) return 'first' end) "
                      "local ok, v = coroutine.resume(co) return v";
  const char *second = "sleep(5) local ok, err = coroutine.resume(co) "
                       "local ok2, err2 = pcall(coroutine.close, co) return ok, err, ok2";
  assert_int_equal(mh_eval_compile(L, first, strlen(first), "=first", env, &incomplete), LUA_OK);
  mh_eval_start(f.vm, record_outcome, &a);
  assert_int_equal(mh_eval_compile(L, second, strlen(second), "=second", env, &incomplete), LUA_OK);
  mh_eval_start(f.vm, record_outcome, &b);
  lua_pop(L, 1);
  run_until_done(&f, &a);
  run_until_done(&f, &b);
  assert_ok_output(&a, "first");
  assert_ok_output(&b, "false\tcannot resume a coroutine that is waiting for an async call\tfalse");
  outcome_clear(&a);
  outcome_clear(&b);
  fixture_close(&f);
}

static void test_errors_carry_file_and_line(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL, "local function inner()\n  error('deep problem')\nend\nlocal function outer() inner() end\nouter()", &o);
  assert_error_contains(&o, "test:2: deep problem");
  assert_error_contains(&o, "stack traceback:");
  assert_error_contains(&o, "test:4:");
  outcome_clear(&o);
  eval_fresh(NULL, "sleep(1)\nlocal x = nil\nreturn x.field", &o);
  assert_error_contains(&o, "test:3: attempt to index a nil value");
  outcome_clear(&o);
  eval_fresh(NULL, "return coroutine.wrap(function()\n sleep(1)\n error('in coroutine')\nend)()", &o);
  assert_error_contains(&o, "test:3: in coroutine");
  outcome_clear(&o);
}

static void test_runs_in_several_sandboxes(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  mh_vm *vms[3];
  outcome o[3];
  for (int i = 0; i < 3; i++) {
    vms[i] = mh_vm_new(&host, &host.limits, NULL);
    char code[64];
    snprintf(code, sizeof code, "sleep(%d) return %d", 30 - i * 10, i);
    int incomplete;
    assert_int_equal(mh_eval_compile(vms[i]->L, code, strlen(code), "=t", 0, &incomplete), LUA_OK);
    memset(&o[i], 0, sizeof o[i]);
    mh_eval_start(vms[i], record_outcome, &o[i]);
  }
  for (int i = 0; i < 3; i++) {
    while (!o[i].done) uv_run(&loop, UV_RUN_ONCE);
    char expected[16];
    snprintf(expected, sizeof expected, "%d", i);
    assert_ok_output(&o[i], expected);
    outcome_clear(&o[i]);
  }
  mh_host_close(&host);
  for (int i = 0; i < 3; i++) mh_vm_free(vms[i]);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Regressions from review: a coroutine whose wait was cancelled, or whose
 * run ended, can never continue on a released operation. */
static void test_released_waits_stay_released(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL,
             "local co = coroutine.create(function() sleep(10) return 'woke' end) "
             "local ok1 = pcall(table.sort, {1, 2, 3}, function(a, b) coroutine.resume(co) return a < b end) "
             "local ok2, err = coroutine.resume(co) return ok1, ok2, err", &o);
  if (o.state != MH_RUN_OK) fail_msg("%s", o.error);
  assert_non_null(strstr(o.output, "false\tfalse\t"));
  assert_non_null(strstr(o.output, "cancelled"));
  outcome_clear(&o);
  /* a coroutine parked in another (finished) run's sleep */
  eval_fresh(NULL,
             "local X local t = task.spawn(function() X = coroutine.create(function() "
             "  local inner = coroutine.wrap(function() sleep(100000) end) inner() end) "
             "  coroutine.resume(X) end) "
             "sleep(20) t:cancel() t:wait() "
             "return coroutine.resume(X)", &o);
  if (o.state != MH_RUN_OK) fail_msg("%s", o.error);
  assert_non_null(strstr(o.output, "false\t"));
  outcome_clear(&o);
  /* many arguments and results cross into tasks and runs */
  eval_fresh(NULL,
             "local t = {} for i = 1, 3000 do t[i] = i end "
             "local a = task.spawn(function(...) return select('#', ...) end, table.unpack(t)) "
             "local b = task.spawn(function() return table.unpack(t) end) "
             "return select(2, a:wait()), select('#', b:wait())", &o);
  assert_ok_output(&o, "3000\t3001");
  outcome_clear(&o);
}

static void test_tasks(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL,
             "local a = task.spawn(function(x) sleep(20) return x * 2, 'b' end, 21) "
             "local b = task.spawn(function() sleep(5) error('nope') end) "
             "local ok1, v, w = task.wait(a) local ok2, err = b:wait() "
             "return ok1, v, w, ok2, err", &o);
  assert_ok_output(&o, "true\t42\tb\tfalse\ttest:1: nope");
  outcome_clear(&o);
  /* overlapping: the order of completion follows the sleeps, not the spawns */
  eval_fresh(NULL,
             "local order = {} local ts = {} "
             "for i = 1, 3 do ts[i] = task.spawn(function() sleep(40 - i * 10) order[#order + 1] = i end) end "
             "for i = 1, 3 do task.wait(ts[i]) end return table.concat(order, ',')", &o);
  assert_ok_output(&o, "3,2,1");
  outcome_clear(&o);
  eval_fresh(NULL, "return task.all{function() sleep(5) return 'x' end, function() return 'y' end}", &o);
  assert_ok_output(&o, "x\ty");
  outcome_clear(&o);
  eval_fresh(NULL, "return task.all{function() error('first') end, function() sleep(100000) end}", &o);
  assert_error_contains(&o, "task 1 failed: test:1: first");
  outcome_clear(&o);
  eval_fresh(NULL, "local t = task.spawn(function() sleep(100000) end) t:cancel() return t:wait()", &o);
  assert_ok_output(&o, "false\trun cancelled");
  outcome_clear(&o);
  eval_fresh(NULL, "local t t = task.spawn(function() sleep(1) return task.wait(t) end) return select(2, t:wait())", &o);
  assert_ok_output(&o, "test:1: a task cannot wait for itself");
  outcome_clear(&o);
}

static void test_semaphores(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL,
             "local sem = task.semaphore(2) local active, peak, order = 0, 0, {} local ts = {} "
             "for i = 1, 6 do ts[i] = task.spawn(function() sem:acquire() active = active + 1 "
             "  if active > peak then peak = active end order[#order + 1] = i sleep(5) active = active - 1 "
             "  sem:release() end) end "
             "for i = 1, 6 do ts[i]:wait() end return peak, sem:available(), table.concat(order, ',')", &o);
  assert_ok_output(&o, "2\t2\t1,2,3,4,5,6");
  outcome_clear(&o);
  /* a holder that is cancelled, or that ends without releasing, gives its permit back */
  eval_fresh(NULL,
             "local sem = task.semaphore(1) "
             "local a = task.spawn(function() sem:acquire() sleep(100000) end) "
             "local b = task.spawn(function() sem:acquire() end) "   /* ends holding it */
             "sleep(5) a:cancel() a:wait() b:wait() sem:acquire() return sem:available()", &o);
  assert_ok_output(&o, "0");
  outcome_clear(&o);
  /* a waiter that is cancelled leaves the queue */
  eval_fresh(NULL,
             "local sem = task.semaphore(1) sem:acquire() "
             "local w = task.spawn(function() sem:acquire() return 'never' end) "
             "sleep(5) w:cancel() local ok = w:wait() sem:release() return ok, sem:available()", &o);
  assert_ok_output(&o, "false\t1");
  outcome_clear(&o);
  /* a permit keeps its semaphore alive, even when the script drops it */
  eval_fresh(NULL,
             "local s = task.semaphore(1) local t = task.spawn(function() s:acquire() sleep(20) end) "
             "sleep(5) s = nil collectgarbage() collectgarbage() t:wait() return 'ok'", &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
  eval_fresh(NULL, "task.semaphore(1):release()", &o);
  assert_error_contains(&o, "holds no permit");
  outcome_clear(&o);
}

/* An event wakes every waiter at once, whoever sets it; it stays set. */
static void test_events(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL,
             "local ev, got, ts = task.event(), {}, {} "
             "for i = 1, 3 do ts[i] = task.spawn(function() ev:wait() got[#got + 1] = i end) end "
             "sleep(5) local before = #got "
             "task.spawn(function() ev:set() end) "       /* a task that never waited sets it */
             "for i = 1, 3 do ts[i]:wait() end ev:wait() "  /* set: no wait at all */
             "return before, #got, ev:is_set()", &o);
  assert_ok_output(&o, "0\t3\ttrue");
  outcome_clear(&o);
  /* a waiter that is cancelled leaves the queue; a later set wakes the rest */
  eval_fresh(NULL,
             "local ev = task.event() "
             "local a = task.spawn(function() ev:wait() return 'a' end) "
             "local b = task.spawn(function() ev:wait() return 'b' end) "
             "sleep(5) a:cancel() local ok_a = a:wait() ev:set() "
             "return ok_a, select(2, b:wait())", &o);
  assert_ok_output(&o, "false\tb");
  outcome_clear(&o);
  /* a waiter keeps its event alive when the script drops it */
  eval_fresh(NULL,
             "local t = task.spawn(function() task.event():wait() end) "
             "sleep(5) collectgarbage() collectgarbage() t:cancel() return (t:wait())", &o);
  assert_ok_output(&o, "false");
  outcome_clear(&o);
  /* a sandbox cannot start runs that outlive it */
  eval_fresh(NULL, "return type(task.background)", &o);
  assert_ok_output(&o, "nil");
  outcome_clear(&o);
}

/* A parent that ends takes its children with it; nothing is left open. */
static void test_children_end_with_their_parent(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  outcome o;
  eval_in(&f, "for i = 1, 50 do task.spawn(function() sleep(100000) end) end return 'parent done'", &o);
  assert_ok_output(&o, "parent done");
  outcome_clear(&o);
  for (int i = 0; i < 10 && f.host.live_runs > 0; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
  assert_int_equal(f.host.live_runs, 0);
  fixture_close(&f);
}

typedef struct ended {
  int state; /* 0 running, 1 ok, 2 failed */
  char error[200];
} ended;

static void mark_done(mh_run *run, void *ud) {
  ended *e = ud;
  e->state = run->state == MH_RUN_OK ? 1 : 2;
  if (run->error) snprintf(e->error, sizeof e->error, "%s", run->error);
}

/* Opens f with the trusted runtime and a shared environment TEST_ENV for
 * the chunks runtime_run starts (as a runtime module's functions share one). */
static mh_vm *runtime_open(fixture *f) {
  fixture_open(f, NULL);
  snprintf(f->host.runtime_dir, sizeof f->host.runtime_dir, "/nonexistent");
  char err[256];
  mh_vm *rt = mh_runtime(&f->host, err, sizeof err);
  assert_non_null(rt);
  mh_vm_new_env(rt->L);
  lua_setglobal(rt->L, "TEST_ENV");
  return rt;
}

/* Runs code in the runtime (environment TEST_ENV) until it ends or 5 s have
 * passed; e says how it ended (state 0: it did not). */
static void runtime_run(fixture *f, mh_vm *rt, const char *code, ended *e) {
  *e = (ended){0, ""};
  assert_int_equal(luaL_loadstring(rt->L, code), LUA_OK);
  lua_getglobal(rt->L, "TEST_ENV");
  lua_setupvalue(rt->L, -2, 1);
  mh_run_start(rt, 0, mark_done, e);
  for (uint64_t t0 = uv_now(&f->loop); !e->state && uv_now(&f->loop) - t0 < 5000;) uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* runtime_run that fails the test unless code succeeds. */
static void runtime_eval_ok(fixture *f, mh_vm *rt, const char *code) {
  ended e;
  runtime_run(f, rt, code, &e);
  if (e.state != 1) fail_msg("%s: %s", code, e.state ? e.error : "did not finish");
}

/* In the runtime, task.background(fn) is a run of its own: it goes on after
 * the run that started it has ended (a child would be cancelled, and DONE
 * never set). */
static void test_background_outlives_its_caller(void **state) {
  (void)state;
  fixture f;
  mh_vm *rt = runtime_open(&f);
  runtime_eval_ok(&f, rt, "DONE = task.event() "
                          "task.background(function() sleep(20) FLAG = 'bg' DONE:set() end)");
  runtime_eval_ok(&f, rt, "DONE:wait() assert(FLAG == 'bg', 'the background run did not finish')");
  fixture_close(&f);
}

/* A runtime run that returned leaves its thread for the next run; one that
 * failed does not, and a sandbox's threads are never used twice (a script
 * may hold one). */
static void test_runtime_threads_are_used_again(void **state) {
  (void)state;
  fixture f;
  mh_vm *rt = runtime_open(&f);
  runtime_eval_ok(&f, rt, "FIRST = coroutine.running()");
  runtime_eval_ok(&f, rt, "assert(coroutine.running() == FIRST, 'a new thread') ");
  ended failed;
  runtime_run(&f, rt, "FAILED = coroutine.running() error('boom')", &failed);
  assert_int_equal(failed.state, 2);
  runtime_eval_ok(&f, rt, "assert(coroutine.running() ~= FAILED, 'the thread of a failed run') "
                          "assert(coroutine.status(FAILED) == 'dead')");
  fixture_close(&f);
  outcome o;
  eval_fresh(NULL, "local t = task.spawn(function() return coroutine.running() end) local _, first = t:wait() "
                   "local u = task.spawn(function() return coroutine.running() end) local _, second = u:wait() "
                   "return first ~= second", &o);
  assert_ok_output(&o, "true");
  outcome_clear(&o);
}

/* The trusted runtime counts instructions only in runs that keep a sandbox
 * run's limits: a run of its own has no hook; one that inherits a CPU
 * budget has it, and its Lua loop breaks that budget. */
static void test_runtime_runs_count_only_with_limits(void **state) {
  (void)state;
  mh_limits lim;
  mh_limits_default(&lim);
  lim.cpu_ns = 50 * 1000000ull;
  lim.deadline_ns = 0;
  fixture f;
  fixture_open(&f, &lim);
  snprintf(f.host.runtime_dir, sizeof f.host.runtime_dir, "/nonexistent");
  char err[256];
  mh_vm *rt = mh_runtime(&f.host, err, sizeof err);
  assert_non_null(rt);
  outcome caller;
  mh_run *from = start_code(&f, "sleep(100000)", &caller); /* a sandbox run with the budget */
  ended free_run = {0, ""}, kept = {0, ""};
  luaL_loadstring(rt->L, "local n = 0 for i = 1, 1000 do n = n + i end return n");
  mh_run *a = mh_run_start(rt, 0, mark_done, &free_run);
  assert_null(lua_gethook(a->co));
  luaL_loadstring(rt->L, "while true do end");
  mh_run *b = mh_run_start(rt, 0, mark_done, &kept);
  mh_run_inherit_limits(b, from);
  assert_non_null(lua_gethook(b->co));
  while (!free_run.state || !kept.state) uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(free_run.state, 1);
  assert_int_equal(kept.state, 2);
  assert_non_null(strstr(kept.error, "CPU budget exceeded"));
  mh_run_cancel(from, MH_BREAK_CANCEL);
  run_until_done(&f, &caller);
  outcome_clear(&caller);
  fixture_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sleeps_finish_in_time_order),
    cmocka_unit_test(test_thousands_of_concurrent_runs),
    cmocka_unit_test(test_cancel_a_waiting_run),
    cmocka_unit_test(test_cancel_before_start),
    cmocka_unit_test(test_async_inside_script_coroutines),
    cmocka_unit_test(test_where_waiting_is_impossible),
    cmocka_unit_test(test_blocked_coroutines_are_protected),
    cmocka_unit_test(test_errors_carry_file_and_line),
    cmocka_unit_test(test_runs_in_several_sandboxes),
    cmocka_unit_test(test_tasks),
    cmocka_unit_test(test_released_waits_stay_released),
    cmocka_unit_test(test_children_end_with_their_parent),
    cmocka_unit_test(test_semaphores),
    cmocka_unit_test(test_events),
    cmocka_unit_test(test_background_outlives_its_caller),
    cmocka_unit_test(test_runtime_threads_are_used_again),
    cmocka_unit_test(test_runtime_runs_count_only_with_limits),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
