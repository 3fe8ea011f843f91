/* mod_jsonscan.c — `require "jsonscan"` in the trusted runtime.
 *
 *   jsonscan.string_after(text, prefix) -> string | nil
 *   jsonscan.picker(path, ...) -> pick;  pick(text) -> true, v1, ... | nil
 *
 * string_after finds `prefix` (which ends with a string's opening quote,
 * such as '"delta":{"content":"') in JSON text and returns that string's
 * value with its escapes decoded; nil when the prefix is absent or the
 * string is not well-formed JSON.
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

/* jsonscan.string_after(text, prefix) [-2, +1, m] */
static int string_after(lua_State *L) {
  size_t len, plen;
  const char *text = luaL_checklstring(L, 1, &len);
  const char *prefix = luaL_checklstring(L, 2, &plen);
  luaL_argcheck(L, plen > 0 && prefix[plen - 1] == '"', 2, "a prefix ending with '\"' expected");
  const char *at = memmem(text, len, prefix, plen);
  if (at == NULL || !push_string_body(L, (const unsigned char *)at + plen, (const unsigned char *)text + len))
    lua_pushnil(L);
  return 1;
}

/* ---- pickers ---- */

#define PICK_MAX_PATHS 16
#define PICK_MAX_SEGS 8
#define PICK_MAX_DEPTH 128
#define PICK_PATH_BYTES 128

typedef struct pick_seg {
  const char *name;     /* an object key (into the path's copy), or NULL */
  size_t len;
  lua_Integer index;    /* an array position (1-based), when name is NULL */
} pick_seg;

typedef struct pick_path {
  pick_seg segs[PICK_MAX_SEGS];
  int nsegs;
  int count;            /* ends in "#": the members of a container */
  char text[PICK_PATH_BYTES];
} pick_path;

typedef struct picker {
  int npaths;
  pick_path paths[PICK_MAX_PATHS];
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
  found *out;
} walk;

static void skip_ws(walk *w) {
  while (w->p < w->end && (*w->p == ' ' || *w->p == '\n' || *w->p == '\r' || *w->p == '\t')) w->p++;
}

/* The string whose opening quote is at w->p: its body and whether it has
 * escapes; -1 when it is malformed or holds a lone surrogate. */
