/* evaluate.c — expression-or-statements compilation and rendered results,
 * shared by `moonhive eval` and the REPL. */
#include "evaluate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "pretty.h"

int mh_eval_compile(lua_State *L, const char *code, size_t len, const char *chunkname,
                    int env_idx, int *incomplete) {
  if (env_idx) env_idx = lua_absindex(L, env_idx);
  *incomplete = 0;
  char *expr = malloc(len + 8);
  if (expr) {
    memcpy(expr, "return ", 7);
    memcpy(expr + 7, code, len);
    int status = mh_vm_load(L, expr, len + 7, chunkname, env_idx);
    free(expr);
    if (status == LUA_OK) return status;
    lua_pop(L, 1);
  }
  int status = mh_vm_load(L, code, len, chunkname, env_idx);
  if (status == LUA_ERRSYNTAX) {
    size_t mlen;
    const char *msg = lua_tolstring(L, -1, &mlen);
    static const char eof_mark[] = "<eof>";
    size_t elen = sizeof eof_mark - 1;
    *incomplete = mlen >= elen && strcmp(msg + mlen - elen, eof_mark) == 0;
  }
  return status;
}

/* [-?, +2, e] continuation: renders what the chunk returned, and counts it */
static int eval_rendered(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  int n = lua_gettop(L);
  mh_pretty_values(L);
  lua_pushinteger(L, n);
  return 2;
}

/* [-1, +2, e] the body of an eval run: call the chunk, render its results */
static int eval_body(lua_State *L) {
  lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, eval_rendered);
  return eval_rendered(L, LUA_OK, 0);
}

mh_run *mh_eval_start(mh_vm *vm, mh_run_done_fn done, void *ud) {
  lua_State *L = vm->L;
  lua_pushcfunction(L, eval_body);
  lua_insert(L, -2);
  return mh_run_start(vm, 1, done, ud);
}

const char *mh_eval_output(mh_run *run, size_t *len, int *nvalues) {
  if (run->state != MH_RUN_OK || run->nres < 2) {
    *len = 0;
    *nvalues = 0;
    return "";
  }
  *nvalues = (int)lua_tointeger(run->co, -1);
  return lua_tolstring(run->co, -2, len);
}

void mh_eval_print(mh_run *run) {
  size_t len;
  int n;
  const char *text = mh_eval_output(run, &len, &n);
  if (n > 0) {
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
  }
}
