/* test_proc.c — the `proc` module in a trusted state: exit status, output,
 * stdin, errors before the start, misuse, the timeout killing the whole
 * process group, each resource limit, output truncation, the empty
 * environment, cwd, closed fds, network isolation (also through a user
 * namespace when unprivileged), cancellation killing the child, many runs at
 * once, the polling fallback without pidfd, and sandboxes not reaching it.
 * fixture_close asserts that no handle is left open; the sanitizer build
 * checks that nothing leaks. */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mod_proc.h"

static char tmpdir[64];

static int proc_setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/moonhive-proc-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int proc_teardown(void **state) {
  (void)state;
  return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Code as the trusted runtime runs it, with proc, time and DIR at hand. */
static char *trusted_code(const char *code) {
  char *full = NULL;
  assert_true(asprintf(&full, "local proc, time, task = require 'proc', require 'time', require 'task'\n"
                              "local DIR = '%s'\n%s", tmpdir, code) > 0);
  return full;
}

static void eval_trusted(const mh_limits *limits, const char *code, outcome *o) {
  fixture f;
  fixture_open(&f, limits);
  f.vm->trusted = 1;
  char *full = trusted_code(code);
  eval_in(&f, full, o);
  free(full);
  fixture_close(&f);
}

static void assert_trusted_ok(const char *code) {
  outcome o;
  eval_trusted(NULL, code, &o);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The pid a child wrote into DIR/name, or 0. */
static pid_t pid_in_file(const char *name) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  long pid = 0;
  if (fscanf(f, "%ld", &pid) != 1) pid = 0;
  fclose(f);
  return (pid_t)pid;
}

/* Gone, or a zombie waiting for whoever inherited it: either way, dead. */
static int process_dead(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 1;
  char *line = fgets(buf, sizeof buf, f);
  fclose(f);
  if (line == NULL) return 1;
  char *paren = strrchr(buf, ')');
  return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

/* SIGKILL is asynchronous: give the kernel a moment to finish the exit. */
static void assert_dead_soon(pid_t pid) {
  assert_true(pid > 0);
  uint64_t until = now_ms() + 3000;
  while (!process_dead(pid) && now_ms() < until) usleep(10000);
  if (!process_dead(pid)) fail_msg("process %ld is still running", (long)pid);
}

/* ---- tests ---- */

static void test_status_and_output(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'sh', '-c', 'echo out; echo err >&2; exit 3'}})\n"
    "assert(r.status == 3 and r.signal == nil, tostring(r.status))\n"
    "assert(r.stdout == 'out\\n' and r.stderr == 'err\\n', r.stdout .. r.stderr)\n"
    "assert(r.truncated == false and r.timed_out == false)\n"
    "assert(type(r.duration_ms) == 'number' and r.duration_ms >= 0 and r.duration_ms < 5000)\n"
    "r = assert(proc.run{argv = {'true'}})\n"
    "assert(r.status == 0 and r.stdout == '' and r.stderr == '')\n"
    "r = assert(proc.run{argv = {'python3', '-c', 'import sys; print(sum(range(10))); sys.exit(4)'}})\n"
    "assert(r.status == 4 and r.stdout == '45\\n', r.stderr)\n"
    "r = assert(proc.run{argv = {'lua5.4', '-e', 'io.write(6 * 7)'}})\n"
    "assert(r.status == 0 and r.stdout == '42', r.stderr)\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'kill -TERM $$'}})\n"
    "assert(r.status == nil and r.signal == 'SIGTERM', tostring(r.signal))\n"
    "r = assert(proc.run{argv = {'printf', 'a\\\\000b'}})\n"
    "assert(r.stdout == 'a\\0b', r.stdout)\n"
    "return 'ok'");
}

