/* test_patterns.c — the budgeted pattern functions (host/sb_string.c).
 *
 * Links with sb_string.c alone: this file defines mh_vm_check_limits as a test
 * double that counts its calls and raises "CPU budget exceeded" once a
 * threshold set by the test is passed. The differential test runs thousands of
 * calls through string.X and gstring.X (the guarded copy) in one plain Lua
 * state and compares every result list and every error message. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "limits_check.h"
#include "sb_string.h"

static long check_calls;             /* calls to the double since the last reset */
static long check_limit = LONG_MAX;  /* calls allowed before it raises */

/* [-0, +0, v] Test double for the host's limit check. */
void mh_vm_check_limits(lua_State *L) {
  if (++check_calls > check_limit) luaL_error(L, "CPU budget exceeded");
}

static void budget(long limit) {
  check_calls = 0;
  check_limit = limit;
}

/* A plain state with every library and a global gstring: a copy of string
 * whose find, match, gmatch and gsub are the guarded ones. */
static int setup(void **state) {
  lua_State *L = luaL_newstate();
  if (!L) return -1;
  luaL_openlibs(L);
  lua_newtable(L);                /* copy */
  lua_getglobal(L, "string");     /* copy, string */
  lua_pushnil(L);                 /* copy, string, nil */
  while (lua_next(L, -2)) {       /* copy, string, key, value */
    lua_pushvalue(L, -2);         /* copy, string, key, value, key */
    lua_insert(L, -2);            /* copy, string, key, key, value */
    lua_rawset(L, -5);            /* copy, string, key */
  }
  lua_pop(L, 1);                  /* copy */
  mh_string_guard(L, -1);
  lua_setglobal(L, "gstring");
  if (lua_gettop(L) != 0) return -1;
  budget(LONG_MAX);
  *state = L;
  return 0;
}

static int teardown(void **state) {
  lua_close(*state);
  return 0;
}

/* Runs a chunk; fails the test with its message when it raises. Leaves its
 * results on the stack. */
static void run(lua_State *L, const char *name, const char *code) {
  if (luaL_loadbuffer(L, code, strlen(code), name) != LUA_OK ||
      lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK)
    fail_msg("%s: %s", name, lua_tostring(L, -1));
}

/* ---- 1. differential: guarded and stock agree on everything ------------- */

