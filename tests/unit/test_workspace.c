/* test_workspace.c — the `workspace` module (the `files` tool's confinement)
 * in a trusted state: reading, writing, appending, listing, searching and
 * removing; every way out of the root refused (`..`, absolute paths, links to
 * /etc and to a writable folder outside, a link swapped in while we work);
 * fifos refused without blocking; the size limits; misuse raising; sandboxes
 * unable to require it. Most tests run twice: with openat2 and with the
 * component-by-component fallback (mh_workspace_force_fallback). */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mod_workspace.h"

static char tmpdir[64];        /* holds ws/ (the workspace) and out/ (outside it) */
static char wsdir[128], outdir[128];
static int fallback;           /* the mode of the running test */

static int setup_mode(int fb) {
  fallback = fb;
  mh_workspace_force_fallback(fb);
  snprintf(tmpdir, sizeof tmpdir, "/tmp/moonhive-ws-XXXXXX");
  if (mkdtemp(tmpdir) == NULL) return -1;
  snprintf(wsdir, sizeof wsdir, "%s/ws", tmpdir);
  snprintf(outdir, sizeof outdir, "%s/out", tmpdir);
  return mkdir(wsdir, 0700) == 0 && mkdir(outdir, 0700) == 0 ? 0 : -1;
}

static int setup_openat2(void **state) { (void)state; return setup_mode(0); }
static int setup_fallback(void **state) { (void)state; return setup_mode(1); }

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int teardown(void **state) {
  (void)state;
  mh_workspace_force_fallback(0);
  return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers for the file system side ---- */

static void put_file(const char *dir, const char *name, const char *text, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
}

static void put_link(const char *target, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", wsdir, name);
  assert_int_equal(symlink(target, path), 0);
}

static void put_fifo(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", wsdir, name);
  assert_int_equal(mkfifo(path, 0600), 0);
}

static int exists_in(const char *dir, const char *name) {
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return lstat(path, &st) == 0;
}

static void assert_file_is(const char *dir, const char *name, const char *text) {
  char path[512], buf[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  assert_true(n >= 0);
  buf[n] = '\0';
  assert_string_equal(buf, text);
}

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  while (readdir(d) != NULL) n++;
  closedir(d);
  return n;
}

/* Runs code in a trusted state with DIR, WS, OUT, FALLBACK, `workspace`, and
 * refused(msg, r, err) / escapes(path) (the message for a path through a link
 * leading outside, which depends on the mode) defined. */
static void eval_ws_limited(const mh_limits *limits, const char *code, outcome *o) {
  fixture f;
  fixture_open(&f, limits);
  f.vm->trusted = 1;
  char *full = NULL;
  assert_true(asprintf(&full,
    "local DIR, WS, OUT, FALLBACK = '%s', '%s', '%s', %s\n"
    "local workspace = require 'workspace'\n"
    "local function refused(msg, r, err)\n"
    "  if r ~= nil then error('expected a refusal, got ' .. tostring(r), 2) end\n"
    "  if err ~= msg then error('got: ' .. tostring(err) .. '\\nwanted: ' .. msg, 2) end\n"
    "end\n"
    "local function escapes(p)\n"
    "  if FALLBACK then\n"
    "    return \"files: path '\" .. p .. \"' goes through a symbolic link, which this system does not follow\"\n"
    "  end\n"
    "  return \"files: path '\" .. p .. \"' leaves the workspace\"\n"
    "end\n"
    "local function names(list)\n"
    "  local t = {}\n"
    "  for i, e in ipairs(list) do t[i] = e.name .. ':' .. e.type .. (e.size and (':' .. e.size) or '') end\n"
    "  return table.concat(t, ' ')\n"
    "end\n"
    "%s", tmpdir, wsdir, outdir, fallback ? "true" : "false", code) > 0);
  eval_in(&f, full, o);
  free(full);
  fixture_close(&f);
}

static void eval_ws(const char *code, outcome *o) { eval_ws_limited(NULL, code, o); }

#define EVAL_OK(code) do { \
    outcome o_; \
    eval_ws(code, &o_); \
    assert_ok_output(&o_, "ok"); \
    outcome_clear(&o_); \
  } while (0)

/* ---- reading and writing ---- */

