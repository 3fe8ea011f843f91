/* test_sandbox.c — the sandbox's escapes and bombs, each contained.
 *
 * Every case evaluates code in a fresh sandbox and expects either an exact
 * rendering of what it returns or an error containing a phrase. Limit cases
 * also check the host is still fine afterwards: the same sandbox runs
 * `return 1 + 1` again. */
#include "harness.h"

typedef struct escape_case {
  const char *name;
  const char *code;
  const char *output; /* expected rendering, or NULL */
  const char *error;  /* expected phrase in the error, or NULL */
} escape_case;

static const escape_case escapes[] = {
  {"no io", "return io", NULL, "undefined global 'io'"},
  {"no debug", "return debug", NULL, "undefined global 'debug'"},
  {"no package", "return package", NULL, "undefined global 'package'"},
  {"no dofile", "return dofile", NULL, "undefined global 'dofile'"},
  {"no loadfile", "return loadfile", NULL, "undefined global 'loadfile'"},
  {"no string.dump", "return string.dump, ('').dump", "nil\tnil", NULL},
  {"os is a subset", "return os.getenv, os.execute, os.exit, os.remove, os.rename, os.tmpname",
   "nil\tnil\tnil\tnil\tnil\tnil", NULL},
  {"os time/clock/date/difftime work",
   "return os.time() > 0, type(os.clock()), type(os.date()), os.difftime(2, 1)", "true\tnumber\tstring\t1.0", NULL},
  {"binary chunk refused by load", "local f, e = load('\\27Lua') return f, e", NULL, NULL},
  {"mode b refused", "local f, e = load('return 1', 'x', 'b') return f, e",
   "nil\tbinary chunks are not allowed in the sandbox", NULL},
  {"load gets the sandbox env", "return load('return io')()", NULL, "undefined global 'io'"},
  {"load with an explicit env", "return load('return x', 'c', 't', {x = 7})()", "7", NULL},
  {"string metatable hidden", "return getmetatable('')", "false", NULL},
  {"string library read-only", "string.find = nil", NULL, "read-only"},
  {"rawset on a library refused", "rawset(string, 'find', print)", NULL, "read-only"},
  {"library metatable protected", "setmetatable(math, {})", NULL, "protected metatable"},
  {"getmetatable of a library", "return getmetatable(table)", "false", NULL},
  {"__gc refused", "setmetatable({}, {__gc = function() end})", NULL, "__gc"},
  {"__gc added later never runs",
   "local mt = {} local t = setmetatable({}, mt) mt.__gc = function() while true do end end "
   "t = nil collectgarbage() collectgarbage() return 'ok'", "ok", NULL},
  {"collectgarbage cannot stop the collector", "collectgarbage('stop')", NULL, "invalid option"},
  {"collectgarbage count", "return type(collectgarbage('count'))", "number", NULL},
  {"require of a real module refused", "return require('io')", NULL, "module 'io' not found"},
  {"require of a path refused", "return require('../../etc/passwd')", NULL, "not found"},
  {"native module by require", "return require('time') == time, type(require('http').get)", "true\tfunction", NULL},
  {"own globals", "x = 1 return x, _G == _ENV, rawget(_G, 'x')", "1\ttrue\t1", NULL},
  {"undefined global read raises", "return no_such_thing", NULL, "undefined global 'no_such_thing'"},
  {"run's coroutine cannot be resumed", "return coroutine.resume(coroutine.running())",
   "false\tcannot resume a run's own coroutine", NULL},
  {"coroutine library read-only", "coroutine.resume = nil", NULL, "read-only"},
  {"pairs over a library lists it", "local n = 0 for k in pairs(math) do n = n + 1 end return n > 20", "true", NULL},
  {"#library via proxy", "return #table", "0", NULL},
  {"top-level yield is an error", "coroutine.yield(1)", NULL, "attempt to yield from outside a coroutine"},
  {"string.rep of nothing is instant", "return #string.rep('', 1e15), #string.rep('', 1e15, '')", "0\t0", NULL},
  {"table functions keep their meaning",
   "local t = {1, 2, 3} table.insert(t, 2, 9) table.insert(t, 5) local r = table.remove(t, 1) "
   "return r, table.concat(t, ','), table.concat(table.move({1, 2, 3}, 1, 3, 2), ',')", "1\t9,2,3,5\t1,1,2,3", NULL},
  {"table.insert position checked", "table.insert({}, 5, 1)", NULL, "position out of bounds"},
  {"error with a number", "error(12345.5)", NULL, "12345.5"},
};

