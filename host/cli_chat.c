/* cli_chat.c — `moonhive chat [--model M] [--system S] "prompt"`: one model
 * call from the command line. The reply streams to stdout as it arrives;
 * tokens and cost go to stderr at the end. It runs as a sandboxed script, so
 * it takes the same path (and limits) as any agent's call. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "cli.h"
#include "host.h"
#include "scheduler.h"
#include "vm.h"

const char mh_help_chat[] =
  "usage: moonhive chat [--model PROVIDER/MODEL] [--system TEXT] [LIMIT OPTIONS] \"prompt\"\n"
  "\n"
  "Sends one message to a model and streams the reply to stdout; tokens and cost\n"
  "are printed on stderr at the end. Without --model: MOONHIVE_MODEL, else OpenAI\n"
  "when OPENAI_API_KEY is set, else Anthropic when ANTHROPIC_API_KEY is set, else\n"
  "the offline mock model. Exit status 1 when the call fails.\n";

static const char chat_script[] =
  "local model, system, prompt = ...\n"
  "local res, err = llm.chat{model = model, system = system,\n"
  "  messages = {{role = 'user', content = prompt}},\n"
  "  stream = function(d) if d.content then write(d.content) end end}\n"
  "if not res then error(err, 0) end\n"
  "write('\\n')\n"
  "return res.usage.input, res.usage.output, res.cost, res.provider .. '/' .. res.model\n";

/* write(s): stdout without a newline, flushed (the chat command's own global) */
static int chat_write(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  fwrite(s, 1, len, stdout);
  fflush(stdout);
  return 0;
}

typedef struct chat_outcome { int finished, exit_code; } chat_outcome;

static void on_chat_done(mh_run *run, void *ud) {
  chat_outcome *out = ud;
  out->finished = 1;
  fflush(stdout);
  if (run->state == MH_RUN_OK && run->nres == 4) {
    lua_State *co = run->co;
    fprintf(stderr, "[%s] tokens: %lld in, %lld out", lua_tostring(co, -1),
            (long long)lua_tointeger(co, -4), (long long)lua_tointeger(co, -3));
    if (lua_isnumber(co, -2)) fprintf(stderr, "; cost: $%.6f\n", lua_tonumber(co, -2));
    else fprintf(stderr, "; cost: unknown (no price for this model)\n");
    out->exit_code = 0;
  } else {
    const char *msg = run->error ? run->error : "the call failed";
    const char *cut = strstr(msg, "\nstack traceback:");
    fprintf(stderr, "moonhive: %.*s\n", cut ? (int)(cut - msg) : (int)strlen(msg), msg);
    out->exit_code = 1;
  }
  uv_stop(run->vm->host->loop);
}

int mh_cmd_chat(int argc, char **argv) {
  mh_limits limits;
  if (mh_cli_limits_init(&limits) != 0) return 2;
  limits.deadline_ns = 0; /* a long answer is not an error; Ctrl-C stops it */
  const char *model = NULL, *system = NULL, *prompt = NULL;
  for (int i = 0; i < argc;) {
    if ((strcmp(argv[i], "--model") == 0 || strcmp(argv[i], "--system") == 0) && i + 1 < argc) {
      if (argv[i][2] == 'm') model = argv[i + 1];
      else system = argv[i + 1];
      i += 2;
      continue;
    }
    int r = mh_cli_limit_option(argc, argv, &i, &limits);
    if (r < 0) return 2;
    if (r > 0) continue;
    if (argv[i][0] == '-' || prompt) {
      fprintf(stderr, "moonhive: unexpected argument '%s'\n\n%s", argv[i], mh_help_chat);
      return 2;
    }
    prompt = argv[i++];
  }
  if (prompt == NULL) {
    fprintf(stderr, "moonhive: chat needs a prompt\n\n%s", mh_help_chat);
    return 2;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  mh_host host;
  mh_host_init(&host, &loop);
  host.limits = limits;
  mh_vm *vm = mh_vm_new(&host, &limits, NULL);
  chat_outcome out = {0, 1};
  if (vm == NULL || mh_vm_load(vm->L, chat_script, sizeof chat_script - 1, "=chat", 0) != LUA_OK) {
    fprintf(stderr, "moonhive: cannot prepare the chat\n");
  } else {
    lua_State *L = vm->L;
    lua_getupvalue(L, -1, 1);                 /* chunk env */
    lua_pushcfunction(L, chat_write);
    lua_setfield(L, -2, "write");
    lua_pop(L, 1);                            /* chunk */
    if (model) lua_pushstring(L, model); else lua_pushnil(L);
    if (system) lua_pushstring(L, system); else lua_pushnil(L);
    lua_pushstring(L, prompt);
    if (mh_run_start(vm, 3, on_chat_done, &out) != NULL)
      while (!out.finished) uv_run(&loop, UV_RUN_DEFAULT);
  }
  mh_host_close(&host);
  mh_vm_free(vm);
  uv_loop_close(&loop);
  return out.exit_code;
}
