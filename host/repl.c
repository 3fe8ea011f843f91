/* repl.c — `moonhive repl`: an interactive prompt on the host's event loop.
 *
 * GNU readline's callback interface is driven by a uv_poll on stdin, so async
 * calls (sleep, http) made at the prompt just work while the loop turns. Each
 * entry is one run in the REPL's sandbox, with a persistent environment;
 * results are rendered by pretty.c. Multi-line input continues while the chunk
 * is incomplete; history persists under the data directory; Tab completes
 * globals and table fields; Ctrl-C cancels the running evaluation (through the
 * count hook for busy code, through the scheduler for waiting code) or clears
 * the line. When stdin is not a terminal, lines are read plainly and no
 * prompt is shown.
 *
 * readline keeps its callbacks without user data, so this file holds one
 * pointer to the active REPL (`the_repl`); it is the only global, and SIGINT's
 * flag is the only state a signal handler touches. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>

#include "cli.h"
#include "evaluate.h"
#include "host.h"
#include "sandbox.h"
#include "scheduler.h"
#include "vm.h"

#define PROMPT "> "
#define PROMPT_MORE ">> "
#define HISTORY_SIZE 1000

const char mh_help_repl[] =
  "usage: moonhive repl [OPTIONS]\n"
  "\n"
  "An interactive Lua prompt in a sandbox, on the event loop: sleep(ms) and\n"
  "http requests work as in scripts. Expressions print their values; an\n"
  "unfinished chunk continues on the next line. Tab completes globals and\n"
  "fields; Ctrl-C cancels the running evaluation or clears the line; Ctrl-D,\n"
  "or :quit, leaves. History is kept in $MOONHIVE_DATA/repl_history.\n"
  "\noptions:\n"
  "  --memory-limit SIZE   memory cap of the REPL's sandbox (default 64M)\n"
  "  --cpu-limit DURATION  CPU budget of each evaluation (default 10s)\n"
  "  --deadline DURATION   wall-clock deadline of each evaluation (default 30s)\n";

static const char repl_commands_help[] =
  "  :help   this text\n"
  "  :quit   leave (Ctrl-D works too)\n"
  "Enter Lua: expressions print their values (`1 + 1`, `http.get(url)`),\n"
  "statements run (`x = 10`). Globals persist between entries.\n";

typedef struct repl {
  uv_loop_t loop;
  mh_host host;
  mh_vm *vm;
  int env_ref;                 /* the REPL's global environment (vm registry) */
  int interactive;             /* stdin is a terminal: readline, prompts */
  uv_poll_t stdin_poll;
  uv_idle_t stdin_idle;        /* non-interactive stdin that cannot be polled (a file) */
  int pollable;
  uv_async_t interrupt_async;
  volatile sig_atomic_t interrupt_flag;
  mh_run *running;             /* the evaluation in progress */
  char *pending;               /* an unfinished multi-line chunk */
  char inbuf[8192];            /* non-interactive: bytes not yet split into lines */
  size_t inlen;
  int eof, quit;
  char history_path[PATH_MAX + 32];
} repl;

static repl *the_repl;

static void on_sigint(int sig) {
  (void)sig;
  if (the_repl) {
    the_repl->interrupt_flag = 1;
    uv_async_send(&the_repl->interrupt_async);
  }
}

static void handle_line(repl *r, char *line);

static void on_readline(char *line) {
  repl *r = the_repl;
  if (line == NULL) { /* Ctrl-D */
    r->quit = 1;
    rl_callback_handler_remove();
    fputc('\n', stdout);
    uv_stop(&r->loop);
    return;
  }
  handle_line(r, line);
  free(line);
}

static void install_readline(repl *r) {
  if (r->interactive) rl_callback_handler_install(r->pending ? PROMPT_MORE : PROMPT, on_readline);
}

/* ---- evaluation ---- */

static void process_input(repl *r);
static void on_stdin(uv_poll_t *handle, int status, int events);
static void on_stdin_idle(uv_idle_t *idle);
/* Reading stdin: a uv_poll for terminals, pipes and sockets; an idle
 * handle for a regular file, which epoll cannot watch. */
static void start_input(repl *r) {
  if (r->pollable) uv_poll_start(&r->stdin_poll, UV_READABLE, on_stdin);
  else uv_idle_start(&r->stdin_idle, on_stdin_idle);
}
static void stop_input(repl *r) {
  if (r->pollable) uv_poll_stop(&r->stdin_poll);
  else uv_idle_stop(&r->stdin_idle);
}

