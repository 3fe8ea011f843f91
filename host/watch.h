/* watch.h — watching folders for changed files on the libuv loop (hot reload).
 *
 * Folders are watched with uv_fs_event (inotify), one level deep; a folder
 * whose watch cannot start (no inotify watches left, a file system without
 * events) is polled with uv_fs_poll instead, as is every folder when
 * MOONHIVE_WATCH=poll. Events are debounced: a batch of changed paths is
 * reported once the folder has been quiet for a moment (at most half a
 * second after the first event), each path once. A path is "FOLDER/NAME" for
 * a file that was written, created, removed or renamed, or "FOLDER" itself
 * when the watch lost track (read the whole folder again). */
#ifndef MH_WATCH_H
#define MH_WATCH_H

#include <stddef.h>
#include <uv.h>

typedef struct mh_watch mh_watch;

/* A batch of n >= 1 changed paths (valid during the call). */
typedef void (*mh_watch_fn)(mh_watch *w, const char *const *paths, int n, void *ud);

/* A watcher on loop reporting to fn; NULL when memory ran out. */
mh_watch *mh_watch_new(uv_loop_t *loop, mh_watch_fn fn, void *ud);
/* Starts watching folder dir (a path kept as given in reports). Returns 0,
 * or -1 with err filled (no such folder, or neither way of watching works). */
int mh_watch_dir(mh_watch *w, const char *dir, char *err, size_t errlen);
/* Is any folder polled rather than watched with events? */
int mh_watch_polling(const mh_watch *w);
/* Stops every watch and reports nothing more; the memory goes once libuv
 * has closed the handles (the loop must turn). */
void mh_watch_close(mh_watch *w);

#endif
