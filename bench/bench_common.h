/* bench_common.h — what every `make bench` program measures with: wall and
 * CPU clocks, resident memory, medians, a run counter, and running one
 * measurement in a forked child so its peak RSS starts fresh. Header-only:
 * each bench/NAME.c builds into its own program. */
#ifndef MH_BENCH_COMMON_H
#define MH_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "scheduler.h"

static inline double now_us(void) { return (double)uv_hrtime() / 1e3; }

/* user + system CPU of this process */
static inline double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

/* resident memory now */
static inline long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = 0;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
  if (f) fclose(f);
  return kib;
}

/* the highest resident memory this process has had */
static inline long peak_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* sorts v */
static inline double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Counts finished runs (an mh_run_start callback); reports the first failure
 * unless quiet. */
typedef struct counter { int done, failed, quiet; } counter;

static inline void count_done(mh_run *run, void *ud) {
  counter *c = ud;
  c->done++;
  if (run->state != MH_RUN_OK) {
    if (c->failed++ == 0 && !c->quiet) fprintf(stderr, "bench: a run failed: %s\n", run->error);
  }
}

/* A growable byte buffer, reused across requests (len = 0 empties it). */
typedef struct bench_buf { char *data; size_t len, cap; } bench_buf;

/* A libcurl write or header callback appending to the bench_buf at ud; it
 * keeps one spare byte, so data[len] = '\0' is always in bounds. */
static inline size_t bench_keep(char *p, size_t s, size_t n, void *ud) {
  bench_buf *b = ud;
  size_t add = s * n;
  if (b->len + add + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->len + add + 1) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) return 0;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, add);
  b->len += add;
  return add;
}

/* Runs measure(ud, out) in a forked child and copies its n figures back
 * (zeros if the child dies). */
static inline void in_child(void (*measure)(void *ud, double *out), void *ud, double *out, int n) {
  int fds[2];
  memset(out, 0, sizeof *out * (size_t)n);
  if (pipe(fds) != 0) return;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    measure(ud, out);
    ssize_t want = (ssize_t)(sizeof *out * (size_t)n);
    _exit(write(fds[1], out, (size_t)want) == want ? 0 : 1);
  }
  close(fds[1]);
  if (read(fds[0], out, sizeof *out * (size_t)n) != (ssize_t)(sizeof *out * (size_t)n))
    memset(out, 0, sizeof *out * (size_t)n);
  close(fds[0]);
  waitpid(pid, NULL, 0);
}

#endif
