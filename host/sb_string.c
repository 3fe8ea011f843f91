/* sb_string.c — Lua patterns with a step budget: find, match, gmatch, gsub.
 *
 * Lua's matcher (lstrlib.c) backtracks without counting, and the count hook
 * never fires inside a C call, so a script could spend hours in one
 * string.find("aaaa...", "(.-)(.-)(.-)(.-)b"). This file is our own
 * implementation of Lua 5.4.4 patterns — same results, same errors, same
 * argument handling — that counts its steps (entries into the recursive
 * matcher, iterations of the repetition loops, start positions, and work that
 * grows with the input: pattern items by their length, bytes scanned or
 * compared) and calls mh_vm_check_limits (limits_check.h) every SB_CHECK_EVERY
 * of them. That call may raise, so the matcher owns nothing but a struct on
 * the C stack (or in the gmatch iterator's userdata); gsub builds its result in
 * a luaL_Buffer. mh_string_guard installs the four functions into a sandbox's
 * copy of the string table. One addition to Lua's algorithm: when a pattern's
 * first item is one character class that must match (stdlib json's
 * '[%c"\\]'), the search skips the start positions that cannot match
 * (first_chars, skip_to_first) instead of entering the matcher at each.
 *
 * The matcher's helpers touch the Lua stack only to raise: [-0, +0, v]. */
#include "sb_string.h"

#include <assert.h>
#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#include "limits_check.h"

#define SB_MAXCAPTURES 32     /* as LUA_MAXCAPTURES */
#define SB_MAXDEPTH    200    /* as MAXCCALLS: recursion before "pattern too complex" */
#define SB_CHECK_EVERY 4096   /* matcher steps between two limit checks */

#define SB_ESC      '%'
#define SB_SPECIALS "^$*+?.([%-"

#define CAP_OPEN     (-1)     /* capture length while its ')' is not reached */
#define CAP_POSITION (-2)     /* capture length of a position capture "()" */

#define uchar(c) ((unsigned char)(c))

typedef struct sb_state {
  const char *src_init;  /* subject */
  const char *src_end;   /* its end (Lua keeps a '\0' there) */
  const char *pat_end;   /* end of the pattern */
  lua_State *L;
  ptrdiff_t ticks;       /* steps left before the next mh_vm_check_limits */
  int depth;             /* recursion left before "pattern too complex" */
  int level;             /* captures opened, finished or not */
  struct {
    const char *init;
    ptrdiff_t len;       /* or CAP_OPEN, CAP_POSITION */
  } capture[SB_MAXCAPTURES];
} sb_state;

/* The bytes a match can start with, when the pattern's first item is one
 * character class that must match at least once ("[%c\"\\]", "%d+", "x"):
 * the search then skips every start position that cannot match instead of
 * entering the matcher there. */
typedef struct sb_first {
  int byte;                  /* the one byte a match starts with, or -1 */
  unsigned char set[32];     /* else the bytes, one bit each */
} sb_first;

/* State of one gmatch iterator, in a userdata upvalue. */
typedef struct sb_gmatch {
  const char *src;       /* where the next search starts */
  const char *pat;
  const char *lastmatch; /* end of the previous match: no empty match there */
  int filter;            /* first is set (1), not usable (0), not computed yet (-1) */
  sb_first first;
  sb_state ms;
} sb_gmatch;

static const char *do_match(sb_state *ms, const char *s, const char *p);

/* ---- the step budget ---------------------------------------------------- */

/* [-0, +0, v] Raises when the run has broken a limit. */
static void budget_check(sb_state *ms) {
  ms->ticks = SB_CHECK_EVERY;
  mh_vm_check_limits(ms->L);
}

/* Charges n steps; every SB_CHECK_EVERY of them the run's limits are checked. */
#define SB_TICK(ms, n) \
  do { if (((ms)->ticks -= (ptrdiff_t)(n)) <= 0) budget_check(ms); } while (0)