static void test_read_write(void **state) {
  (void)state;
  put_file(wsdir, "script.sh", "#!/bin/sh\n", 10);
  char path[512];
  snprintf(path, sizeof path, "%s/script.sh", wsdir);
  assert_int_equal(chmod(path, 0750), 0);
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "assert(ws:root() == WS)\n"
    "assert(ws:write('a.txt', 'hello\\n') == true)\n"
    "assert(ws:read('a.txt') == 'hello\\n')\n"
    "assert(ws:write('a.txt', 'world\\n', {append = true}) == true)\n"
    "assert(ws:read('./a.txt') == 'hello\\nworld\\n')\n"
    "assert(ws:write('a.txt', 'new'))\n"
    "assert(ws:read('a.txt') == 'new')\n"
    /* parent folders are made; paths are normalized */
    "assert(ws:write('deep/er/b.txt', 'b'))\n"
    "assert(ws:read('deep//er/./b.txt') == 'b')\n"
    "assert(ws:read('deep/er/b.txt/') == 'b')\n"
    "refused(\"files: 'nodir/c.txt' does not exist\", ws:write('nodir/c.txt', 'c', {mkdir = false}))\n"
    "assert(ws:write('log.txt', 'one', {append = true}))\n"
    "assert(ws:write('log.txt', 'two', {append = true, mkdir = false}))\n"
    "assert(ws:read('log.txt') == 'onetwo')\n"
    "assert(ws:write('empty', '') and ws:read('empty') == '')\n"
    "assert(ws:write('bin', 'a\\0b\\255') and ws:read('bin') == 'a\\0b\\255')\n"
    "assert(ws:write('script.sh', '#!/bin/sh\\necho hi\\n'))\n"
    /* failures are values */
    "refused(\"files: 'missing.txt' does not exist\", ws:read('missing.txt'))\n"
    "refused(\"files: 'deep' is a directory\", ws:read('deep'))\n"
    "refused(\"files: '.' is a directory\", ws:read('.'))\n"
    "refused(\"files: a parent of 'a.txt/x' is not a directory\", ws:read('a.txt/x'))\n"
    "refused(\"files: a parent of 'a.txt/x' is not a directory\", ws:write('a.txt/x', 'x'))\n"
    "refused(\"files: 'deep' is a directory\", ws:write('deep', 'x'))\n"
    "refused(\"files: 'deep' is a directory\", ws:write('deep', 'x', {append = true}))\n"
    "refused(\"files: path '.' names the workspace root itself, not a file\", ws:write('.', 'x'))\n"
    "refused(\"files: path 'x/' ends with a slash, so it cannot name a file\", ws:write('x/', 'x'))\n"
    /* no temporary file is left behind */
    "assert(names(ws:list()) == 'a.txt:file:3 bin:file:4 deep:dir empty:file:0 log.txt:file:6 script.sh:file:18',\n"
    "       names(ws:list()))\n"
    "assert(ws:close() == true and ws:close() == true)\n"
    "for _, m in ipairs({'read', 'write', 'list', 'search', 'remove', 'root'}) do\n"
    "  local ok, err = pcall(ws[m], ws, 'a.txt', 'x')\n"
    "  assert(not ok and err:find('workspace is closed'), m .. ': ' .. tostring(err))\n"
    "end\n"
    /* the data is on disk; a missing root without create */
    "ws = assert(workspace.open(WS, {create = false}))\n"
    "assert(ws:read('a.txt') == 'new')\n"
    "refused(\"workspace.open: '\" .. DIR .. \"/nope' does not exist\", workspace.open(DIR .. '/nope'))\n"
    "refused(\"workspace.open: '\" .. WS .. \"/a.txt' is not a directory\", workspace.open(WS .. '/a.txt'))\n"
    "refused(\"workspace.open: '\" .. WS .. \"/a.txt/x' is not a directory\", workspace.open(WS .. '/a.txt/x', {create = true}))\n"
    "local nested = assert(workspace.open(DIR .. '/n/e/s/t/', {create = true}))\n"
    "assert(nested:write('f', 'x') and nested:read('f') == 'x')\n"
    "local kept\n"
    "do\n"
    "  local w <close> = assert(workspace.open(WS))\n"
    "  kept = w\n"
    "  assert(w:read('log.txt') == 'onetwo')\n"
    "end\n"
    "assert(not pcall(kept.read, kept, 'a.txt'))\n"
    "return 'ok'");
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0750); /* a rewrite keeps the permission bits */
  assert_file_is(wsdir, "script.sh", "#!/bin/sh\necho hi\n");
  assert_file_is(tmpdir, "n/e/s/t/f", "x");
}

