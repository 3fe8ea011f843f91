/* test_repl_pty.c — end-to-end tests of `moonhive repl`, driven through a
 * pseudo-terminal like a person at a keyboard.
 *
 * Each test starts the real binary ($MOONHIVE_BIN, else ./moonhive) with
 * forkpty in a fresh data directory under $MOONHIVE_DATA, types keys, and
 * waits with poll() until an expected piece of text shows up. Nothing is
 * stripped from the output: patterns are plain substrings chosen so that
 * readline's echo and redisplay cannot match them (a result is looked for as
 * a line of its own, "\n2\r"). Timeouts only bound the waiting; no test
 * asserts on speed. Sanitizer reports in the REPL's terminal fail the test,
 * and every session must end by itself with exit status 0. test_piped_mode
 * and two regressions run the REPL without a terminal (stdin a pipe or a
 * file) to check the plain, prompt-less mode. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h> /* cmocka needs stdarg, stddef, stdint and setjmp first */
#include <cmocka.h>

#include "e2e.h"

#define TIMEOUT_MS 10000 /* generous: only bounds waiting */

/* ---- a terminal session ---- */

typedef struct {
  pid_t pid;    /* 0 once reaped */
  int fd;       /* pty master; -1 when closed */
  int status;   /* wait status, once reaped */
  char *out;    /* everything the REPL wrote, NUL-terminated */
  size_t len, cap;
  size_t mark;  /* searches start here; moves past each match */
  int eof;
} term;

typedef struct {
  char dir[PATH_MAX]; /* this test's MOONHIVE_DATA */
  term t;
} fixture;

static void remove_data_dir(const char *dir) {
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/repl_history", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/input.lua", dir);
  unlink(path);
  rmdir(dir);
}

/* Prints the output from `from` on, with control characters made visible. */
static void dump(const term *t, size_t from, const char *why) {
  fprintf(stderr, "# %s; the REPL's terminal said:\n# ", why);
  for (size_t i = from; i < t->len; i++) {
    unsigned char c = (unsigned char)t->out[i];
    if (c == '\n') fputs("\\n\n# ", stderr);
    else if (c == '\r') fputs("\\r", stderr);
    else if (c == 0x1b) fputs("\\e", stderr);
    else if (c < 0x20 || c == 0x7f) fprintf(stderr, "\\x%02x", c);
    else fputc(c, stderr);
  }
  fputc('\n', stderr);
}

static void check_sanitizers(const term *t) {
  static const char *const markers[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", NULL};
  for (int i = 0; markers[i]; i++)
    if (t->out && strstr(t->out, markers[i])) {
      dump(t, 0, "a sanitizer reported an error");
      fail_msg("sanitizer report in the REPL's output: %s", markers[i]);
    }
}

static void term_start(term *t, const char *data_dir) {
  memset(t, 0, sizeof *t);
  t->fd = -1;
  t->cap = 4096;
  t->out = calloc(1, t->cap);
  assert_non_null(t->out);
  struct winsize ws = {.ws_row = 24, .ws_col = 200};
  pid_t pid = forkpty(&t->fd, NULL, NULL, &ws);
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("MOONHIVE_DATA", data_dir, 1);
    setenv("TERM", "dumb", 1);
    setenv("INPUTRC", "/dev/null", 1); /* no personal key bindings */
    unsetenv("COLUMNS");
    unsetenv("LINES");
    signal(SIGPIPE, SIG_DFL);
    execl(moonhive_bin(), moonhive_bin(), "repl", (char *)NULL);
    fprintf(stderr, "exec %s: %s\n", moonhive_bin(), strerror(errno));
    _exit(127);
  }
  t->pid = pid;
}

