/* test_units.c — the small host pieces on their own: the SSE parser (fed in
 * every possible split), size and duration parsing, and value rendering. */
#include "harness.h"

#include "config.h"
#include "copy.h"
#include "mod_jsonscan.h"
#include <lualib.h>
#include "sse.h"

/* ---- SSE ---- */

static const char stream[] =
  "\xEF\xBB\xBF: a comment\n"
  "event: greeting\ndata: first line\ndata: second line\nid: 1\n\n"
  "data: crlf\r\n\r\n"
  "data:no space\rretry: 1500\r\r"
  "event: empty-data-ignored\n\n"
  "data\n\n"
  "id: 7\ndata: {\"i\":0}\n\n"
  "data: unfinished at the end";

static const char *const expected[][3] = {
  {"greeting", "first line\nsecond line", "1"},
  {"message", "crlf", "1"},
  {"message", "no space", "1"},
  {"message", "", "1"},
  {"message", "{\"i\":0}", "7"},
};
#define NEXPECTED (sizeof expected / sizeof expected[0])

static int feed_all(mh_sse *p, const char *buf, size_t len, char events[][3][64], size_t *n) {
  while (len > 0) {
    mh_sse_event ev;
    int ready;
    size_t used = mh_sse_feed(p, buf, len, &ev, &ready);
    if (used == (size_t)-1) return -1;
    buf += used;
    len -= used;
    if (ready) {
      snprintf(events[*n][0], 64, "%.*s", (int)ev.event_len, ev.event);
      snprintf(events[*n][1], 64, "%.*s", (int)ev.data_len, ev.data);
      snprintf(events[*n][2], 64, "%.*s", ev.id ? (int)ev.id_len : 0, ev.id ? ev.id : "");
      if (*n + 1 < 16) (*n)++;
      if (*n == 3) assert_int_equal(ev.retry, 1500);
    }
  }
  return 0;
}

static void test_sse_every_split(void **state) {
  (void)state;
  size_t len = sizeof stream - 1;
  for (size_t a = 0; a <= len; a++) {
    for (size_t b = a; b <= len; b += 7) {
      mh_sse p;
      mh_sse_init(&p, NULL);
      char events[16][3][64];
      size_t n = 0;
      assert_int_equal(feed_all(&p, stream, a, events, &n), 0);
      assert_int_equal(feed_all(&p, stream + a, b - a, events, &n), 0);
      assert_int_equal(feed_all(&p, stream + b, len - b, events, &n), 0);
      if (n != NEXPECTED) fail_msg("split %zu/%zu: %zu events", a, b, n);
      for (size_t i = 0; i < NEXPECTED; i++)
        for (int f = 0; f < 3; f++)
          if (strcmp(events[i][f], expected[i][f]) != 0)
            fail_msg("split %zu/%zu event %zu field %d: '%s' != '%s'", a, b, i, f, events[i][f], expected[i][f]);
      mh_sse_free(&p);
    }
  }
}

/* ---- sizes and durations ---- */

static void test_parse_sizes_and_durations(void **state) {
  (void)state;
  size_t s;
  uint64_t d;
  assert_int_equal(mh_parse_size("64M", &s), 0);
  assert_int_equal(s, 64u << 20);
  assert_int_equal(mh_parse_size("512k", &s), 0);
  assert_int_equal(s, 512u << 10);
  assert_int_equal(mh_parse_size("1GiB", &s), 0);
  assert_int_equal(s, 1u << 30);
  assert_int_equal(mh_parse_size("1000", &s), 0);
  assert_int_equal(s, 1000);
  assert_int_equal(mh_parse_size("lots", &s), -1);
  assert_int_equal(mh_parse_size("-5M", &s), -1);
  assert_int_equal(mh_parse_size("5X", &s), -1);
  assert_int_equal(mh_parse_duration("30s", &d), 0);
  assert_true(d == 30000000000ull);
  assert_int_equal(mh_parse_duration("250ms", &d), 0);
  assert_true(d == 250000000ull);
  assert_int_equal(mh_parse_duration("1.5", &d), 0);
  assert_true(d == 1500000000ull);
  assert_int_equal(mh_parse_duration("2m", &d), 0);
  assert_true(d == 120000000000ull);
  assert_int_equal(mh_parse_duration("0", &d), 0);
  assert_true(d == 0);
  assert_int_equal(mh_parse_duration("soon", &d), -1);
  assert_int_equal(mh_parse_duration("5 parsecs", &d), -1);
  char buf[32];
  mh_format_size(64u << 20, buf, sizeof buf);
  assert_string_equal(buf, "64 MiB");
  mh_format_size(1500, buf, sizeof buf);
  assert_string_equal(buf, "1500 bytes");
  mh_format_duration(30000000000ull, buf, sizeof buf);
  assert_string_equal(buf, "30 s");
  mh_format_duration(300000000ull, buf, sizeof buf);
  assert_string_equal(buf, "300 ms");
}