/* ---- listing ---- */

static void test_list(void **state) {
  (void)state;
  put_fifo("p");
  put_link("a", "l");
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "assert(ws:write('b.txt', '12345'))\n"
    "assert(ws:write('a/x.txt', 'x'))\n"
    "assert(ws:write('a/y/z.txt', 'zz'))\n"
    "assert(ws:write('a.md', 'md'))\n"
    "assert(ws:write('e/gone', '') and ws:remove('e/gone'))\n"
    "local list, cut = ws:list()\n"
    "assert(cut == false)\n"
    "assert(names(list) == 'a:dir a.md:file:2 b.txt:file:5 e:dir l:link p:other', names(list))\n"
    "assert(names(ws:list('.')) == names(list))\n"
    /* recursive: relative paths, each folder followed by its contents, links not followed */
    "list = ws:list('.', {recursive = true})\n"
    "assert(names(list) == 'a:dir a/x.txt:file:1 a/y:dir a/y/z.txt:file:2 a.md:file:2 b.txt:file:5 e:dir l:link p:other',\n"
    "       names(list))\n"
    "assert(names(ws:list('a')) == 'x.txt:file:1 y:dir')\n"
    "assert(names(ws:list('a/', {recursive = true})) == 'x.txt:file:1 y:dir y/z.txt:file:2')\n"
    "assert(names(ws:list('e')) == '')\n"
    "list, cut = ws:list('.', {recursive = true, max = 3})\n"
    "assert(names(list) == 'a:dir a/x.txt:file:1 a/y:dir' and cut == true, names(list))\n"
    "list, cut = ws:list('a', {max = 2})\n"
    "assert(#list == 2 and cut == false)\n"
    "refused(\"files: 'b.txt' is not a directory\", ws:list('b.txt'))\n"
    "refused(\"files: 'p' is not a directory\", ws:list('p'))\n"
    "refused(\"files: 'missing' does not exist\", ws:list('missing'))\n"
    /* a link to a folder inside: followed with openat2, refused by the fallback */
    "if FALLBACK then refused(escapes('l'), ws:list('l'))\n"
    "else assert(names(ws:list('l')) == 'x.txt:file:1 y:dir') end\n"
    "return 'ok'");
}

/* ---- searching ---- */

static void test_search(void **state) {
  (void)state;
  const char *notes = "alpha\nbeta needle\ngamma\nneedle again\r\nlast needle";
  put_file(wsdir, "notes.txt", notes, strlen(notes));
  put_file(wsdir, "bin.dat", "needle\0\1\2", 9);
  char big[2000];
  memset(big, 'x', sizeof big);
  memcpy(big + 100, "needle", 6);
  put_file(wsdir, "big.txt", big, sizeof big);
  put_link("notes.txt", "link.txt");
  put_fifo("pipe");
  EVAL_OK(
    "local ws = assert(workspace.open(WS, {max_file = 1000}))\n"
    "assert(ws:write('src/code.lua', 'local needle = 1\\n'))\n"
    "assert(ws:write('src/long.txt', string.rep('\\u{20ac}', 200) .. 'needle'))\n"
    "local function render(found)\n"
    "  local t = {}\n"
    "  for i, m in ipairs(found) do t[i] = m.path .. ':' .. m.line .. ':' .. m.text end\n"
    "  return table.concat(t, '|')\n"
    "end\n"
    "local found, cut = ws:search('needle')\n"
    "assert(cut == false)\n"
    /* bin.dat (a zero byte), big.txt (over max_file), link.txt and pipe are skipped */
    "local want = 'notes.txt:2:beta needle|notes.txt:4:needle again|notes.txt:5:last needle|src/code.lua:1:local needle = 1'\n"
    "assert(#found == 5, render(found))\n"
    "assert(render({table.unpack(found, 1, 4)}) == want, render(found))\n"
    /* a long line is cut to at most 400 bytes, on a character boundary */
    "local long = found[5]\n"
    "assert(long.path == 'src/long.txt' and long.line == 1 and #long.text == 399 and utf8.len(long.text) == 133)\n"
    "found = ws:search('needle', {path = 'src'})\n"
    "assert(render(found):find('^src/code.lua:1:local needle = 1|src/long.txt:1:'), render(found))\n"
    "found = ws:search('again', {path = './notes.txt'})\n"
    "assert(render(found) == 'notes.txt:4:needle again', render(found))\n"
    "found, cut = ws:search('needle', {max = 2})\n"
    "assert(render(found) == 'notes.txt:2:beta needle|notes.txt:4:needle again' and cut == true)\n"
    "found, cut = ws:search('nothing like this')\n"
    "assert(#found == 0 and cut == false)\n"
    "found = ws:search('needle', {path = 'link.txt'})\n"
    "if FALLBACK then assert(found == nil) else assert(#found == 3) end\n"
    "refused(\"files: 'missing' does not exist\", ws:search('x', {path = 'missing'}))\n"
    "refused(\"files: path '../' leaves the workspace\", ws:search('x', {path = '../'}))\n"
    "assert(not pcall(ws.search, ws, ''))\n"
    "assert(not pcall(ws.search, ws))\n"
    "assert(not pcall(ws.search, ws, 'x', {max = 0}))\n"
    "assert(not pcall(ws.search, ws, 'x', {path = 5}))\n"
    "return 'ok'");
}