static int scan_string(walk *w, const unsigned char **body, size_t *len, int *escaped) {
  const unsigned char *p = w->p + 1, *end = w->end;
  *body = p;
  *escaped = 0;
  for (;;) {
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) p++;
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

static int scan_value(walk *w, uint32_t live, int depth);

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

/* The paths of `live` whose segment at `depth` names this key or position. */
static uint32_t narrow(const walk *w, uint32_t live, int depth, const unsigned char *key, size_t klen,
                       lua_Integer index) {
  uint32_t child = 0;
  for (int i = 0; live; i++, live >>= 1) {
    if (!(live & 1)) continue;
    const pick_seg *seg = &w->pk->paths[i].segs[depth];
    if (key ? seg->name && seg->len == klen && memcmp(seg->name, key, klen) == 0 : !seg->name && seg->index == index)
      child |= (uint32_t)1 << i;
  }
  return child;
}

/* An object or array at w->p; returns its number of members, or -1. */
static lua_Integer scan_container(walk *w, uint32_t live, int depth) {
  int object = *w->p == '{';
  unsigned char close = object ? '}' : ']';
  lua_Integer n = 0;
  w->p++;
  skip_ws(w);
  if (w->p < w->end && *w->p == close) {
    w->p++;
    return 0;
  }
  for (;;) {
    uint32_t child = 0;
    skip_ws(w);
    if (object) {
      const unsigned char *key;
      size_t klen;
      int escaped;
      if (w->p >= w->end || *w->p != '"' || scan_string(w, &key, &klen, &escaped) != 0) return -1;
      if (live && escaped) { /* "\u006dodel" is "model" */
        char plain[PICK_PATH_BYTES];
        size_t plen = unescape_key(key, klen, plain);
        if (plen != (size_t)-1) child = narrow(w, live, depth, (const unsigned char *)plain, plen, 0);
      } else if (live) {
        child = narrow(w, live, depth, key, klen, 0);
      }
      skip_ws(w);
      if (w->p >= w->end || *w->p != ':') return -1;
      w->p++;
    } else if (live) {
      child = narrow(w, live, depth, NULL, 0, n + 1);
    }
    if (scan_value(w, child, depth + 1) != 0) return -1;
    n++;
    skip_ws(w);
    if (w->p >= w->end) return -1;
    if (*w->p == ',') {
      w->p++;
      continue;
    }
    if (*w->p != close) return -1;
    w->p++;
    return n;
  }
}

/* The value at w->p, which the paths in `live` have reached (their first
 * `depth` segments matched); records it for those that end here. */
static int scan_value(walk *w, uint32_t live, int depth) {
  uint32_t here = 0, deeper = 0;
  for (int i = 0; live >> i; i++)
    if (live >> i & 1) {
      if (w->pk->paths[i].nsegs == depth) here |= (uint32_t)1 << i;
      else deeper |= (uint32_t)1 << i;
    }
  if (depth > PICK_MAX_DEPTH) return -1;
  skip_ws(w);
  if (w->p >= w->end) return -1;
  found f = {FOUND_NONE, w->p, 0, 0, 0};
  switch (*w->p) {
    case '{': case '[':
      f.kind = FOUND_CONTAINER;
      if ((f.members = scan_container(w, deeper, depth)) < 0) return -1;
      break;
    case '"':
      f.kind = FOUND_STRING;
      if (scan_string(w, &f.s, &f.len, &f.escaped) != 0) return -1;
      break;
    case 't': f.kind = FOUND_TRUE; if (scan_literal(w, "true", 4) != 0) return -1; break;
    case 'f': f.kind = FOUND_FALSE; if (scan_literal(w, "false", 5) != 0) return -1; break;
    case 'n': if (scan_literal(w, "null", 4) != 0) return -1; break;
    default:
      f.kind = FOUND_NUMBER;
      if (scan_number(w) != 0) return -1;
      f.len = (size_t)(w->p - f.s);
      if (here && f.len > 63) return -1;
  }
  for (int i = 0; here >> i; i++)
    if (here >> i & 1) w->out[i] = f;
  return 0;
}

/* [-0, +1, m] the value a path asked for */
static void push_found(lua_State *L, const pick_path *path, const found *f) {
  if (path->count) {
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
  memset(out, 0, sizeof out);
  walk w = {(const unsigned char *)text, (const unsigned char *)text + len, pk, out};
  int ok = scan_value(&w, ((uint32_t)1 << pk->npaths) - 1, 0) == 0;
  if (ok) skip_ws(&w);
  if (!ok || w.p != w.end) { /* not JSON, or something after the document */
    lua_pushnil(L);
    return 1;
  }
  luaL_checkstack(L, pk->npaths + 1, "jsonscan pick");
  lua_pushboolean(L, 1);
  for (int i = 0; i < pk->npaths; i++) push_found(L, &pk->paths[i], &out[i]);
  return 1 + pk->npaths;
}

/* [-0, +0, v] compiles path string `arg` into *path; raises when it is bad */
static void compile_path(lua_State *L, int arg, pick_path *path) {
  size_t len;
  const char *s = luaL_checklstring(L, arg, &len);
  luaL_argcheck(L, len < PICK_PATH_BYTES, arg, "path too long");
  memcpy(path->text, s, len + 1);
  char *p = path->text, *end = path->text + len;
  if (len > 0 && end[-1] == '#') path->count = 1, *--end = '\0';
  path->nsegs = 0;
  if (p == end) return;
  for (;;) {
    char *dot = memchr(p, '.', (size_t)(end - p));
    char *stop = dot ? dot : end;
    luaL_argcheck(L, stop > p, arg, "empty segment in path");
    luaL_argcheck(L, path->nsegs < PICK_MAX_SEGS, arg, "path too deep");
    pick_seg *seg = &path->segs[path->nsegs++];
    int number = 1;
    lua_Integer index = 0;
    for (char *c = p; c < stop; c++) {
      if (!is_digit((unsigned char)*c) || index > 100000000) number = 0;
      else index = index * 10 + (*c - '0');
    }
    if (number) {
      luaL_argcheck(L, index > 0, arg, "array positions start at 1");
      seg->name = NULL;
      seg->index = index;
    } else {
      seg->name = p;
      seg->len = (size_t)(stop - p);
    }
    if (!dot) return;
    p = dot + 1;
  }
}

/* jsonscan.picker(path, ...) -> pick [-n, +1, m] */
static int new_picker(lua_State *L) {
  int n = lua_gettop(L);
  luaL_argcheck(L, n >= 1 && n <= PICK_MAX_PATHS, 1, "1 to 16 paths expected");
  picker *pk = lua_newuserdatauv(L, sizeof *pk, 0);
  memset(pk, 0, sizeof *pk);
  pk->npaths = n;
  for (int i = 0; i < n; i++) compile_path(L, i + 1, &pk->paths[i]);
  lua_pushcclosure(L, pick, 1);
  return 1;
}

int luaopen_mh_jsonscan(lua_State *L) {
  static const luaL_Reg funcs[] = {{"string_after", string_after}, {"picker", new_picker}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
