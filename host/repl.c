#include "cli.h"
const char mh_help_repl[] = "usage: moonhive repl\n";
int mh_cmd_repl(int argc, char **argv) { (void)argc; (void)argv; return 1; }