static void test_escapes(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
    const escape_case *c = &escapes[i];
    outcome o;
    eval_fresh(NULL, c->code, &o);
    if (c->output) {
      if (o.state != MH_RUN_OK) fail_msg("%s: expected '%s', got error: %s", c->name, c->output, o.error);
      if (strcmp(o.output, c->output) != 0) fail_msg("%s: expected '%s', got '%s'", c->name, c->output, o.output);
    } else if (c->error) {
      if (o.state == MH_RUN_OK) fail_msg("%s: expected an error with '%s', got '%s'", c->name, c->error, o.output);
      if (!strstr(o.error, c->error)) fail_msg("%s: error '%s' lacks '%s'", c->name, o.error, c->error);
    } else {
      /* binary chunk: load must fail with a message, never run */
      if (o.state != MH_RUN_OK || strncmp(o.output, "nil\t", 4) != 0)
        fail_msg("%s: expected nil plus a message, got %s / %s", c->name, o.output, o.error);
    }
    outcome_clear(&o);
  }
}

/* ---- limits ---- */

typedef struct bomb_case {
  const char *name;
  const char *code;
  const char *error;
} bomb_case;

static const bomb_case bombs[] = {
  {"busy loop", "while true do end", "CPU budget exceeded"},
  {"pcall cannot swallow the CPU budget", "while true do pcall(function() while true do end end) end", "CPU budget exceeded"},
  {"xpcall cannot swallow it", "while true do xpcall(function() while true do end end, function(e) return e end) end",
   "CPU budget exceeded"},
  {"a coroutine cannot swallow it",
   "while true do coroutine.resume(coroutine.create(function() while true do end end)) end", "CPU budget exceeded"},
  {"__close cannot swallow it",
   "while true do pcall(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) end) end",
   "CPU budget exceeded"},
  {"pattern: find", "return string.rep('a', 60000):find('.-.-.-.-.-.-b')", "CPU budget exceeded"},
  {"pattern: match", "return string.rep('a', 60000):match('(.-)(.-)(.-)(.-)b')", "CPU budget exceeded"},
  {"pattern: gmatch", "for x in string.rep('a', 60000):gmatch('.-.-.-.-.-b') do end", "CPU budget exceeded"},
  {"pattern: gsub", "return (string.rep('a', 60000):gsub('.-.-.-.-.-b', ''))", "CPU budget exceeded"},
  {"string.rep", "return #string.rep('x', 2^30)", "memory limit of 64 MiB exceeded"},
  {"string.rep inside pcall", "local ok = pcall(string.rep, 'x', 1e9) return 'survived'", "memory limit of 64 MiB exceeded"},
  {"table.concat", "local s = ('x'):rep(1000) local t = {} for i = 1, 1e5 do t[i] = s end return #table.concat(t)",
   "memory limit of 64 MiB exceeded"},
  {"string.format", "local s = ('x'):rep(30e6) return #string.format('%s%s%s', s, s, s)", "memory limit of 64 MiB exceeded"},
  {"table growth", "local t = {} for i = 1, 1e9 do t[i] = i end", "memory limit of 64 MiB exceeded"},
  {"growth under pcall", "local t = {} while true do pcall(function() t[#t + 1] = ('x'):rep(1e6) .. #t end) end",
   "memory limit of 64 MiB exceeded"},
  {"recursion", "local function f() return 1 + f() end return f()", "stack overflow|memory limit"},
  {"recursion through __index", "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x",
   "overflow"},
  {"recursion through __tostring", "local t = setmetatable({}, {__tostring = function(t) return tostring(t) end}) return tostring(t)",
   "overflow"},
  {"recursion through gsub callbacks", "local function f(s) return (s:gsub('.', f)) end return f('ab')", "overflow"},
  {"recursion through table.sort", "local function f() local t = {3, 2, 1} table.sort(t, function(a, b) f() return a < b end) end f()",
   "overflow"},
  {"recursion through coroutines", "local function f() return coroutine.wrap(f)() end return f()", "overflow"},
  {"table.move over a huge empty range", "table.move({}, 1, 1e12, 1)", "CPU budget exceeded"},
  {"table.insert behind a lying __len",
   "local t = setmetatable({}, {__len = function() return 1e12 end}) table.insert(t, 1, 'x')", "CPU budget exceeded"},
  {"table.remove behind a lying __len",
   "local t = setmetatable({}, {__len = function() return 1e12 end}) table.remove(t, 1)", "CPU budget exceeded"},
};

/* Does text contain one of the '|'-separated phrases? */
static int contains_any(const char *text, const char *phrases) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", phrases);
  for (char *save = NULL, *p = strtok_r(buf, "|", &save); p; p = strtok_r(NULL, "|", &save))
    if (strstr(text, p)) return 1;
  return 0;
}