static void state_init(sb_state *ms, lua_State *L, const char *s, size_t ls,
                       const char *p, size_t lp) {
  ms->L = L;
  ms->src_init = s;
  ms->src_end = s + ls;
  ms->pat_end = p + lp;
  ms->ticks = SB_CHECK_EVERY;
  ms->depth = SB_MAXDEPTH;
  ms->level = 0;
}

/* A new match attempt at a new start position. The depth is reset too, so a
 * gmatch iterator that raised once keeps its recursion limit afterwards. */
static void state_restart(sb_state *ms) {
  ms->level = 0;
  ms->depth = SB_MAXDEPTH;
  SB_TICK(ms, 1);
}

/* ---- single-character classes ------------------------------------------- */

/* The end of the class item at p: past "%x", "[set]" or one character. */
static const char *class_end(sb_state *ms, const char *p) {
  switch (*p++) {
  case SB_ESC:
    if (p == ms->pat_end)
      luaL_error(ms->L, "malformed pattern (ends with '%%')");
    return p + 1;
  case '[':
    if (*p == '^') p++;
    do {  /* the first character is never the closing ']' */
      if (p == ms->pat_end)
        luaL_error(ms->L, "malformed pattern (missing ']')");
      if (*p++ == SB_ESC && p < ms->pat_end)
        p++;  /* "%]" does not close the set */
    } while (*p != ']');
    return p + 1;
  default:
    return p;
  }
}

/* Does c belong to the class %cl? Upper-case letters complement. */
static int class_has(int c, int cl) {
  int res;
  switch (tolower(cl)) {
  case 'a': res = isalpha(c); break;
  case 'c': res = iscntrl(c); break;
  case 'd': res = isdigit(c); break;
  case 'g': res = isgraph(c); break;
  case 'l': res = islower(c); break;
  case 'p': res = ispunct(c); break;
  case 's': res = isspace(c); break;
  case 'u': res = isupper(c); break;
  case 'w': res = isalnum(c); break;
  case 'x': res = isxdigit(c); break;
  case 'z': res = (c == 0); break;  /* deprecated, kept for parity */
  default: return cl == c;          /* "%." and friends: the literal char */
  }
  return islower(cl) ? res : !res;
}

/* Does c belong to the set from '[' at p to its closing ']' at close? */
static int set_has(int c, const char *p, const char *close) {
  int yes = 1;
  if (p[1] == '^') {
    yes = 0;
    p++;
  }
  while (++p < close) {
    if (*p == SB_ESC) {
      p++;
      if (class_has(c, uchar(*p))) return yes;
    } else if (p[1] == '-' && p + 2 < close) {  /* a range "x-y" */
      p += 2;
      if (uchar(p[-2]) <= c && c <= uchar(*p)) return yes;
    } else if (uchar(*p) == c) {
      return yes;
    }
  }
  return !yes;
}

/* Does the subject character at s match the class item p..ep? */
static inline int item_has(const sb_state *ms, const char *s, const char *p,
                           const char *ep) {
  if (s >= ms->src_end) return 0;
  int c = uchar(*s);
  switch (*p) {
  case '.': return 1;
  case SB_ESC: return class_has(c, uchar(p[1]));
  case '[': return set_has(c, p, ep - 1);
  default: return uchar(*p) == c;
  }
}

/* ---- the first-character filter ----------------------------------------- */

#define SET_ADD(set, c) ((set)[(c) >> 3] |= (unsigned char)(1u << ((c) & 7)))
#define SET_HAS(set, c) ((set)[(c) >> 3] & (1u << ((c) & 7)))

static const char CLASS_LETTERS[] = "acdglpsuwxz";
/* class_sets[k]: the bytes of class %CLASS_LETTERS[k], filled once */
static unsigned char class_sets[sizeof CLASS_LETTERS - 1][32];
static pthread_once_t class_sets_once = PTHREAD_ONCE_INIT;

static void fill_class_sets(void) {
  for (size_t k = 0; k < sizeof CLASS_LETTERS - 1; k++)
    for (int c = 0; c < 256; c++)
      if (class_has(c, CLASS_LETTERS[k])) SET_ADD(class_sets[k], c);
}

