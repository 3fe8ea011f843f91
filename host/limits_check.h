/* limits_check.h — the one call long-running C loops make to honour run limits.
 *
 * Library functions that can spend unbounded CPU inside a single C call (the
 * pattern matcher) call mh_vm_check_limits every few thousand steps; it raises
 * the run's limit error (CPU budget, deadline, cancellation) when one is broken,
 * and costs a clock read otherwise. Defined in vm.c. */
#ifndef MH_LIMITS_CHECK_H
#define MH_LIMITS_CHECK_H

#include <lua.h>

/* [-0, +0, v] raises when the run executing on L has broken a limit */
void mh_vm_check_limits(lua_State *L);

/* [-0, +0, -] Sets the count hook (limits, cancellation, collection near
 * the cap: mh_vm_check_limits every MH_HOOK_COUNT instructions) on thread
 * co. Sandbox threads all have it from their state's main thread; the
 * trusted runtime's only while a run of it keeps a sandbox run's CPU budget
 * or deadline (scheduler.c): with a count hook set, Lua 5.4 calls
 * luaG_traceexec on every instruction, 5% of a request's CPU in the
 * service. */
void mh_vm_hook(lua_State *co);

#endif