/* ---- removing ---- */

static void test_remove(void **state) {
  (void)state;
  put_file(wsdir, "target.txt", "keep", 4);
  put_link("target.txt", "link");
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "assert(ws:write('f.txt', 'x'))\n"
    "assert(ws:remove('f.txt') == true)\n"
    "refused(\"files: 'f.txt' does not exist\", ws:read('f.txt'))\n"
    "refused(\"files: 'f.txt' does not exist\", ws:remove('f.txt'))\n"
    "assert(ws:write('d/e/g.txt', 'x'))\n"
    "refused(\"files: directory 'd' is not empty\", ws:remove('d'))\n"
    "assert(ws:remove('d/e/g.txt') and ws:remove('d/e/') and ws:remove('d'))\n"
    "refused(\"files: 'd' does not exist\", ws:read('d'))\n"
    "refused(\"files: 'target.txt/' is not a directory\", ws:remove('target.txt/'))\n"
    "refused(\"files: path '.' names the workspace root itself, not a file\", ws:remove('.'))\n"
    "refused(\"files: path './' names the workspace root itself, not a file\", ws:remove('./'))\n"
    /* a link is removed, not what it points to */
    "assert(ws:remove('link'))\n"
    "assert(ws:read('target.txt') == 'keep')\n"
    "return 'ok'");
  assert_false(exists_in(wsdir, "link"));
  assert_file_is(wsdir, "target.txt", "keep");
}

/* ---- refusals ---- */

static void test_paths_refused(void **state) {
  (void)state;
  put_file(tmpdir, "x", "outside", 7);
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "assert(ws:write('a/b.txt', 'b'))\n"
    "for _, p in ipairs({'../x', '/etc/passwd', 'a/../../x', '..', 'a/..', './../x', '../ws/a/b.txt',\n"
    "                    '//etc/passwd', '../../../../../../etc/passwd', 'a/b.txt/..'}) do\n"
    "  local msg = \"files: path '\" .. p .. \"' leaves the workspace\"\n"
    "  refused(msg, ws:read(p))\n"
    "  refused(msg, ws:write(p, 'pwned'))\n"
    "  refused(msg, ws:write(p, 'pwned', {append = true}))\n"
    "  refused(msg, ws:list(p))\n"
    "  refused(msg, ws:remove(p))\n"
    "  refused(msg, ws:search('x', {path = p}))\n"
    "end\n"
    "refused('files: the path is empty', ws:read(''))\n"
    "refused('files: the path is empty', ws:write('', 'x'))\n"
    "refused('files: the path contains a zero byte', ws:read('a\\0b'))\n"
    "refused('files: the path contains a zero byte', ws:write('a.txt\\0/../../x', 'x'))\n"
    "local long = string.rep('d/', 2048)\n"
    "local r, err = ws:read(long)\n"
    "assert(r == nil and err:find(\"^files: path 'd/d/\") and err:find(\"%.%.%.' is too long$\") and #err < 300, err)\n"
    "refused(\"files: path '\" .. string.rep('n', 200) .. \"...' is too long\", ws:write(string.rep('n', 256), 'x'))\n"
    /* names that only look like '..' are names */
    "assert(ws:write('...', 'dots') and ws:read('...') == 'dots')\n"
    "assert(ws:write('..a', 'x') and ws:write('a..', 'y'))\n"
    "return 'ok'");
  assert_file_is(tmpdir, "x", "outside");
  assert_false(exists_in(tmpdir, "etc"));
}