/* ---- rendering ---- */

static const char *const renderings[][2] = {
  {"return 1, 2.5, 'text', nil, true", "1\t2.5\ttext\tnil\ttrue"},
  {"return {1, 2, 3}", "{1, 2, 3}"},
  {"return {}", "{}"},
  {"return {b = 1, a = 2, [3] = 'x', [1.5] = 0}", "{[1.5] = 0, [3] = \"x\", a = 2, b = 1}"},
  {"return {['end'] = 1, ['with space'] = 2}", "{[\"end\"] = 1, [\"with space\"] = 2}"},
  {"return {'q\"uote', 'new\\nline', '\\1'}", "{\"q\\\"uote\", \"new\\nline\", \"\\1\"}"},
  {"return {1, {2, {3}}}", "{\n  1,\n  {\n    2,\n    {3}\n  }\n}"},
  {"local t = {} t.self = t return t", "{\n  self = <cycle>\n}"},
  {"local t = {} for i = 1, 300 do t[i] = i end return select(2, pcall(function() return t end))", NULL},
  {"return setmetatable({}, {__tostring = function() return 'custom!' end})", "custom!"},
};

static void test_rendering(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof renderings / sizeof renderings[0]; i++) {
    outcome o;
    eval_fresh(NULL, renderings[i][0], &o);
    if (o.state != MH_RUN_OK) fail_msg("%s: %s", renderings[i][0], o.error);
    if (renderings[i][1]) {
      if (strcmp(o.output, renderings[i][1]) != 0) fail_msg("%s:\n got: %s\nwant: %s", renderings[i][0], o.output, renderings[i][1]);
    } else {
      assert_non_null(strstr(o.output, "... (100 more)")); /* long tables are cut */
    }
    outcome_clear(&o);
  }
}

/* ---- copying values between states ---- */

static void test_copy_between_states(void **state) {
  (void)state;
  lua_State *A = luaL_newstate(), *B = luaL_newstate();
  luaL_openlibs(A);
  char err[256];
  assert_int_equal(luaL_dostring(A, "return {1, 'two', 3.5, true, nested = {deep = {x = 'y'}}, [10] = false}"), LUA_OK);
  assert_int_equal(mh_copy_value(A, -1, B, NULL, err, sizeof err), 0);
  lua_setglobal(B, "t");
  luaL_openlibs(B);
  assert_int_equal(luaL_dostring(B, "return t[1] == 1 and t[2] == 'two' and t[3] == 3.5 and t[4] == true "
                                    "and t.nested.deep.x == 'y' and t[10] == false and math.type(t[1]) == 'integer'"), LUA_OK);
  assert_true(lua_toboolean(B, -1));
  lua_settop(A, 0);
  lua_settop(B, 0);
  /* what cannot cross: functions, cycles, userdata; the message names the path */
  assert_int_equal(luaL_dostring(A, "return {a = {b = print}}"), LUA_OK);
  assert_int_equal(mh_copy_value(A, -1, B, NULL, err, sizeof err), -1);
  assert_non_null(strstr(err, "a.b"));
  assert_non_null(strstr(err, "function"));
  assert_int_equal(lua_gettop(B), 0);
  assert_int_equal(luaL_dostring(A, "local t = {} t.self = t return t"), LUA_OK);
  assert_int_equal(mh_copy_value(A, -1, B, NULL, err, sizeof err), -1);
  assert_non_null(strstr(err, "too deeply"));
  assert_int_equal(luaL_dostring(A, "return {[{}] = 1}"), LUA_OK);
  assert_int_equal(mh_copy_value(A, -1, B, NULL, err, sizeof err), -1);
  assert_int_equal(lua_gettop(A), 3); /* the source stack is left as it was */
  /* metamethods do not run: only raw contents cross */
  assert_int_equal(luaL_dostring(A, "return setmetatable({}, {__index = function() error('ran') end, __pairs = error})"), LUA_OK);
  assert_int_equal(mh_copy_value(A, -1, B, NULL, err, sizeof err), 0);
  assert_true(lua_istable(B, -1));
  lua_close(A);
  lua_close(B);
}