static void test_bombs_are_contained(void **state) {
  (void)state;
  mh_limits limits;
  mh_limits_default(&limits);
  limits.cpu_ns = 300ull * 1000000;
  for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++) {
    fixture f;
    fixture_open(&f, &limits);
    outcome o;
    eval_in(&f, bombs[i].code, &o);
    if (o.state == MH_RUN_OK) fail_msg("%s: expected '%s', but it returned '%s'", bombs[i].name, bombs[i].error, o.output);
    if (!contains_any(o.error, bombs[i].error)) fail_msg("%s: error '%s' lacks '%s'", bombs[i].name, o.error, bombs[i].error);
    outcome_clear(&o);
    eval_in(&f, "return 1 + 1", &o); /* the sandbox is still usable */
    if (o.state != MH_RUN_OK || strcmp(o.output, "2") != 0)
      fail_msg("%s: sandbox unusable afterwards: %s", bombs[i].name, o.error ? o.error : o.output);
    outcome_clear(&o);
    fixture_close(&f);
  }
}

static void test_memory_cap_is_configurable(void **state) {
  (void)state;
  mh_limits limits;
  mh_limits_default(&limits);
  limits.memory = 4u << 20;
  outcome o;
  eval_fresh(&limits, "local t = {} for i = 1, 1e7 do t[i] = i end", &o);
  assert_error_contains(&o, "memory limit of 4 MiB exceeded");
  outcome_clear(&o);
  eval_fresh(&limits, "return #('x'):rep(1e6)", &o);
  assert_ok_output(&o, "1000000");
  outcome_clear(&o);
}

static void test_deadline(void **state) {
  (void)state;
  mh_limits limits;
  mh_limits_default(&limits);
  limits.deadline_ns = 200ull * 1000000;
  limits.cpu_ns = 0;
  outcome o;
  eval_fresh(&limits, "sleep(10000)", &o);
  assert_error_contains(&o, "deadline of 200 ms exceeded");
  outcome_clear(&o);
  eval_fresh(&limits, "while true do end", &o);
  assert_error_contains(&o, "deadline of 200 ms exceeded");
  outcome_clear(&o);
  eval_fresh(&limits, "while true do pcall(sleep, 5) end", &o);
  assert_error_contains(&o, "deadline of 200 ms exceeded");
  outcome_clear(&o);
}

/* Each script gets its own globals; one cannot see or change another's. */
static void test_scripts_are_isolated(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  outcome o;
  eval_in(&f, "shared = 5 return shared", &o);
  assert_ok_output(&o, "5");
  outcome_clear(&o);
  eval_in(&f, "return rawget(_G, 'shared')", &o);
  assert_ok_output(&o, "nil");
  outcome_clear(&o);
  eval_in(&f, "print = nil string = nil return 1", &o); /* shadows only its own env */
  assert_ok_output(&o, "1");
  outcome_clear(&o);
  eval_in(&f, "return type(print), type(string.format)", &o);
  assert_ok_output(&o, "function\tfunction");
  outcome_clear(&o);
  fixture_close(&f);
}

/* Neither the main stack nor the registry grows run after run. */
static void test_no_growth_over_runs(void **state) {
  (void)state;
  fixture f;
  fixture_open(&f, NULL);
  lua_State *L = f.vm->L;
  outcome o;
  eval_in(&f, "local co = coroutine.wrap(function() sleep(0) return 1 end) return co()", &o);
  outcome_clear(&o);
  lua_gc(L, LUA_GCCOLLECT);
  int top = lua_gettop(L);
  size_t registry = lua_rawlen(L, LUA_REGISTRYINDEX);
  size_t mem = f.vm->mem_used;
  for (int i = 0; i < 300; i++) {
    eval_in(&f, i % 3 ? "local co = coroutine.wrap(function() sleep(0) return 1 end) return co()" : "error('x')", &o);
    outcome_clear(&o);
  }
  lua_gc(L, LUA_GCCOLLECT);
  assert_int_equal(lua_gettop(L), top);
  assert_true(lua_rawlen(L, LUA_REGISTRYINDEX) <= registry + 1);
  if (f.vm->mem_used > mem + 16 * 1024)
    fail_msg("memory grew from %zu to %zu bytes over 300 runs", mem, f.vm->mem_used);
  fixture_close(&f);
}

static void test_no_secret_reaches_scripts(void **state) {
  (void)state;
  setenv("MOONHIVE_TEST_SECRET", "sk-should-never-leak", 1);
  outcome o;
  eval_fresh(NULL,
             "local found = {} for k, v in pairs(_G) do found[#found + 1] = k end "
             "for k in pairs(os) do found[#found + 1] = 'os.' .. k end "
             "table.sort(found) return table.concat(found, ' ')", &o);
  assert_int_equal(o.state, MH_RUN_OK);
  assert_null(strstr(o.output, "getenv"));
  assert_null(strstr(o.output, "sk-should"));
  outcome_clear(&o);
  unsetenv("MOONHIVE_TEST_SECRET");
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_escapes),
    cmocka_unit_test(test_bombs_are_contained),
    cmocka_unit_test(test_memory_cap_is_configurable),
    cmocka_unit_test(test_deadline),
    cmocka_unit_test(test_scripts_are_isolated),
    cmocka_unit_test(test_no_growth_over_runs),
    cmocka_unit_test(test_no_secret_reaches_scripts),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