static void test_links_outside_refused(void **state) {
  (void)state;
  put_file(outdir, "secret.txt", "SECRET", 6);
  put_link("/etc", "etc");
  put_link("/etc/passwd", "passwd");
  put_link(outdir, "out");
  char target[256];
  snprintf(target, sizeof target, "%s/secret.txt", outdir);
  put_link(target, "outfile");
  put_link("../out/secret.txt", "relout");
  put_link("/proc/self", "proc");
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "for _, p in ipairs({'etc/passwd', 'passwd', 'out/secret.txt', 'outfile', 'relout', 'proc/root/etc/passwd',\n"
    "                    'etc/hostname', 'proc/cwd/out/secret.txt'}) do\n"
    "  refused(escapes(p), ws:read(p))\n"
    "end\n"
    /* writing through a link to a folder outside */
    "refused(escapes('etc/evil'), ws:write('etc/evil', 'x'))\n"
    "refused(escapes('out/new.txt'), ws:write('out/new.txt', 'x'))\n"
    "refused(escapes('out/new.txt'), ws:write('out/new.txt', 'x', {append = true}))\n"
    "refused(escapes('out/deeper/new.txt'), ws:write('out/deeper/new.txt', 'x'))\n"
    "refused(escapes('out/secret.txt'), ws:write('out/secret.txt', 'pwned', {append = true}))\n"
    /* writing to a link to a file outside: links are never written through */
    "for _, p in ipairs({'outfile', 'relout', 'passwd'}) do\n"
    "  local msg = \"files: '\" .. p .. \"' is a symbolic link, and writes do not follow links\"\n"
    "  refused(msg, ws:write(p, 'pwned'))\n"
    "  refused(msg, ws:write(p, 'pwned', {append = true}))\n"
    "end\n"
    "refused(escapes('out'), ws:list('out'))\n"
    "refused(escapes('etc'), ws:list('etc'))\n"
    "refused(escapes('etc/'), ws:list('etc/'))\n"
    "refused(escapes('out/secret.txt'), ws:remove('out/secret.txt'))\n"
    "refused(escapes('out'), ws:search('SECRET', {path = 'out'}))\n"
    /* walks see the links and never enter them */
    "local list = ws:list('.', {recursive = true})\n"
    "assert(names(list) == 'etc:link out:link outfile:link passwd:link proc:link relout:link', names(list))\n"
    "local found = ws:search('SECRET')\n"
    "assert(#found == 0)\n"
    "found = ws:search('root')\n"
    "assert(#found == 0)\n"
    /* removing a link removes the link */
    "assert(ws:remove('outfile'))\n"
    "return 'ok'");
  assert_file_is(outdir, "secret.txt", "SECRET");
  assert_false(exists_in(outdir, "new.txt"));
  assert_false(exists_in(outdir, "deeper"));
  assert_false(exists_in(wsdir, "outfile"));
  assert_true(exists_in(wsdir, "out"));
}

/* Links that stay inside: openat2 follows them (RESOLVE_BENEATH allows it),
 * except absolute ones; the fallback refuses every link. */
