/* mod_jsonscan.c — `require "jsonscan"` in the trusted runtime.
 *
 *   jsonscan.string_after(text, prefix [, needed [, refused]]) -> string | nil
 *   jsonscan.picker(path, ...) -> pick;  pick(text) -> true, v1, ... | nil
 *
 * string_after finds `prefix` (which ends with a string's opening quote,
 * such as '"delta":{"content":"') in JSON text and returns that string's
 * value with its escapes decoded; nil when the prefix is absent, the string
 * is not well-formed JSON, `needed` does not occur in the text or `refused`
 * does (guards such as '"finish_reason":null', checked in the same call).
 *
 * A picker reads a few values out of a JSON document in one pass, without
 * building tables: its paths are compiled once ("choices.1.message.content":
 * object keys, and 1-based array positions written as numbers; "" is the
 * document itself). pick(text) checks the whole text against the JSON grammar
 * (RFC 8259; at most 128 levels deep) and returns true and one value per
 * path: the string, number or boolean found there, or nil when the path is
 * absent, null, or an object or array. A path ending in "#" ("usage#",
 * "choices.1.delta.tool_calls#", "#") gives instead the number of members
 * of the object or array found there, and nil for anything else. pick
 * returns nil alone when the text is not well-formed JSON, or is something
 * it leaves to a full decoder: a lone UTF-16 surrogate, a picked number over
 * 63 characters.
 *
 * Model replies are small JSON documents, and streamed ones arrive as
 * hundreds of chunks whose only news is one or two fields: reading them here
 * costs a fraction of decoding each one with cjson, and the providers fall
 * back to the full decoder whenever the shape is unusual (tool calls). */
#include "mod_jsonscan.h"

#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <lauxlib.h>

static int hex4(const unsigned char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v << 4 | d;
  }
  *out = v;
  return 0;
}

/* code point cp as UTF-8 into u; returns its length */
static size_t utf8_encode(unsigned cp, char u[4]) {
  if (cp < 0x80) {
    u[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)), u[2] = (char)(0x80 | (cp >> 6 & 0x3F)),
  u[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* [-0, +0, m] appends code point cp as UTF-8 */
static void add_utf8(luaL_Buffer *b, unsigned cp) {
  char u[4];
  luaL_addlstring(b, u, utf8_encode(cp, u));
}

/* [-0, +1, m] decodes the JSON string body at p (after its opening quote);
 * pushes it, or nothing and returns 0 when it is malformed */
static int push_string_body(lua_State *L, const unsigned char *p, const unsigned char *end) {
  const unsigned char *run = p;
  while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) p++;
  if (p < end && *p == '"') { /* the common case: no escapes */
    lua_pushlstring(L, (const char *)run, (size_t)(p - run));
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
  while (p < end) {
    unsigned c = *p;
    if (c == '"') {
      luaL_pushresult(&b);
      return 1;
    }
    if (c < 0x20) break;
    if (c != '\\') {
      luaL_addchar(&b, (char)c);
      p++;
      continue;
    }
    if (p + 1 >= end) break;
    unsigned cp;
    switch (p[1]) {
      case '"': luaL_addchar(&b, '"'); break;
      case '\\': luaL_addchar(&b, '\\'); break;
      case '/': luaL_addchar(&b, '/'); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u':
        if (end - p < 6 || hex4(p + 2, &cp) != 0) goto malformed;
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate wants its low half */
          unsigned lo;
          if (end - p >= 8 && p[2] == '\\' && p[3] == 'u' && hex4(p + 4, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
          } else {
            cp = 0xFFFD;
          }
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          cp = 0xFFFD;
        }
        add_utf8(&b, cp);
        break;
      default: goto malformed;
    }
    p += 2;
  }
malformed:
  luaL_pushresult(&b);
  lua_pop(L, 1);
  return 0;
}

/* The first occurrence of needle (nlen >= 2) in text, or NULL. With SSE2,
 * sixteen places are tried at once by the needle's second and last bytes
 * (its first is often a quote, everywhere in JSON; few places pass both),
 * cheaper than glibc's memmem on the short chunks of a stream. */
static const char *find(const char *text, size_t len, const char *needle, size_t nlen) {
  if (nlen > len) return NULL;
  size_t i = 0;
#ifdef __SSE2__
  const __m128i second = _mm_set1_epi8(needle[1]), last = _mm_set1_epi8(needle[nlen - 1]);
  for (; i + nlen - 1 + 16 <= len; i += 16) {
    __m128i a = _mm_loadu_si128((const __m128i *)(text + i + 1));
    __m128i b = _mm_loadu_si128((const __m128i *)(text + i + nlen - 1));
    unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, second), _mm_cmpeq_epi8(b, last)));
    while (mask) {
      unsigned bit = (unsigned)__builtin_ctz(mask);
      if (memcmp(text + i + bit, needle, nlen) == 0) return text + i + bit;
      mask &= mask - 1;
    }
  }