static void test_stdin(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'cat'}, stdin = 'hello\\nworld'})\n"
    "assert(r.status == 0 and r.stdout == 'hello\\nworld', r.stdout)\n"
    "r = assert(proc.run{argv = {'cat'}})\n"                     /* /dev/null */
    "assert(r.status == 0 and r.stdout == '')\n"
    "r = assert(proc.run{argv = {'cat'}, stdin = ''})\n"
    "assert(r.status == 0 and r.stdout == '')\n"
    "r = assert(proc.run{argv = {'wc', '-c'}, stdin = 'a\\0b'})\n"
    "assert(r.stdout:match('^%s*3%s*$'), r.stdout)\n"
    /* more than a pipe holds, both ways at once */
    "local big = string.rep('0123456789abcdef', 65536)\n"
    "r = assert(proc.run{argv = {'cat'}, stdin = big, output_limit = 2 << 20})\n"
    "assert(r.status == 0 and #r.stdout == #big and r.stdout == big and not r.truncated)\n"
    /* a child that never reads its input: EPIPE for us, never SIGPIPE */
    "r = assert(proc.run{argv = {'true'}, stdin = string.rep('x', 1 << 20)})\n"
    "assert(r.status == 0)\n"
    "r = assert(proc.run{argv = {'head', '-c', '3'}, stdin = string.rep('y', 1 << 20)})\n"
    "assert(r.status == 0 and r.stdout == 'yyy')\n"
    "return 'ok'");
}

static void test_cannot_start(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r, err = proc.run{argv = {'no-such-program-xyz'}}\n"
    "assert(r == nil and err == \"proc.run: program 'no-such-program-xyz' not found in PATH (/usr/bin:/bin)\", err)\n"
    "r, err = proc.run{argv = {'/no/such/file'}}\n"
    "assert(r == nil and err == \"proc.run: cannot execute '/no/such/file': No such file or directory\", err)\n"
    "r, err = proc.run{argv = {'pwd'}, cwd = DIR .. '/missing'}\n"
    "assert(r == nil and err == \"proc.run: cannot change to directory '\" .. DIR .. \"/missing': No such file or directory\", err)\n"
    /* the PATH given in env is the one searched */
    "r, err = proc.run{argv = {'sh'}, env = {PATH = DIR}}\n"
    "assert(r == nil and err:find('not found in PATH (' .. DIR .. ')', 1, true), err)\n"
    /* a file that is not executable; a script without #! runs with /bin/sh */
    "assert(proc.run{argv = {'sh', '-c', [[printf 'echo hi' > noexec; printf 'echo from-script $1' > script; chmod +x script]]}, cwd = DIR})\n"
    "r, err = proc.run{argv = {DIR .. '/noexec'}}\n"
    "assert(r == nil and err == \"proc.run: cannot execute '\" .. DIR .. \"/noexec': Permission denied\", err)\n"
    "r, err = proc.run{argv = {'noexec'}, env = {PATH = DIR}}\n"
    "assert(r == nil and err:find(\"cannot run program 'noexec': Permission denied\", 1, true), err)\n"
    "r = assert(proc.run{argv = {'./script', 'arg'}, cwd = DIR})\n"
    "assert(r.status == 0 and r.stdout == 'from-script arg\\n', r.stdout .. r.stderr)\n"
    "r = assert(proc.run{argv = {'script', 'x'}, cwd = DIR, env = {PATH = '.:/bin'}})\n"
    "assert(r.status == 0 and r.stdout == 'from-script x\\n', r.stdout .. r.stderr)\n"
    "return 'ok'");
}