/* Adds the bytes of the class "%cl" to set, as class_has reads it. */
static void set_add_class(unsigned char set[32], int cl) {
  const char *k = cl != 0 ? strchr(CLASS_LETTERS, tolower(cl)) : NULL;
  if (k == NULL) {  /* "%." and friends: the literal char */
    SET_ADD(set, cl);
    return;
  }
  pthread_once(&class_sets_once, fill_class_sets);
  const unsigned char *from = class_sets[k - CLASS_LETTERS];
  for (int i = 0; i < 32; i++) set[i] |= islower(cl) ? from[i] : (unsigned char)~from[i];
}

/* Fills set with the bytes of the set from '[' at p to its ']' at close, as
 * set_has reads it. */
static void set_add_set(unsigned char set[32], const char *p, const char *close) {
  int negate = p[1] == '^';
  if (negate) p++;
  while (++p < close) {
    if (*p == SB_ESC) {
      p++;
      set_add_class(set, uchar(*p));
    } else if (p[1] == '-' && p + 2 < close) {  /* a range "x-y" */
      p += 2;
      for (int c = uchar(p[-2]); c <= uchar(*p); c++) SET_ADD(set, c);
    } else {
      SET_ADD(set, uchar(*p));
    }
  }
  if (negate)
    for (int i = 0; i < 32; i++) set[i] = (unsigned char)~set[i];
}

/* Fills *f and returns 1 when every match of p starts with a byte of a known
 * set: p's first item is one class ("x", "%d", "[set]") that must match
 * once at least (no '*', '?' or '-' after it). Returns 0 for every other
 * pattern. Raises, as do_match would, when that first item is malformed. */
static int first_chars(sb_state *ms, const char *p, sb_first *f) {
  if (p == ms->pat_end) return 0;
  switch (*p) {
  case '(': case ')': case '.': return 0;
  case '$': if (p + 1 == ms->pat_end) return 0; break;
  case SB_ESC: if (p[1] == 'b' || p[1] == 'f' || isdigit(uchar(p[1]))) return 0; break;
  default: break;
  }
  const char *ep = class_end(ms, p);
  if (*ep == '*' || *ep == '?' || *ep == '-') return 0;
  f->byte = -1;
  memset(f->set, 0, sizeof f->set);
  if (*p == '[') set_add_set(f->set, p, ep - 1);
  else if (*p == SB_ESC) set_add_class(f->set, uchar(p[1]));
  else f->byte = uchar(*p);
  return 1;
}

/* The first position from s on where a match can start, or the subject's
 * end; the bytes skipped are charged as steps. */
static const char *skip_to_first(sb_state *ms, const char *s, const sb_first *f) {
  const char *from = s, *end = ms->src_end;
  if (f->byte >= 0) {
    s = memchr(s, f->byte, (size_t)(end - s));
    if (s == NULL) s = end;
  } else {
    while (s < end && !SET_HAS(f->set, uchar(*s))) s++;
  }
  SB_TICK(ms, s - from);
  return s;
}

/* ---- pattern items ------------------------------------------------------ */

/* "%bxy" with p at x: a balanced run from x to its matching y, or NULL. */
static const char *match_balance(sb_state *ms, const char *s, const char *p) {
  if (p >= ms->pat_end - 1)
    luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
  if (*s != *p) return NULL;  /* at the end this reads Lua's '\0' */
  const char *from = s;
  int open = *p, close = p[1], nest = 1;
  while (++s < ms->src_end) {
    if (*s == close) {
      if (--nest == 0) {
        SB_TICK(ms, s - from);
        return s + 1;
      }
    } else if (*s == open) {
      nest++;
    }
  }
  SB_TICK(ms, ms->src_end - from);
  return NULL;
}

/* "x*" (and "x+" after its first character): longest run first, then back off.
 * Each test of a set costs its length, and is charged so. */