#endif
  /* the last few places, one by one (glibc's memmem costs more to set up) */
  for (const char *p = text + i, *end = text + len - nlen; p <= end; p++) {
    p = memchr(p, needle[0], (size_t)(end - p) + 1);
    if (p == NULL) break;
    if (memcmp(p, needle, nlen) == 0) return p;
  }
  return NULL;
}

int mh_json_push_after(lua_State *L, const char *text, size_t len, const mh_json_after *a) {
  const char *at = a->plen >= 2 ? find(text, len, a->prefix, a->plen) : memchr(text, '"', len);
  if (at == NULL || (a->needed && !find(text, len, a->needed, a->nlen)) ||
      (a->refused && find(text, len, a->refused, a->rlen)))
    return 0;
  return push_string_body(L, (const unsigned char *)at + a->plen, (const unsigned char *)text + len);
}

/* [-0, +0, v] reads string_after's prefix, needed and refused from the
 * stack at idx, idx+1 and idx+2 (the last two optional) into *a; raises on
 * misuse. The strings stay where they are: they must outlive *a. */
void mh_json_check_after(lua_State *L, int idx, mh_json_after *a) {
  a->nlen = a->rlen = 0;
  a->prefix = luaL_checklstring(L, idx, &a->plen);
  a->needed = luaL_optlstring(L, idx + 1, NULL, &a->nlen);
  a->refused = luaL_optlstring(L, idx + 2, NULL, &a->rlen);
  luaL_argcheck(L, a->plen > 0 && a->prefix[a->plen - 1] == '"', idx, "a prefix ending with '\"' expected");
  luaL_argcheck(L, !a->needed || a->nlen >= 2, idx + 1, "at least two bytes expected");
  luaL_argcheck(L, !a->refused || a->rlen >= 2, idx + 2, "at least two bytes expected");
}

/* jsonscan.string_after(text, prefix [, needed [, refused]]) [-(2|3|4), +1, m] */
static int string_after(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  mh_json_after a;
  mh_json_check_after(L, 2, &a);
  if (!mh_json_push_after(L, text, len, &a)) lua_pushnil(L);
  return 1;
}

/* ---- pickers ---- */

#define PICK_MAX_PATHS 16
#define PICK_MAX_SEGS 8
#define PICK_MAX_DEPTH 128
#define PICK_PATH_BYTES 128

/* The paths as a tree: node 0 is the document; each other node is a key or
 * an array position under its parent. */
typedef struct pick_node {
  const char *name;     /* an object key (into the picker's copy of the paths), or NULL */
  size_t len;
  lua_Integer index;    /* an array position (1-based), when name is NULL */
  int child, sibling;   /* node numbers; 0 means none */
  uint32_t ends;        /* the paths that end here */
} pick_node;

typedef struct picker {
  int npaths, nnodes;
  uint32_t counts;      /* the paths that end in "#" */
  pick_node nodes[PICK_MAX_PATHS * PICK_MAX_SEGS + 1];
  char text[PICK_MAX_PATHS][PICK_PATH_BYTES];
} picker;

enum { FOUND_NONE, FOUND_STRING, FOUND_NUMBER, FOUND_TRUE, FOUND_FALSE, FOUND_CONTAINER };

typedef struct found {
  int kind;
  const unsigned char *s;  /* string body or number text */
  size_t len;
  int escaped;
  lua_Integer members;
} found;

typedef struct walk {
  const unsigned char *p, *end;
  const picker *pk;
  found *out;              /* one per path */
} walk;

static inline void skip_ws(walk *w) {
  /* compact JSON has none: one test, most of the time */
  if (w->p < w->end && *w->p > ' ') return;
  while (w->p < w->end && (*w->p == ' ' || *w->p == '\n' || *w->p == '\r' || *w->p == '\t')) w->p++;
}