static void test_copy_rules(void **state) {
  (void)state;
  lua_State *A = luaL_newstate(), *B = luaL_newstate();
  luaL_openlibs(A);
  luaL_openlibs(B);
  char err[256];
  /* a byte cap counts a string every time it is reached */
  assert_int_equal(luaL_dostring(A, "local s = ('x'):rep(1000) return {s, s, s, {deep = s}}"), LUA_OK);
  mh_copy_rules cap = {3500, NULL};
  assert_int_equal(mh_copy_value(A, -1, B, &cap, err, sizeof err), -1);
  assert_non_null(strstr(err, "[4].deep: too big"));
  cap.max_bytes = 4004; /* keys are strings too */
  assert_int_equal(mh_copy_value(A, -1, B, &cap, err, sizeof err), 0);
  lua_settop(B, 0);
  /* masked strings become asterisks wherever they appear, keys included */
  const char *keys[] = {"sk-one", "KEY2", NULL};
  mh_copy_rules mask = {0, keys};
  assert_int_equal(luaL_dostring(A, "return {msg = 'bad key sk-one and KEY2, again sk-one', ['sk-one'] = 1, n = 5}"), LUA_OK);
  assert_int_equal(mh_copy_value(A, -1, B, &mask, err, sizeof err), 0);
  lua_setglobal(B, "t");
  assert_int_equal(luaL_dostring(B, "return t.msg == 'bad key ****** and ****, again ******' and t['******'] == 1 "
                                    "and t.n == 5 and t['sk-one'] == nil"), LUA_OK);
  assert_true(lua_toboolean(B, -1));
  mh_push_masked(B, "KEY2KEY2x", 9, keys);
  assert_string_equal(lua_tostring(B, -1), "********x");
  mh_push_masked(B, "nothing here", 12, keys);
  assert_string_equal(lua_tostring(B, -1), "nothing here");
  lua_close(A);
  lua_close(B);
}

/* ---- jsonscan: one JSON string out of a text ---- */

static void test_jsonscan(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "jsonscan", luaopen_mh_jsonscan, 1);
  lua_pop(L, 1);
  assert_int_equal(luaL_dostring(L,
    "local after = jsonscan.string_after\n"
    "local P = '\"c\":\"'\n"
    "assert(after('{\"c\":\"plain\"}', P) == 'plain')\n"
    "assert(after('{\"c\":\"\"}', P) == '')\n"
    "assert(after([[{\"c\":\"q\\\"x\\\\y\\/z\\n\\t\\b\\f\\r\"}]], P) == 'q\"x\\\\y/z\\n\\t\\b\\f\\r')\n"
    "assert(after([[{\"c\":\"\\u00e9\\u20ac\"}]], P) == '\\u{e9}\\u{20ac}')\n"
    "assert(after([[{\"c\":\"\\ud83d\\ude00\"}]], P) == '\\u{1F600}')\n"        /* a surrogate pair */
    "assert(after([[{\"c\":\"\\ud83dx\"}]], P) == '\\u{FFFD}x')\n"               /* a lone half */
    "assert(after('{\"c\":\"open', P) == nil)\n"                                      /* unterminated */
    "assert(after([[{\"c\":\"bad\\q\"}]], P) == nil)\n"                             /* unknown escape */
    "assert(after([[{\"c\":\"\\u12\"}]], P) == nil)\n"                              /* short \\u */
    "assert(after('{\"c\":\"a\\nb\"}', P) == nil)\n"                                /* a raw control character */
    "assert(after('{\"d\":1}', P) == nil)\n"                                           /* no prefix */
    "assert(not pcall(after, 'x', 'no quote'))\n"
    /* guards, and needles at every offset (16 places are tried at once) */
    "assert(after('{\"c\":\"v\",\"f\":null}', P, '\"f\":null', '\"t\"') == 'v')\n"
    "assert(after('{\"c\":\"v\",\"f\":1}', P, '\"f\":null', '\"t\"') == nil)\n"
    "assert(after('{\"c\":\"v\",\"t\":[],\"f\":null}', P, '\"f\":null', '\"t\"') == nil)\n"
    "for pad = 0, 70 do for tail = 0, 20 do\n"
    "  local t = ('\"x'):rep(pad // 2) .. ('y'):rep(pad % 2) .. '{\"c\":\"v' .. pad .. '\"}' .. ('z'):rep(tail)\n"
    "  assert(after(t, P) == 'v' .. pad, t)\n"
    "  assert(after(t .. 'NEED', P, 'NEED') == 'v' .. pad and after(t, P, 'NEED') == nil)\n"
    "  assert(after(t, P, nil, 'zz') == (tail < 2 and 'v' .. pad or nil))\n"
    "  assert(after(('z'):rep(tail) .. t:sub(1, -tail - 3), P) == nil)\n"
    "end end\n"
    "assert(not pcall(after, 'x', P, 'x'))\n"),
    LUA_OK);
  lua_close(L);
}

