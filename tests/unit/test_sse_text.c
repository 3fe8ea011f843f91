/* test_sse_text.c — http's sse_text (host/mod_http.c), the trusted
 * runtime's way to take a model stream's common events out of Lua: texts
 * picked in C go to `into` and `call`, every other event to the sse
 * callback, all in the stream's order; several events in one read, an event
 * split across reads (even inside its string), empty texts dropped, escapes
 * decoded, `call` returning false stopping the transfer, `call` waiting
 * (as the bridge's emit does under back-pressure), misuse raising, and
 * sandboxes refused. The answers come from a small server on this test's own
 * loop that writes a scripted response in pieces, one write per timer tick,
 * so that each piece arrives in a read of its own. */
#include "harness.h"

#include <uv.h>

/* ---- a server writing one scripted response in pieces ---- */

typedef struct script_server {
  uv_tcp_t listener, conn;
  uv_timer_t tick;
  const char *const *pieces; /* NULL-terminated; sent after the request arrives */
  int next, open_handles, started, port;
  char request[4096];
  size_t request_len;
} script_server;

static void on_closed(uv_handle_t *h) {
  script_server *s = h->data;
  s->open_handles--;
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void send_piece(script_server *s, const char *text) {
  uv_write_t *w = malloc(sizeof *w);
  assert_non_null(w);
  uv_buf_t buf = uv_buf_init((char *)text, (unsigned)strlen(text));
  assert_int_equal(uv_write(w, (uv_stream_t *)&s->conn, &buf, 1, on_written), 0);
}

static void on_tick(uv_timer_t *t) {
  script_server *s = t->data;
  if (s->pieces[s->next] == NULL) { /* the end: close the connection (the body is close-delimited) */
    uv_timer_stop(t);
    uv_close((uv_handle_t *)&s->conn, on_closed);
    return;
  }
  send_piece(s, s->pieces[s->next++]);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  script_server *s = h->data;
  buf->base = s->request + s->request_len;
  buf->len = sizeof s->request - 1 - s->request_len;
}

static void on_request(uv_stream_t *c, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  script_server *s = c->data;
  if (n <= 0) return;
  s->request_len += (size_t)n;
  s->request[s->request_len] = '\0';
  if (!s->started && strstr(s->request, "\r\n\r\n")) {
    s->started = 1;
    uv_read_stop(c);
    send_piece(s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    uv_timer_start(&s->tick, on_tick, 5, 5);
  }
}

static void on_connection(uv_stream_t *l, int status) {
  script_server *s = l->data;
  assert_int_equal(status, 0);
  uv_tcp_init(l->loop, &s->conn);
  s->conn.data = s;
  s->open_handles++;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
  uv_read_start((uv_stream_t *)&s->conn, on_alloc, on_request);
  uv_close((uv_handle_t *)&s->listener, on_closed); /* one connection per test */
}

static void server_start(script_server *s, uv_loop_t *loop, const char *const *pieces) {
  memset(s, 0, sizeof *s);
  s->pieces = pieces;
  s->listener.data = s->tick.data = s;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(loop, &s->listener);
  uv_timer_init(loop, &s->tick);
  s->open_handles = 2;
  assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 8, on_connection), 0);
  struct sockaddr_storage name;
  int len = sizeof name;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len);
  s->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
}

/* Closes what is still open and lets the close callbacks run. */
static void server_stop(script_server *s, uv_loop_t *loop) {
  if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, on_closed);
  if (s->conn.data && !uv_is_closing((uv_handle_t *)&s->conn)) uv_close((uv_handle_t *)&s->conn, on_closed);
  uv_close((uv_handle_t *)&s->tick, on_closed);
  while (s->open_handles > 0) uv_run(loop, UV_RUN_ONCE);
}

/* Runs code in a trusted state (as the runtime) or a sandbox, with URL set
 * to the server's address, against a response made of pieces. */
static void eval_against(const char *const *pieces, int trusted, const char *code, outcome *o) {
  fixture f;
  fixture_open(&f, NULL);
  f.vm->trusted = trusted;
  script_server s;
  server_start(&s, &f.loop, pieces);
  char *full = NULL;
  assert_true(asprintf(&full, "local http, time = require 'http', require 'time'\n"
                              "local URL = 'http://127.0.0.1:%d/'\n%s", s.port, code) > 0);
  eval_in(&f, full, o);
  free(full);
  server_stop(&s, &f.loop);
  fixture_close(&f);
}