static void test_misuse_raises(void **state) {
  (void)state;
  assert_trusted_ok(
    "local function raises(opts, needle)\n"
    "  local ok, err = pcall(proc.run, opts)\n"
    "  assert(not ok and err:find(needle, 1, true), tostring(err))\n"
    "end\n"
    "raises(nil, 'table expected')\n"
    "raises({}, \"'argv' must be a list of strings\")\n"
    "raises({argv = 'ls'}, \"'argv' must be a list of strings\")\n"
    "raises({argv = {}}, \"'argv' must hold 1 to 65536 strings\")\n"
    "raises({argv = {''}}, 'argv[1] (the program) must not be empty')\n"
    "raises({argv = {'echo', 1}}, 'argv[2] must be a string')\n"
    "raises({argv = {'echo', 'a\\0b'}}, 'argv[2] must not contain zero bytes')\n"
    "raises({argv = {'true'}, timeout = 0}, \"'timeout' must be a number of milliseconds\")\n"
    "raises({argv = {'true'}, timeout = '5'}, \"'timeout' must be a number of milliseconds\")\n"
    "raises({argv = {'true'}, cpu = 1.5}, \"'cpu' must be a whole number of seconds\")\n"
    "raises({argv = {'true'}, cpu = 0}, \"'cpu' must be a whole number of seconds from 1\")\n"
    "raises({argv = {'true'}, memory = 1000}, \"'memory' must be a whole number of bytes from 1048576\")\n"
    "raises({argv = {'true'}, file_size = -1}, \"'file_size'\")\n"
    "raises({argv = {'true'}, processes = 0}, \"'processes'\")\n"
    "raises({argv = {'true'}, output_limit = -1}, \"'output_limit'\")\n"
    "raises({argv = {'true'}, env = 'A=1'}, \"'env' must be a table of strings\")\n"
    "raises({argv = {'true'}, env = {A = 1}}, \"'env' must map names to strings\")\n"
    "raises({argv = {'true'}, env = {'x'}}, \"'env' must map names to strings\")\n"
    "raises({argv = {'true'}, env = {['A=B'] = 'x'}}, \"without '='\")\n"
    "raises({argv = {'true'}, env = {A = 'x\\0y'}}, 'must not contain zero bytes')\n"
    "raises({argv = {'true'}, network = 'no'}, \"'network' must be a boolean\")\n"
    "raises({argv = {'true'}, cwd = ''}, \"'cwd' must not be empty\")\n"
    "raises({argv = {'true'}, cwd = 1}, \"'cwd' must be a string\")\n"
    "raises({argv = {'true'}, stdin = {}}, \"'stdin' must be a string\")\n"
    "raises({argv = {'true'}, timeout_ms = 5}, \"unknown option 'timeout_ms'\")\n"
    "raises({argv = {'true'}, [1] = 'x'}, \"unknown option '1'\")\n"
    /* options are read raw: a metatable is not consulted */
    "local r = assert(proc.run(setmetatable({argv = {'echo', 'raw'}}, {__index = function() error('consulted') end})))\n"
    "assert(r.stdout == 'raw\\n')\n"
    /* it cannot wait inside a metamethod called from C */
    "local ok, err = pcall(function()\n"
    "  return tostring(setmetatable({}, {__tostring = function() return proc.run{argv = {'true'}} end}))\n"
    "end)\n"
    "assert(not ok and err:find('cannot wait here'), err)\n"
    "return 'ok'");
}

static void test_timeout_kills_the_group(void **state) {
  (void)state;
  assert_trusted_ok(
    "local t0 = time.monotonic()\n"
    "local r = assert(proc.run{argv = {'sh', '-c', 'echo started; sleep 100'}, timeout = 300})\n"
    "local took = time.monotonic() - t0\n"
    "assert(r.timed_out == true and r.signal == 'SIGKILL' and r.status == nil, tostring(r.signal))\n"
    "assert(r.stdout == 'started\\n', r.stdout)\n"
    "assert(took >= 290 and took < 1000, took)\n"
    /* a grandchild holding the pipes is in the group: it dies too, at once
     * (waiting for it would take the 1 s grace) */
    "t0 = time.monotonic()\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'sleep 100 & echo $! > ' .. DIR .. '/bg.pid; sleep 100'}, timeout = 300})\n"
    "took = time.monotonic() - t0\n"
    "assert(r.timed_out and r.signal == 'SIGKILL' and took < 1000, took)\n"
    /* what the program leaves running when it exits is killed as well */
    "t0 = time.monotonic()\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'sleep 100 & echo $! > ' .. DIR .. '/left.pid; echo bye'}, timeout = 5000})\n"
    "took = time.monotonic() - t0\n"
    "assert(r.status == 0 and not r.timed_out and r.stdout == 'bye\\n' and took < 2000, took)\n"
    /* a process that left the group keeps the pipes open: the timeout ends
     * the wait, without calling it a timeout of the program */
    "t0 = time.monotonic()\n"
    "r = assert(proc.run{argv = {'sh', '-c', [[setsid sh -c 'echo $$ > escaped.pid; exec sleep 100' &\n"
    "  while [ ! -s escaped.pid ]; do sleep 0.01; done; echo out]]}, cwd = DIR, timeout = 400})\n"
    "took = time.monotonic() - t0\n"
    "assert(r.status == 0 and not r.timed_out and r.stdout == 'out\\n', r.stderr)\n"
    "assert(took >= 390 and took < 2000, took)\n"
    "return 'ok'");
  assert_dead_soon(pid_in_file("bg.pid"));
  assert_dead_soon(pid_in_file("left.pid"));
  pid_t escaped = pid_in_file("escaped.pid");
  assert_true(escaped > 0);
  kill(escaped, SIGKILL);
}