static void test_links_inside(void **state) {
  (void)state;
  put_file(wsdir, "inside.txt", "in", 2);
  char sub[256];
  snprintf(sub, sizeof sub, "%s/sub", wsdir);
  assert_int_equal(mkdir(sub, 0700), 0);
  put_file(wsdir, "sub/f", "f", 1);
  put_link("inside.txt", "rel");
  put_link("sub", "dirlink");
  put_link("sub/../inside.txt", "dotdot");
  char target[256];
  snprintf(target, sizeof target, "%s/inside.txt", wsdir);
  put_link(target, "abs");
  put_link("loop", "loop");
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "if FALLBACK then\n"
    "  for _, p in ipairs({'rel', 'dirlink/f', 'dotdot', 'abs'}) do refused(escapes(p), ws:read(p)) end\n"
    "  refused(escapes('dirlink/new'), ws:write('dirlink/new', 'x'))\n"
    "  refused(escapes('loop'), ws:read('loop'))\n"
    "else\n"
    "  assert(ws:read('rel') == 'in')\n"
    "  assert(ws:read('dirlink/f') == 'f')\n"
    "  assert(ws:read('dotdot') == 'in')\n"
    "  refused(\"files: path 'abs' leaves the workspace\", ws:read('abs'))\n"
    "  assert(ws:write('dirlink/new', 'x') and ws:read('sub/new') == 'x')\n"
    "  refused(\"files: path 'loop' goes through a symbolic link that cannot be followed\", ws:read('loop'))\n"
    "end\n"
    "refused(\"files: 'rel' is a symbolic link, and writes do not follow links\", ws:write('rel', 'x'))\n"
    "assert(ws:read('inside.txt') == 'in')\n"
    "return 'ok'");
  assert_file_is(wsdir, "inside.txt", "in");
}

static void test_fifo_refused(void **state) {
  (void)state;
  put_fifo("pipe");
  alarm(20); /* a hang fails the test instead of stalling the suite */
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "local msg = \"files: 'pipe' is not a regular file\"\n"
    "refused(msg, ws:read('pipe'))\n"
    "refused(msg, ws:write('pipe', 'x'))\n"
    "refused(msg, ws:write('pipe', 'x', {append = true}))\n"
    "local found = ws:search('x')\n"
    "assert(#found == 0)\n"
    "assert(ws:remove('pipe'))\n"
    "return 'ok'");
  alarm(0);
}

static void test_limits(void **state) {
  (void)state;
  put_file(wsdir, "big", "0123456789a", 11);
  put_file(wsdir, "fits", "0123456789", 10);
  EVAL_OK(
    "local ws = assert(workspace.open(WS, {max_file = 10, max_total = 25}))\n"
    "refused(\"files: 'big' is larger than the limit of 10 bytes\", ws:read('big'))\n"
    "assert(ws:read('fits') == '0123456789')\n"
    "refused(\"files: 'a' would be larger than the limit of 10 bytes\", ws:write('a', string.rep('x', 11)))\n"
    "assert(ws:write('a', string.rep('x', 10)))\n"
    "refused(\"files: 'a' would be larger than the limit of 10 bytes\", ws:write('a', 'y', {append = true}))\n"
    "assert(ws:write('b', string.rep('x', 5)))\n"
    "assert(ws:write('b', string.rep('x', 5), {append = true}))\n"  /* 20 written */
    "refused(\"files: writing 'c' would exceed the workspace's limit of 25 bytes written\", ws:write('c', string.rep('x', 6)))\n"
    "assert(ws:write('c', string.rep('x', 5)))\n"                   /* 25 */
    "assert(ws:write('d', ''))\n"
    "refused(\"files: writing 'd' would exceed the workspace's limit of 25 bytes written\", ws:write('d', 'x'))\n"
    "refused(\"files: a parent of 'd/e' is not a directory\", ws:read('d/e'))\n"
    /* refused writes cost nothing; a new object starts from zero */
    "local ws2 = assert(workspace.open(WS, {max_total = 3}))\n"
    "assert(ws2:write('e', 'abc'))\n"
    "refused(\"files: writing 'e' would exceed the workspace's limit of 3 bytes written\", ws2:write('e', 'd'))\n"
    "local dflt = assert(workspace.open(WS))\n"
    "assert(dflt:write('mib', string.rep('m', 4 * 1024 * 1024)))\n"
    "refused(\"files: 'mib' would be larger than the limit of 4194304 bytes\", dflt:write('mib', 'm', {append = true}))\n"
    "assert(#dflt:read('mib') == 4 * 1024 * 1024)\n"
    "return 'ok'");
}

/* ---- a link swapped in while we work ---- */

static atomic_int stop_swapping;

static void *swapper(void *arg) {
  (void)arg;
  char a[256], b[256];
  snprintf(a, sizeof a, "%s/sub", wsdir);
  snprintf(b, sizeof b, "%s/swap", wsdir);
  while (!atomic_load(&stop_swapping)) renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
  return NULL;
}

