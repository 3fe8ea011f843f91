/* mod_workspace.c — `require "workspace"`: read, write, list, search and
 * remove files inside one directory, for the trusted runtime only (natives.c
 * marks it trusted-only). It backs the agents' `files` tool, so confinement
 * is the point: a path that leaves the root — `..`, an absolute path, a
 * symbolic link pointing outside, also one swapped in while we work — is
 * refused by the kernel, not by string checks that a race could defeat.
 *
 *   workspace.open(root [, {create = false, max_file = 4 MiB,
 *                           max_total = 64 MiB}])  -- ws | nil, err
 *   ws:read(path)                        -- text | nil, err
 *   ws:write(path, text [, {append = false, mkdir = true}])  -- true | nil, err
 *   ws:list([path [, {recursive = false, max = 1000}]])
 *                                        -- {{name=, type=, size=}, ...}, cut | nil, err
 *   ws:search(text [, {path = ".", max = 100}])
 *                                        -- {{path=, line=, text=}, ...}, cut | nil, err
 *   ws:remove(path)                      -- true | nil, err (a file, a link or an empty dir)
 *   ws:root()                            -- the root as given to open
 *   ws:close()                           -- also __gc and __close; idempotent
 *
 * How paths resolve. The root is opened once; every path is resolved relative
 * to that descriptor with openat2(2) and RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS: the kernel refuses any step — `..`, an absolute or
 * relative symbolic link, a /proc magic link — that would leave the root, at
 * the moment of the open. Links that stay inside are followed (reading
 * `README` where README -> docs/README.md works). Where openat2 is missing
 * (ENOSYS or EPERM from a seccomp filter, kernels before 5.6), paths are
 * walked one component at a time with openat(O_NOFOLLOW), and every symbolic
 * link is refused, also one that stays inside. Never realpath-then-open.
 *
 * Writes act on the last name inside its parent directory (itself resolved as
 * above): a write replaces the file through a temporary file and renameat(2)
 * (never through a link: a link there is refused), an append opens with
 * O_NOFOLLOW, a remove unlinks the name (a link is removed, not its target).
 * Listing and searching open each entry relative to its directory with
 * O_NOFOLLOW and never descend into links. Reads open with O_NONBLOCK and
 * check fstat before reading, so a fifo or a device is refused without
 * blocking.
 *
 * Paths are checked before any system call: non-empty, no zero byte, shorter
 * than 4096 bytes, relative, no `..` component. Failures are values, one
 * sentence each, starting with "files:" (the tool's name); misuse (argument
 * types, a closed workspace) raises.
 *
 * The calls are synchronous: local files, capped sizes (max_file per file
 * read or written, max_total for all data written through one workspace
 * object; a search reads at most 10,000 files and 64 MiB). Directory walks
 * run in plain C with no Lua call while a descriptor is open; the results are
 * then pushed by a function called through lua_pcall, and its caller frees
 * them whatever happened, so a memory error never leaks a descriptor or a
 * buffer. */
#include "mod_workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <linux/openat2.h>

#include <lauxlib.h>

#include "stack_check.h"

#ifndef SYS_openat2
#define SYS_openat2 437 /* the unified number (every architecture but alpha) */
#endif

static const char WS_MT = 0; /* registry: metatable of workspace userdata */

#define PATH_LIMIT 4096                 /* script paths are shorter than this */
#define DEFAULT_MAX_FILE (4 << 20)
#define DEFAULT_MAX_TOTAL (64 << 20)
#define LIST_MAX_DEFAULT 1000
#define LIST_MAX_LIMIT 100000
#define SEARCH_MAX_DEFAULT 100
#define SEARCH_MAX_LIMIT 10000
#define SEARCH_MAX_FILES 10000          /* files read by one search */
#define SEARCH_MAX_BYTES (64 << 20)     /* bytes read by one search */
#define DIR_MAX_ENTRIES 100000          /* names read from one directory */
#define MAX_DEPTH 64                    /* directory levels a walk descends */
#define LINE_TEXT_MAX 400               /* bytes of a matching line returned */
#define SHOWN_MAX 200                   /* bytes of a path quoted in a message */
#define RESOLVE_FLAGS (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)

typedef struct workspace {
  int dirfd;            /* the root; -1 once closed (ws_release is its one release point) */
  int fallback;         /* resolve component by component (no openat2) */
  lua_Integer max_file, max_total, written;
} workspace;

/* ---- which resolver ---- */

static int force_fallback = -1;  /* -1: not decided (read MOONHIVE_NO_OPENAT2 once) */
static int openat2_works = -1;   /* -1: not probed yet */

void mh_workspace_force_fallback(int on) { force_fallback = on ? 1 : 0; }

static int sys_openat2(int dirfd, const char *path, int flags, mode_t mode) {
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t)(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_FLAGS;
  for (int tries = 0;; tries++) {
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    /* EAGAIN: a concurrent rename made the kernel unsure `..` stayed inside */
    if (fd >= 0 || (errno != EAGAIN && errno != EINTR) || tries == 16) return (int)fd;
  }
}