/* The bytes that end a run of plain string text: a quote, a backslash, a
 * control character. */
static const unsigned char special[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  ['"'] = 1, ['\\'] = 1,
};

/* The string whose opening quote is at w->p: its body and whether it has
 * escapes; -1 when it is malformed or holds a lone surrogate. */
static inline int scan_string(walk *w, const unsigned char **body, size_t *len, int *escaped) {
  const unsigned char *p = w->p + 1, *end = w->end;
  *body = p;
  *escaped = 0;
  for (;;) {
    while (end - p >= 4 && !(special[p[0]] | special[p[1]] | special[p[2]] | special[p[3]])) p += 4;
    while (p < end && !special[*p]) p++;
    if (p >= end || *p < 0x20) return -1;
    if (*p == '"') break;
    *escaped = 1;
    if (p + 1 >= end) return -1;
    unsigned cp, lo;
    switch (p[1]) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': p += 2; break;
      case 'u':
        if (end - p < 6 || hex4(p + 2, &cp) != 0) return -1;
        p += 6;
        if (cp >= 0xDC00 && cp < 0xE000) return -1;
        if (cp >= 0xD800 && cp < 0xDC00) {
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) != 0 || lo < 0xDC00 || lo >= 0xE000)
            return -1;
          p += 6;
        }
        break;
      default: return -1;
    }
  }
  *len = (size_t)(p - *body);
  w->p = p + 1;
  return 0;
}

static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }

static int scan_number(walk *w) {
  const unsigned char *p = w->p, *end = w->end;
  if (p < end && *p == '-') p++;
  if (p >= end || !is_digit(*p)) return -1;
  if (*p == '0') p++;
  else while (p < end && is_digit(*p)) p++;
  if (p < end && *p == '.') {
    if (++p >= end || !is_digit(*p)) return -1;
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return -1;
    while (p < end && is_digit(*p)) p++;
  }
  w->p = p;
  return 0;
}

static int scan_literal(walk *w, const char *word, size_t n) {
  if ((size_t)(w->end - w->p) < n || memcmp(w->p, word, n) != 0) return -1;
  w->p += n;
  return 0;
}

/* A key's body (already checked by scan_string) with its escapes decoded
 * into out; (size_t)-1 when it is too long to name any path's segment. */
static size_t unescape_key(const unsigned char *p, size_t len, char out[PICK_PATH_BYTES]) {
  const unsigned char *end = p + len;
  size_t n = 0;
  while (p < end) {
    char u[4];
    size_t ul = 1;
    if (*p != '\\') {
      u[0] = (char)*p++;
    } else {
      static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
      const char *esc = strchr(from, p[1]);
      unsigned cp, lo;
      if (p[1] != 'u' && esc) {
        u[0] = to[esc - from];
        p += 2;
      } else {
        hex4(p + 2, &cp);
        p += 6;
        if (cp >= 0xD800 && cp < 0xDC00) { /* its low half follows (checked) */
          hex4(p + 2, &lo);
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p += 6;
        }
        ul = utf8_encode(cp, u);
      }
    }
    if (n + ul >= PICK_PATH_BYTES) return (size_t)-1;
    memcpy(out + n, u, ul);
    n += ul;
  }
  return n;
}

/* The child of `node` named by this key, or NULL. */
static const pick_node *key_child(const picker *pk, const pick_node *node, const unsigned char *key, size_t klen,
                                  int escaped) {
  char plain[PICK_PATH_BYTES];
  if (escaped) { /* "\u006dodel" is "model" */
    klen = unescape_key(key, klen, plain);
    if (klen == (size_t)-1) return NULL;
    key = (const unsigned char *)plain;
  }
  for (int c = node->child; c; c = pk->nodes[c].sibling) {
    const pick_node *n = &pk->nodes[c];
    if (n->len == klen && n->name && n->name[0] == (char)key[0] && memcmp(n->name, key, klen) == 0) return n;
  }
  return NULL;
}

/* The child of `node` for array position `index`, or NULL. */
static const pick_node *index_child(const picker *pk, const pick_node *node, lua_Integer index) {
  for (int c = node->child; c; c = pk->nodes[c].sibling)
    if (!pk->nodes[c].name && pk->nodes[c].index == index) return &pk->nodes[c];
  return NULL;
}

