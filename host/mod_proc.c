/* mod_proc.c — `require "proc"` (trusted runtime only; natives.c): run a
 * program in a child process with resource limits and without network, feed
 * it stdin, collect its output, and wait for it without blocking the loop.
 *
 *   local res, err = proc.run{argv = {"python3", "-c", code}, cwd = dir,
 *     stdin = "text", timeout = 10000, cpu = 5, memory = 256 << 20,
 *     file_size = 16 << 20, processes = 32, output_limit = 1 << 20,
 *     network = false, env = {LANG = "C.UTF-8"}}
 *   -- res = {status = 0 | nil, signal = "SIGKILL" | nil, stdout =, stderr =,
 *   --        truncated =, timed_out =, network_isolated =, duration_ms =}
 *   -- nil, message when it could not start (program not found, bad cwd, ...)
 *
 * How. uv_spawn cannot set rlimits or unshare a namespace in the child, and
 * a helper executable (`moonhive-exec`, or a hidden `moonhive __exec`) costs
 * a second exec per run, has to be found next to the binary (tests and
 * embedders link the library without one) and is one more door into the
 * process. So the host forks itself: the child only makes system calls
 * (async-signal-safe, as fork in a threaded process requires) — default
 * signal dispositions, setsid (its own process group, so a kill reaches its
 * children too), its pipes onto fds 0..2, every other fd closed, a new network
 * namespace, chdir, no_new_privs, setrlimit — and execve's a path the parent
 * already looked up in the child's PATH. Whatever fails before exec is
 * written as (stage, errno) to a close-on-exec status pipe; its EOF means the
 * exec happened. The parent never waits for that synchronously (creating a
 * network namespace takes milliseconds).
 *
 * Waiting. libuv reaps only the children it spawned (waitpid per pid), so it
 * never takes ours. The exit is watched with a pidfd (Linux 5.3) on a
 * uv_poll, per child, race-free because the child stays a zombie until we
 * reap it; a second SIGCHLD watcher would share libuv's signal pipe, which
 * drops messages when it is full. Without pidfd_open, a 10 ms uv_timer polls
 * waitid. Before reaping the leader, the rest of its process group is killed:
 * nothing the program started outlives the call (except what left the group
 * with setsid). Pipes are uv_polls on non-blocking fds we read and write
 * ourselves: output past output_limit is read and dropped (the child never
 * blocks, memory never grows), and stdin is written with SIGPIPE held back so
 * a child that does not read its input cannot kill the host.
 *
 * Ownership. The op lives in host memory (its continuation does not call
 * script code): it owns the child, its fds and uv handles, and the timeout
 * (an mh_timer). It is finished when the child is reaped and every handle is
 * closed (each close callback counts down; fds are closed there); only then
 * is the run woken. proc_release is the one release point: a finished op is
 * freed at once; an unfinished one (the run was cancelled) kills the group,
 * closes its pipes and frees itself once the child is reaped. */
#include "mod_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "log.h"
#include "scheduler.h"
#include "stack_check.h"

#define DEFAULT_PATH "/usr/bin:/bin"
#define READ_CHUNK 65536       /* one read of a child's output */
#define READS_PER_EVENT 16     /* then let the loop serve others */
#define KILL_GRACE_MS 1000     /* after a timeout kill, how long to wait for the pipes */
#define EXIT_POLL_MS 10        /* exit polling when there is no pidfd */

int mh_proc_no_pidfd = 0;

enum { S_STATUS, S_STDIN, S_STDOUT, S_STDERR, NSTREAMS };

/* Records the child writes on its status pipe: {stage, errno}. */
enum { ST_NO_NETNS = 1, ST_SETUP, ST_STDIN, ST_USERNS, ST_CHDIR, ST_RLIMIT, ST_EXEC, ST_PARENT };

typedef struct proc_op proc_op;

typedef struct stream {
  uv_poll_t poll;     /* data = the op */
  int fd;             /* the parent's end; closed in the poll's close callback */
  int open;           /* poll initialised and not closing */
  char *buf;          /* stdout/stderr: what was kept; stdin: what to write */
  size_t len, cap, off;
} stream;