/* Should a workspace whose root is dirfd use the component walk? */
static int choose_fallback(int dirfd) {
  if (force_fallback < 0) {
    const char *env = getenv("MOONHIVE_NO_OPENAT2");
    force_fallback = env != NULL && strcmp(env, "1") == 0;
  }
  if (force_fallback) return 1;
  if (openat2_works < 0) {
    int fd = sys_openat2(dirfd, ".", O_RDONLY | O_DIRECTORY, 0);
    if (fd >= 0) {
      close(fd);
      openat2_works = 1;
    } else if (errno == ENOSYS || errno == EPERM) {
      openat2_works = 0;
    } else {
      return 0; /* undecided: try openat2 per call, which falls back on ENOSYS */
    }
  }
  return !openat2_works;
}

/* ---- paths ---- */

enum { /* failures that are not an errno (errno values are positive) */
  ERR_EMPTY = -1, ERR_NUL = -2, ERR_LEAVES = -3, ERR_NOT_REGULAR = -4, ERR_TOO_BIG = -5,
  ERR_WRITE_TOO_BIG = -6, ERR_TOTAL = -7, ERR_NOT_DIR = -8, ERR_WRITE_LINK = -9,
  ERR_ROOT = -10, ERR_SLASH = -11, ERR_NOT_EMPTY = -12, ERR_FALLBACK_LINK = -13,
};

typedef struct wpath {
  char norm[PATH_LIMIT];  /* the components joined by '/'; "" is the root */
  size_t len;             /* strlen(norm) */
  size_t last;            /* offset of the last component in norm */
  int slash;              /* the path as given ends with '/' */
} wpath;

/* Checks a script's path and normalizes it (drops empty and "." components).
 * Returns 0 or an error kind; makes no system call. */
static int path_parse(const char *s, size_t len, wpath *p) {
  if (len == 0) return ERR_EMPTY;
  if (memchr(s, '\0', len) != NULL) return ERR_NUL;
  if (len >= PATH_LIMIT) return ENAMETOOLONG;
  if (s[0] == '/') return ERR_LEAVES;
  p->len = 0;
  p->last = 0;
  p->slash = s[len - 1] == '/';
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && s[j] != '/') j++;
    size_t n = j - i;
    if (n == 2 && s[i] == '.' && s[i + 1] == '.') return ERR_LEAVES;
    if (n > 0 && !(n == 1 && s[i] == '.')) {
      if (n > NAME_MAX) return ENAMETOOLONG;
      if (p->len > 0) p->norm[p->len++] = '/';
      p->last = p->len;
      memcpy(p->norm + p->len, s + i, n);
      p->len += n;
    }
    i = j + 1;
  }
  p->norm[p->len] = '\0';
  return 0;
}

/* The parent of p's last component, as a normalized path ("" for the root). */
static void path_parent(const wpath *p, char *out) {
  size_t n = p->last > 0 ? p->last - 1 : 0;
  memcpy(out, p->norm, n);
  out[n] = '\0';
}

/* ---- resolving beneath the root ---- */

/* The fallback: walks norm from dirfd one component at a time. Each step
 * opens the name with O_PATH | O_NOFOLLOW and looks at what it got (fstat on
 * that descriptor, so no second lookup can be raced): a symbolic link fails
 * with ERR_FALLBACK_LINK in *err, anything but a directory before the last
 * component with ENOTDIR. The last component is then opened with flags: a
 * directory through its O_PATH descriptor (".": the same inode), anything
 * else by name with O_NOFOLLOW. fd, or -1. */
static int walk_open(int dirfd, const char *norm, int flags, mode_t mode, int *err) {
  int cur = dirfd;
  for (const char *p = *norm ? norm : ".";;) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    char name[NAME_MAX + 1];
    memcpy(name, p, n); /* path_parse capped each component at NAME_MAX */
    name[n] = '\0';
    int e = 0, fd = -1;
    struct stat st;
    int pfd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (pfd < 0 || fstat(pfd, &st) != 0) e = errno;
    else if (S_ISLNK(st.st_mode)) e = ERR_FALLBACK_LINK;
    else if (!S_ISDIR(st.st_mode) && (slash != NULL || (flags & O_DIRECTORY))) e = ENOTDIR;
    else if (slash == NULL) {
      fd = S_ISDIR(st.st_mode) ? openat(pfd, ".", flags | O_CLOEXEC, mode)
                               : openat(cur, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
      if (fd < 0) e = errno == ELOOP ? ERR_FALLBACK_LINK : errno;
    }
    if (cur != dirfd) close(cur); /* each level's O_PATH descriptor: released here... */
    if (e != 0 || slash == NULL) {
      if (pfd >= 0) close(pfd);   /* ...or here, when the walk ends at it */
      if (e != 0) *err = e;
      return fd;
    }
    cur = pfd;
    p = slash + 1;
  }
}

/* Opens norm ("" = the root) beneath ws's root. fd, or -1 with the failure in
 * *err (an errno value or ERR_FALLBACK_LINK). Links inside are followed with
 * openat2; the fallback refuses them all. */