/* sub/ (a real folder) and swap (a link to a folder outside) trade places as
 * fast as a thread can exchange them while the script reads, writes and lists
 * through sub/: it sees the inside folder or a refusal, never the outside. */
static void test_swapped_link_race(void **state) {
  (void)state;
  char sub[256];
  snprintf(sub, sizeof sub, "%s/sub", wsdir);
  assert_int_equal(mkdir(sub, 0700), 0);
  put_file(sub, "f", "inside", 6);
  put_file(outdir, "f", "OUTSIDE", 7);
  put_file(outdir, "only_outside", "x", 1);
  put_link(outdir, "swap");
  atomic_store(&stop_swapping, 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, swapper, NULL), 0);
  outcome o;
  eval_ws(
    "local ws = assert(workspace.open(WS))\n"
    "local seen, refusals = 0, 0\n"
    "for i = 1, 3000 do\n"
    "  local text, err = ws:read('sub/f')\n"
    "  if text then assert(text == 'inside', text); seen = seen + 1\n"
    "  else assert(err == escapes('sub/f') or err == \"files: 'sub/f' does not exist\", err); refusals = refusals + 1 end\n"
    "  local ok, werr = ws:write('sub/w' .. (i % 7), 'x')\n"
    "  assert(ok or werr == escapes('sub/w' .. (i % 7)) or werr:find('does not exist'), werr)\n"
    "  local list = ws:list('sub')\n"
    "  for _, e in ipairs(list or {}) do assert(e.name ~= 'only_outside') end\n"
    "  local found = ws:search('OUTSIDE', {path = 'sub'})\n"
    "  assert(found == nil or #found == 0)\n"
    "end\n"
    "return 'ok'", &o);
  atomic_store(&stop_swapping, 1);
  pthread_join(t, NULL);
  assert_ok_output(&o, "ok");
  outcome_clear(&o);
  for (int i = 0; i < 7; i++) {
    char name[16];
    snprintf(name, sizeof name, "w%d", i);
    assert_false(exists_in(outdir, name));
  }
  assert_file_is(outdir, "f", "OUTSIDE");
}

/* ---- nothing leaks ---- */

/* Every call, failing or not, and a memory error raised while a file is open
 * or while a listing is being pushed, leaves no descriptor open (the
 * sanitizer build checks the memory). */
static void test_no_descriptor_leaks(void **state) {
  (void)state;
  static char big[3 << 20];
  memset(big, 'b', sizeof big);
  put_file(wsdir, "big", big, sizeof big);
  put_fifo("pipe");
  put_link("/etc", "etc");
  int before = open_fds();
  EVAL_OK(
    "local ws = assert(workspace.open(WS, {max_file = 8 << 20}))\n"
    "for i = 1, 50 do\n"
    "  assert(ws:write('d' .. i % 5 .. '/f' .. i, 'needle ' .. i))\n"
    "  assert(ws:write('d' .. i % 5 .. '/f' .. i, 'more', {append = true}))\n"
    "  assert(ws:read('d' .. i % 5 .. '/f' .. i))\n"
    "  assert(#ws:list('.', {recursive = true}) > 0)\n"
    "  assert(#ws:search('needle') > 0)\n"
    "  assert(not ws:read('pipe') and not ws:read('etc/passwd') and not ws:read('missing'))\n"
    "  assert(not ws:write('etc/x', 'x') and not ws:write('pipe', 'x', {append = true}))\n"
    "  assert(not ws:list('big') and not ws:remove('d0') and not ws:remove('etc/passwd'))\n"
    "  local w = assert(workspace.open(WS))\n"
    "  if i % 2 == 0 then w:close() end\n"
    "end\n"
    "return 'ok'");
  assert_int_equal(open_fds(), before);
  mh_limits limits;
  mh_limits_default(&limits);
  limits.memory = 2u << 20;
  outcome o;
  eval_ws_limited(&limits,
    "local ws = assert(workspace.open(WS, {max_file = 8 << 20}))\n"
    "return #ws:read('big')", &o);
  assert_error_contains(&o, "memory limit of 2 MiB exceeded");
  outcome_clear(&o);
  assert_int_equal(open_fds(), before);
  char name[160];
  for (int i = 0; i < 3000; i++) {
    snprintf(name, sizeof name, "d1/%0120d", i);
    put_file(wsdir, name, "x", 1);
  }
  eval_ws_limited(&limits,
    "local ws = assert(workspace.open(WS))\n"
    "local keep = {}\n"
    "for i = 1, 20 do keep[i] = ws:list('.', {recursive = true, max = 100000}) end\n"
    "return #keep", &o);
  assert_error_contains(&o, "memory limit of 2 MiB exceeded");
  outcome_clear(&o);
  assert_int_equal(open_fds(), before);
}