static void on_eval_done(mh_run *run, void *ud) {
  repl *r = ud;
  r->running = NULL;
  r->interrupt_flag = 0;
  if (run->state == MH_RUN_OK) {
    mh_eval_print(run);
  } else if (run->state == MH_RUN_CANCELLED) {
    fprintf(stderr, "interrupted\n");
  } else {
    fprintf(stderr, "%s\n", run->error ? run->error : "error");
  }
  fflush(stdout);
  fflush(stderr);
  if (r->quit) return;
  if (r->interactive) {
    uv_poll_start(&r->stdin_poll, UV_READABLE, on_stdin);
    install_readline(r);
  }
  process_input(r);
  if (!r->interactive && !r->running && !r->eof && !r->quit) start_input(r);
}

/* Compiles the pending chunk; starts it, or waits for more lines. */
static void evaluate(repl *r) {
  lua_State *L = r->vm->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
  int incomplete;
  int status = mh_eval_compile(L, r->pending, strlen(r->pending), "=stdin", -1, &incomplete);
  lua_remove(L, -2); /* env */
  if (status != LUA_OK) {
    if (incomplete) {
      lua_pop(L, 1);
      return; /* keep r->pending, ask for more */
    }
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    r->running = mh_eval_start(r->vm, on_eval_done, r);
    if (r->running == NULL) fprintf(stderr, "cannot start the evaluation: memory limit reached\n");
  }
  if (r->interactive && r->pending[0]) add_history(r->pending);
  free(r->pending);
  r->pending = NULL;
}

static void handle_line(repl *r, char *line) {
  if (r->pending == NULL) {
    const char *s = line;
    while (*s == ' ' || *s == '\t') s++;
    if (*s == '\0') return;
    if (strcmp(s, ":quit") == 0 || strcmp(s, ":q") == 0 || strcmp(s, ":exit") == 0) {
      r->quit = 1;
      if (r->interactive) rl_callback_handler_remove();
      uv_stop(&r->loop);
      return;
    }
    if (strcmp(s, ":help") == 0) {
      fputs(repl_commands_help, stdout);
      return;
    }
    r->pending = strdup(line);
  } else {
    size_t a = strlen(r->pending), b = strlen(line);
    char *joined = realloc(r->pending, a + b + 2);
    if (joined == NULL) return;
    joined[a] = '\n';
    memcpy(joined + a + 1, line, b + 1);
    r->pending = joined;
  }
  if (r->pending == NULL) return;
  evaluate(r);
  if (r->running && r->interactive) {
    rl_callback_handler_remove();            /* no prompt while it runs */
    uv_poll_stop(&r->stdin_poll);
  } else if (r->interactive) {
    rl_callback_handler_install(r->pending ? PROMPT_MORE : PROMPT, on_readline);
  }
}

/* ---- input ---- */

/* Non-interactive: feeds complete lines while no evaluation runs. */
static void process_input(repl *r) {
  if (r->interactive) return;
  while (!r->running && !r->quit) {
    char *nl = memchr(r->inbuf, '\n', r->inlen);
    if (nl == NULL) {
      if (!r->eof) return;
      if (r->inlen == 0) { /* end of input: finish what is pending */
        r->quit = 1;
        uv_stop(&r->loop);
        return;
      }
      nl = r->inbuf + r->inlen; /* last line without a newline */
      r->inbuf[r->inlen++] = '\n';
    }
    *nl = '\0';
    size_t used = (size_t)(nl - r->inbuf) + 1;
    char line[sizeof r->inbuf];
    memcpy(line, r->inbuf, used);
    memmove(r->inbuf, r->inbuf + used, r->inlen - used);
    r->inlen -= used;
    handle_line(r, line);
  }
  if (r->running) stop_input(r); /* resumed in on_eval_done */
}

static void on_stdin(uv_poll_t *handle, int status, int events) {
  repl *r = handle->data;
  (void)events;
  if (r->interactive) {
    if (status == 0) rl_callback_read_char();
    return;
  }
  if (r->inlen >= sizeof r->inbuf - 1 && !memchr(r->inbuf, '\n', r->inlen)) { /* an overlong line */
    r->inlen = 0;
    fprintf(stderr, "line too long; discarded\n");
  }
  size_t room = sizeof r->inbuf - 1 - r->inlen;
  if (room == 0) { /* full of complete lines waiting for an evaluation */
    process_input(r);
    return;
  }
  ssize_t n = read(STDIN_FILENO, r->inbuf + r->inlen, room);
  if (n > 0) r->inlen += (size_t)n;
  else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    r->eof = 1;
    stop_input(r);
  }
  process_input(r);
}