static const char *expand_greedy(sb_state *ms, const char *s, const char *p,
                                 const char *ep) {
  ptrdiff_t cost = ep - p, n = 0;
  while (item_has(ms, s + n, p, ep)) {
    n++;
    SB_TICK(ms, cost);
  }
  for (; n >= 0; n--) {
    SB_TICK(ms, 1);
    const char *res = do_match(ms, s + n, ep + 1);
    if (res) return res;
  }
  return NULL;
}

/* "x-": shortest run first, then one more character at a time. */
static const char *expand_lazy(sb_state *ms, const char *s, const char *p,
                               const char *ep) {
  for (;;) {
    SB_TICK(ms, ep - p);
    const char *res = do_match(ms, s, ep + 1);
    if (res) return res;
    if (!item_has(ms, s, p, ep)) return NULL;
    s++;
  }
}

static const char *open_capture(sb_state *ms, const char *s, const char *p,
                                ptrdiff_t what) {
  int l = ms->level;
  if (l >= SB_MAXCAPTURES) luaL_error(ms->L, "too many captures");
  ms->capture[l].init = s;
  ms->capture[l].len = what;
  ms->level = l + 1;
  const char *res = do_match(ms, s, p);
  if (!res) ms->level--;  /* undo */
  return res;
}

static const char *close_capture(sb_state *ms, const char *s, const char *p) {
  int l = ms->level - 1;
  while (l >= 0 && ms->capture[l].len != CAP_OPEN) l--;
  if (l < 0) luaL_error(ms->L, "invalid pattern capture");
  ms->capture[l].len = s - ms->capture[l].init;
  const char *res = do_match(ms, s, p);
  if (!res) ms->capture[l].len = CAP_OPEN;  /* undo */
  return res;
}

/* The capture index named by digit ch ('1'..'9'), checked. */
static int capture_index(sb_state *ms, int ch) {
  int l = ch - '1';
  if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_OPEN)
    return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
  return l;
}

/* "%1".."%9": the same text again. A position capture never matches. */
static const char *match_backref(sb_state *ms, const char *s, int ch) {
  int l = capture_index(ms, ch);
  size_t len = (size_t)ms->capture[l].len;
  if ((size_t)(ms->src_end - s) < len) return NULL;
  SB_TICK(ms, len);
  return memcmp(ms->capture[l].init, s, len) == 0 ? s + len : NULL;
}

/* The matcher: the end of the match of p..pat_end at s, or NULL. Tail steps
 * loop instead of recursing; the recursion is the one Lua has, so the depth
 * limit strikes at the same patterns. */
static const char *do_match(sb_state *ms, const char *s, const char *p) {
  if (ms->depth-- == 0)
    luaL_error(ms->L, "pattern too complex");
  SB_TICK(ms, 1);
  while (p != ms->pat_end) {
    switch (*p) {
    case '(':
      if (p[1] == ')')
        s = open_capture(ms, s, p + 2, CAP_POSITION);
      else
        s = open_capture(ms, s, p + 1, CAP_OPEN);
      goto done;
    case ')':
      s = close_capture(ms, s, p + 1);
      goto done;
    case '$':
      if (p + 1 == ms->pat_end) {  /* only a final '$' anchors */
        if (s != ms->src_end) s = NULL;
        goto done;
      }
      break;
    case SB_ESC:
      if (p[1] == 'b') {
        s = match_balance(ms, s, p + 2);
        if (!s) goto done;
        p += 4;
        continue;
      }
      if (p[1] == 'f') {  /* frontier: previous char outside the set, this one in */
        p += 2;
        if (*p != '[')
          luaL_error(ms->L, "missing '[' after '%%f' in pattern");
        const char *ep = class_end(ms, p);
        SB_TICK(ms, ep - p);
        int prev = (s == ms->src_init) ? 0 : uchar(s[-1]);
        if (!set_has(prev, p, ep - 1) && set_has(uchar(*s), p, ep - 1)) {
          p = ep;
          continue;
        }
        s = NULL;
        goto done;
      }
      if (isdigit(uchar(p[1]))) {
        s = match_backref(ms, s, uchar(p[1]));
        if (!s) goto done;
        p += 2;
        continue;
      }
      break;
    default:
      break;
    }
    /* one class item with an optional '*', '+', '-' or '?'; reading and
     * testing it costs its length */
    const char *ep = class_end(ms, p);
    SB_TICK(ms, ep - p);
    if (!item_has(ms, s, p, ep)) {
      if (*ep == '*' || *ep == '?' || *ep == '-') {  /* may match empty */
        p = ep + 1;
        continue;
      }
      s = NULL;
      goto done;
    }
    switch (*ep) {
    case '?': {
      const char *res = do_match(ms, s + 1, ep + 1);
      if (res) {
        s = res;
        goto done;
      }
      p = ep + 1;
      continue;
    }
    case '+':
      s = expand_greedy(ms, s + 1, p, ep);
      goto done;
    case '*':
      s = expand_greedy(ms, s, p, ep);
      goto done;
    case '-':
      s = expand_lazy(ms, s, p, ep);
      goto done;
    default:
      s++;
      p = ep;
      continue;
    }
  }
done:
  ms->depth++;
  return s;
}