static int ws_open(workspace *ws, const char *norm, int flags, mode_t mode, int *err) {
  if (!ws->fallback) {
    int fd = sys_openat2(ws->dirfd, *norm ? norm : ".", flags, mode);
    if (fd >= 0) return fd;
    if (errno != ENOSYS) {
      *err = errno;
      return -1;
    }
    ws->fallback = 1;
  }
  return walk_open(ws->dirfd, norm, flags, mode, err);
}

/* Opens the directory norm, creating missing directories (mode 0777 less the
 * umask) one level at a time when mkdirs: each level is resolved again from
 * the root after it is made, so a link swapped in meanwhile is caught. */
static int open_dir(workspace *ws, const char *norm, int mkdirs, int *err) {
  int fd = ws_open(ws, norm, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0, err);
  if (fd >= 0 || !mkdirs || *err != ENOENT) return fd;
  char prefix[PATH_LIMIT];
  int cur = ws_open(ws, "", O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0, err);
  for (const char *p = norm; cur >= 0;) {
    const char *slash = strchr(p, '/');
    size_t end = slash ? (size_t)(slash - norm) : strlen(norm);
    memcpy(prefix, norm, end);
    prefix[end] = '\0';
    const char *name = prefix + (p - norm);
    fd = ws_open(ws, prefix, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0, err);
    if (fd < 0 && *err == ENOENT) {
      if (mkdirat(cur, name, 0777) != 0 && errno != EEXIST) *err = errno;
      else fd = ws_open(ws, prefix, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0, err);
    }
    close(cur); /* the one release point of each level but the last */
    cur = fd;
    if (slash == NULL) break;
    p = slash + 1;
  }
  return cur;
}

/* ---- the workspace userdata ---- */

/* [-0, +0, v] the workspace at idx (raises if it is not one) */
static workspace *to_ws(lua_State *L, int idx) {
  workspace *ws = lua_touserdata(L, idx);
  if (ws && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &WS_MT);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return ws;
  }
  luaL_typeerror(L, idx, "workspace");
  return NULL;
}

/* [-0, +0, v] the open workspace at idx (raises if it is closed) */
static workspace *check_open(lua_State *L, int idx) {
  workspace *ws = to_ws(L, idx);
  if (ws->dirfd < 0) luaL_error(L, "workspace is closed");
  return ws;
}

/* The one release point of the root descriptor. */
static void ws_release(workspace *ws) {
  if (ws->dirfd >= 0) close(ws->dirfd);
  ws->dirfd = -1;
}

