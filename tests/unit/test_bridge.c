/* test_bridge.c — bridge calls answered at once (mh_bridge_spec.now): the
 * synchronous entry answers without a run of its own; it may decline (the
 * call then takes the ordinary path), refuse with a message, raise, or try
 * to wait (an error, never a hang); a stream callback always takes the
 * ordinary path; and a third answer, the store's db, makes the script wait
 * for that db's group commit, so what the entry wrote is durable before
 * the script goes on. The runtime module is written to a scratch folder. */
#include "harness.h"

#include <sys/stat.h>
#include <unistd.h>

#include "bridge.h"

static const char MODULE[] =
  "local store = require 'store'\n"
  "local M = {}\n"
  "function M.slow(req) return { via = 'slow', x = req.x } end\n"
  "function M.now(req, emit, caller)\n"
  "  if req.mode == 'decline' then return false end\n"
  "  if req.mode == 'refuse' then return nil, 'refused ' .. tostring(req.x) end\n"
  "  if req.mode == 'raise' then error('the entry failed', 0) end\n"
  "  if req.mode == 'wait' then sleep(1) return { via = 'now' } end\n"
  "  if req.mode == 'write' then\n"
  "    if not M.db then\n"
  "      M.db = assert(store.open(req.path))\n"
  "      assert(M.db:exec('CREATE TABLE t (x INTEGER)'))\n"
  "      assert(M.db:group_commit())\n"
  "    end\n"
  "    assert(M.db:run('INSERT INTO t VALUES (?)', req.x))\n"
  "    return { via = 'now' }, nil, M.db\n"
  "  end\n"
  "  if req.mode == 'count' then\n" /* as another connection sees it: only what is committed */
  "    local other = assert(store.open(req.path))\n"
  "    local row = assert(other:first('SELECT count(*) AS n FROM t'))\n"
  "    other:close()\n"
  "    return { n = row.n }\n"
  "  end\n"
  "  if req.mode == 'close' then M.db:close() return {} end\n"
  "  return { via = 'now', x = req.x, emit = type(emit), caller = type(caller) }\n"
  "end\n"
  "return M\n";

static const mh_bridge_spec spec = {"moonhive.bridgetest", "slow", "test.call", NULL, "now"};

/* call(request) [-1, +(1|2), v] */
static int test_call(lua_State *L) { return mh_bridge_call(L, &spec); }

typedef struct bridge_fixture {
  fixture f;
  char dir[64];
} bridge_fixture;

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
}

static void open_bridge(bridge_fixture *b) {
  snprintf(b->dir, sizeof b->dir, "/tmp/mh-bridge-XXXXXX");
  assert_non_null(mkdtemp(b->dir));
  char path[160];
  snprintf(path, sizeof path, "%s/moonhive", b->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(path, sizeof path, "%s/moonhive/bridgetest.lua", b->dir);
  write_file(path, MODULE);
  fixture_open(&b->f, NULL);
  snprintf(b->f.host.runtime_dir, sizeof b->f.host.runtime_dir, "%s", b->dir);
}

static void close_bridge(bridge_fixture *b) {
  fixture_close(&b->f);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", b->dir);
  assert_int_equal(system(cmd), 0);
}

/* Evaluates code in b's sandbox with `call` (the bridge native) and DB (a
 * scratch database path) in its environment. */
static void eval_with_call(bridge_fixture *b, const char *code, outcome *o) {
  lua_State *L = b->f.vm->L;
  int incomplete;
  memset(o, 0, sizeof *o);
  assert_int_equal(mh_eval_compile(L, code, strlen(code), "=test", 0, &incomplete), LUA_OK);
  assert_non_null(lua_getupvalue(L, -1, 1));      /* chunk env */
  lua_pushcfunction(L, test_call);
  lua_setfield(L, -2, "call");
  lua_pushfstring(L, "%s/t.db", b->dir);
  lua_setfield(L, -2, "DB");
  lua_pop(L, 1);                                  /* chunk */
  assert_non_null(mh_eval_start(b->f.vm, record_outcome, o));
  run_until_done(&b->f, o);
}

static void test_now_answers_declines_refuses_and_raises(void **state) {
  (void)state;
  bridge_fixture b;
  open_bridge(&b);
  outcome o;
  eval_with_call(&b,
    "local r = assert(call{x = 1})\n"
    "local d = assert(call{mode = 'decline', x = 2})\n"
    "local s = assert(call{x = 3, stream = function() end})\n"
    "local no, why = call{mode = 'refuse', x = 4}\n"
    "local no2, why2 = call{mode = 'raise'}\n"
    "return table.concat({r.via, r.x, r.emit, r.caller, d.via, d.x, s.via, s.x, tostring(no), why,\n"
    "                     tostring(no2), why2}, ' ')", &o);
  assert_ok_output(&o, "now 1 nil table slow 2 slow 3 nil refused 4 nil the entry failed");
  outcome_clear(&o);
  close_bridge(&b);
}

static void test_now_cannot_wait(void **state) {
  (void)state;
  bridge_fixture b;
  open_bridge(&b);
  outcome o;
  eval_with_call(&b, "local r, err = call{mode = 'wait'} return tostring(r) .. ': ' .. err", &o);
  if (o.state != MH_RUN_OK || strncmp(o.output, "nil: ", 5) != 0 || strstr(o.output, "sleep can only be") == NULL)
    fail_msg("a waiting entry should fail with a message, got %s", o.output ? o.output : o.error);
  outcome_clear(&o);
  close_bridge(&b);
}

/* The script sees the answer only once the group commit holding the
 * entry's write is done: another connection sees the row by then. */
static void test_now_waits_for_the_commit(void **state) {
  (void)state;
  bridge_fixture b;
  open_bridge(&b);
  outcome o;
  eval_with_call(&b,
    "local seen = {}\n"
    "for i = 1, 3 do\n"
    "  assert(call{mode = 'write', path = DB, x = i})\n"
    "  seen[i] = assert(call{mode = 'count', path = DB}).n\n"
    "end\n"
    "assert(call{mode = 'close'})\n"
    "return table.concat(seen, ' ')", &o);
  assert_ok_output(&o, "1 2 3");
  outcome_clear(&o);
  close_bridge(&b);
}

int main(void) {
  (void)eval_fresh; /* the harness's; not needed here */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_now_answers_declines_refuses_and_raises),
    cmocka_unit_test(test_now_cannot_wait),
    cmocka_unit_test(test_now_waits_for_the_commit),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
