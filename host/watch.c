/* watch.c — folders watched for changed files (see watch.h): uv_fs_event per
 * folder, or uv_fs_poll on the folder and each file in it as the fallback;
 * one uv_timer debounces what either reports into batches.
 *
 * Memory: every handle's container is freed in that handle's close callback
 * (a folder once both of its handles are closed); the watcher itself once
 * its last handle is closed after mh_watch_close. */
#include "watch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define QUIET_MS 50      /* a batch is reported after this long without events... */
#define MAX_WAIT_MS 500  /* ...or this long after its first event */
#define POLL_MS 200      /* the fallback's stat interval */
#define MAX_PENDING 256  /* more changes than this in one batch: the folders are read again */

typedef struct watch_dir watch_dir;

typedef struct file_poll { /* fallback: one per file of a polled folder */
  uv_fs_poll_t poll;
  mh_watch *w;
  watch_dir *dir;          /* NULL once the folder has let it go */
  struct file_poll *next;
  int seen;                /* still listed at the folder's last reading */
  char path[];
} file_poll;

struct watch_dir {
  mh_watch *w;
  watch_dir *next;
  uv_fs_event_t event;     /* events mode */
  uv_fs_poll_t poll;       /* fallback: the folder itself (entries added, removed, renamed) */
  int has_event, has_poll, handles;
  file_poll *files;
  char path[];
};

struct mh_watch {
  uv_loop_t *loop;
  mh_watch_fn fn;
  void *ud;
  uv_timer_t timer;        /* the debounce */
  watch_dir *dirs;
  char **pending;
  int npending, overflow;
  uint64_t first_at;
  int open_handles, closing, force_poll, polling;
};

/* ---- closing ---- */

static void watch_maybe_free(mh_watch *w) {
  if (w->closing && w->open_handles == 0) free(w);
}

static void timer_closed(uv_handle_t *h) {
  mh_watch *w = h->data;
  w->open_handles--;
  watch_maybe_free(w);
}

static void file_closed(uv_handle_t *h) {
  file_poll *f = h->data;
  mh_watch *w = f->w;
  free(f);
  w->open_handles--;
  watch_maybe_free(w);
}

static void dir_handle_closed(uv_handle_t *h) {
  watch_dir *d = h->data;
  mh_watch *w = d->w;
  if (--d->handles == 0) free(d);
  w->open_handles--;
  watch_maybe_free(w);
}

static void file_close(file_poll *f) {
  f->dir = NULL;
  uv_close((uv_handle_t *)&f->poll, file_closed);
}

/* ---- batches ---- */

static void clear_pending(mh_watch *w) {
  for (int i = 0; i < w->npending; i++) free(w->pending[i]);
  w->npending = 0;
  w->overflow = 0;
}

static void flush(uv_timer_t *t) {
  mh_watch *w = t->data;
  if (w->closing) return;
  if (w->overflow) { /* too many to list: every folder is read again */
    clear_pending(w);
    for (watch_dir *d = w->dirs; d && w->npending < MAX_PENDING; d = d->next)
      if ((w->pending[w->npending] = strdup(d->path)) != NULL) w->npending++;
  }
  char *paths[MAX_PENDING];
  int n = w->npending;
  memcpy(paths, w->pending, (size_t)n * sizeof *paths);
  w->npending = 0;
  if (n > 0) w->fn(w, (const char *const *)paths, n, w->ud);
  for (int i = 0; i < n; i++) free(paths[i]);
}

/* Adds path (dir, or dir/name when name is given) to the batch. */
static void changed(mh_watch *w, const char *dir, const char *name) {
  if (w->closing) return;
  char path[PATH_MAX];
  if (name) snprintf(path, sizeof path, "%s/%s", dir, name);
  else snprintf(path, sizeof path, "%s", dir);
  int dup = 0;
  for (int i = 0; i < w->npending && !dup; i++) dup = strcmp(w->pending[i], path) == 0;
  if (!dup && !w->overflow) {
    char *copy = w->npending < MAX_PENDING ? strdup(path) : NULL;
    if (copy) w->pending[w->npending++] = copy;
    else w->overflow = 1;
  }
  uint64_t now = uv_now(w->loop);
  if (!uv_is_active((uv_handle_t *)&w->timer)) w->first_at = now;
  uint64_t waited = now - w->first_at;
  uint64_t delay = waited >= MAX_WAIT_MS ? 0 : MAX_WAIT_MS - waited;
  uv_timer_start(&w->timer, flush, delay < QUIET_MS ? delay : QUIET_MS, 0);
}

/* ---- events mode ---- */

static void on_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  (void)events;
  watch_dir *d = h->data;
  if (status < 0) mh_log(MH_LOG_WARN, "watching %s: %s", d->path, uv_strerror(status));
  changed(d->w, d->path, status < 0 ? NULL : filename);
}

/* ---- polling mode ---- */

static void on_file_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *curr) {
  (void)status, (void)prev, (void)curr;
  file_poll *f = h->data;
  if (f->dir) changed(f->w, f->path, NULL);
}