/* ws:close() [-1, +1, v]; also __gc and __close (idempotent) */
static int ws_close(lua_State *L) {
  ws_release(to_ws(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:root() [-1, +1, v] */
static int ws_root(lua_State *L) {
  check_open(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

/* ---- errors as values ---- */

/* [-0, +2, m] nil, one sentence for failure kind (errno or ERR_*) on path
 * (the script's text); verb names the operation for unexpected errno values */
static int push_failure(lua_State *L, workspace *ws, int kind, const char *path, size_t len,
                        const char *verb) {
  char shown[SHOWN_MAX + 4];
  if (len > SHOWN_MAX) snprintf(shown, sizeof shown, "%.*s...", SHOWN_MAX, path);
  else snprintf(shown, sizeof shown, "%s", path);
  lua_pushnil(L);
  switch (kind) {
  case ERR_EMPTY: lua_pushliteral(L, "files: the path is empty"); break;
  case ERR_NUL: lua_pushliteral(L, "files: the path contains a zero byte"); break;
  case ERR_LEAVES: case EXDEV: lua_pushfstring(L, "files: path '%s' leaves the workspace", shown); break;
  case ELOOP: lua_pushfstring(L, "files: path '%s' goes through a symbolic link that cannot be followed", shown); break;
  case ERR_FALLBACK_LINK:
    lua_pushfstring(L, "files: path '%s' goes through a symbolic link, which this system does not follow", shown);
    break;
  case ENOENT: lua_pushfstring(L, "files: '%s' does not exist", shown); break;
  case ENOTDIR: lua_pushfstring(L, "files: a parent of '%s' is not a directory", shown); break;
  case ERR_NOT_DIR: lua_pushfstring(L, "files: '%s' is not a directory", shown); break;
  case EISDIR: lua_pushfstring(L, "files: '%s' is a directory", shown); break;
  case ERR_NOT_REGULAR: case ENXIO: lua_pushfstring(L, "files: '%s' is not a regular file", shown); break;
  case ERR_TOO_BIG:
    lua_pushfstring(L, "files: '%s' is larger than the limit of %I bytes", shown, ws->max_file);
    break;
  case ERR_WRITE_TOO_BIG:
    lua_pushfstring(L, "files: '%s' would be larger than the limit of %I bytes", shown, ws->max_file);
    break;
  case ERR_TOTAL:
    lua_pushfstring(L, "files: writing '%s' would exceed the workspace's limit of %I bytes written",
                    shown, ws->max_total);
    break;
  case ERR_WRITE_LINK: lua_pushfstring(L, "files: '%s' is a symbolic link, and writes do not follow links", shown); break;
  case ERR_ROOT: lua_pushfstring(L, "files: path '%s' names the workspace root itself, not a file", shown); break;
  case ERR_SLASH: lua_pushfstring(L, "files: path '%s' ends with a slash, so it cannot name a file", shown); break;
  case ERR_NOT_EMPTY: case ENOTEMPTY: lua_pushfstring(L, "files: directory '%s' is not empty", shown); break;
  case ENAMETOOLONG: lua_pushfstring(L, "files: path '%s' is too long", shown); break;
  case EACCES: case EPERM: lua_pushfstring(L, "files: permission denied for '%s'", shown); break;
  case ENOSPC: case EDQUOT: lua_pushfstring(L, "files: no space left on the disk for '%s'", shown); break;
  default: lua_pushfstring(L, "files: cannot %s '%s': %s", verb, shown, strerror(kind)); break;
  }
  return 2;
}

/* ---- options, read as plain fields ---- */

/* [-0, +0, v] opts[name] as a boolean (def when nil); raises on other types */
static int opt_bool(lua_State *L, int opts, const char *name, int def) {
  if (opts == 0) return def;
  lua_pushstring(L, name);
  int t = lua_rawget(L, opts);
  int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) luaL_error(L, "option '%s': a boolean expected", name);
  return v;
}

/* [-0, +0, v] opts[name] as an integer in [lo, hi] (def when nil); raises otherwise */
static lua_Integer opt_int(lua_State *L, int opts, const char *name, lua_Integer def, lua_Integer lo,
                           lua_Integer hi) {
  if (opts == 0) return def;
  lua_pushstring(L, name);
  int t = lua_rawget(L, opts);
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (t == LUA_TNIL) return def;
  if (t != LUA_TNUMBER || !isint || v < lo || v > hi)
    luaL_error(L, "option '%s': an integer from %I to %I expected", name, lo, hi);
  return v;
}

/* [-0, +0, v] the options table at idx: its index, or 0 when none/nil */
static int opt_table(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  return idx;
}

/* ---- read ---- */

typedef struct read_op {
  workspace *ws;
  const wpath *path;
  int fd;        /* -1, or open: closed by ws_read, its one release point */
  int failure;   /* set when read_body returns nil, err */
} read_op;

/* [-1, +(0|1), m] called through lua_pcall: 1 = read_op*. The text, or
 * nothing and op->failure set. */
static int read_body(lua_State *L) {
  read_op *op = lua_touserdata(L, 1);
  lua_settop(L, 0);
  op->fd = ws_open(op->ws, op->path->norm, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, &op->failure);
  if (op->fd < 0) return 0;
  struct stat st;
  if (fstat(op->fd, &st) != 0) op->failure = errno;
  else if (S_ISDIR(st.st_mode)) op->failure = EISDIR;
  else if (!S_ISREG(st.st_mode)) op->failure = ERR_NOT_REGULAR;
  else if (st.st_size > op->ws->max_file) op->failure = ERR_TOO_BIG;
  if (op->failure) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer total = 0;
  for (;;) {
    lua_Integer want = st.st_size - total + 1; /* the file may have grown since fstat */
    if (want < 4096) want = 4096;
    if (want > (1 << 20)) want = 1 << 20;
    char *p = luaL_prepbuffsize(&b, (size_t)want);
    ssize_t n = read(op->fd, p, (size_t)want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      op->failure = errno;
      return 0;
    }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
    total += n;
    if (total > op->ws->max_file) {
      op->failure = ERR_TOO_BIG;
      return 0;
    }
  }
  luaL_pushresult(&b);
  return 1;
}

/* ws:read(path) [-(1|2), +(1|2), e] */
static int ws_read(lua_State *L) {
  workspace *ws = check_open(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  wpath p;
  int bad = path_parse(s, len, &p);
  if (bad) return push_failure(L, ws, bad, s, len, "read");
  read_op op = {ws, &p, -1, 0};
  lua_pushcfunction(L, read_body);
  lua_pushlightuserdata(L, &op);
  int status = lua_pcall(L, 1, 1, 0);            /* ... text|nil|err */
  if (op.fd >= 0) close(op.fd);
  if (status != LUA_OK) return lua_error(L);
  if (op.failure) return push_failure(L, ws, op.failure, s, len, "read");
  return 1;
}

/* ---- write ---- */

static int write_all(int fd, const char *text, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, text, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    text += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Replaces name in parent with text: a temporary file beside it, then
 * renameat. An existing file keeps its permission bits. 0 or a failure kind. */
static int replace_file(int parent, const char *name, const char *text, size_t len) {
  struct stat st;
  int exists = fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT) return errno;
  if (exists && S_ISLNK(st.st_mode)) return ERR_WRITE_LINK;
  if (exists && S_ISDIR(st.st_mode)) return EISDIR;
  if (exists && !S_ISREG(st.st_mode)) return ERR_NOT_REGULAR;
  static unsigned counter;
  char tmp[64];
  int fd = -1;
  for (int tries = 0; fd < 0 && tries < 16; tries++) {
    snprintf(tmp, sizeof tmp, ".moonhive-write-%ld-%u", (long)getpid(), ++counter);
    fd = openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) return errno;
  }
  if (fd < 0) return EEXIST;
  int err = write_all(fd, text, len);
  if (err == 0 && exists) fchmod(fd, st.st_mode & 07777); /* best effort */
  if (close(fd) != 0 && err == 0) err = errno;           /* the temporary's one release point */
  /* renameat replaces a link swapped in since fstatat, never writes through it */
  if (err == 0 && renameat(parent, tmp, parent, name) != 0) err = errno;
  if (err != 0) unlinkat(parent, tmp, 0);
  return err;
}

/* Appends text to name in parent, creating it; refuses links and anything
 * but a regular file, and a result larger than max_file. 0 or a failure kind. */
static int append_file(int parent, const char *name, const char *text, size_t len, lua_Integer max_file) {
  int fd = openat(parent, name, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0666);
  if (fd < 0) return errno == ELOOP ? ERR_WRITE_LINK : errno;
  struct stat st;
  int err = 0;
  if (fstat(fd, &st) != 0) err = errno;
  else if (!S_ISREG(st.st_mode)) err = ERR_NOT_REGULAR;
  else if ((lua_Integer)len > max_file - st.st_size) err = ERR_WRITE_TOO_BIG;
  else err = write_all(fd, text, len);
  if (close(fd) != 0 && err == 0) err = errno;  /* the one release point */
  return err;
}

/* ws:write(path, text [, opts]) [-(2|3|4), +(1|2), e] */
static int ws_write(lua_State *L) {
  workspace *ws = check_open(L, 1);
  size_t len, tlen;
  const char *s = luaL_checklstring(L, 2, &len);
  const char *text = luaL_checklstring(L, 3, &tlen);
  int opts = opt_table(L, 4);
  int append = opt_bool(L, opts, "append", 0);
  int mkdirs = opt_bool(L, opts, "mkdir", 1);
  wpath p;
  int err = path_parse(s, len, &p);
  if (err == 0 && p.len == 0) err = ERR_ROOT;
  else if (err == 0 && p.slash) err = ERR_SLASH;
  else if (err == 0 && (lua_Integer)tlen > ws->max_file) err = ERR_WRITE_TOO_BIG;
  else if (err == 0 && (lua_Integer)tlen > ws->max_total - ws->written) err = ERR_TOTAL;
  if (err == 0) {
    char dir[PATH_LIMIT];
    path_parent(&p, dir);
    int parent = open_dir(ws, dir, mkdirs, &err);
    if (parent >= 0) {
      const char *name = p.norm + p.last;
      err = append ? append_file(parent, name, text, tlen, ws->max_file)
                   : replace_file(parent, name, text, tlen);
      close(parent); /* the one release point */
      if (err == 0) ws->written += (lua_Integer)tlen;
    }
  }
  if (err != 0) return push_failure(L, ws, err, s, len, "write");
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- remove ---- */

/* ws:remove(path) [-2, +(1|2), e] */
static int ws_remove(lua_State *L) {
  workspace *ws = check_open(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  wpath p;
  int err = path_parse(s, len, &p);
  if (err == 0 && p.len == 0) err = ERR_ROOT;
  if (err == 0) {
    char dir[PATH_LIMIT];
    path_parent(&p, dir);
    int parent = open_dir(ws, dir, 0, &err);
    if (parent >= 0) {
      const char *name = p.norm + p.last;
      int r = unlinkat(parent, name, p.slash ? AT_REMOVEDIR : 0);
      if (r != 0 && errno == EISDIR) r = unlinkat(parent, name, AT_REMOVEDIR);
      if (r != 0) err = errno == EEXIST ? ERR_NOT_EMPTY : (errno == ENOTDIR && p.slash) ? ERR_NOT_DIR : errno;
      close(parent); /* the one release point */
    }
  }
  if (err != 0) return push_failure(L, ws, err, s, len, "remove");
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- walking directories (plain C: no Lua call while a descriptor is open) ---- */

typedef struct entry { char *name; int type; int64_t size; } entry;
typedef struct match { char *path; int64_t line; char *text; size_t tlen; } match;
enum { T_FILE, T_DIR, T_LINK, T_OTHER };

typedef struct walk walk;
/* Called for each entry; dirfd is its directory, rel its path for results. */
typedef void (*visit_fn)(walk *w, int dirfd, const char *name, const struct stat *st, const char *rel);

struct walk {
  workspace *ws;
  visit_fn visit;
  int recursive;
  size_t max;           /* results */
  int stop, cut, err;   /* stop now; results were cut short; errno (ENOMEM) */
  entry *entries;       /* list */
  match *matches;       /* search */
  size_t n, cap;
  const char *pat;      /* search */
  size_t patlen;
  char *buf;            /* search: one file's bytes */
  size_t bufcap;
  size_t files, bytes;
  char rel[PATH_LIMIT];
};

/* The one release point of everything a walk allocated. */
static void walk_release(walk *w) {
  for (size_t i = 0; i < w->n; i++) {
    if (w->entries) free(w->entries[i].name);
    if (w->matches) {
      free(w->matches[i].path);
      free(w->matches[i].text);
    }
  }
  free(w->entries);
  free(w->matches);
  free(w->buf);
  w->entries = NULL;
  w->matches = NULL;
  w->buf = NULL;
  w->n = w->cap = 0;
}

/* Room for one more result in *vec (of size elem); 0, or -1 with w->err set. */
static int walk_reserve(walk *w, void **vec, size_t elem) {
  if (w->n < w->cap) return 0;
  size_t cap = w->cap ? w->cap * 2 : 16;
  void *v = realloc(*vec, cap * elem);
  if (v == NULL) {
    w->err = ENOMEM;
    w->stop = 1;
    return -1;
  }
  *vec = v;
  w->cap = cap;
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks the directory open as fd (taken over: closedir is its release point,
 * or close when fdopendir fails). Entries are visited sorted by name, each
 * directory's contents right after it; links are never followed. w->rel holds
 * the directory's path for results, of length rlen. */
static void walk_dir(walk *w, int fd, size_t rlen, int depth) {
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (n == DIR_MAX_ENTRIES) {
      w->cut = 1;
      break;
    }
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      char **v = realloc(names, ncap * sizeof *v);
      if (v == NULL) break;
      names = v;
      cap = ncap;
    }
    if ((names[n] = strdup(de->d_name)) == NULL) break;
    n++;
  }
  if (de != NULL && n < DIR_MAX_ENTRIES) { /* stopped by a failed allocation */
    w->err = ENOMEM;
    w->stop = 1;
  }
  if (n > 1) qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n && !w->stop; i++) {
    size_t nlen = strlen(names[i]);
    size_t sep = rlen > 0;
    if (rlen + sep + nlen >= PATH_LIMIT) {
      w->cut = 1;
      continue;
    }
    if (sep) w->rel[rlen] = '/';
    memcpy(w->rel + rlen + sep, names[i], nlen + 1);
    struct stat st;
    if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) continue; /* gone meanwhile */
    w->visit(w, dirfd(d), names[i], &st, w->rel);
    if (S_ISDIR(st.st_mode) && w->recursive && !w->stop) {
      if (depth >= MAX_DEPTH) {
        w->cut = 1;
        continue;
      }
      int child = openat(dirfd(d), names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
      if (child >= 0) walk_dir(w, child, rlen + sep + nlen, depth + 1);
    }
  }
  w->rel[rlen] = '\0';
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  closedir(d);
}

/* Opens the start of a walk. fd with *st filled, or -1 with *err set. */
static int walk_start(walk *w, const wpath *p, struct stat *st, int *err) {
  int fd = ws_open(w->ws, p->norm, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, err);
  if (fd < 0) return -1;
  if (fstat(fd, st) != 0) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- list ---- */

static void list_visit(walk *w, int dirfd, const char *name, const struct stat *st, const char *rel) {
  (void)dirfd, (void)name;
  if (w->n == w->max) {
    w->cut = 1;
    w->stop = 1;
    return;
  }
  if (walk_reserve(w, (void **)&w->entries, sizeof *w->entries) != 0) return;
  entry *e = &w->entries[w->n];
  if ((e->name = strdup(rel)) == NULL) {
    w->err = ENOMEM;
    w->stop = 1;
    return;
  }
  e->type = S_ISREG(st->st_mode) ? T_FILE : S_ISDIR(st->st_mode) ? T_DIR : S_ISLNK(st->st_mode) ? T_LINK : T_OTHER;
  e->size = (int64_t)st->st_size;
  w->n++;
}

/* [-1, +2, m] called through lua_pcall: 1 = walk*; pushes the entries and
 * whether they were cut short */
static int push_entries(lua_State *L) {
  static const char *const types[] = {"file", "dir", "link", "other"};
  walk *w = lua_touserdata(L, 1);
  lua_createtable(L, (int)w->n, 0);                       /* w list */
  for (size_t i = 0; i < w->n; i++) {
    lua_createtable(L, 0, 3);                             /* w list e */
    lua_pushstring(L, w->entries[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, types[w->entries[i].type]);
    lua_setfield(L, -2, "type");
    if (w->entries[i].type == T_FILE) {
      lua_pushinteger(L, (lua_Integer)w->entries[i].size);
      lua_setfield(L, -2, "size");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);               /* w list */
  }
  lua_pushboolean(L, w->cut);                             /* w list cut */
  return 2;
}

/* [-0, +2, e] pushes a walk's results through fn (protected), releases the
 * walk, and only then passes on an error */
static int push_walk(lua_State *L, walk *w, lua_CFunction fn) {
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, w);
  int status = lua_pcall(L, 1, 2, 0);
  walk_release(w);
  if (status != LUA_OK) return lua_error(L);
  return 2;
}

/* ws:list([path [, opts]]) [-(1|2|3), +2, e] */
static int ws_list(lua_State *L) {
  workspace *ws = check_open(L, 1);
  size_t len = 1;
  const char *s = lua_isnoneornil(L, 2) ? "." : luaL_checklstring(L, 2, &len);
  int opts = opt_table(L, 3);
  walk w;
  memset(&w, 0, sizeof w);
  w.ws = ws;
  w.visit = list_visit;
  w.recursive = opt_bool(L, opts, "recursive", 0);
  w.max = (size_t)opt_int(L, opts, "max", LIST_MAX_DEFAULT, 1, LIST_MAX_LIMIT);
  wpath p;
  int err = path_parse(s, len, &p);
  if (err != 0) return push_failure(L, ws, err, s, len, "list");
  struct stat st;
  int fd = walk_start(&w, &p, &st, &err);
  if (fd < 0) return push_failure(L, ws, err, s, len, "list");
  if (!S_ISDIR(st.st_mode)) {
    close(fd); /* not a directory: walk_dir would have taken it over */
    return push_failure(L, ws, ERR_NOT_DIR, s, len, "list");
  }
  walk_dir(&w, fd, 0, 0);
  if (w.err != 0) {
    walk_release(&w);
    return push_failure(L, ws, w.err, s, len, "list");
  }
  return push_walk(L, &w, push_entries);
}

/* ---- search ---- */

/* Records the lines of the open file fd (its path rel) that contain w->pat.
 * Skips files larger than max_file and files with a zero byte. */
static void search_fd(walk *w, int fd, const char *rel) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > w->ws->max_file) return;
  if (w->files >= SEARCH_MAX_FILES || w->bytes + (size_t)st.st_size > SEARCH_MAX_BYTES) {
    w->cut = 1;
    w->stop = 1;
    return;
  }
  size_t want = (size_t)st.st_size + 1;
  if (w->bufcap < want) {
    char *b = realloc(w->buf, want);
    if (b == NULL) {
      w->err = ENOMEM;
      w->stop = 1;
      return;
    }
    w->buf = b;
    w->bufcap = want;
  }
  size_t size = 0;
  while (size < want) { /* one byte more than fstat said: a file that grew is skipped */
    ssize_t n = read(fd, w->buf + size, want - size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size += (size_t)n;
  }
  w->files++;
  w->bytes += size;
  if (size == want || memchr(w->buf, '\0', size) != NULL) return; /* grew, or binary */
  int64_t line = 0;
  for (size_t at = 0; at < size && !w->stop;) {
    const char *start = w->buf + at;
    const char *nl = memchr(start, '\n', size - at);
    size_t llen = nl ? (size_t)(nl - start) : size - at;
    at += llen + 1;
    line++;
    if (memmem(start, llen, w->pat, w->patlen) == NULL) continue;
    if (w->n == w->max) {
      w->cut = 1;
      w->stop = 1;
      return;
    }
    if (walk_reserve(w, (void **)&w->matches, sizeof *w->matches) != 0) return;
    if (llen > 0 && start[llen - 1] == '\r') llen--;
    if (llen > LINE_TEXT_MAX) { /* cut at a UTF-8 character boundary */
      llen = LINE_TEXT_MAX;
      while (llen > 0 && ((unsigned char)start[llen] & 0xC0) == 0x80) llen--;
    }
    match *m = &w->matches[w->n];
    m->path = strdup(rel);
    m->text = malloc(llen + 1);
    if (m->path == NULL || m->text == NULL) {
      free(m->path);
      free(m->text);
      w->err = ENOMEM;
      w->stop = 1;
      return;
    }
    memcpy(m->text, start, llen);
    m->text[llen] = '\0';
    m->tlen = llen;
    m->line = line;
    w->n++;
  }
}

static void search_visit(walk *w, int dirfd, const char *name, const struct stat *st, const char *rel) {
  if (!S_ISREG(st->st_mode) || st->st_size > w->ws->max_file) return;
  int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return; /* replaced by a link or gone meanwhile */
  search_fd(w, fd, rel);
  close(fd); /* the one release point */
}

/* [-1, +2, m] called through lua_pcall: 1 = walk*; pushes the matches and
 * whether they were cut short */
static int push_matches(lua_State *L) {
  walk *w = lua_touserdata(L, 1);
  lua_createtable(L, (int)w->n, 0);                       /* w list */
  for (size_t i = 0; i < w->n; i++) {
    lua_createtable(L, 0, 3);                             /* w list m */
    lua_pushstring(L, w->matches[i].path);
    lua_setfield(L, -2, "path");
    lua_pushinteger(L, (lua_Integer)w->matches[i].line);
    lua_setfield(L, -2, "line");
    lua_pushlstring(L, w->matches[i].text, w->matches[i].tlen);
    lua_setfield(L, -2, "text");
    lua_rawseti(L, -2, (lua_Integer)i + 1);               /* w list */
  }
  lua_pushboolean(L, w->cut);                             /* w list cut */
  return 2;
}

/* ws:search(text [, opts]) [-(2|3), +2, e] */
static int ws_search(lua_State *L) {
  workspace *ws = check_open(L, 1);
  walk w;
  memset(&w, 0, sizeof w);
  w.pat = luaL_checklstring(L, 2, &w.patlen);
  luaL_argcheck(L, w.patlen > 0, 2, "a non-empty search text expected");
  int opts = opt_table(L, 3);
  w.max = (size_t)opt_int(L, opts, "max", SEARCH_MAX_DEFAULT, 1, SEARCH_MAX_LIMIT);
  size_t len = 1;
  const char *s = ".";
  if (opts) {
    lua_pushliteral(L, "path");
    int t = lua_rawget(L, opts);                          /* ... path? */
    if (t != LUA_TNIL && t != LUA_TSTRING) return luaL_error(L, "option 'path': a string expected");
    if (t == LUA_TSTRING) s = lua_tolstring(L, -1, &len); /* stays on the stack */
  }
  w.ws = ws;
  w.visit = search_visit;
  w.recursive = 1;
  wpath p;
  int err = path_parse(s, len, &p);
  if (err != 0) return push_failure(L, ws, err, s, len, "search");
  struct stat st;
  int fd = walk_start(&w, &p, &st, &err);
  if (fd < 0) return push_failure(L, ws, err, s, len, "search");
  memcpy(w.rel, p.norm, p.len + 1);                       /* results are relative to the root */
  if (S_ISDIR(st.st_mode)) {
    walk_dir(&w, fd, p.len, 0);
  } else {
    search_fd(&w, fd, w.rel);
    close(fd); /* the one release point of a single file's descriptor */
  }
  if (w.err != 0) {
    walk_release(&w);
    return push_failure(L, ws, w.err, s, len, "search");
  }
  return push_walk(L, &w, push_matches);
}

/* ---- open ---- */

/* mkdir -p path (mode 0700 for what it creates). 0 or errno. */
static int make_dirs(const char *path) {
  char dir[PATH_MAX];
  size_t len = strlen(path);
  if (len >= sizeof dir) return ENAMETOOLONG;
  memcpy(dir, path, len + 1);
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return errno;
    *p = saved;
    if (saved == '\0') return 0;
  }
}

/* [-0, +1, m] pushes the metatable of workspace userdata, creating it once per state */
static void push_ws_mt(lua_State *L) {
  MH_STACK_BEGIN(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &WS_MT) == LUA_TNIL) {
    lua_pop(L, 1);
    static const luaL_Reg methods[] = {
      {"read", ws_read}, {"write", ws_write}, {"list", ws_list}, {"search", ws_search},
      {"remove", ws_remove}, {"root", ws_root}, {"close", ws_close}, {NULL, NULL}};
    lua_createtable(L, 0, 5);                                /* mt */
    luaL_newlib(L, methods);                                 /* mt methods */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ws_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, ws_close);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, "workspace");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);                                    /* mt mt */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &WS_MT);               /* mt */
  }
  MH_STACK_END(L, 1);
}