static const char differential_lua[] =
  "local S, G = string, gstring\n"
  "local unpack, concat = table.unpack, table.concat\n"
  "local function pack(...) return { n = select('#', ...), ... } end\n"
  "local function show(v)\n"
  "  if type(v) == 'string' then return string.format('%q', v) end\n"
  "  if math.type(v) then return math.type(v) .. ':' .. tostring(v) end\n"
  "  return type(v) == 'function' and 'function' or tostring(v)\n"
  "end\n"
  "local function listing(r)\n"
  "  local t = {}\n"
  "  for i = 1, r.n do t[i] = show(r[i]) end\n"
  "  return '(' .. concat(t, ', ') .. ')'\n"
  "end\n"
  /* callers that name the function the same way for both libraries, so that
   * argument errors read the same ("bad argument #1 to 'find'") */
  "local function callers(lib)\n"
  "  local c = {}\n"
  "  function c.find(...) local r = pack(lib.find(...)) return unpack(r, 1, r.n) end\n"
  "  function c.match(...) local r = pack(lib.match(...)) return unpack(r, 1, r.n) end\n"
  "  function c.gsub(...) local r = pack(lib.gsub(...)) return unpack(r, 1, r.n) end\n"
  "  function c.gmatch(...)\n"
  "    local it = lib.gmatch(...)\n"
  "    local out = {}\n"
  "    for _ = 1, 400 do\n"
  "      local r = pack(it())\n"
  "      out[#out + 1] = listing(r)\n"
  "      if r.n == 0 then out[#out + 1] = listing(pack(it())) break end\n"
  "    end\n"
  "    return concat(out, ' ')\n"
  "  end\n"
  "  function c.gmatch_for(s, p, init)\n"
  "    local out = {}\n"
  "    for a, b in lib.gmatch(s, p, init) do\n"
  "      out[#out + 1] = show(a) .. ',' .. show(b)\n"
  "      if #out > 400 then break end\n"
  "    end\n"
  "    return concat(out, ';')\n"
  "  end\n"
  "  return c\n"
  "end\n"
  "local stock, guarded = callers(S), callers(G)\n"
  "local ncases, fails = 0, {}\n"
  "local function check(fn, ...)\n"
  "  local args = pack(...)\n"
  "  ncases = ncases + 1\n"
  "  local a = pack(pcall(stock[fn], ...))\n"
  "  local b = pack(pcall(guarded[fn], ...))\n"
  "  local same = a.n == b.n\n"
  "  for i = 1, a.n do\n"
  "    local x, y = a[i], b[i]\n"
  "    if type(x) ~= type(y) or math.type(x) ~= math.type(y) or x ~= y then same = false end\n"
  "  end\n"
  "  if not same then\n"
  "    fails[#fails + 1] = string.format('%s%s: stock %s, guarded %s',\n"
  "      fn, listing(args), listing(a), listing(b))\n"
  "  end\n"
  "end\n"
  "\n"
  "local pats = {\n"
  "  '', 'a', '^a', 'a$', '^$', '^', '$', '.', '..', '^.', '.$', 'l', 'll', 'o w',\n"
  "  '%a+', '%A+', '%d+', '%D', '%s*', '%S+', '%w+', '%W', '%l+', '%u+',\n"
  "  '%p', '%P+', '%c', '%x+', '%g+', '%G', '%z', '%Z+', '%.', '%%', '%$', '%(', '%-',\n"
  "  '[aeiou]', '[^aeiou]+', '[a-z]+', '[A-Z]', '[%a_][%w_]*', '[%]]', '[]]', '[^]]+',\n"
  "  '[-a]', '[a-]', '[a-c-e]', '[%-]', '[%d%.]+', '[^%s]+', '[.]', '[%a-z]', '[z-a]', '[^]',\n"
  "  '(%w+)=(%w+)', '()a()', '()', '(a*(.)%w(%s*))', '(h)(e)(l)(l)(o)', '(a)(b)?', '((a)(b))',\n"
  "  '%f[%w]%w+', '%f[%W]', '%f[%a]%a+%f[%A]', '%f[%z]', '%f[^%z]', '%f[%s]', '%f[a-c]', '%f[]]',\n"
  "  '%b()', '%b[]', '%bxy', '%b\\0\\1', '%b((', '(%b())', '%b()%b()', 'f%b()',\n"
  "  '(.)%1', '(%a)(%a)%2%1', '(a+)%1', '(()a)%1', '(.-)%1$', '^(a*)%1$', '()%1',\n"
  "  'a-b', 'a-', '.-', '.-$', 'a*', 'a+', 'a?', 'a?b', 'x*$', '^(.-)%s*$', '^%s*(.-)%s*$',\n"
  "  '$a', '^^', 'a$b', '[\\128-\\255]+', '[\\xc3][\\x80-\\xbf]', utf8.charpattern,\n"
  "  '\\0', '%z+', '[%z]', '[\\0-\\31]+', 'y\\0', '\\0y', 'x.y',\n"
  "  '..-..', '(.-)(.-)', '(.*)%s(.*)', 'b*c+', '(x?)(y?)', '^(%d+)%.?(%d*)', '(%d+)%.(%d+)',\n"
  "  '%s*()', '()%s*()', '^()', '()$', '[%w%s]-()%p',\n"
  "  '%', 'a%', '[a', '[^', '[%', '[a%]', '[a%', '(', 'a)', ')', '(()', '%f', '%fa', '%f[a',\n"
  "  '%b', '%ba', '%1', '%0', '(a)%2', '(a%1)', '%9',\n"
  "  ('()'):rep(33), ('(.?)'):rep(33), ('()'):rep(32), ('a?'):rep(250), ('a?'):rep(190),\n"
  "  ('a?'):rep(199), ('a?'):rep(200), ('(a?)'):rep(3) .. ('a?'):rep(194), ('a-'):rep(199) .. '$',\n"
  "  ('(a?)'):rep(20), ('%a-'):rep(210), ('(.-)'):rep(5) .. '$',\n"
  /* a first item that must match: the search skips the starts it cannot have */
  "  '[%c\"\\\\]', '[^%w%s]+', '[%D]', '[%S%d]+', '[\\0-\\8%p]', '[^\\0]', '%$x', '%..', '%W+%w',\n"
  "  'l+o', 'o[^%s]', 'w%a+', 'b+', 'y+', '%x%x', '%z%a', '%Sy', '[%Aa]+', '$$', '\\0+', '[]%]]+x',\n"
  "}\n"
  "local subjs = {\n"
  "  '', 'a', 'aaa', 'hello world', '  x = 10, y = 20  ', 'abcabc', 'key=val; k2=v2',\n"
  "  'THE (quick) [brown] fox', 'f(a(b)c)d)(', 'x\\0y\\0z', 'h\\xc3\\xa9llo w\\xc3\\xb6rld \\xe2\\x9c\\x93',\n"
  "  '1234.5e-3', '\\n\\t line\\r\\n', 'xyxxyy', '((a))', 'abab abba', ('a'):rep(300),\n"
  "  'say \"hi\"\\n\\\\ok$x', ('x'):rep(150) .. '\\1\\0y',\n"
  "}\n"
  "local NONE = {}\n"
  "local inits = { NONE, 1, 2, 3, -1, -2, 0, 5, 12, 100, -100 }\n"
  "local tbl = { a = 'A', hello = 'HI', [1] = 'one', x = false, b = 3, [3] = 4.5, l = {} }\n"
  "local mtbl = setmetatable({}, { __index = function(_, k)\n"
  "  if math.type(k) then return '#' .. k end\n"
  "  if #k % 2 == 0 then return k:upper() end\n"
  "end })\n"
  "local repls = {\n"
  "  '<%0>', '%1', '[%2]', '%%', 'x', '', 7, 1.5, '%', '%x', 'a%1b%0c%%', '%1%1', '%9',\n"
  "  tbl, mtbl,\n"
  "  function(...) return select('#', ...) .. ':' .. concat({...}, '|') end,\n"
  "  function() return false end,\n"
  "  function() end,\n"
  "  function(a) return #tostring(a) end,\n"
  "  function(a) if a == 'l' then return {} end return a end,\n"
  "}\n"
  "local ns = { NONE, 0, 1, 2, -1, math.maxinteger, math.mininteger }\n"
  "\n"
  "for _, s in ipairs(subjs) do\n"
  "  local long = #s > 100\n"
  "  for _, p in ipairs(pats) do\n"
  "    for _, i in ipairs(inits) do\n"
  "      if i == NONE then\n"
  "        check('find', s, p); check('match', s, p); check('gmatch', s, p)\n"
  "      else\n"
  "        check('find', s, p, i); check('match', s, p, i); check('gmatch', s, p, i)\n"
  "        check('find', s, p, i, true); check('find', s, p, i, false)\n"
  "        check('find', s, p, i, nil)\n"
  "      end\n"
  "    end\n"
  "    for ri, r in ipairs(repls) do\n"
  "      if not long or ri % 4 == 1 then\n"
  "        for _, n in ipairs(ns) do\n"
  "          if n == NONE then check('gsub', s, p, r) else check('gsub', s, p, r, n) end\n"
  "        end\n"
  "      end\n"
  "    end\n"
  "  end\n"
  "end\n"
  "\n"
  /* argument handling, odd types, and a few hand-picked cases */
  "check('find', nil, 'a'); check('find', 'a'); check('find', 'abc', {})\n"
  "check('find', 'abc', 'b', 'x'); check('find', 'abc', 'b', 1.5); check('find', 'abc', 'b', '2')\n"
  "check('find', 'abc', 'b', 2.0); check('find', 123, 2); check('find', 'a.b', '.', 1, true)\n"
  "check('find', 'a.b', '.', 1, 1); check('find', 'a.b', '.', 1, {}); check('find', 'a+b', '+', 1)\n"
  "check('find', 'abc', 'b', math.mininteger); check('find', 'abc', 'b', math.maxinteger)\n"
  "check('find', 'abc', '', 4); check('find', 'abc', '', 5); check('find', 'abc', '', 4, true)\n"
  "check('find', 'a\\0b', '\\0', 1, true); check('find', 'a\\0b.', '\\0.'); check('find', 'abc', 'c', -1, true)\n"
  "check('find', 'aaab', 'aab', 1, true); check('find', 'abc', 'abcd', 1, true)\n"
  "check('match', 'abc'); check('match', '12', 1); check('match', 12, 2); check('match', 12.5, '%.')\n"
  "check('match', 'abc', '', 4); check('match', 'abc', '()', 4); check('match', 'abc', '()', 5)\n"
  "check('gsub', 'abc', 'b'); check('gsub', 'abc', 'b', true); check('gsub', 'abc', 'b', nil)\n"
  "check('gsub', 'abc', 'b', 'x', 'y'); check('gsub', 'abc', 'b', 'x', 2.5); check('gsub', 'abc', 'b', 'x', '1')\n"
  "check('gsub', 'abc', 'b', 'x', 1.0); check('gsub', 123, 2, 9); check('gsub', 'abc', '', '-')\n"
  "check('gsub', 'abc', '^', '-'); check('gsub', 'abc', '$', '-'); check('gsub', 'abc', '%w', '%1')\n"
  "check('gsub', 'abc', '(%w)', '%2'); check('gsub', 'hello world', '(o)', '[%1%1]', 1)\n"
  "check('gsub', 'abc', '(', 'x'); check('gsub', 'abc', '(b', '%1'); check('gsub', 'abc', '(b', 'x')\n"
  "check('gsub', 'abc', '(b', function(x) return x end); check('gsub', 'abc', '(b', {})\n"
  "check('gsub', 'abc', 'b', string.upper); check('gsub', 'a b', '%s', coroutine.running())\n"
  "check('gsub', 'abc', 'b', 'x%'); check('gsub', 'hello', 'l+', function(x) error('boom') end)\n"
  "check('gsub', 'hello', 'l', function(x) error(NONE) end)\n"
  "check('gsub', 'abc', '()', '%1'); check('gsub', 'abc', '()(.)', '%2%1')\n"
  "check('gsub', 'abc', '()', { [1] = 'one', [3] = 'three' })\n"
  "check('gsub', 'abc', '%w', setmetatable({}, { __index = function() error('idx') end }))\n"
  "check('gmatch', nil, 'a'); check('gmatch', 'abc', 'a', 'x'); check('gmatch', 'abc')\n"
  "check('gmatch', 'abc', '', 4); check('gmatch', 'abc', '', 5); check('gmatch', 'abc', '', -1)\n"
  "check('gmatch', 'abc', '', math.maxinteger); check('gmatch', 'abc', '.', math.mininteger)\n"
  "check('gmatch_for', 'k=v, a=b', '(%w+)=(%w+)'); check('gmatch_for', 'one two', '%a+')\n"
  "check('gmatch_for', 'abc', '()', 2); check('gmatch_for', 'a,b,,c', '([^,]*)')\n"
  "\n"
  "return ncases, fails\n";