struct proc_op {
  mh_op op;
  mh_host *host;
  pid_t pid;                   /* 0 until forked */
  int reaped, wstatus, lost;   /* lost: someone else reaped it (SIGCHLD ignored) */
  int pidfd;
  uv_poll_t exit_poll;         /* on pidfd; or */
  uv_timer_t exit_timer;       /* polling waitid */
  int exit_watch;              /* 0 none, 1 exit_poll, 2 exit_timer; open while not reaped */
  stream s[NSTREAMS];
  size_t output_limit;
  int handles;                 /* uv handles not yet closed */
  int truncated, timed_out, network_isolated;
  int orphan;                  /* released before finishing: free when finished */
  int finished;                /* reaped and every handle closed; the run was woken */
  mh_timer timeout;
  int timeout_stage;           /* 0: waiting for the deadline; 1: killed, waiting for the pipes */
  uint64_t started_ns, ended_ns;
  int fail_stage, fail_errno;  /* the first failure before exec */
  char *cwd;                   /* for messages */
  char prog[256];
  char scratch[READ_CHUNK];
};

/* ---- the child (between fork and exec: system calls only) ---- */

typedef struct child_spec {
  const char *path;
  char *const *argv, *const *sh_argv, *const *envp;
  const char *cwd;
  int fd_in, fd_out, fd_err, fd_status;  /* the child's ends; fd_in < 0: /dev/null */
  int isolate_net;
  pid_t parent;
  char uid_map[48], gid_map[48];
  struct rlimit lim[5];
} child_spec;

#define NLIMITS 5
static const int limit_resources[NLIMITS] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_CORE};

static void child_report(int fd, int stage, int err) {
  int32_t rec[2] = {stage, err};
  while (write(fd, rec, sizeof rec) < 0 && errno == EINTR) {}
}

static _Noreturn void child_fail(int fd, int stage, int err) {
  child_report(fd, stage, err);
  _exit(127);
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  int err = errno;
  close(fd);
  errno = err;
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

static _Noreturn void child_main(const child_spec *c) {
  int status = c->fd_status;
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL); /* SIGKILL & co. fail: fine */
  if (setsid() < 0) child_fail(status, ST_SETUP, errno);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != c->parent) _exit(127); /* the host died before prctl */
  int in = c->fd_in;
  if (in < 0 && (in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) child_fail(status, ST_STDIN, errno);
  /* Move the ends above 0..3 first so no dup2 overwrites one still needed. */
  int src[4] = {in, c->fd_out, c->fd_err, status}, moved[4];
  for (int i = 0; i < 4; i++)
    if ((moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10)) < 0) child_fail(status, ST_SETUP, errno);
  for (int i = 0; i < 4; i++)
    if (dup2(moved[i], i) < 0) child_fail(status, ST_SETUP, errno); /* dup2 clears CLOEXEC */
  status = 3;
  fcntl(status, F_SETFD, FD_CLOEXEC);
  if (close_range(4, ~0U, 0) != 0) {
    struct rlimit nofile;
    rlim_t max = getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 65536;
    for (rlim_t fd = 4; fd < max && fd < INT_MAX; fd++) close((int)fd);
  }
  if (c->isolate_net && unshare(CLONE_NEWNET) != 0) {
    /* Unprivileged: a user namespace of our own may create the network one.
     * Its maps are written through /proc/self, which a process that changed
     * its uid (a host started as root that dropped privileges) cannot open
     * while it is not dumpable; this copy of the host execs right after. */
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0) {
      if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0) prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
      if ((write_file("/proc/self/setgroups", "deny") != 0 && errno != ENOENT) ||
          write_file("/proc/self/uid_map", c->uid_map) != 0 ||
          write_file("/proc/self/gid_map", c->gid_map) != 0)
        child_fail(status, ST_USERNS, errno);
    } else {
      child_report(status, ST_NO_NETNS, errno);
    }
  }
  if (c->cwd && chdir(c->cwd) != 0) child_fail(status, ST_CHDIR, errno);
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  for (int i = 0; i < NLIMITS; i++)
    if (setrlimit(limit_resources[i], &c->lim[i]) != 0) child_fail(status, ST_RLIMIT, errno);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execve(c->path, c->argv, c->envp);
  if (errno == ENOEXEC) execve("/bin/sh", c->sh_argv, c->envp); /* execvp's fallback */
  child_fail(status, ST_EXEC, errno);
}

/* ---- the op ---- */

static void proc_free(proc_op *p) {
  for (int i = 0; i < NSTREAMS; i++) free(p->s[i].buf);
  free(p->cwd);
  free(p);
}

static void kill_child(proc_op *p, const char *why) {
  if (p->pid <= 0 || p->reaped) return; /* unreaped: the pid (and group id) is still ours */
  MH_DEBUG("proc %ld kill (%s)", (long)p->pid, why);
  kill(-p->pid, SIGKILL);
  kill(p->pid, SIGKILL);                /* in case it has not called setsid yet */
}

/* Called by every close callback: the op is finished when the child is
 * reaped and no handle is left. */
