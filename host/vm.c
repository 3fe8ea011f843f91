/* vm.c — sandboxed Lua states: the capped allocator, state lifecycle, loading
 * text chunks into fresh environments, and the count hook that enforces each
 * run's CPU budget and deadline.
 *
 * The environment itself (what globals a script sees) is built by sandbox.c. */
#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "limits_check.h"
#include "log.h"
#include "sandbox.h"
#include "scheduler.h"

/* The allocator: every byte a state holds goes through here, so the cap holds
 * inside any library call. Shrinking never fails; growing past the cap does,
 * and Lua then runs an emergency collection and retries once before raising
 * LUA_ERRMEM, which the scheduler reports as the memory limit. */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  mh_vm *vm = ud;
  if (ptr == NULL) osize = 0; /* osize then carries the object's type */
  if (nsize == 0) {
    free(ptr);
    vm->mem_used -= osize;
    return NULL;
  }
  if (vm->mem_limit && nsize > osize && vm->mem_used - osize + nsize > vm->mem_limit)
    return NULL;
  void *block = realloc(ptr, nsize);
  if (block == NULL) return NULL;
  vm->mem_used = vm->mem_used - osize + nsize;
  if (vm->mem_used > vm->mem_peak) vm->mem_peak = vm->mem_used;
  return block;
}

int mh_vm_charge(mh_vm *vm, ptrdiff_t delta) {
  if (delta > 0 && vm->mem_limit && vm->mem_used + (size_t)delta > vm->mem_limit) return -1;
  vm->mem_used += (size_t)delta;
  if (vm->mem_used > vm->mem_peak) vm->mem_peak = vm->mem_used;
  return 0;
}

mh_vm *mh_vm_of(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return ud;
}

void mh_vm_collect_if_near_cap(mh_vm *vm, lua_State *L) {
  size_t cap = vm->mem_limit;
  if (cap && vm->mem_used > cap - cap / 8 && vm->mem_used > vm->gc_floor + cap / 8) {
    lua_gc(L, LUA_GCCOLLECT); /* on the running thread, as Lua's own collections */
    vm->gc_floor = vm->mem_used;
  }
}

int mh_vm_is_memory_error(lua_State *L, int status) {
  if (status == LUA_ERRMEM) return 1;
  size_t len;
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
  return msg && len == 17 && memcmp(msg, "not enough memory", 17) == 0;
}

static void count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mh_vm_collect_if_near_cap(mh_vm_of(L), L);
  mh_vm_check_limits(L);
}

void mh_vm_hook(lua_State *co) { lua_sethook(co, count_hook, LUA_MASKCOUNT, MH_HOOK_COUNT); }

void mh_vm_check_limits(lua_State *L) {
  mh_vm *vm = mh_vm_of(L);
  mh_run *run = vm->current;
  if (run == NULL) return;
  if (run->broken == MH_BREAK_NONE) {
    uint64_t now = uv_hrtime();
    if (vm->host->interrupt && *vm->host->interrupt) {
      *vm->host->interrupt = 0;
      run->broken = MH_BREAK_CANCEL;
    } else if (run->cpu_budget_ns && run->cpu_used_ns + (now - run->resumed_at_ns) > run->cpu_budget_ns) {
      run->broken = MH_BREAK_CPU;
    } else if (run->deadline_at_ns && now >= run->deadline_at_ns) {
      run->broken = MH_BREAK_DEADLINE;
    } else {
      return;
    }
  }
  /* From now on the hook fires on every instruction of this coroutine, so a
   * pcall that swallows the error cannot keep the run going. */
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  mh_raise_broken(L, run);
}

static int vm_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  mh_log(MH_LOG_ERROR, "unprotected error in a sandbox (a host bug): %s", msg ? msg : "?");
  abort();
}

/* [-0, +0, e] Builds the sandbox inside a protected call. */
static int vm_setup(lua_State *L) {
  mh_sandbox_open(L);
  return 0;
}

mh_vm *mh_vm_new(mh_host *host, const mh_limits *limits, const char *script_dir) {
  mh_vm *vm = calloc(1, sizeof *vm);
  if (vm == NULL) return NULL;
  vm->host = host;
  vm->limits = *limits;
  vm->mem_limit = limits->memory;
  if (script_dir && (vm->script_dir = strdup(script_dir)) == NULL) {
    free(vm);
    return NULL;
  }
  vm->L = lua_newstate(vm_alloc, vm);
  if (vm->L == NULL) {
    free(vm->script_dir);
    free(vm);
    return NULL;
  }
  lua_atpanic(vm->L, vm_panic);
  /* Lua leaves the main thread's extra space uninitialised, and every new
   * thread copies it: clear the thread flags (scheduler.h) at the source. */
  *mh_thread_flags(vm->L) = 0;
  /* Threads inherit the hook of the thread that creates them, so every run
   * and every coroutine a script makes is counted. */
  lua_sethook(vm->L, count_hook, LUA_MASKCOUNT, MH_HOOK_COUNT);
  lua_pushcfunction(vm->L, vm_setup);
  if (lua_pcall(vm->L, 0, 0, 0) != LUA_OK) {
    mh_log(MH_LOG_ERROR, "cannot create a sandbox: %s", lua_tostring(vm->L, -1));
    mh_vm_free(vm);
    return NULL;
  }
  return vm;
}