static void on_stdin_idle(uv_idle_t *idle) {
  repl *r = idle->data;
  on_stdin(&r->stdin_poll, 0, UV_READABLE);
}

static void on_interrupt(uv_async_t *async) {
  repl *r = async->data;
  if (r->running) {
    mh_run_cancel(r->running, MH_BREAK_CANCEL);
    return;
  }
  if (!r->interrupt_flag) return; /* already consumed by the count hook */
  r->interrupt_flag = 0;
  if (r->interactive) {
    free(r->pending);
    r->pending = NULL;
    rl_replace_line("", 0);
    fputs("^C\n", stdout);
    install_readline(r); /* shows the prompt */
  }
}

/* ---- completion ---- */

static char **completions;
static size_t ncompletions;

/* [-1, +1, -] follows raw __index tables from the table on top to field key */
static int lookup_field(lua_State *L, const char *key, size_t len) {
  for (int hops = 0; hops < 8 && lua_istable(L, -1); hops++) {
    lua_pushlstring(L, key, len);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_remove(L, -2);
      return 1;
    }
    lua_pop(L, 1);
    if (!lua_getmetatable(L, -1)) break;
    lua_pushliteral(L, "__index");   /* raw: completion must never run script code */
    lua_rawget(L, -2);
    lua_remove(L, -2);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  return 0;
}

static void add_completion(const char *s) {
  char **grown = realloc(completions, sizeof *completions * (ncompletions + 2));
  if (grown == NULL) return;
  completions = grown;
  completions[ncompletions++] = strdup(s);
  completions[ncompletions] = NULL;
}

/* [-1, +0, -] adds the keys of the table on top (and its __index chain) */
static void collect_keys(lua_State *L, const char *prefix, size_t plen, const char *partial, size_t len) {
  for (int hops = 0; hops < 8 && lua_istable(L, -1); hops++) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING) continue;
      const char *k = lua_tostring(L, -1);
      if (strncmp(k, partial, len) != 0) continue;
      char full[512];
      snprintf(full, sizeof full, "%.*s%s", (int)plen, prefix, k);
      int dup = 0;
      for (size_t i = 0; i < ncompletions && !dup; i++) dup = strcmp(completions[i], full) == 0;
      if (!dup) add_completion(full);
    }
    if (!lua_getmetatable(L, -1)) break;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    lua_remove(L, -2);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
}

static void build_completions(const char *text) {
  repl *r = the_repl;
  lua_State *L = r->vm->L;
  for (size_t i = 0; i < ncompletions; i++) free(completions[i]);
  ncompletions = 0;
  const char *last = strrchr(text, '.');
  const char *colon = strrchr(text, ':');
  if (colon && (!last || colon > last)) last = colon;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
  if (last == NULL) {
    collect_keys(L, "", 0, text, strlen(text));
    for (int i = 0; mh_native_names[i]; i++)
      if (strncmp(mh_native_names[i], text, strlen(text)) == 0) {
        int dup = 0;
        for (size_t j = 0; j < ncompletions && !dup; j++) dup = strcmp(completions[j], mh_native_names[i]) == 0;
        if (!dup) add_completion(mh_native_names[i]);
      }
    return;
  }
  /* Walk a.b.c from the environment, then list the last table's fields. */
  const char *p = text;
  while (p < last) {
    const char *dot = p;
    while (dot < last && *dot != '.' && *dot != ':') dot++;
    if (!lookup_field(L, p, (size_t)(dot - p))) break;
    p = dot + 1;
  }
  if (p < last || !lua_istable(L, -1)) {
    /* a string value completes with the string library's methods */
    if (*last == ':' && p >= last && lua_type(L, -1) == LUA_TSTRING) {
      lua_pop(L, 1);
      lua_pushliteral(L, "");
      lua_getmetatable(L, -1);
      lua_pushliteral(L, "__index");
      lua_rawget(L, -2);
      lua_remove(L, -2);
      lua_remove(L, -2);
      collect_keys(L, text, (size_t)(last - text) + 1, last + 1, strlen(last + 1));
      return;
    }
    lua_pop(L, 1);
    return;
  }
  collect_keys(L, text, (size_t)(last - text) + 1, last + 1, strlen(last + 1));
}

