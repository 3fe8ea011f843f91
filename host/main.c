/* main.c — `moonhive COMMAND [ARGS]`: dispatches to the commands in cli_*.c
 * and repl.c, and answers help, --help and version. */
#include <stdio.h>
#include <string.h>

#include <lua.h>

#include "cli.h"
#include "log.h"

static const char usage[] =
  "usage: moonhive COMMAND [ARGS...]\n"
  "\n"
  "commands:\n"
  "  run FILE.lua [ARGS...]   run a sandboxed script (arg holds ARGS)\n"
  "  eval 'CODE'              evaluate Lua code and print what it returns\n"
  "  repl                     interactive prompt on the event loop\n"
  "  chat [--model M] \"text\"  one model call, streamed to the terminal\n"
  "  runs [list|show|resume|cancel|signal]  recorded runs; resume, cancel or signal a workflow\n"
  "  trace ID [--json]        a run as a tree of steps, model and tool calls\n"
  "  test [PATHS...]          run the project's busted specs with a scripted mock model\n"
  "  serve [--host IP] [--port N]  the HTTP service: API, metrics, dashboard\n"
  "  keys [create|list|revoke]  API keys for the service\n"
  "  version                  print the version\n"
  "  help [COMMAND]           this text, or a command's own help\n"
  "\n"
  "Every command takes --help. Limits (run, eval, repl): --memory-limit SIZE,\n"
  "--cpu-limit DURATION, --deadline DURATION (0 turns a limit off), also\n"
  "MOONHIVE_MEMORY_LIMIT, MOONHIVE_CPU_LIMIT, MOONHIVE_DEADLINE.\n"
  "State lives under $MOONHIVE_DATA (default .moonhive/). Logs: MOONHIVE_LOG=debug.\n";

static const char help_version[] = "usage: moonhive version\n\nPrints the moonhive version and the Lua version it embeds.\n";
static const char help_help[] = "usage: moonhive help [COMMAND]\n\nPrints the list of commands, or one command's help.\n";

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *help;
} commands[] = {
  {"run", mh_cmd_run, mh_help_run},
  {"eval", mh_cmd_eval, mh_help_eval},
  {"repl", mh_cmd_repl, mh_help_repl},
  {"chat", mh_cmd_chat, mh_help_chat},
  {"runs", mh_cmd_runs, mh_help_runs},
  {"trace", mh_cmd_trace, mh_help_trace},
  {"test", mh_cmd_test, mh_help_test},
  {"serve", mh_cmd_serve, mh_help_serve},
  {"keys", mh_cmd_keys, mh_help_keys},
  {"version", NULL, help_version},
  {"help", NULL, help_help},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static int find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return (int)i;
  return -1;
}

int mh_cli_wants_help(const char *arg) {
  return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int main(int argc, char **argv) {
  mh_log_init();
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *name = argv[1];
  if (mh_cli_wants_help(name)) {
    fputs(usage, stdout);
    return 0;
  }
  int c = find_command(name);
  if (c < 0) {
    fprintf(stderr, "moonhive: unknown command '%s'\n\n%s", name, usage);
    return 2;
  }
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (mh_cli_wants_help(argv[i])) {
      fputs(commands[c].help, stdout);
      return 0;
    }
    if (strcmp(name, "run") == 0 && argv[i][0] != '-') break; /* the script's own args follow */
  }
  if (strcmp(name, "version") == 0) {
    printf("moonhive %s (%s)\n", MH_VERSION, LUA_RELEASE);
    return 0;
  }
  if (strcmp(name, "help") == 0) {
    if (argc > 2) {
      int h = find_command(argv[2]);
      if (h < 0) {
        fprintf(stderr, "moonhive: unknown command '%s'\n\n%s", argv[2], usage);
        return 2;
      }
      fputs(commands[h].help, stdout);
    } else {
      fputs(usage, stdout);
    }
    return 0;
  }
  return commands[c].run(argc - 2, argv + 2);
}