/* Starts polling file dir/name unless it is polled already. */
static void poll_file(watch_dir *d, const char *name) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", d->path, name);
  for (file_poll *f = d->files; f; f = f->next)
    if (strcmp(f->path, path) == 0) {
      f->seen = 1;
      return;
    }
  file_poll *f = calloc(1, sizeof *f + strlen(path) + 1);
  if (f == NULL) return;
  strcpy(f->path, path);
  f->w = d->w;
  f->dir = d;
  f->seen = 1;
  uv_fs_poll_init(d->w->loop, &f->poll);
  f->poll.data = f;
  d->w->open_handles++;
  if (uv_fs_poll_start(&f->poll, on_file_poll, f->path, POLL_MS) != 0) {
    file_close(f);
    return;
  }
  f->next = d->files;
  d->files = f;
}

/* Reads folder d and polls each file in it; lets go of files that are gone. */
static void poll_entries(watch_dir *d) {
  for (file_poll *f = d->files; f; f = f->next) f->seen = 0;
  uv_fs_t req;
  if (uv_fs_scandir(d->w->loop, &req, d->path, 0, NULL) >= 0) {
    uv_dirent_t ent;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF)
      if (ent.name[0] != '.' && ent.type != UV_DIRENT_DIR) poll_file(d, ent.name);
  }
  uv_fs_req_cleanup(&req);
  for (file_poll **p = &d->files; *p;) {
    file_poll *f = *p;
    if (f->seen) {
      p = &f->next;
      continue;
    }
    *p = f->next;
    file_close(f);
  }
}

static void on_dir_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev, const uv_stat_t *curr) {
  (void)status, (void)prev, (void)curr;
  watch_dir *d = h->data;
  if (d->w->closing) return;
  poll_entries(d);
  changed(d->w, d->path, NULL);
}

static int start_polling(watch_dir *d) {
  uv_fs_poll_init(d->w->loop, &d->poll);
  d->poll.data = d;
  d->has_poll = 1;
  d->handles++;
  d->w->open_handles++;
  int rc = uv_fs_poll_start(&d->poll, on_dir_poll, d->path, POLL_MS);
  if (rc == 0) {
    d->w->polling = 1;
    poll_entries(d);
  }
  return rc;
}

/* ---- the watcher ---- */

mh_watch *mh_watch_new(uv_loop_t *loop, mh_watch_fn fn, void *ud) {
  mh_watch *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->pending = calloc(MAX_PENDING, sizeof *w->pending);
  if (w->pending == NULL) {
    free(w);
    return NULL;
  }
  w->loop = loop;
  w->fn = fn;
  w->ud = ud;
  const char *mode = getenv("MOONHIVE_WATCH");
  w->force_poll = mode && strcmp(mode, "poll") == 0;
  uv_timer_init(loop, &w->timer);
  w->timer.data = w;
  w->open_handles = 1;
  return w;
}

int mh_watch_polling(const mh_watch *w) {
  return w->polling;
}

int mh_watch_dir(mh_watch *w, const char *dir, char *err, size_t errlen) {
  uv_fs_t req;
  int rc = uv_fs_stat(w->loop, &req, dir, NULL);
  int is_dir = rc == 0 && (req.statbuf.st_mode & S_IFMT) == S_IFDIR;
  uv_fs_req_cleanup(&req);
  if (!is_dir) {
    snprintf(err, errlen, "cannot watch %s: %s", dir, rc < 0 ? uv_strerror(rc) : "not a folder");
    return -1;
  }
  watch_dir *d = calloc(1, sizeof *d + strlen(dir) + 1);
  if (d == NULL) {
    snprintf(err, errlen, "cannot watch %s: out of memory", dir);
    return -1;
  }
  strcpy(d->path, dir);
  d->w = w;
  d->next = w->dirs;
  w->dirs = d;
  rc = UV_ENOSYS;
  if (!w->force_poll) {
    uv_fs_event_init(w->loop, &d->event);
    d->event.data = d;
    d->has_event = 1;
    d->handles++;
    w->open_handles++;
    rc = uv_fs_event_start(&d->event, on_event, d->path, 0);
    if (rc != 0) mh_log(MH_LOG_INFO, "cannot watch %s for events (%s): polling it", dir, uv_strerror(rc));
  }
  if (rc != 0) rc = start_polling(d);
  if (rc != 0) {
    snprintf(err, errlen, "cannot watch %s: %s", dir, uv_strerror(rc));
    return -1; /* d stays listed: mh_watch_close closes its handles */
  }
  return 0;
}

void mh_watch_close(mh_watch *w) {
  if (w == NULL || w->closing) return;
  w->closing = 1;
  clear_pending(w);
  free(w->pending);
  w->pending = NULL;
  for (watch_dir *d = w->dirs, *next; d; d = next) {
    next = d->next;
    for (file_poll *f = d->files, *fn; f; f = fn) {
      fn = f->next;
      file_close(f);
    }
    d->files = NULL;
    if (d->has_event) uv_close((uv_handle_t *)&d->event, dir_handle_closed);
    if (d->has_poll) uv_close((uv_handle_t *)&d->poll, dir_handle_closed);
    if (d->handles == 0) free(d);
  }
  w->dirs = NULL;
  uv_close((uv_handle_t *)&w->timer, timer_closed);
}
