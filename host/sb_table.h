/* sb_table.h — table.insert, table.remove and table.move that honour run limits. */
#ifndef MH_SB_TABLE_H
#define MH_SB_TABLE_H

#include <lua.h>

/* [-0, +0, m] Replaces insert, remove and move in the table at idx (a copy of
 * the table library) with versions that check the run's limits as they go. */
void mh_table_guard(lua_State *L, int idx);

#endif