/* ---- jsonscan pickers: values out of a document in one pass ---- */

int luaopen_cjson(lua_State *L);

static void test_jsonscan_picker(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "jsonscan", luaopen_mh_jsonscan, 1);
  luaL_requiref(L, "cjson", luaopen_cjson, 1);
  lua_pop(L, 2);
  int rc = luaL_dostring(L,
    "local P = jsonscan.picker\n"
    "local function same(got, want) for i = 1, math.max(#want, want.n or 0) do\n"
    "  if got[i] ~= want[i] or math.type(got[i]) ~= math.type(want[i]) then\n"
    "    error(('value %d: %s (%s) vs %s'):format(i, tostring(got[i]), math.type(got[i]), tostring(want[i])), 2) end end end\n"
    "local reply = P('choices.1.message.content', 'choices.1.message.tool_calls#', 'choices.1.finish_reason',\n"
    "                'model', 'usage#', 'usage.prompt_tokens', 'usage.completion_tokens')\n"
    /* an ordinary reply, with whitespace and keys it does not ask for */
    "same({reply(' {\"id\":\"x\", \"model\" : \"m-1\",\"choices\":[ {\"index\":0,\"message\":{\"role\":\"assistant\",'\n"
    "  .. '\"content\":\"hi\",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],'\n"
    "  .. '\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3.5,\"details\":{\"x\":[1,{\"y\":-1e3}]}}}\\n')},\n"
    "     {true, 'hi', nil, 'stop', 'm-1', 3, 2, 3.5, n = 8})\n"
    /* tool calls are counted; a container at a plain path reads nil; usage missing */
    "same({reply('{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"id\":\"a\"},{\"id\":\"b\"}]},'\n"
    "  .. '\"finish_reason\":{\"odd\":1}}]}')}, {true, nil, 2, nil, nil, nil, nil, nil, n = 8})\n"
    "same({reply('{\"usage\":null,\"model\":[\"x\"]}')}, {true, nil, nil, nil, nil, nil, nil, nil, n = 8})\n"
    /* escapes: decoded as cjson decodes them */
    "local s = P('s')\n"
    "same({s([[{\"s\":\"q\\\"x\\\\y\\/z\\n\\t\\b\\f\\r\"}]])}, {true, 'q\"x\\\\y/z\\n\\t\\b\\f\\r'})\n"
    "same({s([[{\"s\":\"\\u00e9\\u20ac \\ud83d\\ude00\"}]])}, {true, '\\u{e9}\\u{20ac} \\u{1F600}'})\n"
    "same({s('{\"s\":\"\\xc3\\xa9 raw\"}')}, {true, '\\u{e9} raw'})\n"
    "assert(s([[{\"s\":\"\\ud83dx\"}]]) == nil and s([[{\"s\":\"\\ude00\"}]]) == nil)\n"   /* lone halves */
    "same({s([[{\"\\u0073\":\"x\"}]])}, {true, 'x'})\n"   /* an escaped key */
    "same({s([[{\"\\u0074\":1,\"s\":\"x\"}]])}, {true, 'x'})\n"                     /* ...elsewhere is fine */
    /* numbers, literals, positions, duplicates, the document itself */
    "local v = P('a.1', 'a.2', 'a.3', 'a.4', 'a.5', 'a.6', 'a#', '#', '')\n"
    "same({v('{\"a\":[0,-12,1.5e2,true,false,null]}')}, {true, 0, -12, 150.0, true, false, nil, 6, 1, nil, n = 10})\n"
    "same({v('{\"a\":{\"1\":\"not a position\"}}')}, {true, nil, nil, nil, nil, nil, nil, 1, 1, nil, n = 10})\n"
    "same({P('')(' \"top\" ')}, {true, 'top'})\n"
    "same({P('k')('{\"k\":1,\"k\":2}')}, {true, 2})\n"
    "same({P('k')('[{\"k\":1}]')}, {true, nil, n = 2})\n"
    /* not JSON, or something left to a full decoder: nil alone */
    "for _, bad in ipairs{'', '{', '{\"k\":1,}', '{\"k\":1} x', '{\"k\":01}', '{\"k\":1.}', '{\"k\":-}',\n"
    "    '{\"k\":\"a\\tb\"}', '{\"k\":\"open}', '{\"k\":tru}', '{\"k\" 1}', '[1 2]', '{k:1}', \"{'k':1}\",\n"
    "    '{\"k\":\"bad\\\\q\"}', '{\"k\":1' .. ('0'):rep(70) .. '}'} do\n"
    "  local r = table.pack(P('k')(bad))\n"
    "  if r[1] ~= nil or r.n ~= 1 then error('accepted: ' .. bad) end\n"
    "end\n"
    "same({P('k')('{\"j\":1' .. ('0'):rep(70) .. ',\"k\":3}')}, {true, 3})\n"   /* a long number not picked */
    "assert(P('k')(('['):rep(100) .. (']'):rep(100)))\n"
    "assert(P('k')(('['):rep(200) .. (']'):rep(200)) == nil)\n"                  /* too deep */
    /* misuse raises */
    "for _, args in ipairs{{}, {'a..b'}, {'a.0'}, {'.a'}, {('x'):rep(200)}, {'a.b.c.d.e.f.g.h.i'},\n"
    "    {'a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a','a'}} do\n"
    "  assert(not pcall(P, table.unpack(args)), #args)\n"
    "end\n"
    /* the same answers as cjson on a few documents */
    "local docs = {'{\"a\":{\"b\":[\"x\",{\"c\":\"\\\\u00fc\"}]},\"n\":-0.25,\"t\":true}', '{\"a\":{\"b\":[1]},\"n\":7}',\n"
    "  '{\"a\":[],\"n\":\"7\",\"t\":null}'}\n"
    "local q = P('a.b.1', 'a.b.2.c', 'n', 't')\n"
    "for _, d in ipairs(docs) do\n"
    "  local j = cjson.decode(d)\n"
    "  local function at(...) local x = j for _, k in ipairs{...} do\n"
    "    if type(x) ~= 'table' then return nil end x = x[k] end\n"
    "    if type(x) == 'table' or x == cjson.null then return nil end return x end\n"
    "  local r = {q(d)}\n"
    "  assert(r[1] == true)\n"
    "  local want = {at('a', 'b', 1), at('a', 'b', 2, 'c'), at('n'), at('t')}\n"
    "  for i = 1, 4 do assert(r[i + 1] == want[i], d .. ' #' .. i) end\n"
    "end\n");
  if (rc != LUA_OK) fail_msg("%s", lua_tostring(L, -1));
  lua_close(L);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sse_every_split),
    cmocka_unit_test(test_parse_sizes_and_durations),
    cmocka_unit_test(test_rendering),
    cmocka_unit_test(test_copy_between_states),
    cmocka_unit_test(test_copy_rules),
    cmocka_unit_test(test_jsonscan),
    cmocka_unit_test(test_jsonscan_picker),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