static void test_cpu_limit(void **state) {
  (void)state;
  assert_trusted_ok(
    "local t0 = time.monotonic()\n"
    "local r = assert(proc.run{argv = {'sh', '-c', 'while :; do :; done'}, cpu = 1, timeout = 20000})\n"
    "assert(r.signal == 'SIGXCPU' or r.signal == 'SIGKILL', tostring(r.signal))\n"
    "assert(not r.timed_out and time.monotonic() - t0 < 15000)\n"
    "return 'ok'");
}

static void test_memory_limit(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'python3', '-c', 'x = bytearray(1 << 30)'}})\n"
    "assert(r.status ~= 0 and r.stderr:find('MemoryError'), r.stderr)\n"
    "r = assert(proc.run{argv = {'python3', '-c', 'x = bytearray(64 << 20); print(len(x))'}})\n"
    "assert(r.status == 0 and r.stdout == '67108864\\n', r.stderr)\n"
    "r = assert(proc.run{argv = {'python3', '-c', 'x = bytearray(64 << 20)'}, memory = 48 << 20})\n"
    "assert(r.status ~= 0 and r.stderr:find('MemoryError'), r.stderr)\n"
    "return 'ok'");
}

static void test_file_size_limit(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'sh', '-c', 'head -c 2000000 /dev/zero > big'}, cwd = DIR, file_size = 1 << 20})\n"
    "assert(r.signal == 'SIGXFSZ' or r.status == 128 + 25, tostring(r.signal or r.status))\n"
    "r = assert(proc.run{argv = {'stat', '-c', '%s', 'big'}, cwd = DIR})\n"
    "assert(r.stdout == '1048576\\n', r.stdout)\n"
    /* Python ignores SIGXFSZ and sees the error */
    "r = assert(proc.run{argv = {'python3', '-c', \"open('big2', 'wb').write(b'x' * (2 << 20))\"}, cwd = DIR, file_size = 1 << 20})\n"
    "assert(r.status == 1 and r.stderr:find('File too large'), r.stderr)\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'echo small > ok'}, cwd = DIR, file_size = 1 << 20})\n"
    "assert(r.status == 0)\n"
    "return 'ok'");
}

static void test_limits_and_process_state(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'cat', '/proc/self/limits'}, cpu = 7, memory = 300 << 20,\n"
    "                          file_size = 5 << 20, processes = 40})\n"
    "local s = r.stdout\n"
    "assert(s:find('Max cpu time%s+7%s+8%s'), s)\n"
    "assert(s:find('Max address space%s+314572800%s+314572800%s'), s)\n"
    "assert(s:find('Max file size%s+5242880%s+5242880%s'), s)\n"
    "assert(s:find('Max processes%s+40%s+40%s'), s)\n"
    "r = assert(proc.run{argv = {'cat', '/proc/self/limits'}})\n"
    "s = r.stdout\n"
    "assert(s:find('Max cpu time%s+5%s+6%s') and s:find('Max address space%s+268435456%s')\n"
    "       and s:find('Max file size%s+16777216%s') and s:find('Max processes%s+32%s'), s)\n"
    /* its own session and group, no new privileges, only fds 0..2 */
    "r = assert(proc.run{argv = {'python3', '-c', [[\n"
    "import os\n"
    "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n"
    "print([fd for fd in range(3, 4096) if os.path.exists('/proc/self/fd/%d' % fd)])\n"
    "print([l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1])\n"
    "]]}})\n"
    "assert(r.stdout == 'True True\\n[]\\n1\\n', r.stdout .. r.stderr)\n"
    "return 'ok'");
}

