/* test_serve.c — end-to-end tests of `moonhive serve` over real sockets:
 * keep-alive, pipelining, malformed and oversized requests, 100-continue,
 * slow clients (timeouts, never blocking others), the connection cap,
 * garbage floods and a graceful SIGTERM.
 *
 * Each test starts the real binary ($MOONHIVE_BIN, else ./moonhive) on
 * port 0 with its own limits in the environment, reads the address it
 * prints, and talks raw HTTP/1.1 to it. Timeouts only bound the waiting;
 * no test asserts on speed. Every server must exit 0 on SIGTERM at the end
 * (so a sanitizer report or a crash fails the test). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h> /* cmocka needs stdarg, stddef, stdint and setjmp first */
#include <cmocka.h>

#include "e2e.h"

#define TIMEOUT_MS 10000 /* generous: only bounds waiting */

typedef struct server {
  pid_t pid;
  int port;
  int err_fd;      /* the server's stderr (its access log) */
  char dir[PATH_MAX];
} server;

/* Starts `moonhive serve --port 0` with env ("NAME=VALUE", ..., NULL) set. */
static void start(server *s, ...) {
  make_data_dir(s->dir, sizeof s->dir, "serve");
  int out[2], err[2];
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(err), 0);
  va_list ap;
  va_start(ap, s);
  const char *env[16];
  int n = 0;
  for (const char *e; (e = va_arg(ap, const char *)) != NULL && n < 15;) env[n++] = e;
  va_end(ap);
  s->pid = fork();
  assert_true(s->pid >= 0);
  if (s->pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    setenv("MOONHIVE_DATA", s->dir, 1);
    for (int i = 0; i < n; i++) putenv((char *)env[i]);
    execl(moonhive_bin(), moonhive_bin(), "serve", "--port", "0", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  s->err_fd = err[0];
  fcntl(s->err_fd, F_SETFL, O_NONBLOCK);
  char line[256] = {0};
  size_t len = 0;
  long long until = now_ms() + TIMEOUT_MS;
  while (!strchr(line, '\n') && now_ms() < until && len < sizeof line - 1) {
    struct pollfd p = {out[0], POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t r = read(out[0], line + len, sizeof line - 1 - len);
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(out[0]);
  const char *colon = strstr(line, "127.0.0.1:");
  assert_non_null(colon);
  s->port = atoi(colon + strlen("127.0.0.1:"));
  assert_true(s->port > 0);
}

/* Everything the server logged so far (appended to buf). */
static void read_log(server *s, char *buf, size_t cap) {
  size_t len = strlen(buf);
  for (;;) {
    ssize_t r = read(s->err_fd, buf + len, cap - 1 - len);
    if (r <= 0) break;
    len += (size_t)r;
  }
  buf[len] = '\0';
}

/* SIGTERM, then the server must exit 0 by itself. */
static void stop(server *s) {
  kill(s->pid, SIGTERM);
  int status = 0;
  long long until = now_ms() + TIMEOUT_MS;
  pid_t r;
  while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 && now_ms() < until) usleep(10000);
  if (r == 0) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    fail_msg("the server did not stop after SIGTERM");
  }
  char log[8192] = {0};
  read_log(s, log, sizeof log);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("server exit status %d; log:\n%s", status, log);
  close(s->err_fd);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
  if (system(cmd) != 0) { /* leftover temp files only */
  }
}

static int dial(server *s) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

static void send_all(int fd, const char *data, size_t len) {
  while (len) {
    ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* the server closed: what it answered is still readable */
    data += w;
    len -= (size_t)w;
  }
}

static void sends(int fd, const char *text) { send_all(fd, text, strlen(text)); }

/* Reads until `want` occurrences of "HTTP/1.1 " with their bodies (by
 * Content-Length) have arrived, or the peer closes, or time runs out.
 * Returns the bytes (NUL-terminated, caller frees); *closed tells whether
 * the server closed the connection. */
static char *read_responses(int fd, int want, int *closed) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  *closed = 0;
  long long until = now_ms() + TIMEOUT_MS;
  for (;;) {
    buf[len] = '\0';
    int complete = 0;
    const char *p = buf;
    while (complete < want) { /* count whole responses */
      const char *start = strstr(p, "HTTP/1.1 ");
      if (!start) break;
      if (strncmp(start, "HTTP/1.1 100 ", 13) == 0) {
        p = start + 13;
        continue;
      }
      const char *end = strstr(start, "\r\n\r\n");
      if (!end) break;
      const char *cl = strstr(start, "Content-Length: ");
      size_t body = cl && cl < end ? (size_t)atol(cl + 16) : 0;
      if ((size_t)(end + 4 - buf) + body > len) break;
      p = end + 4 + body;
      complete++;
    }
    if (complete >= want) return buf;
    int left = (int)(until - now_ms());
    if (left <= 0) return buf;
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, left) <= 0) return buf;
    if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
    ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
    if (r <= 0) {
      *closed = 1;
      buf[len] = '\0';
      return buf;
    }
    len += (size_t)r;
  }
}