/* The common request: events as "T:text" (picked) and "E:data" (the rest) in
 * the order they came, then "#" and the list `into` received. */
#define COLLECT(call_body)                                                                  \
  "local got, into = {}, {}\n"                                                              \
  "local res = assert(http.request{url = URL, sse_data = function(d) got[#got + 1] = 'E:' .. d end,\n" \
  "  sse_text = {after = '\"c\":\"', needed = '\"f\":null', refused = '\"t\"', into = into,\n" \
  "              call = function(t) got[#got + 1] = 'T:' .. t " call_body " end}})\n"

/* ---- tests ---- */

static void test_order_batches_and_splits(void **state) {
  (void)state;
  static const char *const pieces[] = {
    /* two taken and one not, in one read */
    "data: {\"c\":\"one\",\"f\":null}\n\ndata: {\"x\":1}\n\ndata: {\"c\":\"two\",\"f\":null}\n\n",
    /* an event split inside its string, then after its data line */
    "data: {\"c\":\"thr", "ee\",\"f\":null}\n", "\n",
    /* empty text: dropped; guards: needed absent, refused present; escapes */
    "data: {\"c\":\"\",\"f\":null}\n\ndata: {\"c\":\"end\",\"f\":\"stop\"}\n\n",
    "data: {\"c\":\"tool\",\"t\":[],\"f\":null}\n\ndata: {\"c\":\"q\\\"\\n\\u00e9\",\"f\":null}\n\n",
    "data: [DONE]\n\n",
    NULL};
  outcome o;
  eval_against(pieces, 1, COLLECT("")
    "return table.concat(got, '|') .. '#' .. table.concat(into, '|')", &o);
  assert_ok_output(&o, "T:one|E:{\"x\":1}|T:two|T:three|E:{\"c\":\"end\",\"f\":\"stop\"}|"
                       "E:{\"c\":\"tool\",\"t\":[],\"f\":null}|T:q\"\n\xc3\xa9|E:[DONE]#one|two|three|q\"\n\xc3\xa9");
  outcome_clear(&o);
}

static void test_call_false_stops_and_call_may_wait(void **state) {
  (void)state;
  static const char *const pieces[] = {
    "data: {\"c\":\"a\",\"f\":null}\n\ndata: {\"c\":\"b\",\"f\":null}\n\ndata: {\"c\":\"c\",\"f\":null}\n\n",
    "data: {\"c\":\"d\",\"f\":null}\n\n", NULL};
  outcome o;
  eval_against(pieces, 1, COLLECT("if t == 'b' then return false end")
    "return tostring(res.aborted) .. ' ' .. table.concat(got, '|')", &o);
  assert_ok_output(&o, "true T:a|T:b");
  outcome_clear(&o);
  /* a call that waits (the bridge's emit does, when the script is behind) */
  eval_against(pieces, 1, COLLECT("time.sleep(1)")
    "return tostring(res.aborted) .. ' ' .. table.concat(got, '|')", &o);
  assert_ok_output(&o, "nil T:a|T:b|T:c|T:d");
  outcome_clear(&o);
}

static void test_misuse_and_sandboxes(void **state) {
  (void)state;
  static const char *const pieces[] = {"data: x\n\n", NULL};
  static const struct { const char *opts, *error; } cases[] = {
    {"sse_text = {after = '\"c\":\"', into = {}, call = print}", "'sse_text' needs 'sse' or 'sse_data'"},
    {"sse_data = print, sse_text = 1", "sse_text as a table expected"},
    {"sse_data = print, sse_text = {after = '\"c\":\"', call = print}", "sse_text.into as a table expected"},
    {"sse_data = print, sse_text = {after = '\"c\":\"', into = {}}", "sse_text.call as a function expected"},
    {"sse_data = print, sse_text = {after = 'c', into = {}, call = print}", "a prefix ending with '\"' expected"},
  };
  outcome o;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char code[512];
    snprintf(code, sizeof code, "http.request{url = URL, %s}", cases[i].opts);
    eval_against(pieces, 1, code, &o);
    assert_error_contains(&o, cases[i].error);
    outcome_clear(&o);
  }
  eval_fresh(NULL, "http.request{url = 'http://127.0.0.1:1/', sse_data = function() end, sse_text = {}}", &o);
  assert_error_contains(&o, "'sse_text' is not available to sandboxed scripts");
  outcome_clear(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_order_batches_and_splits),
    cmocka_unit_test(test_call_false_stops_and_call_may_wait),
    cmocka_unit_test(test_misuse_and_sandboxes),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