/* ---- captures to Lua values --------------------------------------------- */

/* [-0, +(0|1), m] Capture i of the match s..e: its text in *cap and its length,
 * or CAP_POSITION after pushing the position. With no captures, capture 0 is
 * the whole match. */
static ptrdiff_t capture_get(sb_state *ms, int i, const char *s, const char *e,
                             const char **cap) {
  if (i >= ms->level) {
    if (i != 0)
      luaL_error(ms->L, "invalid capture index %%%d", i + 1);
    *cap = s;
    return e - s;
  }
  ptrdiff_t len = ms->capture[i].len;
  *cap = ms->capture[i].init;
  if (len == CAP_OPEN)
    luaL_error(ms->L, "unfinished capture");
  else if (len == CAP_POSITION)
    lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
  return len;
}

/* [-0, +1, m] */
static void capture_push(sb_state *ms, int i, const char *s, const char *e) {
  const char *cap;
  ptrdiff_t len = capture_get(ms, i, s, e, &cap);
  if (len != CAP_POSITION) lua_pushlstring(ms->L, cap, (size_t)len);
}

/* [-0, +n, m] Pushes every capture (the whole match s..e when there are none
 * and s is not NULL); returns n. */
static int captures_push(sb_state *ms, const char *s, const char *e) {
  int n = (ms->level == 0 && s) ? 1 : ms->level;
  luaL_checkstack(ms->L, n, "too many captures");
  for (int i = 0; i < n; i++) capture_push(ms, i, s, e);
  return n;
}

/* ---- find and match ----------------------------------------------------- */

/* A 1-based start position, negative from the end, clipped to [1, inf). */
static size_t start_index(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos;
  if (pos == 0 || pos < -(lua_Integer)len) return 1;
  return len + (size_t)pos + 1;
}

/* Has the pattern no magic character (embedded zeros included)? */
static int is_plain(const char *p, size_t lp) {
  size_t at = 0;
  do {
    if (strpbrk(p + at, SB_SPECIALS)) return 0;
    at += strlen(p + at) + 1;
  } while (at <= lp);
  return 1;
}

/* The first occurrence of p (lp bytes) in s (ls bytes), or NULL. glibc's
 * memmem is linear in ls + lp (two-way search), so one charge of the
 * subject's length bounds its cost. */
static const char *find_plain(sb_state *ms, const char *s, size_t ls,
                              const char *p, size_t lp) {
  if (lp == 0) return s;
  if (lp > ls) return NULL;
  SB_TICK(ms, ls + lp);
  return memmem(s, ls, p, lp);
}

/* [-0, +n, v] string.find (find = 1) and string.match (find = 0): the match's
 * start and end (find only) and its captures, or fail. */
