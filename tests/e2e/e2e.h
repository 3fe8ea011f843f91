/* e2e.h — what the end-to-end tests share: which binary to drive, a
 * monotonic clock for bounding waits, and a fresh data directory per test.
 * Header-only; include after cmocka.h. */
#ifndef MH_E2E_H
#define MH_E2E_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* $MOONHIVE_BIN, else ./moonhive */
static const char *moonhive_bin(void) {
  const char *bin = getenv("MOONHIVE_BIN");
  return bin && *bin ? bin : "./moonhive";
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A fresh directory NAME.XXXXXX under $MOONHIVE_DATA (or the system's temp dir). */
static void make_data_dir(char *dir, size_t size, const char *name) {
  const char *base = getenv("MOONHIVE_DATA");
  if (base == NULL || *base == '\0') base = getenv("TMPDIR");
  if (base == NULL || *base == '\0') base = "/tmp";
  snprintf(dir, size, "%s/%s.XXXXXX", base, name);
  assert_non_null(mkdtemp(dir));
}

#endif