static void test_differential(void **state) {
  lua_State *L = *state;
  budget(LONG_MAX);
  run(L, "=differential", differential_lua);
  lua_Integer ncases = lua_tointeger(L, 1);
  lua_Integer nfails = (lua_Integer)lua_rawlen(L, 2);
  for (lua_Integer i = 1; i <= nfails && i <= 20; i++) {
    lua_rawgeti(L, 2, i);
    print_error("mismatch: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (nfails > 0)
    fail_msg("%lld of %lld cases differ", (long long)nfails, (long long)ncases);
  assert_true(ncases > 1000);
  lua_settop(L, 0);
}

/* ---- 2. pathological patterns hit the budget ---------------------------- */

/* Does the message end in "CPU budget exceeded"? (luaL_error prefixes the
 * caller's position.) */
static int is_budget_error(lua_State *L, int idx) {
  static const char want[] = "CPU budget exceeded";
  size_t len;
  const char *msg = lua_tolstring(L, idx, &len);
  return msg && lua_type(L, idx) == LUA_TSTRING && len >= sizeof want - 1 &&
         strcmp(msg + len - (sizeof want - 1), want) == 0;
}

/* Runs `return pcall(function() <call> end)` with the budget at limit; returns
 * whether the call raised the budget error. */
static int hits_budget(lua_State *L, const char *call, long limit) {
  char code[512];
  snprintf(code, sizeof code,
           "local a = string.rep('a', 200000)\n"
           "local b = string.rep('a', 100000)\n"
           "local paren = string.rep('(', 200000)\n"
           "return pcall(function() return %s end)", call);
  budget(limit);
  run(L, call, code);
  int raised = !lua_toboolean(L, 1) && is_budget_error(L, 2);
  if (!raised) print_error("%s: no budget error (%s)\n", call, luaL_tolstring(L, 2, NULL));
  lua_settop(L, 0);
  budget(LONG_MAX);
  return raised;
}

static void test_pathological(void **state) {
  lua_State *L = *state;
  assert_true(hits_budget(L, "gstring.find(a, '(.-)(.-)(.-)(.-)(.-)b')", 20));
  assert_true(hits_budget(L, "gstring.match(a, ('a*'):rep(20) .. 'b')", 20));
  assert_true(hits_budget(L, "gstring.gsub(a, '(.-)(.-)(.-)b', 'x')", 20));
  assert_true(hits_budget(L, "gstring.gmatch(a, '(.-)(.-)(.-)b')()", 20));
  assert_true(hits_budget(L, "gstring.find(a, '.-.-.-.-b')", 20));
  assert_true(hits_budget(L, "gstring.find(paren, '%b()')", 20));
  assert_true(hits_budget(L, "gstring.find(a, '^(a*)%1b')", 20));
  /* plain find is memmem now: linear, so this is no longer pathological */
  assert_false(hits_budget(L, "gstring.find(a, b .. 'b', 1, true)", 20));
  assert_true(hits_budget(L, "gstring.gsub(a, '', ('%0'):rep(10000))", 20));
  /* work that grows with the pattern: a long set, a long literal run */
  assert_true(hits_budget(L, "gstring.find(a, '[' .. ('b'):rep(100000) .. 'a]*c')", 20));
  assert_true(hits_budget(L, "gstring.find(a, ('a'):rep(100000) .. '.b')", 20));

  /* the double was really consulted: count the calls of one budgeted run */
  budget(20);
  run(L, "=count", "return pcall(gstring.find, string.rep('a', 200000), ('a*'):rep(20) .. 'b')");
  assert_false(lua_toboolean(L, 1));
  assert_int_equal(check_calls, 21);
  lua_settop(L, 0);

  /* high threshold, small input: completes with Lua's own answer, and an
   * ordinary match never even reads the clock */
  budget(LONG_MAX);
  run(L, "=small",
      "local s = string.rep('a', 20)\n"
      "local p = '(.-)(.-)(.-)(.-)(.-)b'\n"
      "assert(select('#', gstring.find(s, p)) == 1 and gstring.find(s, p) == nil)\n"
      "assert(gstring.match('key = value', '(%w+)%s*=%s*(%w+)') == 'key')\n"
      "assert(gstring.gsub('hello world', 'o', '0') == 'hell0 w0rld')\n"
      "return gstring.find(s .. 'b', p)");
  assert_int_equal(lua_gettop(L), 7);
  assert_int_equal(lua_tointeger(L, 1), 1);
  assert_int_equal(lua_tointeger(L, 2), 21);
  assert_string_equal(lua_tostring(L, 3), "");
  assert_string_equal(lua_tostring(L, 7), "aaaaaaaaaaaaaaaaaaaa");
  lua_settop(L, 0);
  budget(LONG_MAX);
  run(L, "=quiet", "return gstring.gsub(string.rep('key = value; ', 50), '(%w+)%s*=%s*(%w+)', '%2=%1')");
  assert_int_equal(lua_tointeger(L, 2), 50);
  assert_int_equal(check_calls, 0);
  lua_settop(L, 0);
}

/* ---- 3. gsub: errors propagate, n at its extremes ----------------------- */

static void test_gsub_edges(void **state) {
  lua_State *L = *state;
  budget(LONG_MAX);
  run(L, "=gsub edges",
      "local ok, err = pcall(gstring.gsub, 'hello', 'l', function(c) error('boom: ' .. c, 0) end)\n"
      "assert(not ok and err == 'boom: l', tostring(err))\n"
      "local obj = {}\n"
      "ok, err = pcall(gstring.gsub, 'hello', 'l', function() error(obj) end)\n"
      "assert(not ok and err == obj)\n"
      "local calls = 0\n"
      "ok, err = pcall(gstring.gsub, 'abcdef', '%w', function(c)\n"
      "  calls = calls + 1\n"
      "  if c == 'c' then error('stop at c', 0) end\n"
      "end)\n"
      "assert(not ok and err == 'stop at c' and calls == 3)\n"
      "local r, n = gstring.gsub('hello world', 'o', '0', math.maxinteger)\n"
      "assert(r == 'hell0 w0rld' and n == 2 and math.type(n) == 'integer')\n"
      "r, n = gstring.gsub('hello world', 'o', '0', 0)\n"
      "assert(r == 'hello world' and n == 0)\n"
      "r, n = gstring.gsub('hello world', '', '-', 0)\n"
      "assert(r == 'hello world' and n == 0)\n"
      "r, n = gstring.gsub('abc', '', '-', math.maxinteger)\n"
      "assert(r == '-a-b-c-' and n == 4)\n"
      "r, n = gstring.gsub('abc', '%w', '%0%0', 2)\n"
      "assert(r == 'aabbc' and n == 2)\n"
      "r, n = gstring.gsub('abc', '%w', '%0', -5)\n"
      "assert(r == 'abc' and n == 0)\n"
      "return true");
  assert_true(lua_toboolean(L, 1));
  lua_settop(L, 0);
}

/* A gmatch iterator keeps working after it raised (stock Lua would lose its
 * recursion limit there). */
static void test_gmatch_after_error(void **state) {
  lua_State *L = *state;
  budget(LONG_MAX);
  run(L, "=gmatch after error",
      "local it = gstring.gmatch(string.rep('a', 300), string.rep('a?', 250))\n"
      "for _ = 1, 3 do\n"
      "  local ok, err = pcall(it)\n"
      "  assert(not ok and err:find('pattern too complex'), tostring(err))\n"
      "end\n"
      "it = gstring.gmatch(string.rep('a', 200000), '(.-)(.-)(.-)b')\n"
      "return it");
  budget(5);
  lua_pushvalue(L, 1);
  assert_int_not_equal(lua_pcall(L, 0, 0, 0), LUA_OK);
  assert_true(is_budget_error(L, -1));
  lua_settop(L, 0);
  budget(LONG_MAX);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_differential, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pathological, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gsub_edges, setup, teardown),
    cmocka_unit_test_setup_teardown(test_gmatch_after_error, setup, teardown),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