static int find_aux(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = start_index(luaL_optinteger(L, 3, 1), ls) - 1;
  sb_state ms;
  if (init > ls) {  /* starts after the end: nothing to find */
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || is_plain(p, lp))) {
    state_init(&ms, L, s, ls, p, lp);
    const char *hit = find_plain(&ms, s + init, ls - init, p, lp);
    if (hit) {
      lua_pushinteger(L, (hit - s) + 1);                /* start */
      lua_pushinteger(L, (hit - s) + (lua_Integer)lp);  /* start, end */
      return 2;
    }
  } else {
    const char *s1 = s + init;
    int anchor = (*p == '^');
    if (anchor) {
      p++;
      lp--;
    }
    state_init(&ms, L, s, ls, p, lp);
    sb_first first;
    int filter = !anchor && first_chars(&ms, p, &first);
    do {
      if (filter && (s1 = skip_to_first(&ms, s1, &first)) == ms.src_end) break;
      state_restart(&ms);
      const char *e = do_match(&ms, s1, p);
      if (e) {
        if (!find) return captures_push(&ms, s1, e);
        lua_pushinteger(L, (s1 - s) + 1);  /* start */
        lua_pushinteger(L, e - s);         /* start, end */
        return captures_push(&ms, NULL, NULL) + 2;
      }
    } while (s1++ < ms.src_end && !anchor);
  }
  luaL_pushfail(L);
  return 1;
}

/* [-0, +n, v] string.find(s, pattern [, init [, plain]]) */
static int sb_find(lua_State *L) { return find_aux(L, 1); }

/* [-0, +n, v] string.match(s, pattern [, init]) */
static int sb_match(lua_State *L) { return find_aux(L, 0); }

/* ---- gmatch ------------------------------------------------------------- */

/* [-0, +n, v] The iterator: upvalues subject, pattern, sb_gmatch userdata.
 * Pushes the next match's captures, or nothing at the end. */
static int gmatch_next(lua_State *L) {
  sb_gmatch *gm = lua_touserdata(L, lua_upvalueindex(3));
  gm->ms.L = L;  /* the iterator may run on another coroutine */
  for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
    if (gm->filter < 0) gm->filter = first_chars(&gm->ms, gm->pat, &gm->first);
    if (gm->filter && (src = skip_to_first(&gm->ms, src, &gm->first)) == gm->ms.src_end) break;
    state_restart(&gm->ms);
    const char *e = do_match(&gm->ms, src, gm->pat);
    if (e && e != gm->lastmatch) {  /* no empty match right after a match */
      gm->src = gm->lastmatch = e;
      return captures_push(&gm->ms, src, e);
    }
  }
  return 0;
}

/* [-0, +1, v] string.gmatch(s, pattern [, init]): pushes the iterator. */
static int sb_gmatch_new(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = start_index(luaL_optinteger(L, 3, 1), ls) - 1;
  if (init > ls) init = ls + 1;  /* past the end: the iterator finds nothing */
  lua_settop(L, 2);  /* subject and pattern stay alive as upvalues */
  sb_gmatch *gm = lua_newuserdatauv(L, sizeof *gm, 0);  /* state */
  state_init(&gm->ms, L, s, ls, p, lp);
  gm->src = s + init;
  gm->pat = p;
  gm->lastmatch = NULL;
  gm->filter = -1;  /* on the first call, which raises for a malformed pattern */
  lua_pushcclosure(L, gmatch_next, 3);  /* iterator */
  return 1;
}

/* ---- gsub --------------------------------------------------------------- */

/* [-0, +0, v] Appends the replacement string at index 3 for the match s..e,
 * expanding "%0".."%9" and "%%". */