/* Reads what is available within timeout_ms: >0 bytes read, 0 nothing, -1 EOF. */
static int term_read(term *t, int timeout_ms) {
  if (t->eof || t->fd < 0) return -1;
  struct pollfd p = {.fd = t->fd, .events = POLLIN};
  int rc = poll(&p, 1, timeout_ms);
  if (rc < 0) return errno == EINTR ? 0 : -1;
  if (rc == 0) return 0;
  if (t->len + 4096 + 1 > t->cap) {
    size_t cap = t->cap * 2 + 4096;
    char *grown = realloc(t->out, cap);
    assert_non_null(grown);
    t->out = grown;
    t->cap = cap;
  }
  ssize_t n = read(t->fd, t->out + t->len, 4096);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
  if (n <= 0) { /* EIO: the REPL side of the pty is closed */
    t->eof = 1;
    return -1;
  }
  t->len += (size_t)n;
  t->out[t->len] = '\0';
  return (int)n;
}

/* Waits until `pattern` appears after the mark; moves the mark past it. */
static int term_expect(term *t, const char *pattern) {
  size_t plen = strlen(pattern);
  long long deadline = now_ms() + TIMEOUT_MS;
  for (;;) {
    check_sanitizers(t);
    if (t->len >= t->mark) {
      const char *hit = memmem(t->out + t->mark, t->len - t->mark, pattern, plen);
      if (hit) {
        t->mark = (size_t)(hit - t->out) + plen;
        return 1;
      }
    }
    long long left = deadline - now_ms();
    if (left <= 0 || term_read(t, (int)(left > 200 ? 200 : left)) < 0) {
      while (!t->eof && term_read(t, 100) > 0) {}
      check_sanitizers(t);
      char why[300];
      snprintf(why, sizeof why, "expected text (%zu bytes, first line \"%.*s\") did not appear",
               plen, (int)strcspn(pattern + (pattern[0] == '\n'), "\r\n"), pattern + (pattern[0] == '\n'));
      dump(t, t->mark, why);
      return 0;
    }
  }
}

static void term_send(term *t, const char *keys) {
  size_t len = strlen(keys), done = 0;
  while (done < len) {
    ssize_t n = write(t->fd, keys + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    assert_true(n > 0);
    done += (size_t)n;
  }
}

/* Types a line and presses Enter. */
static void term_line(term *t, const char *line) {
  term_send(t, line);
  term_send(t, "\r");
}

/* Waits for the REPL to end by itself; then reaps it. 1 when it did. */
static int term_wait_exit(term *t) {
  long long deadline = now_ms() + TIMEOUT_MS;
  while (now_ms() < deadline) {
    if (!t->eof) term_read(t, 100);
    pid_t w = waitpid(t->pid, &t->status, WNOHANG);
    if (w == t->pid) {
      t->pid = 0;
      while (!t->eof && term_read(t, 200) > 0) {} /* the last words, e.g. LeakSanitizer */
      return 1;
    }
    if (t->eof) usleep(10000);
  }
  dump(t, t->mark, "the REPL did not exit");
  return 0;
}

static void term_close(term *t) {
  if (t->pid > 0) {
    kill(t->pid, SIGKILL);
    waitpid(t->pid, &t->status, 0);
    t->pid = 0;
  }
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  free(t->out);
  t->out = NULL;
}

/* Ends a session with the given keys and checks it exited cleanly. */
static void term_finish(term *t, const char *keys) {
  term_send(t, keys);
  assert_true(term_wait_exit(t));
  check_sanitizers(t);
  if (!WIFEXITED(t->status) || WEXITSTATUS(t->status) != 0) dump(t, 0, "bad exit");
  assert_true(WIFEXITED(t->status));
  assert_int_equal(WEXITSTATUS(t->status), 0);
}

#define EXPECT(t, pattern) assert_true(term_expect((t), (pattern)))
/* A value printed on a line of its own (never matched by the echo); the
 * line's "\n" is left for the prompt that follows. */
#define EXPECT_LINE(t, text) EXPECT((t), "\n" text "\r")
#define EXPECT_PROMPT(t) EXPECT((t), "\n> ")
#define EXPECT_MORE(t) EXPECT((t), "\n>> ")
#define CTRL_C "\x03"
#define CTRL_D "\x04"

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  f->t.fd = -1;
  *state = f; /* teardown cleans up even when this fails */
  make_data_dir(f->dir, sizeof f->dir, "repl_pty");
  term_start(&f->t, f->dir);
  if (!term_expect(&f->t, ":help for help") || !term_expect(&f->t, "\n> ")) /* banner, prompt */
    return -1;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (f == NULL) return 0;
  term_close(&f->t);
  remove_data_dir(f->dir);
  free(f);
  return 0;
}