void mh_vm_free(mh_vm *vm) {
  if (vm == NULL) return;
  lua_close(vm->L);
  free(vm->script_dir);
  free(vm);
}

void mh_vm_new_env(lua_State *L) {
  mh_sandbox_new_env(L);
}

/* [-0, +1, m] A loaded chunk's first upvalue is _ENV; point it at the sandbox
 * environment (the table on top, or a fresh one when that is nil) instead of
 * the state's real globals. Expects [chunk, env] and leaves [chunk]. */
static void bind_env(lua_State *L) {
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    mh_sandbox_new_env(L);
  }
  if (lua_setupvalue(L, -2, 1) == NULL) lua_pop(L, 1);
}

struct load_request {
  const char *code;
  size_t len;
  const char *chunkname;
};

/* [-2, +2, e] lua_pcall target: (request, env) -> chunk or message, status */
static int load_protected(lua_State *L) {
  const struct load_request *req = lua_touserdata(L, 1);
  int status = luaL_loadbufferx(L, req->code, req->len, req->chunkname, "t");
  if (status == LUA_OK) {
    lua_pushvalue(L, 2);
    bind_env(L);
  }
  lua_pushinteger(L, status);
  return 2;
}

/* Runs load_protected so no allocation failure escapes unprotected. */
static int load_chunk(lua_State *L, const struct load_request *req, int env_idx) {
  mh_vm *vm = mh_vm_of(L);
  if (env_idx) env_idx = lua_absindex(L, env_idx);
  lua_pushcfunction(L, load_protected);
  lua_pushlightuserdata(L, (void *)req);
  if (env_idx) lua_pushvalue(L, env_idx);
  else lua_pushnil(L);
  int status = lua_pcall(L, 2, 2, 0);
  if (status == LUA_OK) {
    status = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  } /* else a failed pcall left one value: the message */
  if (status == LUA_ERRMEM) {
    lua_pop(L, 1);
    char size[32];
    mh_format_size(vm->mem_limit, size, sizeof size);
    size_t saved = vm->mem_limit; /* room for the message itself */
    if (saved) vm->mem_limit = vm->mem_used + MH_ERROR_HEADROOM;
    lua_pushfstring(L, "%s: memory limit of %s exceeded while loading",
                    req->chunkname + (req->chunkname[0] == '@' || req->chunkname[0] == '='), size);
    vm->mem_limit = saved;
  }
  return status;
}

int mh_vm_load(lua_State *L, const char *code, size_t len, const char *chunkname, int env_idx) {
  struct load_request req = {code, len, chunkname};
  return load_chunk(L, &req, env_idx);
}

struct text {
  const char *s;
  size_t len;
};

/* [-1, +1, m] lua_pcall target: the text as a Lua string */
static int push_text_protected(lua_State *L) {
  const struct text *t = lua_touserdata(L, 1);
  lua_pushlstring(L, t->s, t->len);
  return 1;
}

int mh_vm_pushtext(lua_State *L, const char *s, size_t len) {
  struct text t = {s, len};
  if (!lua_checkstack(L, 3)) return LUA_ERRMEM;
  lua_pushcfunction(L, push_text_protected);
  lua_pushlightuserdata(L, &t);
  int status = lua_pcall(L, 1, 1, 0);
  if (status != LUA_OK) lua_pop(L, 1);
  return status;
}

size_t mh_shebang_len(const char *code, size_t len) {
  size_t skip = 0;
  if (len > 0 && code[0] == '#')
    while (skip < len && code[skip] != '\n') skip++;
  return skip;
}

char *mh_read_file(const char *path, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *bigger = cap < ((size_t)64 << 20) ? realloc(buf, cap * 2) : NULL;
    if (!bigger) {
      snprintf(err, errlen, "cannot load %s: file too large", path);
      free(buf);
      buf = NULL;
      break;
    }
    buf = bigger;
    cap *= 2;
  }
  if (buf && ferror(f)) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

int mh_vm_loadfile(lua_State *L, const char *path, int env_idx) {
  char err[PATH_MAX + 128];
  size_t len;
  char *code = mh_read_file(path, &len, err, sizeof err);
  if (code == NULL) {
    lua_pushstring(L, err);
    return LUA_ERRFILE;
  }
  size_t skip = mh_shebang_len(code, len);
  char chunkname[PATH_MAX + 2];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  struct load_request req = {code + skip, len - skip, chunkname};
  int status = load_chunk(L, &req, env_idx);
  free(code);
  return status;
}
