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

#endif