static void proc_check(proc_op *p) {
  if (p->handles > 0 || !p->reaped) return;
  if (p->orphan) {
    proc_free(p);
    return;
  }
  mh_timer_stop(&p->host->timers, &p->timeout);
  p->finished = 1;
  mh_op_wake(&p->op);
}

static void stream_closed(uv_handle_t *h) {
  proc_op *p = h->data;
  stream *s = (stream *)((char *)h - offsetof(stream, poll));
  close(s->fd);
  s->fd = -1;
  p->handles--;
  proc_check(p);
}

static void stream_close(proc_op *p, int i) {
  stream *s = &p->s[i];
  if (!s->open) return;
  s->open = 0;
  uv_close((uv_handle_t *)&s->poll, stream_closed);
}

static void exit_closed(uv_handle_t *h) {
  proc_op *p = h->data;
  if (p->pidfd >= 0) close(p->pidfd);
  p->pidfd = -1;
  p->handles--;
  proc_check(p);
}

/* Reaps the child once it has exited, after killing what is left of its
 * process group (while the leader is an unreaped zombie, its group id cannot
 * be reused). */
static void exit_check(proc_op *p) {
  if (p->reaped) return;
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid(P_PID, (id_t)p->pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno == EINTR) return;
    p->lost = 1; /* ECHILD: reaped elsewhere; its status is unknown */
  } else if (info.si_pid == 0) {
    return;
  } else {
    kill(-p->pid, SIGKILL);
    while (waitpid(p->pid, &p->wstatus, 0) < 0 && errno == EINTR) {}
  }
  p->reaped = 1;
  p->ended_ns = uv_hrtime();
  MH_DEBUG("proc %ld exit %d", (long)p->pid, p->lost ? -1 : p->wstatus);
  uv_close(p->exit_watch == 1 ? (uv_handle_t *)&p->exit_poll : (uv_handle_t *)&p->exit_timer,
           exit_closed);
  stream_close(p, S_STDIN);
}

static void exit_poll_cb(uv_poll_t *h, int status, int events) {
  (void)status, (void)events;
  exit_check(h->data);
}

static void exit_timer_cb(uv_timer_t *h) {
  exit_check(h->data);
}

static void timeout_fired(mh_timer *t) {
  proc_op *p = (proc_op *)((char *)t - offsetof(proc_op, timeout));
  if (p->timeout_stage == 0 && !p->reaped) {
    p->timed_out = 1;
    kill_child(p, "timeout");
    p->timeout_stage = 1;
    if (mh_timer_start(&p->host->timers, t, KILL_GRACE_MS) == 0) return;
  }
  /* The child is gone or going, but something outside its group (a process
   * that called setsid) still holds the pipes: stop waiting for them. */
  for (int i = 0; i < NSTREAMS; i++) stream_close(p, i);
}

/* write() that turns SIGPIPE into EPIPE for this thread only: block it,
 * write, and consume the signal if the write raised it. */
static ssize_t write_quiet(int fd, const char *buf, size_t len) {
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  sigpending(&pending);
  int was_pending = sigismember(&pending, SIGPIPE);
  ssize_t n = write(fd, buf, len);
  int err = errno;
  if (n < 0 && err == EPIPE && !was_pending) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {}
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = err;
  return n;
}

static void stdin_writable(proc_op *p, stream *s) {
  while (s->off < s->len) {
    size_t chunk = s->len - s->off < READ_CHUNK ? s->len - s->off : READ_CHUNK;
    ssize_t n = write_quiet(s->fd, s->buf + s->off, chunk);
    if (n > 0) {
      s->off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else {
      break; /* EPIPE: the child stopped reading */
    }
  }
  stream_close(p, S_STDIN); /* EOF for the child */
}

/* Keeps up to output_limit bytes; the rest is dropped. */
static void keep_output(proc_op *p, stream *s, const char *data, size_t n) {
  size_t room = p->output_limit - s->len;
  if (n > room) {
    p->truncated = 1;
    n = room;
  }
  if (n == 0) return;
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    if (cap < s->len + n) cap = s->len + n;
    if (cap > p->output_limit) cap = p->output_limit;
    char *b = realloc(s->buf, cap);
    if (b == NULL) {
      p->truncated = 1;
      return;
    }
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, data, n);
  s->len += n;
}

static void status_readable(proc_op *p, stream *s) {
  int32_t rec[16];
  ssize_t n;
  while ((n = read(s->fd, rec, sizeof rec)) < 0 && errno == EINTR) {}
  if (n < 0 && errno == EAGAIN) return;
  for (ssize_t i = 0; i + 1 < n / 4; i += 2) {
    if (rec[i] == ST_NO_NETNS) {
      p->network_isolated = 0;
    } else if (p->fail_stage == 0) {
      p->fail_stage = rec[i];
      p->fail_errno = rec[i + 1];
    }
  }
  if (n <= 0) stream_close(p, S_STATUS); /* EOF: exec'd, or exited */
}