static void test_output_truncation(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'sh', '-c', 'yes | head -c 50000000; echo done >&2'}})\n"
    "assert(r.status == 0 and r.truncated == true and #r.stdout == 1 << 20, #r.stdout)\n"
    "assert(r.stdout:sub(1, 6) == 'y\\ny\\ny\\n' and r.stderr == 'done\\n', r.stderr)\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'yes | head -c 5000; yes 2>/dev/null | head -c 5000 >&2'}, output_limit = 100})\n"
    "assert(#r.stdout == 100 and #r.stderr == 100 and r.truncated)\n"
    "r = assert(proc.run{argv = {'echo', 'hi'}, output_limit = 0})\n"
    "assert(r.stdout == '' and r.truncated)\n"
    "r = assert(proc.run{argv = {'echo', 'hi'}, output_limit = 3})\n"
    "assert(r.stdout == 'hi\\n' and not r.truncated)\n"
    "return 'ok'");
}

/* The host may ignore SIGPIPE (servers do); the child must not inherit that:
 * `yes` would then complain about a broken pipe instead of dying quietly. */
static void test_signals_reset_in_child(void **state) {
  (void)state;
  struct sigaction ign, old_pipe, old_int;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ign, &old_pipe);
  sigaction(SIGINT, &ign, &old_int);
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'sh', '-c', 'yes | head -c 10 > /dev/null'}})\n"
    "assert(r.status == 0 and r.stderr == '', r.stderr)\n"
    "r = assert(proc.run{argv = {'python3', '-c', 'import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)'}})\n"
    "assert(r.stdout == 'True\\n', r.stdout)\n"
    "return 'ok'");
  sigaction(SIGPIPE, &old_pipe, NULL);
  sigaction(SIGINT, &old_int, NULL);
}

static void test_environment_and_cwd(void **state) {
  (void)state;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'env'}})\n"
    "assert(r.stdout == 'PATH=/usr/bin:/bin\\n', r.stdout)\n"
    "r = assert(proc.run{argv = {'env'}, env = {FOO = 'bar baz', LANG = 'C'}})\n"
    "local lines = {}\n"
    "for l in r.stdout:gmatch('[^\\n]+') do lines[#lines + 1] = l end\n"
    "table.sort(lines)\n"
    "assert(table.concat(lines, ',') == 'FOO=bar baz,LANG=C,PATH=/usr/bin:/bin', r.stdout)\n"
    "r = assert(proc.run{argv = {'/usr/bin/env'}, env = {PATH = '/bin'}})\n"
    "assert(r.stdout == 'PATH=/bin\\n', r.stdout)\n"
    "r = assert(proc.run{argv = {'pwd'}, cwd = DIR})\n"
    "assert(r.stdout == DIR .. '\\n', r.stdout)\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'echo x > made'}, cwd = DIR})\n"
    "r = assert(proc.run{argv = {'cat', 'made'}, cwd = DIR})\n"
    "assert(r.stdout == 'x\\n')\n"
    "return 'ok'");
}

static const char network_code[] =
  "local r = assert(proc.run{argv = {'cat', '/proc/net/dev'}})\n"
  "local isolated = r.network_isolated\n"
  "if isolated then\n"
  "  local names = {}\n"
  "  for name in r.stdout:gmatch('\\n%s*([^%s:|]+):') do names[#names + 1] = name end\n"
  "  assert(#names == 1 and names[1] == 'lo', r.stdout)\n"
  "  r = assert(proc.run{argv = {'python3', '-c', [[\n"
  "import socket\n"
  "try:\n"
  "    socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
  "    print('connected')\n"
  "except OSError as e:\n"
  "    print('failed', e.errno)\n"
  "]]}})\n"
  "  assert(r.stdout == 'failed 101\\n', r.stdout .. r.stderr)\n" /* ENETUNREACH: even lo is down */
  "end\n"
  "r = assert(proc.run{argv = {'cat', '/proc/net/dev'}, network = true})\n"
  "assert(r.network_isolated == false and r.stdout:find('lo:'))\n";

