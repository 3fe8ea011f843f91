/* cli.h — the command-line commands and what they share. */
#ifndef MH_CLI_H
#define MH_CLI_H

#include <lua.h>

#include "config.h"

/* Parses a limit option at argv[*i] (--memory-limit, --cpu-limit, --deadline,
 * with "=VALUE" or a separate value). Returns 1 when consumed (advancing *i),
 * 0 when argv[*i] is not one, -1 after printing an error. */
int mh_cli_limit_option(int argc, char **argv, int *i, mh_limits *limits);
/* Fills limits from defaults and the environment; -1 after printing an error. */
int mh_cli_limits_init(mh_limits *limits);
int mh_cli_wants_help(const char *arg);

int mh_cmd_run(int argc, char **argv);
int mh_cmd_eval(int argc, char **argv);
int mh_cmd_repl(int argc, char **argv);
int mh_cmd_chat(int argc, char **argv);
int mh_cmd_runs(int argc, char **argv);
int mh_cmd_trace(int argc, char **argv);
int mh_cmd_test(int argc, char **argv);
int mh_cmd_serve(int argc, char **argv);
int mh_cmd_keys(int argc, char **argv);

/* cli_workflow.c: `moonhive runs resume [ID]`; [-0, +(0|1), m] pushes a
 * file's whole text, returning 1, or nothing, returning 0. */
int mh_cmd_runs_resume(int argc, char **argv);
/* cli_watch.c: `moonhive run --watch FILE ARGS...` (argv: the ARGS). */
int mh_cli_run_watch(const char *file, int argc, char **argv, const mh_limits *limits, int json);
int mh_cli_push_file(lua_State *L, const char *path);

extern const char mh_help_run[], mh_help_eval[], mh_help_repl[], mh_help_chat[], mh_help_runs[],
    mh_help_test[], mh_help_serve[], mh_help_keys[], mh_help_trace[];

#endif
