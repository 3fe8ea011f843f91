/* evaluate.h — compile a piece of code the way `eval` and the REPL do, and
 * run it so its results come back rendered as text. */
#ifndef MH_EVALUATE_H
#define MH_EVALUATE_H

#include <stddef.h>

#include "scheduler.h"

/* [-0, +1, -] Compiles code as an expression ("return " .. code) when it is
 * one, else as statements. Pushes the function, or the error message; sets
 * *incomplete when the statements only lack their end (REPL continuation). */
int mh_eval_compile(lua_State *L, const char *code, size_t len, const char *chunkname,
                    int env_idx, int *incomplete);
/* [-1, +0, m] Starts a run of the function on top of vm->L whose result is
 * the rendering of everything the function returns. NULL on failure. */
mh_run *mh_eval_start(mh_vm *vm, mh_run_done_fn done, void *ud);
/* In a done callback of an OK eval run: the rendered values and their count. */
const char *mh_eval_output(mh_run *run, size_t *len, int *nvalues);
/* Writes the rendered values and a newline to stdout, when there are any. */
void mh_eval_print(mh_run *run);

#endif