/* Waits until the server closes fd; returns 1 if it did. */
static int closed_by_server(int fd) {
  char b[4096];
  long long until = now_ms() + TIMEOUT_MS;
  while (now_ms() < until) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0) continue;
    ssize_t r = recv(fd, b, sizeof b, 0);
    if (r <= 0) return 1;
  }
  return 0;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

#define GET_HEALTH "GET /health HTTP/1.1\r\nHost: t\r\n\r\n"

/* ---- tests ---- */

static void test_keep_alive(void **state) {
  (void)state;
  server s;
  start(&s, NULL);
  int fd = dial(&s);
  int closed;
  for (int i = 0; i < 3; i++) {
    sends(fd, GET_HEALTH);
    char *r = read_responses(fd, 1, &closed);
    assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(r, "\"status\":\"ok\""));
    assert_null(strstr(r, "Connection: close"));
    assert_false(closed);
    free(r);
  }
  sends(fd, "HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
  char *r = read_responses(fd, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
  assert_null(strstr(r, "\"status\"")); /* HEAD: the length, not the body */
  free(r);
  close(fd);
  char log[8192] = {0};
  usleep(100000);
  read_log(&s, log, sizeof log);
  assert_true(count(log, "\"event\":\"http\",\"method\":\"GET\",\"path\":\"/health\",\"status\":200") >= 3);
  stop(&s);
}

static void test_pipelining_in_order(void **state) {
  (void)state;
  server s;
  start(&s, NULL);
  int fd = dial(&s);
  sends(fd, GET_HEALTH "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" GET_HEALTH
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"); /* 401: no credentials */
  int closed;
  char *r = read_responses(fd, 4, &closed);
  const char *a = strstr(r, "HTTP/1.1 200");
  const char *b = strstr(r, "HTTP/1.1 404");
  assert_non_null(a);
  assert_non_null(b);
  assert_true(a < b);
  const char *c = strstr(b, "HTTP/1.1 200");
  assert_non_null(c);
  const char *d = strstr(c + 1, "HTTP/1.1 401");  /* the fourth, last */
  assert_non_null(d);
  assert_non_null(strstr(d, "missing credentials"));
  assert_true(closed_by_server(fd));
  free(r);
  close(fd);
  stop(&s);
}

static void test_malformed_requests(void **state) {
  (void)state;
  server s;
  start(&s, NULL);
  static const char *const bad[] = {
      "GARBAGE\r\n\r\n",
      "GET /health HTTP/1.1\r\nHost t\r\n\r\n",
      "GET http://elsewhere/health HTTP/1.1\r\nHost: t\r\n\r\n",
      "POST /health HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
      "POST /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
      "GET /\x01health HTTP/1.1\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int fd = dial(&s);
    sends(fd, bad[i]);
    int closed;
    char *r = read_responses(fd, 1, &closed);
    if (!strstr(r, "HTTP/1.1 400 Bad Request\r\n")) fail_msg("request %zu: expected 400, got: %.200s", i, r);
    assert_non_null(strstr(r, "Content-Type: application/json"));
    assert_non_null(strstr(r, "{\"error\":{\"status\":400,\"message\":\"malformed"));
    assert_true(closed || closed_by_server(fd));
    free(r);
    close(fd);
  }
  static const char nul[] = "GET /health HTTP/1.1\r\nX-A: o \0cH\r\n\r\n"; /* a NUL inside a value (found by fuzzing) */
  int fd = dial(&s);
  send_all(fd, nul, sizeof nul - 1);
  int closed;
  char *r = read_responses(fd, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 400 Bad Request\r\n"));
  free(r);
  close(fd);
  fd = dial(&s); /* the server is still fine */
  sends(fd, GET_HEALTH);
  r = read_responses(fd, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 200 OK"));
  free(r);
  close(fd);
  stop(&s);
}

static void test_limits(void **state) {
  (void)state;
  server s;
  start(&s, "MOONHIVE_HTTP_MAX_HEAD_BYTES=2048", "MOONHIVE_HTTP_MAX_HEADERS=5", "MOONHIVE_HTTP_MAX_BODY_BYTES=100", NULL);
  char big[4096];
  snprintf(big, sizeof big, "GET /health HTTP/1.1\r\nX-Big: %03000d\r\n\r\n", 0);
  static char many[512];
  snprintf(many, sizeof many, "GET /health HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n");
  char chunked[512];
  snprintf(chunked, sizeof chunked, "POST /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n80\r\n%0128d\r\n0\r\n\r\n", 0);
  struct {
    const char *req;
    const char *status;
  } cases[] = {
      {big, "HTTP/1.1 431 "},
      {many, "HTTP/1.1 431 "},
      {"POST /health HTTP/1.1\r\nContent-Length: 101\r\n\r\n", "HTTP/1.1 413 "},
      {chunked, "HTTP/1.1 413 "},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int fd = dial(&s);
    sends(fd, cases[i].req);
    int closed;
    char *r = read_responses(fd, 1, &closed);
    if (!strstr(r, cases[i].status)) fail_msg("case %zu: expected %s, got: %.200s", i, cases[i].status, r);
    assert_non_null(strstr(r, "{\"error\":{\"status\":4"));
    free(r);
    close(fd);
  }
  int fd = dial(&s); /* within the limits: the body reaches the router (405: /health is GET only) */
  sends(fd, "POST /health HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
  char body[101];
  memset(body, 'x', 100);
  send_all(fd, body, 100);
  int closed;
  char *r = read_responses(fd, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 405 "));
  assert_non_null(strstr(r, "Allow: GET"));
  free(r);
  close(fd);
  stop(&s);
}

static void test_expect_continue(void **state) {
  (void)state;
  server s;
  start(&s, NULL);
  int fd = dial(&s);
  sends(fd, "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
  char buf[256] = {0};
  struct pollfd pf = {fd, POLLIN, 0};
  assert_int_equal(poll(&pf, 1, TIMEOUT_MS), 1);
  assert_true(recv(fd, buf, sizeof buf - 1, 0) > 0);
  assert_non_null(strstr(buf, "HTTP/1.1 100 Continue\r\n\r\n"));
  sends(fd, "ping");
  int closed;
  char *r = read_responses(fd, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 405 "));
  free(r);
  close(fd);
  stop(&s);
}

static void test_slow_clients(void **state) {
  (void)state;
  server s;
  start(&s, "MOONHIVE_HTTP_HEAD_TIMEOUT_MS=300", "MOONHIVE_HTTP_BODY_TIMEOUT_MS=300", "MOONHIVE_HTTP_IDLE_TIMEOUT_MS=300",
        NULL);
  int slow_head = dial(&s);
  sends(slow_head, "GET /health HTTP/1.1\r\nHo"); /* and then nothing */
  int slow_body = dial(&s);
  sends(slow_body, "POST /health HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  int idle = dial(&s);
  sends(idle, GET_HEALTH);
  int closed;
  char *r = read_responses(idle, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 200 OK")); /* not blocked by the slow ones */
  free(r);
  r = read_responses(slow_head, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 408 "));
  assert_non_null(strstr(r, "did not arrive in time"));
  free(r);
  r = read_responses(slow_body, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 408 "));
  assert_non_null(strstr(r, "stopped arriving"));
  free(r);
  assert_true(closed_by_server(idle)); /* the keep-alive connection, idle too long */
  close(slow_head);
  close(slow_body);
  close(idle);
  stop(&s);
}

static void test_connection_cap(void **state) {
  (void)state;
  server s;
  start(&s, "MOONHIVE_HTTP_MAX_CONNECTIONS=2", NULL);
  int a = dial(&s), b = dial(&s);
  sends(a, GET_HEALTH);
  sends(b, GET_HEALTH);
  int closed;
  char *r = read_responses(a, 1, &closed);
  free(r);
  r = read_responses(b, 1, &closed);
  free(r);
  int c = dial(&s);
  r = read_responses(c, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 503 "));
  assert_non_null(strstr(r, "too many connections"));
  free(r);
  close(c);
  close(a);
  usleep(200000); /* let the server notice a's close */
  int d = dial(&s);
  sends(d, GET_HEALTH);
  r = read_responses(d, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 200 OK"));
  free(r);
  close(d);
  close(b);
  stop(&s);
}

/* Arbitrary bytes on many connections, some cut off midway: the server
 * answers each with a 4xx or closes it, and keeps serving. */
static void test_garbage_flood(void **state) {
  (void)state;
  server s;
  start(&s, "MOONHIVE_HTTP_HEAD_TIMEOUT_MS=500", "MOONHIVE_ACCESS_LOG=off", NULL);
  unsigned seed = 12345;
  static const char *const seeds[] = {GET_HEALTH, "POST /v1/runs HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                                      "GET /metrics HTTP/1.0\r\n\r\n"};
  for (int i = 0; i < 200; i++) {
    int fd = dial(&s);
    char buf[512];
    size_t n = strlen(seeds[i % 3]);
    memcpy(buf, seeds[i % 3], n);
    for (int k = 0; k < 1 + i % 8; k++) buf[rand_r(&seed) % n] = (char)(rand_r(&seed) & 0xff); /* mutate */
    if (i % 5 == 0) n = rand_r(&seed) % n;  /* cut off */
    send_all(fd, buf, n);
    if (i % 2) shutdown(fd, SHUT_WR);
    close(fd);
  }
  int fd = dial(&s);
  sends(fd, GET_HEALTH);
  int closed;
  char *r = read_responses(fd, 1, &closed);
  assert_non_null(strstr(r, "HTTP/1.1 200 OK"));
  free(r);
  close(fd);
  stop(&s);
}

/* SIGTERM: idle and half-sent connections are closed, the server exits 0. */
static void test_sigterm_closes_and_exits(void **state) {
  (void)state;
  server s;
  start(&s, NULL);
  int idle = dial(&s);
  sends(idle, GET_HEALTH);
  int closed;
  char *r = read_responses(idle, 1, &closed);
  free(r);
  int partial = dial(&s);
  sends(partial, "GET /health HTTP/1.1\r\n");
  usleep(100000);
  kill(s.pid, SIGTERM);
  assert_true(closed_by_server(idle));
  assert_true(closed_by_server(partial));
  close(idle);
  close(partial);
  stop(&s); /* already stopping: must have exited 0 */
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  cmocka_set_message_output(CM_OUTPUT_TAP);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keep_alive),
      cmocka_unit_test(test_pipelining_in_order),
      cmocka_unit_test(test_malformed_requests),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_slow_clients),
      cmocka_unit_test(test_connection_cap),
      cmocka_unit_test(test_garbage_flood),
      cmocka_unit_test(test_sigterm_closes_and_exits),
  };
  return cmocka_run_group_tests_name("serve", tests, NULL, NULL);
}