/* ---- misuse and reach ---- */

static void test_misuse_raises(void **state) {
  (void)state;
  EVAL_OK(
    "local ws = assert(workspace.open(WS))\n"
    "local function raises(pattern, f, ...)\n"
    "  local ok, err = pcall(f, ...)\n"
    "  if ok or not tostring(err):find(pattern) then error('wanted an error with ' .. pattern .. ', got ' .. tostring(err), 2) end\n"
    "end\n"
    "raises('string expected', ws.read, ws)\n"
    "raises('string expected', ws.read, ws, {})\n"
    "raises('string expected', ws.write, ws, 'a')\n"
    "raises('table expected', ws.write, ws, 'a', 'b', 5)\n"
    "raises(\"option 'append': a boolean expected\", ws.write, ws, 'a', 'b', {append = 'yes'})\n"
    "raises(\"option 'mkdir': a boolean expected\", ws.write, ws, 'a', 'b', {mkdir = 1})\n"
    "raises(\"option 'recursive': a boolean expected\", ws.list, ws, '.', {recursive = 1})\n"
    "raises(\"option 'max': an integer from 1 to 100000 expected\", ws.list, ws, '.', {max = 0})\n"
    "raises(\"option 'max': an integer\", ws.list, ws, '.', {max = 1.5})\n"
    "raises('string expected', ws.list, ws, {})\n"
    "raises('string expected', ws.remove, ws)\n"
    "raises('workspace expected', ws.read, {}, 'a')\n"
    "raises('workspace expected', ws.close, 'x')\n"
    "raises('string expected', workspace.open)\n"
    "raises('non%-empty path', workspace.open, '')\n"
    "raises('without zero bytes', workspace.open, 'a\\0b')\n"
    "raises('table expected', workspace.open, WS, 5)\n"
    "raises(\"option 'create': a boolean expected\", workspace.open, WS, {create = 'yes'})\n"
    "raises(\"option 'max_file'\", workspace.open, WS, {max_file = 0})\n"
    "raises(\"option 'max_total'\", workspace.open, WS, {max_total = -1})\n"
    "raises(\"option 'max_total'\", workspace.open, WS, {max_total = 'lots'})\n"
    /* options are plain fields: __index is not consulted */
    "local opts = setmetatable({}, {__index = function() error('consulted') end})\n"
    "assert(ws:write('p.txt', 'x', opts))\n"
    "assert(getmetatable(ws) == false)\n"
    "assert(not pcall(function() workspace.open = nil end))\n"
    "return 'ok'");
}

static void test_not_in_sandbox(void **state) {
  (void)state;
  outcome o;
  eval_fresh(NULL, "return require 'workspace'", &o);
  assert_error_contains(&o, "module 'workspace' not found");
  outcome_clear(&o);
  eval_fresh(NULL, "return workspace", &o);
  assert_error_contains(&o, "undefined global 'workspace'");
  outcome_clear(&o);
}

#define BOTH(fn) \
  cmocka_unit_test_setup_teardown(fn, setup_openat2, teardown), \
  cmocka_unit_test_setup_teardown(fn, setup_fallback, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
    BOTH(test_read_write),
    BOTH(test_list),
    BOTH(test_search),
    BOTH(test_remove),
    BOTH(test_paths_refused),
    BOTH(test_links_outside_refused),
    BOTH(test_links_inside),
    BOTH(test_fifo_refused),
    cmocka_unit_test_setup_teardown(test_limits, setup_openat2, teardown),
    BOTH(test_swapped_link_race),
    BOTH(test_no_descriptor_leaks),
    cmocka_unit_test_setup_teardown(test_misuse_raises, setup_openat2, teardown),
    cmocka_unit_test(test_not_in_sandbox),
  };
  cmocka_set_message_output(CM_OUTPUT_TAP);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