static void add_template(sb_state *ms, luaL_Buffer *b, const char *s,
                         const char *e) {
  lua_State *L = ms->L;
  size_t l;
  const char *t = lua_tolstring(L, 3, &l);
  const char *esc;
  SB_TICK(ms, l + 1);
  while ((esc = memchr(t, SB_ESC, l)) != NULL) {
    luaL_addlstring(b, t, (size_t)(esc - t));
    esc++;  /* the character after '%'; at the end it is Lua's '\0' */
    if (*esc == SB_ESC) {
      luaL_addchar(b, SB_ESC);
    } else if (*esc == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (isdigit(uchar(*esc))) {
      const char *cap;
      ptrdiff_t len = capture_get(ms, *esc - '1', s, e, &cap);
      if (len == CAP_POSITION)
        luaL_addvalue(b);  /* the pushed position */
      else
        luaL_addlstring(b, cap, (size_t)len);
    } else {
      luaL_error(L, "invalid use of '%c' in replacement string", SB_ESC);
    }
    l -= (size_t)(esc + 1 - t);
    t = esc + 1;
  }
  luaL_addlstring(b, t, l);
}

/* [-0, +0, e] Appends the replacement for the match s..e by the kind of
 * argument 3 (type tr); a function or table runs Lua code. Returns whether the text changed: a function or table giving nil or
 * false keeps the match as it was. */
static int add_replacement(sb_state *ms, luaL_Buffer *b, const char *s,
                           const char *e, int tr) {
  lua_State *L = ms->L;
  if (tr == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);                /* function */
    int n = captures_push(ms, s, e);    /* function, captures... */
    lua_call(L, n, 1);                  /* value */
  } else if (tr == LUA_TTABLE) {
    capture_push(ms, 0, s, e);          /* key */
    lua_gettable(L, 3);                 /* value */
  } else {  /* string or number */
    add_template(ms, b, s, e);
    return 1;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    return 0;
  }
  if (!lua_isstring(L, -1))
    return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  luaL_addvalue(b);
  return 1;
}

/* [-0, +2, e] string.gsub(s, pattern, repl [, n]): the new string and the
 * number of matches replaced. */
static int sb_gsub(lua_State *L) {
  size_t ls, lp;
  const char *src = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  int tr = lua_type(L, 3);
  lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
  luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING ||
                   tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                   "string/function/table");
  const char *lastmatch = NULL;
  int anchor = (*p == '^');
  lua_Integer n = 0;
  int changed = 0;
  sb_state ms;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (anchor) {
    p++;
    lp--;
  }
  state_init(&ms, L, src, ls, p, lp);
  sb_first first;
  int filter = -1;  /* on the first round: none when max_n < 1, like do_match's errors */
  while (n < max_n) {
    if (filter < 0) filter = !anchor && first_chars(&ms, p, &first);
    if (filter) {
      const char *next = skip_to_first(&ms, src, &first);
      luaL_addlstring(&b, src, (size_t)(next - src));
      src = next;
      if (src == ms.src_end) break;
    }
    state_restart(&ms);
    const char *e = do_match(&ms, src, p);
    if (e && e != lastmatch) {  /* a match, and not an empty one right after the last */
      n++;
      changed |= add_replacement(&ms, &b, src, e, tr);
      src = lastmatch = e;
    } else if (src < ms.src_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchor) break;
  }
  if (!changed) {
    lua_pushvalue(L, 1);  /* the subject itself */
  } else {
    luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
    luaL_pushresult(&b);  /* new string */
  }
  lua_pushinteger(L, n);  /* count */
  return 2;
}

/* ---- installation ------------------------------------------------------- */

/* [-0, +0, m] */
void mh_string_guard(lua_State *L, int idx) {
#ifdef MH_STACK_CHECKS
  int top = lua_gettop(L);
#endif
  static const luaL_Reg fns[] = {
    {"find", sb_find},
    {"match", sb_match},
    {"gmatch", sb_gmatch_new},
    {"gsub", sb_gsub},
    {NULL, NULL},
  };
  idx = lua_absindex(L, idx);
  for (const luaL_Reg *r = fns; r->name; r++) {
    lua_pushstring(L, r->name);        /* name */
    lua_pushcfunction(L, r->func);     /* name, function */
    lua_rawset(L, idx);
  }
#ifdef MH_STACK_CHECKS
  assert(lua_gettop(L) == top);
#endif
}