/* ---- the tests ---- */

static void test_banner_expressions_globals(void **state) {
  term *t = &((fixture *)*state)->t;
  assert_non_null(strstr(t->out, "moonhive "));
  term_line(t, "1 + 1");
  EXPECT_LINE(t, "2");
  EXPECT_PROMPT(t);
  term_line(t, "x = 21");
  EXPECT_PROMPT(t);
  term_line(t, "x * 2");
  EXPECT_LINE(t, "42");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_multiline(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "for i = 1, 3 do");
  EXPECT_MORE(t);
  term_line(t, "print(i * 10)");
  EXPECT_MORE(t);
  term_line(t, "end");
  EXPECT_LINE(t, "10");
  EXPECT_LINE(t, "20");
  EXPECT_LINE(t, "30");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_readable_values(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "{1, 2, {a = true}, name = \"x\"}");
  EXPECT(t, "\n{"); /* the value starts on a line of its own */
  EXPECT(t, "{a = true}");
  EXPECT(t, "name = \"x\"");
  EXPECT(t, "}\r");
  EXPECT_PROMPT(t);
  term_line(t, "t = {}; t.self = t; return t");
  EXPECT(t, "self = <cycle>");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_async_sleep(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "sleep(100) return \"woke\"");
  EXPECT_LINE(t, "woke");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_errors_keep_repl(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "error(\"boom\")");
  EXPECT(t, "stdin:1: boom");
  EXPECT(t, "stack traceback:");
  EXPECT_PROMPT(t);
  term_line(t, "1+1");
  EXPECT_LINE(t, "2");
  EXPECT_PROMPT(t);
  term_line(t, "x = = 1");
  EXPECT(t, "unexpected symbol near '='");
  EXPECT_PROMPT(t);
  term_line(t, "1+1");
  EXPECT_LINE(t, "2");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_ctrl_c(void **state) {
  term *t = &((fixture *)*state)->t;
  /* waiting code: the line printed proves the evaluation is under way */
  term_line(t, "print(\"sle\" .. \"eping\") sleep(60000)");
  EXPECT_LINE(t, "sleeping");
  term_send(t, CTRL_C);
  EXPECT(t, "interrupted"); /* well before the 60 s sleep could end */
  EXPECT_PROMPT(t);
  /* busy code, cut by the count hook (before the 10 s CPU budget) */
  term_line(t, "print(\"spin\" .. \"ning\") while true do end");
  EXPECT_LINE(t, "spinning");
  term_send(t, CTRL_C);
  EXPECT(t, "interrupted");
  EXPECT_PROMPT(t);
  term_line(t, "1+1");
  EXPECT_LINE(t, "2");
  EXPECT_PROMPT(t);
  /* at the prompt: the partial line is dropped */
  term_send(t, "abc");
  EXPECT(t, "abc");
  term_send(t, CTRL_C);
  EXPECT(t, "^C");
  EXPECT_PROMPT(t);
  term_line(t, "1+1");
  EXPECT_LINE(t, "2");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_tab_completion(void **state) {
  term *t = &((fixture *)*state)->t;
  /* each completed line only works if the Tab filled in the name */
  term_send(t, "stri");
  EXPECT(t, "stri");
  term_send(t, "\t");
  EXPECT(t, "ng");
  term_line(t, ".rep(\"ab\", 3)");
  EXPECT_LINE(t, "ababab");
  EXPECT_PROMPT(t);

  term_send(t, "string.for");
  EXPECT(t, "string.for");
  term_send(t, "\t");
  EXPECT(t, "mat");
  term_line(t, "(\"%d-%d\", 4, 5)");
  EXPECT_LINE(t, "4-5");
  EXPECT_PROMPT(t);

  term_line(t, "myvariable = 12345");
  EXPECT_PROMPT(t);
  term_send(t, "myva");
  EXPECT(t, "myva");
  term_send(t, "\t");
  EXPECT(t, "riable");
  term_line(t, " * 2");
  EXPECT_LINE(t, "24690");
  EXPECT_PROMPT(t);

  term_send(t, "os.ti");
  EXPECT(t, "os.ti");
  term_send(t, "\t");
  EXPECT(t, "me");
  term_line(t, "() > 0");
  EXPECT_LINE(t, "true");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

/* Completion reads metatables raw: an __index function is never called
 * (it would run script code outside any run, with no limits). */
static void test_completion_runs_no_script_code(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "calls = 0 x = setmetatable({}, setmetatable({}, {__index = function(t, k) "
               "calls = calls + 1 error('boom') end}))");
  EXPECT_PROMPT(t);
  term_send(t, "x.");
  EXPECT(t, "x.");
  term_send(t, "\t");
  term_send(t, "\x15"); /* Ctrl-U: drop the line */
  term_line(t, "calls");
  EXPECT_LINE(t, "0");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_help_and_quit(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, ":help");
  EXPECT(t, ":quit");
  EXPECT_PROMPT(t);
  term_finish(t, ":quit\r");
}

static void test_history_persists(void **state) {
  fixture *f = *state;
  term *t = &f->t;
  term_line(t, "return 7 * 6");
  EXPECT_LINE(t, "42");
  EXPECT_PROMPT(t);
  term_finish(t, ":quit\r");
  term_close(t);

  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/repl_history", f->dir);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  char text[4096];
  size_t n = fread(text, 1, sizeof text - 1, fp);
  fclose(fp);
  text[n] = '\0';
  assert_non_null(strstr(text, "return 7 * 6"));

  term_start(t, f->dir);
  EXPECT(t, ":help for help");
  EXPECT_PROMPT(t);
  term_send(t, "\x1b[A"); /* Up: the previous session's entry */
  EXPECT(t, "return 7 * 6");
  term_send(t, "\r");
  EXPECT_LINE(t, "42");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

static void test_sandbox_at_prompt(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "io");
  EXPECT(t, "undefined global 'io'");
  EXPECT_PROMPT(t);
  term_line(t, "os.getenv");
  EXPECT_LINE(t, "nil");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

/* ---- piped, non-interactive ---- */

typedef struct {
  char *out, *err; /* NUL-terminated */
  int status;
  int exited;      /* reaped within the timeout */
} plain_run;

static void grow_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
  if (*len + n + 1 > *cap) {
    *cap = (*len + n + 1) * 2;
    *buf = realloc(*buf, *cap);
    assert_non_null(*buf);
  }
  memcpy(*buf + *len, data, n);
  *len += n;
  (*buf)[*len] = '\0';
}

/* Runs `moonhive repl` without a terminal. Its stdin is a pipe fed with
 * `input` (written as the REPL reads it), or, with from_file, a regular file
 * holding it. Collects stdout and stderr to their ends. */
static void run_plain(const char *dir, const char *input, int from_file, plain_run *res) {
  size_t inlen = strlen(input), sent = 0;
  int in[2] = {-1, -1}, out[2], err[2];
  char file[PATH_MAX + 32];
  snprintf(file, sizeof file, "%s/input.lua", dir);
  if (from_file) {
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(input, 1, inlen, fp), inlen);
    fclose(fp);
    in[0] = open(file, O_RDONLY);
    assert_true(in[0] >= 0);
  } else {
    assert_int_equal(pipe(in), 0);
  }
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(err), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(in[0], STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    for (int i = 0; i < 2; i++) {
      if (in[i] >= 0) close(in[i]);
      close(out[i]);
      close(err[i]);
    }
    setsid(); /* no controlling terminal: nothing interactive at all */
    setenv("MOONHIVE_DATA", dir, 1);
    setenv("TERM", "dumb", 1);
    signal(SIGPIPE, SIG_DFL);
    execl(moonhive_bin(), moonhive_bin(), "repl", (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);
  int wfd = from_file ? -1 : in[1];
  if (wfd >= 0) fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
  int rfd[2] = {out[0], err[0]};
  char *buf[2] = {NULL, NULL};
  size_t len[2] = {0, 0}, cap[2] = {0, 0};
  grow_append(&buf[0], &len[0], &cap[0], "", 0);
  grow_append(&buf[1], &len[1], &cap[1], "", 0);
  long long deadline = now_ms() + TIMEOUT_MS;
  while ((rfd[0] >= 0 || rfd[1] >= 0) && now_ms() < deadline) {
    struct pollfd p[3] = {{.fd = rfd[0], .events = POLLIN},
                          {.fd = rfd[1], .events = POLLIN},
                          {.fd = wfd, .events = POLLOUT}};
    if (poll(p, 3, 200) <= 0) continue;
    if (wfd >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(wfd, input + sent, inlen - sent);
      if (n > 0) sent += (size_t)n;
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == inlen) {
        close(wfd); /* the end of input */
        wfd = -1;
      }
    }
    for (int i = 0; i < 2; i++) {
      if (rfd[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char chunk[4096];
      ssize_t n = read(rfd[i], chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        close(rfd[i]);
        rfd[i] = -1;
        continue;
      }
      grow_append(&buf[i], &len[i], &cap[i], chunk, (size_t)n);
    }
  }
  if (wfd >= 0) close(wfd);
  for (int i = 0; i < 2; i++)
    if (rfd[i] >= 0) close(rfd[i]);
  res->out = buf[0];
  res->err = buf[1];
  res->exited = 0;
  pid_t got;
  while ((got = waitpid(pid, &res->status, WNOHANG)) == 0 && now_ms() < deadline) usleep(10000);
  if (got == pid) {
    res->exited = 1;
  } else {
    kill(pid, SIGKILL);
    waitpid(pid, &res->status, 0);
  }
  unlink(file);
}

/* stdout must be exactly `expected`; stderr empty (no banner, prompt or
 * sanitizer report); the REPL must end by itself with status 0. */
static void check_plain(plain_run *res, const char *expected) {
  int out_ok = strcmp(res->out, expected) == 0;
  int quiet = res->err[0] == '\0';
  if (!out_ok || !quiet || !res->exited)
    fprintf(stderr, "# stdout: [%s]\n# stderr: [%s]\n# exited: %d, %s %d\n", res->out, res->err,
            res->exited, WIFSIGNALED(res->status) ? "killed by signal" : "status",
            WIFSIGNALED(res->status) ? WTERMSIG(res->status) : WEXITSTATUS(res->status));
  free(res->out);
  free(res->err);
  assert_true(res->exited);
  assert_true(out_ok);
  assert_true(quiet);
  assert_true(WIFEXITED(res->status));
  assert_int_equal(WEXITSTATUS(res->status), 0);
}

static void test_piped_mode(void **state) {
  fixture *f = *state;
  plain_run res;
  run_plain(f->dir, "return 1+1\nfor i=1,2 do\nprint(i)\nend\n", 0, &res);
  check_plain(&res, "2\n1\n2\n");
}

/* ---- regressions ---- */

/* Ctrl-C redraws one prompt, and a Ctrl-C the count hook already took (busy
 * code) is not taken a second time at the prompt. */
static void test_ctrl_c_draws_one_prompt(void **state) {
  term *t = &((fixture *)*state)->t;
  term_line(t, "print(\"spin\" .. \"ning\") while true do end");
  EXPECT_LINE(t, "spinning");
  term_send(t, CTRL_C);
  EXPECT(t, "interrupted");
  size_t from = t->mark;
  EXPECT_PROMPT(t);
  term_line(t, "return 1 + 2");
  EXPECT_LINE(t, "3");
  if (memmem(t->out + from, t->mark - from, "^C", 2)) dump(t, from, "a second ^C");
  assert_null(memmem(t->out + from, t->mark - from, "^C", 2));
  EXPECT_PROMPT(t);

  term_send(t, "abc");
  EXPECT(t, "abc");
  term_send(t, CTRL_C);
  EXPECT(t, "^C");
  from = t->mark;
  EXPECT_PROMPT(t);
  term_line(t, "return 1 + 3");
  EXPECT_LINE(t, "4");
  if (memmem(t->out + from, t->mark - from, "> > ", 4)) dump(t, from, "the prompt drawn twice");
  assert_null(memmem(t->out + from, t->mark - from, "> > ", 4));
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

/* A multi-line entry comes back whole in the next session. */
static void test_history_multiline(void **state) {
  fixture *f = *state;
  term *t = &f->t;
  term_line(t, "for i = 1, 2 do");
  EXPECT_MORE(t);
  term_line(t, "print(i + 100)");
  EXPECT_MORE(t);
  term_line(t, "end");
  EXPECT_LINE(t, "101");
  EXPECT_LINE(t, "102");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
  term_close(t);

  term_start(t, f->dir);
  EXPECT(t, ":help for help");
  EXPECT_PROMPT(t);
  term_send(t, "\x1b[A");
  EXPECT(t, "print(i + 100)");
  term_send(t, "\r");
  EXPECT_LINE(t, "101");
  EXPECT_LINE(t, "102");
  EXPECT_PROMPT(t);
  term_finish(t, CTRL_D);
}

/* More than the REPL's 8 KB line buffer arrives while an entry waits: no
 * line may be lost or cut. */
static void test_piped_long_input(void **state) {
  fixture *f = *state;
  size_t cap = 64 * 1024, len = 0;
  char *input = malloc(cap);
  assert_non_null(input);
  len += (size_t)snprintf(input + len, cap - len, "sleep(200)\n");
  for (int i = 1; i <= 3000; i++) len += (size_t)snprintf(input + len, cap - len, "x = %d\n", i);
  snprintf(input + len, cap - len, "return x\n");
  plain_run res;
  run_plain(f->dir, input, 0, &res);
  free(input);
  check_plain(&res, "3000\n");
}

/* stdin redirected from a file (`moonhive repl < script.lua`). */
static void test_stdin_from_file(void **state) {
  fixture *f = *state;
  plain_run res;
  run_plain(f->dir, "return 1+1\nfor i=1,2 do\nprint(i)\nend\n", 1, &res);
  check_plain(&res, "2\n1\n2\n");
}

static int setup_dir_only(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  f->t.fd = -1;
  *state = f;
  make_data_dir(f->dir, sizeof f->dir, "repl_pty");
  return 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_banner_expressions_globals, setup, teardown),
    cmocka_unit_test_setup_teardown(test_multiline, setup, teardown),
    cmocka_unit_test_setup_teardown(test_readable_values, setup, teardown),
    cmocka_unit_test_setup_teardown(test_async_sleep, setup, teardown),
    cmocka_unit_test_setup_teardown(test_errors_keep_repl, setup, teardown),
    cmocka_unit_test_setup_teardown(test_ctrl_c, setup, teardown),
    cmocka_unit_test_setup_teardown(test_tab_completion, setup, teardown),
    cmocka_unit_test_setup_teardown(test_help_and_quit, setup, teardown),
    cmocka_unit_test_setup_teardown(test_history_persists, setup, teardown),
    cmocka_unit_test_setup_teardown(test_sandbox_at_prompt, setup, teardown),
    cmocka_unit_test_setup_teardown(test_piped_mode, setup_dir_only, teardown),
    /* regressions for bugs found while writing these tests */
    cmocka_unit_test_setup_teardown(test_ctrl_c_draws_one_prompt, setup, teardown),
    cmocka_unit_test_setup_teardown(test_history_multiline, setup, teardown),
    cmocka_unit_test_setup_teardown(test_piped_long_input, setup_dir_only, teardown),
    cmocka_unit_test_setup_teardown(test_stdin_from_file, setup_dir_only, teardown),
    cmocka_unit_test_setup_teardown(test_completion_runs_no_script_code, setup, teardown),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
