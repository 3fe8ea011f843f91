/* test_store_crypto.c — the `crypto` module against published vectors (in a
 * plain sandbox) and the `store` module (SQLite) in a trusted state: types
 * round-trip, transactions commit and roll back, errors come back as values,
 * misuse raises, sandboxes cannot reach it, and an error while a statement is
 * open leaks nothing (the sanitizer build checks that). */
#include "harness.h"

#include <ftw.h>
#include <unistd.h>

/* ---- crypto ---- */

static void test_crypto_vectors(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL,
    "local crypto = require 'crypto'\n"
    "local function hex(s) return (s:gsub('.', function(c) return string.format('%02x', c:byte()) end)) end\n"
    "assert(crypto.sha256('') == 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')\n"
    "assert(crypto.sha256('abc') == 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')\n"
    "local raw = crypto.sha256('abc', true)\n"
    "assert(#raw == 32 and hex(raw) == crypto.sha256('abc'))\n"
    "local mac = crypto.hmac_sha256('Jefe', 'what do ya want for nothing?')\n"
    "assert(mac == '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843', mac)\n"
    "assert(hex(crypto.hmac_sha256('Jefe', 'what do ya want for nothing?', true)) == mac)\n"
    /* RFC 4231 test case 1: a 20-byte key of 0x0b */
    "assert(crypto.hmac_sha256(string.rep('\\11', 20), 'Hi There') ==\n"
    "  'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7')\n"
    "assert(#crypto.hmac_sha256('', '') == 64)\n"
    "return 'ok'", &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
}

static void test_crypto_random_and_equal(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL,
    "local crypto = require 'crypto'\n"
    "for _, n in ipairs({1, 16, 33, 4096}) do assert(#crypto.random(n) == n) end\n"
    "assert(crypto.random(32) ~= crypto.random(32))\n"
    "assert(not pcall(crypto.random, 0))\n"
    "assert(not pcall(crypto.random, 4097))\n"
    "assert(not pcall(crypto.random, 'x'))\n"
    "local a, b = crypto.random_id(), crypto.random_id()\n"
    "assert(#a == 32 and a:match('^[0-9a-f]+$'), a)\n"
    "assert(a ~= b)\n"
    "assert(crypto.equal('abc', 'abc') == true)\n"
    "assert(crypto.equal('abc', 'abd') == false)\n"
    "assert(crypto.equal('abc', 'abcd') == false)\n"
    "assert(crypto.equal('', '') == true)\n"
    "assert(crypto.equal('a\\0b', 'a\\0b') and not crypto.equal('a\\0b', 'a\\0c'))\n"
    "assert(not pcall(crypto.equal, 'a'))\n"
    "assert(not pcall(crypto.sha256, {}))\n"
    "return 'ok'", &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
}

/* ---- store ---- */

static char tmpdir[64];