/* Records value f for the paths that end at node; -1 when it is a number
 * too long to convert. */
static int record(walk *w, const pick_node *node, const found *f) {
  if (f->kind == FOUND_NUMBER && f->len > 63) return -1;
  for (int i = 0; node->ends >> i; i++)
    if (node->ends >> i & 1) w->out[i] = *f;
  return 0;
}

/* One open object or array while walking. */
typedef struct frame {
  const pick_node *node;    /* where its members are looked up (NULL: nowhere) */
  const pick_node *target;  /* the node the container itself reached */
  lua_Integer members;
  int object;
} frame;

/* Walks the document at w->p once, checking it against the grammar, with
 * an explicit stack (no recursion); returns 0, or -1 when it is malformed. */
static int walk_document(walk *w) {
  frame stack[PICK_MAX_DEPTH];
  int depth = 0;
  const pick_node *cur = &w->pk->nodes[0];  /* where the next value is */
  found f;
value:
  skip_ws(w);
  if (w->p >= w->end) return -1;
  f.s = w->p;
  f.len = 0;
  f.escaped = 0;
  switch (*w->p) {
    case '{': case '[': {
      if (depth == PICK_MAX_DEPTH) return -1;
      frame *fr = &stack[depth++];
      fr->object = *w->p == '{';
      fr->node = cur && cur->child ? cur : NULL;
      fr->target = cur;
      fr->members = 0;
      w->p++;
      skip_ws(w);
      if (w->p < w->end && *w->p == (fr->object ? '}' : ']')) {
        w->p++;
        goto close;
      }
      if (fr->object) goto key;
      cur = fr->node ? index_child(w->pk, fr->node, 1) : NULL;
      goto value;
    }
    case '"':
      f.kind = FOUND_STRING;
      if (scan_string(w, &f.s, &f.len, &f.escaped) != 0) return -1;
      break;
    case 't': f.kind = FOUND_TRUE; if (scan_literal(w, "true", 4) != 0) return -1; break;
    case 'f': f.kind = FOUND_FALSE; if (scan_literal(w, "false", 5) != 0) return -1; break;
    case 'n': f.kind = FOUND_NONE; if (scan_literal(w, "null", 4) != 0) return -1; break;
    default:
      f.kind = FOUND_NUMBER;
      if (scan_number(w) != 0) return -1;
      f.len = (size_t)(w->p - f.s);
  }
  if (cur && cur->ends && record(w, cur, &f) != 0) return -1;
next:                                   /* after a member: ",", or the end of its container */
  if (depth == 0) return 0;
  stack[depth - 1].members++;
  skip_ws(w);
  if (w->p >= w->end) return -1;
  if (*w->p == ',') {
    frame *fr = &stack[depth - 1];
    w->p++;
    if (fr->object) goto key;
    cur = fr->node ? index_child(w->pk, fr->node, fr->members + 1) : NULL;
    goto value;
  }
  if (*w->p != (stack[depth - 1].object ? '}' : ']')) return -1;
  w->p++;
close:                                  /* a container ended */
  depth--;
  if (stack[depth].target && stack[depth].target->ends) {
    f.kind = FOUND_CONTAINER;
    f.members = stack[depth].members;
    if (record(w, stack[depth].target, &f) != 0) return -1;
  }
  goto next;
key: {                                  /* an object's key and its colon */
    const unsigned char *k;
    size_t klen;
    int escaped;
    skip_ws(w);
    if (w->p >= w->end || *w->p != '"' || scan_string(w, &k, &klen, &escaped) != 0) return -1;
    cur = stack[depth - 1].node ? key_child(w->pk, stack[depth - 1].node, k, klen, escaped) : NULL;
    skip_ws(w);
    if (w->p >= w->end || *w->p != ':') return -1;
    w->p++;
    goto value;
  }
}