/* workspace.open(root [, opts]) [-(1|2), +(1|2), e] */
static int workspace_open(lua_State *L) {
  size_t len;
  const char *root = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && strlen(root) == len, 1, "a non-empty path without zero bytes expected");
  luaL_argcheck(L, len < PATH_MAX, 1, "path too long");
  int opts = opt_table(L, 2);
  int create = opt_bool(L, opts, "create", 0);
  lua_Integer max_file = opt_int(L, opts, "max_file", DEFAULT_MAX_FILE, 1, (lua_Integer)1 << 30);
  lua_Integer max_total = opt_int(L, opts, "max_total", DEFAULT_MAX_TOTAL, 0, LUA_MAXINTEGER);
  lua_settop(L, 1);                                        /* root */
  workspace *ws = lua_newuserdatauv(L, sizeof *ws, 1);     /* root ws */
  ws->dirfd = -1;
  ws->fallback = 0;
  ws->max_file = max_file;
  ws->max_total = max_total;
  ws->written = 0;
  push_ws_mt(L);
  lua_setmetatable(L, -2);                                 /* from here __gc releases dirfd */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  int err = create ? make_dirs(root) : 0;
  if (err == 0) {
    ws->dirfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ws->dirfd < 0) err = errno;
  }
  if (err != 0) {
    lua_pushnil(L);                                        /* root ws nil */
    if (err == ENOENT) lua_pushfstring(L, "workspace.open: '%s' does not exist", root);
    else if (err == ENOTDIR || err == EEXIST) lua_pushfstring(L, "workspace.open: '%s' is not a directory", root);
    else lua_pushfstring(L, "workspace.open: cannot open '%s': %s", root, strerror(err));
    return 2;
  }
  ws->fallback = choose_fallback(ws->dirfd);
  return 1;
}

/* [-0, +1, m] the module table */
int luaopen_mh_workspace(lua_State *L) {
  static const luaL_Reg funcs[] = {{"open", workspace_open}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  push_ws_mt(L);
  lua_pop(L, 1);
  return 1;
}