static int store_setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/moonhive-store-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int store_teardown(void **state) {
  (void)state;
  return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs code in a trusted state, with DIR set to the test's temporary folder. */
static void eval_trusted(const mh_limits *limits, const char *code, outcome *o) {
  fixture f;
  fixture_open(&f, limits);
  f.vm->trusted = 1;
  char *full = NULL;
  assert_true(asprintf(&full, "local DIR = '%s'\n%s", tmpdir, code) > 0);
  eval_in(&f, full, o);
  free(full);
  fixture_close(&f);
}

static void test_store_round_trip(void **state) {
  (void)state;
  outcome o;
  eval_trusted(NULL,
    "local store = require 'store'\n"
    "local db = assert(store.open(DIR .. '/sub/dir/t.db'))\n"   /* parent folders created */
    "assert(db:exec([[CREATE TABLE t (id INTEGER PRIMARY KEY, i, f, s, b, flag, n);\n"
    "                 CREATE INDEX t_s ON t(s);]]) == true)\n"
    "local r = assert(db:run('INSERT INTO t (i, f, s, b, flag, n) VALUES (?, ?, ?, ?, ?, ?)',\n"
    "                        42, 1.5, 'héllo', 'bin\\0\\255\\1', true, nil))\n"
    "assert(r.changes == 1 and r.last_id == 1)\n"
    "r = assert(db:run('INSERT INTO t (i, f, s, b, flag, n) VALUES (?, ?, ?, ?, ?, ?)',\n"
    "                  math.mininteger, -0.25, '', '\\192', false, nil))\n"
    "assert(r.last_id == 2)\n"
    "local rows = assert(db:query('SELECT * FROM t ORDER BY id'))\n"
    "assert(#rows == 2)\n"
    "local a, b = rows[1], rows[2]\n"
    "assert(math.type(a.i) == 'integer' and a.i == 42)\n"
    "assert(math.type(a.f) == 'float' and a.f == 1.5)\n"
    "assert(a.s == 'héllo' and a.b == 'bin\\0\\255\\1')\n"
    "assert(math.type(a.flag) == 'integer' and a.flag == 1 and b.flag == 0)\n"
    "assert(a.n == nil and rawget(a, 'n') == nil)\n"
    "assert(b.i == math.mininteger and b.f == -0.25 and b.s == '' and b.b == '\\192')\n"
    "local types = assert(db:first('SELECT typeof(s) AS s, typeof(b) AS b, typeof(n) AS n FROM t WHERE id = 1'))\n"
    "assert(types.s == 'text' and types.b == 'blob' and types.n == 'null')\n"
    "assert(db:first('SELECT i FROM t WHERE s = ?', 'héllo').i == 42)\n"
    "assert(db:first('SELECT i FROM t WHERE id = ?', 99) == nil)\n"
    "assert(#assert(db:query('SELECT * FROM t WHERE id > ?', 5)) == 0)\n"
    "r = assert(db:run('UPDATE t SET i = i + 1'))\n"
    "assert(r.changes == 2)\n"
    "assert(db:first('PRAGMA journal_mode').journal_mode == 'wal')\n"
    "assert(db:first('PRAGMA foreign_keys').foreign_keys == 1)\n"
    "assert(db:user_version() == 0)\n"
    "assert(db:user_version(7) == 7 and db:user_version() == 7)\n"
    "assert(db:close() == true and db:close() == true)\n"
    /* reopened: the data and the version are on disk */
    "db = assert(store.open(DIR .. '/sub/dir/t.db'))\n"
    "assert(db:user_version() == 7)\n"
    "assert(db:first('SELECT count(*) AS n FROM t').n == 2)\n"
    "db:close()\n"
    "return 'ok'", &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
}

static void test_store_transactions(void **state) {
  (void)state;
  outcome o;
  eval_trusted(NULL,
    "local store = require 'store'\n"
    "local db = assert(store.open(DIR .. '/tx.db'))\n"
    "assert(db:exec('CREATE TABLE t (v TEXT)'))\n"
    "local got = db:transaction(function(d)\n"
    "  assert(d == db)\n"
    "  d:run('INSERT INTO t VALUES (?)', 'a')\n"
    "  d:run('INSERT INTO t VALUES (?)', 'b')\n"
    "  return 'committed', 'ignored'\n"
    "end)\n"
    "assert(got == 'committed')\n"
    "assert(db:first('SELECT count(*) AS n FROM t').n == 2)\n"
    "local ok, err = pcall(db.transaction, db, function(d)\n"
    "  d:run('INSERT INTO t VALUES (?)', 'c')\n"
    "  assert(d:first('SELECT count(*) AS n FROM t').n == 3)\n"
    "  error('boom', 0)\n"
    "end)\n"
    "assert(not ok and err == 'boom', tostring(err))\n"
    "assert(db:first('SELECT count(*) AS n FROM t').n == 2)\n"
    /* error objects pass through unchanged */
    "local e = {}\n"
    "ok, err = pcall(db.transaction, db, function() error(e) end)\n"
    "assert(not ok and err == e)\n"
    /* no nesting; the outer one still rolls back */
    "ok, err = pcall(db.transaction, db, function(d)\n"
    "  d:run('INSERT INTO t VALUES (?)', 'd')\n"
    "  d:transaction(function() end)\n"
    "end)\n"
    "assert(not ok and err:find('do not nest'), err)\n"
    "assert(db:first('SELECT count(*) AS n FROM t').n == 2)\n"
    /* a schema migration by user_version inside a transaction */
    "db:transaction(function(d)\n"
    "  if d:user_version() < 1 then\n"
    "    assert(d:exec('ALTER TABLE t ADD COLUMN w INTEGER'))\n"
    "    d:user_version(1)\n"
    "  end\n"
    "end)\n"
    "assert(db:user_version() == 1)\n"
    /* closing inside the transaction rolls back and is reported */
    "ok, err = pcall(db.transaction, db, function(d)\n"
    "  d:run('INSERT INTO t VALUES (?, ?)', 'e', 1)\n"
    "  d:close()\n"
    "end)\n"
    "assert(not ok and err:find('closed inside the transaction'), err)\n"
    "db = assert(store.open(DIR .. '/tx.db'))\n"
    "assert(db:first('SELECT count(*) AS n FROM t').n == 2)\n"
    /* waiting inside a transaction is refused, and rolls back */
    "ok, err = pcall(db.transaction, db, function(d)\n"
    "  d:run('INSERT INTO t VALUES (?, ?)', 'f', 1)\n"
    "  sleep(1)\n"
    "end)\n"
    "assert(not ok and err:find('cannot wait'), err)\n"
    "assert(db:first('SELECT count(*) AS n FROM t').n == 2)\n"
    "db:close()\n"
    "return 'ok'", &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
}

static void test_store_errors(void **state) {
  (void)state;
  outcome o;
  eval_trusted(NULL,
    "local store = require 'store'\n"
    "local db = assert(store.open(DIR .. '/err.db'))\n"
    "assert(db:exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)'))\n"
    /* SQLite's failures are values carrying its message */
    "local r, err = db:query('SELEC * FROM t')\n"
    "assert(r == nil and err:find('db:query: ', 1, true) and err:find('syntax error', 1, true), err)\n"
    "r, err = db:first('SELECT * FROM missing')\n"
    "assert(r == nil and err == 'db:first: no such table: missing', err)\n"
    "r, err = db:exec('CREATE TABLE t (x)')\n"
    "assert(r == nil and err == 'db:exec: table t already exists', err)\n"
    "assert(db:run('INSERT INTO t (v) VALUES (?)', 'x'))\n"
    "r, err = db:run('INSERT INTO t (v) VALUES (?)', 'x')\n"
    "assert(r == nil and err == 'db:run: UNIQUE constraint failed: t.v', err)\n"
    "r, err = db:run('INSERT INTO t (v) VALUES (?)', nil)\n"
    "assert(r == nil and err:find('NOT NULL constraint failed'), err)\n"
    /* misuse raises */
    "local ok\n"
    "ok, err = pcall(db.run, db, 'INSERT INTO t (v) VALUES (?)')\n"
    "assert(not ok and err:find('takes 1 parameter, 0 given'), err)\n"
    "ok, err = pcall(db.run, db, 'SELECT ?', 1, 2)\n"
    "assert(not ok and err:find('takes 1 parameter, 2 given'), err)\n"
    "ok, err = pcall(db.run, db, 'SELECT ?', {})\n"
    "assert(not ok and err:find('nil, boolean, number or string expected'), err)\n"
    "ok, err = pcall(db.run, db, 'SELECT 1; SELECT 2')\n"
    "assert(not ok and err:find('one statement expected'), err)\n"
    "ok, err = pcall(db.run, db, '  ')\n"
    "assert(not ok and err:find('no SQL statement'), err)\n"
    "assert(db:first('SELECT 1 AS one; -- trailing comment').one == 1)\n"
    "ok, err = pcall(db.query, db, 'SELECT 1\\0; DROP TABLE t')\n"
    "assert(not ok and err:find('zero bytes'), err)\n"
    "ok, err = pcall(db.query, {}, 'SELECT 1')\n"
    "assert(not ok and err:find('store.db expected'), err)\n"
    /* a closed db raises on every use but close */
    "db:close()\n"
    "for _, m in ipairs({'exec', 'run', 'query', 'first', 'user_version'}) do\n"
    "  ok, err = pcall(db[m], db, 'SELECT 1')\n"
    "  assert(not ok and err:find('database is closed'), m .. ': ' .. tostring(err))\n"
    "end\n"
    "ok, err = pcall(db.transaction, db, function() end)\n"
    "assert(not ok and err:find('database is closed'))\n"
    "assert(db:close())\n"
    /* open failures are values */
    "local f = assert(store.open(DIR .. '/file.db'))\n"
    "f:close()\n"
    "r, err = store.open(DIR .. '/file.db/inside.db')\n"
    "assert(r == nil and err:find('cannot create the folder'), err)\n"
    "r, err = store.open(DIR)\n"
    "assert(r == nil and err:find('store.open: cannot open'), err)\n"
    "assert(not pcall(store.open, ''))\n"
    /* __close */
    "local kept\n"
    "do\n"
    "  local c <close> = assert(store.open(':memory:'))\n"
    "  kept = c\n"
    "  assert(c:first('SELECT 2 AS two').two == 2)\n"
    "end\n"
    "ok, err = pcall(kept.first, kept, 'SELECT 1')\n"
    "assert(not ok and err:find('database is closed'))\n"
    "return 'ok'", &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
}

/* A memory error while building the result table unwinds out of a query with
 * its statement open; the statement must still be finalized (the sanitizer
 * build reports the zombie connection otherwise). */
static void test_store_error_mid_query_leaks_nothing(void **state) {
  (void)state;
  mh_limits limits;
  mh_limits_default(&limits);
  limits.memory = 4u << 20;
  outcome o;
  eval_trusted(&limits,
    "local store = require 'store'\n"
    "local db = assert(store.open(DIR .. '/big.db'))\n"
    "return #db:query([[WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50000)\n"
    "                   SELECT i, hex(zeroblob(500)) AS pad FROM c]])", &o);
  assert_error_contains(&o, "memory limit of 4 MiB exceeded");
  outcome_clear(&o);
}

static void test_store_not_in_sandbox(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL, "return require 'store'", &o);
  assert_error_contains(&o, "module 'store' not found");
  outcome_clear(&o);
  eval_fresh(NULL, "return store", &o);
  assert_error_contains(&o, "undefined global 'store'");
  outcome_clear(&o);
  eval_fresh(NULL, "return type(require 'crypto'), type(crypto.sha256)", &o);
  assert_ok_output(&o, "table\tfunction");
  outcome_clear(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_crypto_vectors),
    cmocka_unit_test(test_crypto_random_and_equal),
    cmocka_unit_test_setup_teardown(test_store_round_trip, store_setup, store_teardown),
    cmocka_unit_test_setup_teardown(test_store_transactions, store_setup, store_teardown),
    cmocka_unit_test_setup_teardown(test_store_errors, store_setup, store_teardown),
    cmocka_unit_test_setup_teardown(test_store_error_mid_query_leaks_nothing, store_setup, store_teardown),
    cmocka_unit_test(test_store_not_in_sandbox),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