/* [-0, +1, m] the value path i asked for */
static void push_found(lua_State *L, const picker *pk, int i, const found *f) {
  if (pk->counts >> i & 1) {
    if (f->kind == FOUND_CONTAINER) lua_pushinteger(L, f->members);
    else lua_pushnil(L);
    return;
  }
  switch (f->kind) {
    case FOUND_STRING:
      if (!f->escaped) lua_pushlstring(L, (const char *)f->s, f->len);
      else if (!push_string_body(L, f->s, f->s + f->len + 1)) lua_pushnil(L); /* checked already: not reached */
      return;
    case FOUND_NUMBER: {
      char num[64];
      memcpy(num, f->s, f->len);
      num[f->len] = '\0';
      if (lua_stringtonumber(L, num) == 0) lua_pushnil(L);
      return;
    }
    case FOUND_TRUE: lua_pushboolean(L, 1); return;
    case FOUND_FALSE: lua_pushboolean(L, 0); return;
    default: lua_pushnil(L);
  }
}

/* pick(text) -> true, v1, ... | nil [-1, +(1|1+n), m] */
static int pick(lua_State *L) {
  const picker *pk = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  found out[PICK_MAX_PATHS];
  for (int i = 0; i < pk->npaths; i++) out[i].kind = FOUND_NONE;
  walk w = {(const unsigned char *)text, (const unsigned char *)text + len, pk, out};
  int ok = walk_document(&w) == 0;
  if (ok) skip_ws(&w);
  if (!ok || w.p != w.end) { /* not JSON, or something after the document */
    lua_pushnil(L);
    return 1;
  }
  luaL_checkstack(L, pk->npaths + 1, "jsonscan pick");
  lua_pushboolean(L, 1);
  for (int i = 0; i < pk->npaths; i++) push_found(L, pk, i, &out[i]);
  return 1 + pk->npaths;
}

/* [-0, +0, v] adds path string `arg` (path i) to the picker's tree; raises when it is bad */
static void compile_path(lua_State *L, int arg, picker *pk, int i) {
  size_t len;
  const char *s = luaL_checklstring(L, arg, &len);
  luaL_argcheck(L, len < PICK_PATH_BYTES, arg, "path too long");
  char *p = pk->text[i], *end = p + len;
  memcpy(p, s, len + 1);
  if (len > 0 && end[-1] == '#') pk->counts |= (uint32_t)1 << i, *--end = '\0';
  int node = 0, nsegs = 0;
  while (p < end) {
    char *dot = memchr(p, '.', (size_t)(end - p));
    char *stop = dot ? dot : end;
    luaL_argcheck(L, stop > p && (!dot || dot + 1 < end), arg, "empty segment in path");
    luaL_argcheck(L, ++nsegs <= PICK_MAX_SEGS, arg, "path too deep");
    pick_node seg = {p, (size_t)(stop - p), 0, 0, 0, 0};
    int number = 1;
    for (char *c = p; c < stop; c++) {
      if (!is_digit((unsigned char)*c) || seg.index > 100000000) number = 0;
      else seg.index = seg.index * 10 + (*c - '0');
    }
    if (number) {
      luaL_argcheck(L, seg.index > 0, arg, "array positions start at 1");
      seg.name = NULL;
    } else {
      seg.index = 0;
    }
    int c = pk->nodes[node].child;
    while (c && !(seg.name ? pk->nodes[c].name && pk->nodes[c].len == seg.len && memcmp(pk->nodes[c].name, seg.name, seg.len) == 0
                           : !pk->nodes[c].name && pk->nodes[c].index == seg.index))
      c = pk->nodes[c].sibling;
    if (!c) { /* a new node, first among its siblings */
      c = pk->nnodes++;
      seg.sibling = pk->nodes[node].child;
      pk->nodes[c] = seg;
      pk->nodes[node].child = c;
    }
    node = c;
    p = stop + 1;
  }
  pk->nodes[node].ends |= (uint32_t)1 << i;
}

/* jsonscan.picker(path, ...) -> pick [-n, +1, m] */
static int new_picker(lua_State *L) {
  int n = lua_gettop(L);
  luaL_argcheck(L, n >= 1 && n <= PICK_MAX_PATHS, 1, "1 to 16 paths expected");
  picker *pk = lua_newuserdatauv(L, sizeof *pk, 0);
  memset(pk, 0, sizeof *pk);
  pk->npaths = n;
  pk->nnodes = 1;
  for (int i = 0; i < n; i++) compile_path(L, i + 1, pk, i);
  lua_pushcclosure(L, pick, 1);
  return 1;
}

int luaopen_mh_jsonscan(lua_State *L) {
  static const luaL_Reg funcs[] = {{"string_after", string_after}, {"picker", new_picker}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