static char *completion_generator(const char *text, int state) {
  static size_t next;
  if (state == 0) {
    build_completions(text);
    next = 0;
  }
  if (next < ncompletions) return strdup(completions[next++]);
  return NULL;
}

static char **attempt_completion(const char *text, int start, int end) {
  (void)start; (void)end;
  rl_attempted_completion_over = 1; /* never fall back to file names */
  rl_completion_append_character = '\0'; /* `string` may go on with `.` */
  if (the_repl->running) return NULL;
  return rl_completion_matches(text, completion_generator);
}

/* ---- setup ---- */

int mh_cmd_repl(int argc, char **argv) {
  mh_limits limits;
  if (mh_cli_limits_init(&limits) != 0) return 2;
  for (int i = 0; i < argc;) {
    int rc = mh_cli_limit_option(argc, argv, &i, &limits);
    if (rc < 0) return 2;
    if (rc == 0) {
      fprintf(stderr, "moonhive: unknown option '%s'\n\n%s", argv[i], mh_help_repl);
      return 2;
    }
  }
  repl *r = calloc(1, sizeof *r);
  if (r == NULL) return 1;
  the_repl = r;
  uv_loop_init(&r->loop);
  mh_host_init(&r->host, &r->loop);
  r->host.limits = limits;
  r->host.interrupt = &r->interrupt_flag;
  r->vm = mh_vm_new(&r->host, &limits, ".");
  if (r->vm == NULL) {
    fprintf(stderr, "moonhive: cannot create a sandbox (memory limit too small?)\n");
    return 1;
  }
  mh_vm_new_env(r->vm->L);
  r->env_ref = luaL_ref(r->vm->L, LUA_REGISTRYINDEX);
  r->interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);

  uv_async_init(&r->loop, &r->interrupt_async, on_interrupt);
  r->interrupt_async.data = r;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);

  if (r->interactive) {
    rl_catch_signals = 0;
    rl_catch_sigwinch = 1;
    rl_readline_name = "moonhive";
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(+-*/%^~#,[]";
    rl_attempted_completion_function = attempt_completion;
    using_history();
    history_comment_char = '#';     /* timestamps delimit entries, so multi-line ones survive */
    history_write_timestamps = 1;
    history_multiline_entries = 1;
    stifle_history(HISTORY_SIZE);
    if (mh_host_ensure_data_dir(&r->host) == 0) {
      snprintf(r->history_path, sizeof r->history_path, "%s/repl_history", r->host.data_dir);
      read_history(r->history_path);
    }
    printf("moonhive %s (%s) — :help for help, Ctrl-D to leave\n", MH_VERSION, LUA_RELEASE);
    install_readline(r);
  }
  r->pollable = uv_poll_init(&r->loop, &r->stdin_poll, STDIN_FILENO) == 0;
  r->stdin_poll.data = r;
  uv_idle_init(&r->loop, &r->stdin_idle);
  r->stdin_idle.data = r;
  start_input(r);

  while (!r->quit) uv_run(&r->loop, UV_RUN_DEFAULT);
  /* Let an evaluation in flight end before closing. */
  if (r->running) mh_run_cancel(r->running, MH_BREAK_CANCEL);
  while (r->running) uv_run(&r->loop, UV_RUN_ONCE);

  if (r->interactive) {
    rl_callback_handler_remove();
    if (r->history_path[0]) write_history(r->history_path);
  }
  signal(SIGINT, SIG_DFL);
  stop_input(r);
  if (r->pollable) uv_close((uv_handle_t *)&r->stdin_poll, NULL);
  uv_close((uv_handle_t *)&r->stdin_idle, NULL);
  uv_close((uv_handle_t *)&r->interrupt_async, NULL);
  luaL_unref(r->vm->L, LUA_REGISTRYINDEX, r->env_ref);
  mh_host_close(&r->host);
  mh_vm_free(r->vm);
  uv_loop_close(&r->loop);
  for (size_t i = 0; i < ncompletions; i++) free(completions[i]);
  free(completions);
  free(r->pending);
  the_repl = NULL;
  free(r);
  return 0;
}