static void output_readable(proc_op *p, stream *s, int i) {
  for (int reads = 0; reads < READS_PER_EVENT; reads++) {
    ssize_t n = read(s->fd, p->scratch, sizeof p->scratch);
    if (n > 0) {
      keep_output(p, s, p->scratch, (size_t)n);
      if ((size_t)n < sizeof p->scratch) return;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else {
      stream_close(p, i); /* EOF (every writer is gone) or an error */
      return;
    }
  }
}

static void stream_cb(uv_poll_t *h, int status, int events) {
  (void)events;
  proc_op *p = h->data;
  stream *s = (stream *)((char *)h - offsetof(stream, poll));
  int i = (int)(s - p->s);
  if (status < 0) {
    stream_close(p, i);
  } else if (i == S_STATUS) {
    status_readable(p, s);
  } else if (i == S_STDIN) {
    stdin_writable(p, s);
  } else {
    output_readable(p, s, i);
  }
}

/* The one release point (the op type's cancel hook, and the end of the
 * continuation). */
static void proc_release(mh_op *op) {
  proc_op *p = (proc_op *)op;
  mh_op_detach(op);
  if (p->finished) {
    proc_free(p);
    return;
  }
  p->orphan = 1;
  mh_timer_stop(&p->host->timers, &p->timeout);
  kill_child(p, "cancelled");
  for (int i = 0; i < NSTREAMS; i++) stream_close(p, i);
  /* the exit watch stays until the child is reaped; proc_check frees */
}

static const mh_op_type proc_type = {"proc.run", proc_release};

/* ---- options ---- */

typedef struct proc_opts {
  char **argv, **sh_argv, **envp;  /* in the scratch userdata; strings anchored by opts */
  int argc;
  const char *path_env;            /* PATH to search argv[1] in */
  const char *cwd;
  const char *stdin_data;
  size_t stdin_len;
  uint64_t timeout_ms;
  lua_Integer cpu, memory, file_size, processes, output_limit;
  int network;
} proc_opts;

static const char *const option_names[] = {
  "argv", "cwd", "stdin", "timeout", "cpu", "memory", "file_size", "processes",
  "output_limit", "network", "env", NULL};

/* [-0, +1, e] opts[name], raw */
static int raw_field(lua_State *L, const char *name) {
  lua_pushstring(L, name);
  return lua_rawget(L, 1);
}

/* [-0, +0, v] the integer option `name` (def when absent), in [min, max] */
static lua_Integer int_option(lua_State *L, const char *name, lua_Integer def,
                              lua_Integer min, lua_Integer max, const char *unit) {
  lua_Integer v = def;
  if (raw_field(L, name) != LUA_TNIL) {
    int isint = 0;
    v = lua_tointegerx(L, -1, &isint);
    if (!isint || lua_type(L, -1) != LUA_TNUMBER || v < min || v > max)
      luaL_error(L, "proc.run: '%s' must be a whole number of %s from %I to %I", name, unit, min, max);
  }
  lua_pop(L, 1);
  return v;
}

/* [-0, +0, v] the string option `name` or NULL; no zero bytes unless binary */
static const char *string_option(lua_State *L, const char *name, size_t *len, int binary) {
  const char *s = NULL;
  int t = raw_field(L, name);
  if (t != LUA_TNIL) {
    if (t != LUA_TSTRING) luaL_error(L, "proc.run: '%s' must be a string", name);
    s = lua_tolstring(L, -1, len);
    if (!binary && strlen(s) != *len) luaL_error(L, "proc.run: '%s' must not contain zero bytes", name);
  }
  lua_pop(L, 1); /* the string stays anchored by opts */
  return s;
}

/* [-0, +1, v] Checks the options table at 1 and fills o; pushes the scratch
 * userdata holding the argv/envp arrays (their strings are opts' own). */
static void read_opts(lua_State *L, proc_opts *o) {
  MH_STACK_BEGIN(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(o, 0, sizeof *o);
  lua_pushnil(L);
  while (lua_next(L, 1)) {                          /* key value */
    lua_pop(L, 1);
    int known = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; option_names[i] && !known; i++) known = strcmp(lua_tostring(L, -1), option_names[i]) == 0;
    if (!known) luaL_error(L, "proc.run: unknown option '%s'", luaL_tolstring(L, -1, NULL));
  }
  /* argv: counted and checked here, copied into the scratch below */
  if (raw_field(L, "argv") != LUA_TTABLE)
    luaL_error(L, "proc.run: 'argv' must be a list of strings (the program, then its arguments)");
  lua_Integer argc = (lua_Integer)lua_rawlen(L, -1);
  if (argc < 1 || argc > 65536) luaL_error(L, "proc.run: 'argv' must hold 1 to 65536 strings");
  for (lua_Integer i = 1; i <= argc; i++) {
    size_t len;
    if (lua_rawgeti(L, -1, i) != LUA_TSTRING) luaL_error(L, "proc.run: argv[%I] must be a string", i);
    const char *a = lua_tolstring(L, -1, &len);
    if (strlen(a) != len) luaL_error(L, "proc.run: argv[%I] must not contain zero bytes", i);
    if (i == 1 && len == 0) luaL_error(L, "proc.run: argv[1] (the program) must not be empty");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  /* env: string -> string */
  size_t nenv = 0, env_bytes = 0;
  int env_type = raw_field(L, "env");
  if (env_type != LUA_TNIL && env_type != LUA_TTABLE) luaL_error(L, "proc.run: 'env' must be a table of strings");
  if (env_type == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {                       /* env key value */
      size_t klen, vlen;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "proc.run: 'env' must map names to strings");
      const char *k = lua_tolstring(L, -2, &klen), *v = lua_tolstring(L, -1, &vlen);
      if (klen == 0 || strlen(k) != klen || strchr(k, '='))
        luaL_error(L, "proc.run: env name '%s' must be non-empty, without '=' or zero bytes", k);
      if (strlen(v) != vlen) luaL_error(L, "proc.run: env value of '%s' must not contain zero bytes", k);
      if (strcmp(k, "PATH") == 0) o->path_env = v;
      nenv++;
      env_bytes += klen + vlen + 2;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  size_t dummy;
  o->cwd = string_option(L, "cwd", &dummy, 0);
  if (o->cwd && *o->cwd == '\0') luaL_error(L, "proc.run: 'cwd' must not be empty");
  o->stdin_data = string_option(L, "stdin", &o->stdin_len, 1);
  if (raw_field(L, "timeout") != LUA_TNIL) {
    int isnum;
    lua_Number ms = lua_tonumberx(L, -1, &isnum);
    if (!isnum || lua_type(L, -1) != LUA_TNUMBER || !(ms > 0 && ms <= 1e12))
      luaL_error(L, "proc.run: 'timeout' must be a number of milliseconds above 0 (at most 1e12)");
    o->timeout_ms = ms < 1 ? 1 : (uint64_t)(ms + 0.5);
  } else {
    o->timeout_ms = 10000;
  }
  lua_pop(L, 1);
  o->cpu = int_option(L, "cpu", 5, 1, INT32_MAX, "seconds");
  o->memory = int_option(L, "memory", (lua_Integer)256 << 20, 1 << 20, LUA_MAXINTEGER, "bytes");
  o->file_size = int_option(L, "file_size", (lua_Integer)16 << 20, 0, LUA_MAXINTEGER, "bytes");
  o->processes = int_option(L, "processes", 32, 1, INT32_MAX, "processes");
  o->output_limit = int_option(L, "output_limit", (lua_Integer)1 << 20, 0, (lua_Integer)1 << 40, "bytes");
  int nt = raw_field(L, "network");
  if (nt != LUA_TNIL && nt != LUA_TBOOLEAN) luaL_error(L, "proc.run: 'network' must be a boolean");
  o->network = lua_toboolean(L, -1);
  lua_pop(L, 1);

  /* The scratch: argv (argc + 1), sh_argv (argc + 2), envp (nenv + 2), then env strings. */
  size_t nptr = (size_t)argc + 1 + (size_t)argc + 2 + nenv + 2;
  char **ptrs = lua_newuserdatauv(L, nptr * sizeof(char *) + env_bytes, 0); /* scratch */
  char *text = (char *)(ptrs + nptr);
  o->argc = (int)argc;
  o->argv = ptrs;
  o->sh_argv = ptrs + argc + 1;
  o->envp = ptrs + 2 * argc + 3;
  raw_field(L, "argv");                               /* scratch argv */
  o->sh_argv[0] = (char *)"/bin/sh";
  o->sh_argv[1] = NULL; /* the resolved path, set by the caller */
  for (lua_Integer i = 1; i <= argc; i++) {
    lua_rawgeti(L, -1, i);
    o->argv[i - 1] = (char *)lua_tostring(L, -1);
    if (i > 1) o->sh_argv[i] = o->argv[i - 1];
    lua_pop(L, 1);
  }
  o->argv[argc] = NULL;
  o->sh_argv[argc + 1] = NULL;
  lua_pop(L, 1);
  size_t e = 0;
  if (raw_field(L, "env") == LUA_TTABLE) {            /* scratch env */
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      size_t klen, vlen;
      const char *k = lua_tolstring(L, -2, &klen), *v = lua_tolstring(L, -1, &vlen);
      o->envp[e++] = text;
      memcpy(text, k, klen);
      text[klen] = '=';
      memcpy(text + klen + 1, v, vlen + 1);
      text += klen + vlen + 2;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  if (o->path_env == NULL) {
    o->envp[e++] = (char *)"PATH=" DEFAULT_PATH;
    o->path_env = DEFAULT_PATH;
  }
  o->envp[e] = NULL;
  MH_STACK_END(L, 1);
}

/* ---- starting ---- */

/* Looks prog up like execvp, in the child's PATH (relative entries from the
 * child's cwd). Names with a slash are left to execve. Returns 0 or an errno. */
static int find_program(const char *prog, const char *path_env, const char *cwd, char *out, size_t outlen) {
  if (strchr(prog, '/')) {
    if (strlen(prog) >= outlen) return ENAMETOOLONG;
    strcpy(out, prog);
    return 0;
  }
  int err = ENOENT;
  const char *dir = path_env;
  for (;;) {
    const char *end = strchr(dir, ':');
    size_t dlen = end ? (size_t)(end - dir) : strlen(dir);
    int n;
    if (dlen == 0) n = snprintf(out, outlen, "%s/%s", cwd ? cwd : ".", prog);
    else if (dir[0] != '/' && cwd) n = snprintf(out, outlen, "%s/%.*s/%s", cwd, (int)dlen, dir, prog);
    else n = snprintf(out, outlen, "%.*s/%s", (int)dlen, dir, prog);
    struct stat st;
    if (n > 0 && (size_t)n < outlen && stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(out, X_OK) == 0) return 0;
      err = EACCES;
    }
    if (end == NULL) return err;
    dir = end + 1;
  }
}

static void set_limit(struct rlimit *r, int resource, rlim_t soft, rlim_t hard) {
  struct rlimit cur;
  if (getrlimit(resource, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && hard > cur.rlim_max)
    hard = cur.rlim_max; /* lowering is always allowed; raising is not */
  r->rlim_max = hard;
  r->rlim_cur = soft < hard ? soft : hard;
}

/* Gives up an op that has no running child: closes what it opened; it frees
 * itself once the handles are closed. */
static void proc_abandon(proc_op *p) {
  p->orphan = 1;
  p->reaped = 1;
  for (int i = 0; i < NSTREAMS; i++) {
    if (p->s[i].open) stream_close(p, i);
    else if (p->s[i].fd >= 0) close(p->s[i].fd);
  }
  if (p->handles == 0) proc_free(p);
}

/* Creates the pipes, forks and starts watching. Returns 0, or -1 with msg
 * set (p is then given up). */
static int proc_start(proc_op *p, const proc_opts *o, const char *path, char *msg, size_t msglen) {
  int fds[NSTREAMS][2];
  for (int i = 0; i < NSTREAMS; i++) fds[i][0] = fds[i][1] = -1;
  for (int i = 0; i < NSTREAMS; i++) {
    if (i == S_STDIN && o->stdin_len == 0) continue;
    if (pipe2(fds[i], O_CLOEXEC) != 0) {
      snprintf(msg, msglen, "proc.run: cannot create pipes: %s", strerror(errno));
      for (int j = 0; j < NSTREAMS; j++)
        for (int k = 0; k < 2; k++)
          if (fds[j][k] >= 0) close(fds[j][k]);
      proc_free(p);
      return -1;
    }
  }
  int child_end[NSTREAMS];
  for (int i = 0; i < NSTREAMS; i++) {
    int parent_side = i == S_STDIN ? 1 : 0;
    p->s[i].fd = fds[i][parent_side];
    child_end[i] = fds[i][!parent_side];
  }
  int err = 0;
  for (int i = 0; i < NSTREAMS && err == 0; i++) {
    if (p->s[i].fd < 0) continue;
    err = uv_poll_init(p->host->loop, &p->s[i].poll, p->s[i].fd); /* also makes it non-blocking */
    if (err == 0) {
      p->s[i].poll.data = p;
      p->s[i].open = 1;
      p->handles++;
    }
  }
  pid_t pid = -1;
  if (err == 0) {
    child_spec c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.argv = o->argv;
    c.sh_argv = o->sh_argv;
    c.envp = o->envp;
    c.cwd = o->cwd;
    c.fd_in = child_end[S_STDIN];
    c.fd_out = child_end[S_STDOUT];
    c.fd_err = child_end[S_STDERR];
    c.fd_status = child_end[S_STATUS];
    c.isolate_net = !o->network;
    c.parent = getpid();
    snprintf(c.uid_map, sizeof c.uid_map, "%lu %lu 1", (unsigned long)getuid(), (unsigned long)getuid());
    snprintf(c.gid_map, sizeof c.gid_map, "%lu %lu 1", (unsigned long)getgid(), (unsigned long)getgid());
    /* CPU: SIGXCPU at the soft limit, SIGKILL a second later */
    set_limit(&c.lim[0], RLIMIT_CPU, (rlim_t)o->cpu, (rlim_t)o->cpu + 1);
    set_limit(&c.lim[1], RLIMIT_AS, (rlim_t)o->memory, (rlim_t)o->memory);
    set_limit(&c.lim[2], RLIMIT_FSIZE, (rlim_t)o->file_size, (rlim_t)o->file_size);
    set_limit(&c.lim[3], RLIMIT_NPROC, (rlim_t)o->processes, (rlim_t)o->processes);
    set_limit(&c.lim[4], RLIMIT_CORE, 0, 0); /* no core files from a killed program */
    /* All signals blocked across fork: the child must not run the host's
     * handlers before it resets them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0) child_main(&c);
    err = pid < 0 ? uv_translate_sys_error(errno) : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  for (int i = 0; i < NSTREAMS; i++)
    if (child_end[i] >= 0) close(child_end[i]);
  if (err != 0) {
    snprintf(msg, msglen, "proc.run: cannot start a process: %s", uv_strerror(err));
    proc_abandon(p);
    return -1;
  }
  p->pid = pid;
  p->started_ns = uv_hrtime();
  MH_DEBUG("proc %ld start %s", (long)pid, p->prog);

  /* Watch the exit: a pidfd on a uv_poll, or polling. */
  p->pidfd = -1;
#ifdef SYS_pidfd_open
  if (!mh_proc_no_pidfd) p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
  if (p->pidfd >= 0 && uv_poll_init(p->host->loop, &p->exit_poll, p->pidfd) == 0) {
    p->exit_watch = 1;
    p->exit_poll.data = p;
    uv_poll_start(&p->exit_poll, UV_READABLE, exit_poll_cb);
  } else {
    if (p->pidfd >= 0) close(p->pidfd);
    p->pidfd = -1;
    p->exit_watch = 2;
    uv_timer_init(p->host->loop, &p->exit_timer);
    p->exit_timer.data = p;
    uv_timer_start(&p->exit_timer, exit_timer_cb, EXIT_POLL_MS, EXIT_POLL_MS);
  }
  p->handles++;

  static const int events[NSTREAMS] = {UV_READABLE, UV_WRITABLE, UV_READABLE, UV_READABLE};
  for (int i = 0; i < NSTREAMS; i++)
    if (p->s[i].open && uv_poll_start(&p->s[i].poll, events[i], stream_cb) != 0) err = 1;
  mh_timer_init(&p->timeout, timeout_fired);
  if (err != 0 || mh_timer_start(&p->host->timers, &p->timeout, o->timeout_ms) != 0) {
    /* Nothing can watch it properly: stop it; it is reaped as usual and the
     * call returns this failure. */
    p->fail_stage = ST_PARENT;
    p->fail_errno = ENOMEM;
    kill_child(p, "cannot watch it");
    for (int i = 0; i < NSTREAMS; i++) stream_close(p, i);
  }
  return 0;
}

/* ---- results ---- */

/* [-0, +1, m] the signal's name, "SIGKILL" */
static void push_signal(lua_State *L, int sig) {
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev) lua_pushfstring(L, "SIG%s", abbrev);
  else lua_pushfstring(L, "signal %d", sig);
}

/* [-0, +(1|2), m] the result table, or nil and the reason it did not start */
static int push_outcome(lua_State *L, proc_op *p) {
  if (p->fail_stage != 0) {
    const char *why = strerror(p->fail_errno);
    lua_pushnil(L);
    switch (p->fail_stage) {
      case ST_CHDIR:
        lua_pushfstring(L, "proc.run: cannot change to directory '%s': %s", p->cwd ? p->cwd : "", why);
        break;
      case ST_EXEC:
        lua_pushfstring(L, "proc.run: cannot execute '%s': %s", p->prog, why);
        break;
      case ST_RLIMIT:
        lua_pushfstring(L, "proc.run: cannot set the resource limits: %s", why);
        break;
      case ST_USERNS:
        lua_pushfstring(L, "proc.run: cannot map the user into a new user namespace: %s", why);
        break;
      case ST_STDIN:
        lua_pushfstring(L, "proc.run: cannot open /dev/null for stdin: %s", why);
        break;
      case ST_PARENT:
        lua_pushfstring(L, "proc.run: cannot watch the process: %s", why);
        break;
      default:
        lua_pushfstring(L, "proc.run: cannot set up the process: %s", why);
        break;
    }
    return 2;
  }
  lua_createtable(L, 0, 8);                                   /* res */
  if (!p->lost && WIFEXITED(p->wstatus)) {
    lua_pushinteger(L, WEXITSTATUS(p->wstatus));
    lua_setfield(L, -2, "status");
  } else if (!p->lost && WIFSIGNALED(p->wstatus)) {
    push_signal(L, WTERMSIG(p->wstatus));
    lua_setfield(L, -2, "signal");
  }
  lua_pushlstring(L, p->s[S_STDOUT].buf ? p->s[S_STDOUT].buf : "", p->s[S_STDOUT].len);
  lua_setfield(L, -2, "stdout");
  lua_pushlstring(L, p->s[S_STDERR].buf ? p->s[S_STDERR].buf : "", p->s[S_STDERR].len);
  lua_setfield(L, -2, "stderr");
  lua_pushboolean(L, p->truncated);
  lua_setfield(L, -2, "truncated");
  lua_pushboolean(L, p->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushboolean(L, p->network_isolated);
  lua_setfield(L, -2, "network_isolated");
  lua_pushnumber(L, (lua_Number)(p->ended_ns - p->started_ns) / 1e6);
  lua_setfield(L, -2, "duration_ms");
  return 1;
}

/* [-0, +(1|2), v] continuation: the child is reaped and every handle closed */
static int run_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  proc_op *p = (proc_op *)ctx;
  mh_op_resumed(L, &p->op); /* raises (after releasing p) if the run broke a limit */
  if (!p->finished) { /* the scheduler resumes only on wake; never trust that blindly */
    proc_release(&p->op);
    return luaL_error(L, "proc.run: resumed before the process ended");
  }
  int n = push_outcome(L, p); /* on a memory error p stays attached; the run's end releases it */
  proc_release(&p->op);
  return n;
}

/* proc.run(opts) -> result | nil, message   [-1, +(1|2), v]; waits */
static int proc_run(lua_State *L) {
  proc_opts o;
  lua_settop(L, 1);
  read_opts(L, &o);                                           /* opts scratch */
  mh_run *run = mh_async_begin(L, "proc.run");
  char path[PATH_MAX];
  int err = find_program(o.argv[0], o.path_env, o.cwd, path, sizeof path);
  if (err != 0) {
    lua_pushnil(L);
    if (err == ENOENT)
      lua_pushfstring(L, "proc.run: program '%s' not found in PATH (%s)", o.argv[0], o.path_env);
    else
      lua_pushfstring(L, "proc.run: cannot run program '%s': %s", o.argv[0], strerror(err));
    return 2;
  }
  o.sh_argv[1] = path;
  proc_op *p = calloc(1, sizeof *p);
  char *stdin_copy = o.stdin_len ? malloc(o.stdin_len) : NULL;
  char *cwd_copy = o.cwd ? strdup(o.cwd) : NULL;
  if (p == NULL || (o.stdin_len && stdin_copy == NULL) || (o.cwd && cwd_copy == NULL)) {
    free(p), free(stdin_copy), free(cwd_copy);
    return luaL_error(L, "proc.run: out of memory");
  }
  p->host = run->vm->host;
  p->output_limit = (size_t)o.output_limit;
  p->network_isolated = !o.network;
  p->cwd = cwd_copy;
  snprintf(p->prog, sizeof p->prog, "%s", o.argv[0]);
  for (int i = 0; i < NSTREAMS; i++) p->s[i].fd = -1;
  if (stdin_copy) memcpy(stdin_copy, o.stdin_data, o.stdin_len);
  p->s[S_STDIN].buf = stdin_copy;
  p->s[S_STDIN].len = o.stdin_len;
  char msg[256];
  if (proc_start(p, &o, path, msg, sizeof msg) != 0) { /* p is given up */
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
  }
  mh_op_attach(run, &p->op, &proc_type);
  return mh_op_wait(L, &p->op, (lua_KContext)p, run_k);
}

/* [-0, +1, m] */
int luaopen_mh_proc(lua_State *L) {
  static const luaL_Reg funcs[] = {{"run", proc_run}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