static void test_network_isolation(void **state) {
  (void)state;
  outcome o;
  char *code = NULL;
  assert_true(asprintf(&code, "%sreturn isolated", network_code) > 0);
  eval_trusted(NULL, code, &o);
  free(code);
  if (o.state != MH_RUN_OK) fail_msg("%s", o.error);
  if (strcmp(o.output, "true") != 0) print_message("# network isolation is not available here: not checked\n");
  outcome_clear(&o);
}

/* Unprivileged, a new network namespace needs a user namespace of its own:
 * run the same checks as nobody in a forked copy of this test. */
static void test_network_isolation_unprivileged(void **state) {
  (void)state;
  if (geteuid() != 0) {
    print_message("# not root: cannot switch to nobody; skipped\n");
    return;
  }
  chmod(tmpdir, 0777);
  int pipefd[2];
  assert_int_equal(pipe(pipefd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(pipefd[0]);
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    fixture f;
    fixture_open(&f, NULL);
    f.vm->trusted = 1;
    char *code = NULL;
    if (asprintf(&code,
                 "%s"
                 "local ids = assert(proc.run{argv = {'sh', '-c', 'id -u; echo x > " "%s/nobody.txt && echo wrote'}})\n"
                 "assert(ids.stdout == '65534\\nwrote\\n', ids.stdout .. ids.stderr)\n"
                 /* RLIMIT_NPROC holds for an unprivileged user */
                 "local r = assert(proc.run{argv = {'sh', '-c', 'for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait'}, processes = 4})\n"
                 "assert(r.stderr:find('fork'), r.stderr)\n"
                 "return isolated", network_code, tmpdir) < 0) _exit(4);
    outcome o;
    char *full = trusted_code(code);
    eval_in(&f, full, &o);
    const char *text = o.state == MH_RUN_OK ? o.output : o.error;
    if (write(pipefd[1], text, strlen(text)) < 0) _exit(5);
    _exit(o.state == MH_RUN_OK ? 0 : 1);
  }
  close(pipefd[1]);
  char buf[4096];
  size_t len = 0;
  ssize_t n;
  while ((n = read(pipefd[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)n;
  buf[len] = '\0';
  close(pipefd[0]);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("as nobody: status %d: %s", status, buf);
  if (strcmp(buf, "true") != 0) print_message("# no user namespaces for nobody here: isolation not checked\n");
}

/* Cancelling the run (and a deadline breaking it) kills the child and its
 * children; the op frees itself once the child is reaped. */
static void cancel_while_running(const mh_limits *limits, int cancel) {
  fixture f;
  fixture_open(&f, limits);
  f.vm->trusted = 1;
  char *code = trusted_code(
    "return proc.run{argv = {'sh', '-c', 'sleep 100 & echo $! > ' .. DIR .. '/c-bg.pid; echo $$ > ' .. DIR .. '/c-leader.pid; wait'}, timeout = 60000}");
  outcome o;
  mh_run *run = start_code(&f, code, &o);
  free(code);
  assert_non_null(run);
  uint64_t until = now_ms() + 10000;
  while ((pid_in_file("c-leader.pid") == 0 || pid_in_file("c-bg.pid") == 0) && now_ms() < until) {
    uv_run(&f.loop, UV_RUN_NOWAIT);
    usleep(2000);
  }
  pid_t leader = pid_in_file("c-leader.pid"), bg = pid_in_file("c-bg.pid");
  assert_true(leader > 0 && bg > 0);
  uint64_t t0 = now_ms();
  if (cancel) mh_run_cancel(run, MH_BREAK_CANCEL);
  run_until_done(&f, &o);
  assert_true(now_ms() - t0 < 5000);
  assert_int_not_equal(o.state, MH_RUN_OK);
  assert_error_contains(&o, cancel ? "cancelled" : "deadline");
  outcome_clear(&o);
  fixture_close(&f); /* turns the loop until the child is reaped; no handle left */
  assert_dead_soon(leader);
  assert_dead_soon(bg);
  char path[128];
  snprintf(path, sizeof path, "%s/c-bg.pid", tmpdir);
  unlink(path);
  snprintf(path, sizeof path, "%s/c-leader.pid", tmpdir);
  unlink(path);
}

static void test_cancel_kills_the_child(void **state) {
  (void)state;
  cancel_while_running(NULL, 1);
  mh_limits limits;
  mh_limits_default(&limits);
  limits.deadline_ns = 1500ull * 1000000;
  cancel_while_running(&limits, 0);
}

static const char many_code[] =
  "local t0 = time.monotonic()\n"
  "local tasks = {}\n"
  "for i = 1, N do\n"
  "  tasks[i] = task.spawn(function()\n"
  "    return proc.run{argv = {'sh', '-c', 'sleep 0.4; echo ' .. i .. '; cat'}, stdin = 'in' .. i}\n"
  "  end)\n"
  "end\n"
  "for i = 1, N do\n"
  "  local ok, r = task.wait(tasks[i])\n"
  "  assert(ok and r and r.status == 0 and r.stdout == i .. '\\nin' .. i, tostring(ok and r and r.stdout or r))\n"
  "end\n"
  "local took = time.monotonic() - t0\n"
  "assert(took < N * 400 * 0.6, took)\n" /* in sequence it would take N * 400 ms */
  "return 'ok'";

static void test_many_at_once(void **state) {
  (void)state;
  char *code = NULL;
  assert_true(asprintf(&code, "local N = 50\n%s", many_code) > 0);
  assert_trusted_ok(code);
  free(code);
}

/* Without pidfd_open (before Linux 5.3) exits are polled. */
static void test_without_pidfd(void **state) {
  (void)state;
  mh_proc_no_pidfd = 1;
  assert_trusted_ok(
    "local r = assert(proc.run{argv = {'sh', '-c', 'echo out; exit 2'}})\n"
    "assert(r.status == 2 and r.stdout == 'out\\n')\n"
    "r = assert(proc.run{argv = {'sh', '-c', 'sleep 100 & sleep 100'}, timeout = 200})\n"
    "assert(r.timed_out and r.signal == 'SIGKILL')\n"
    "local r2, err = proc.run{argv = {'pwd'}, cwd = '/no/such/dir'}\n"
    "assert(r2 == nil and err:find('cannot change to directory'), err)\n"
    "return 'ok'");
  char *code = NULL;
  assert_true(asprintf(&code, "local N = 10\n%s", many_code) > 0);
  assert_trusted_ok(code);
  free(code);
  cancel_while_running(NULL, 1);
  mh_proc_no_pidfd = 0;
}

static void test_not_in_sandbox(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL, "return require 'proc'", &o);
  assert_error_contains(&o, "module 'proc' not found");
  outcome_clear(&o);
  eval_fresh(NULL, "return proc", &o);
  assert_error_contains(&o, "undefined global 'proc'");
  outcome_clear(&o);
}

#define PROC_TEST(fn) cmocka_unit_test_setup_teardown(fn, proc_setup, proc_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
    PROC_TEST(test_status_and_output),
    PROC_TEST(test_stdin),
    PROC_TEST(test_cannot_start),
    PROC_TEST(test_misuse_raises),
    PROC_TEST(test_timeout_kills_the_group),
    PROC_TEST(test_cpu_limit),
    PROC_TEST(test_memory_limit),
    PROC_TEST(test_file_size_limit),
    PROC_TEST(test_limits_and_process_state),
    PROC_TEST(test_output_truncation),
    PROC_TEST(test_signals_reset_in_child),
    PROC_TEST(test_environment_and_cwd),
    PROC_TEST(test_network_isolation),
    PROC_TEST(test_network_isolation_unprivileged),
    PROC_TEST(test_cancel_kills_the_child),
    PROC_TEST(test_many_at_once),
    PROC_TEST(test_without_pidfd),
    PROC_TEST(test_not_in_sandbox),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
