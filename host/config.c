/* config.c — run limits: defaults, environment overrides, size/duration syntax. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void mh_limits_default(mh_limits *lim) {
  lim->memory = MH_DEFAULT_MEMORY;
  lim->cpu_ns = MH_DEFAULT_CPU_NS;
  lim->deadline_ns = MH_DEFAULT_DEADLINE;
  lim->tokens = 0;
  lim->cost = 0;
}

int mh_parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || v < 0) return -1;
  double mult = 1;
  if (*end) {
    char u = (char)(*end | 0x20);
    if (u == 'k') mult = 1024.0;
    else if (u == 'm') mult = 1024.0 * 1024;
    else if (u == 'g') mult = 1024.0 * 1024 * 1024;
    else if (u != 'b') return -1;
    end++;
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end) return -1;
  }
  double bytes = v * mult;
  if (bytes > (double)SIZE_MAX / 2) return -1;
  *out = (size_t)bytes;
  return 0;
}

int mh_parse_duration(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || v < 0 || !isfinite(v)) return -1;
  double mult = 1e9; /* bare numbers are seconds */
  if (strcmp(end, "ms") == 0) mult = 1e6;
  else if (strcmp(end, "us") == 0) mult = 1e3;
  else if (strcmp(end, "s") == 0 || *end == '\0') mult = 1e9;
  else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0) mult = 60e9;
  else if (strcmp(end, "h") == 0) mult = 3600e9;
  else return -1;
  double ns = v * mult;
  if (ns > 1.8e19) return -1;
  *out = (uint64_t)ns;
  return 0;
}

int mh_parse_count(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || *end || errno || s[0] == '-') return -1;
  *out = v;
  return 0;
}

int mh_parse_cost(const char *s, double *out) {
  char *end;
  errno = 0;
  if (*s == '$') s++;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !(v >= 0) || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

void mh_format_size(size_t bytes, char *buf, size_t len) {
  if (bytes >= (1u << 30) && bytes % (1u << 30) == 0) snprintf(buf, len, "%zu GiB", bytes >> 30);
  else if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) snprintf(buf, len, "%zu MiB", bytes >> 20);
  else if (bytes >= 1024 && bytes % 1024 == 0) snprintf(buf, len, "%zu KiB", bytes >> 10);
  else snprintf(buf, len, "%zu bytes", bytes);
}

void mh_format_duration(uint64_t ns, char *buf, size_t len) {
  if (ns % 1000000000ull == 0) snprintf(buf, len, "%llu s", (unsigned long long)(ns / 1000000000ull));
  else if (ns >= 1000000000ull) snprintf(buf, len, "%.3g s", (double)ns / 1e9);
  else snprintf(buf, len, "%llu ms", (unsigned long long)(ns / 1000000ull));
}

static int env_override(const char *name, int is_size, void *out, char *err, size_t errlen) {
  const char *v = getenv(name);
  if (!v || !*v) return 0;
  int rc = is_size ? mh_parse_size(v, (size_t *)out) : mh_parse_duration(v, (uint64_t *)out);
  if (rc != 0) {
    snprintf(err, errlen, "%s=%s is not a valid %s (examples: %s)", name, v,
             is_size ? "size" : "duration", is_size ? "64M, 512k" : "30s, 250ms");
    return -1;
  }
  return 0;
}

int mh_limits_from_env(mh_limits *lim, char *err, size_t errlen) {
  if (env_override("MOONHIVE_MEMORY_LIMIT", 1, &lim->memory, err, errlen)) return -1;
  if (env_override("MOONHIVE_CPU_LIMIT", 0, &lim->cpu_ns, err, errlen)) return -1;
  if (env_override("MOONHIVE_DEADLINE", 0, &lim->deadline_ns, err, errlen)) return -1;
  const char *v = getenv("MOONHIVE_TOKEN_BUDGET");
  if (v && *v && mh_parse_count(v, &lim->tokens) != 0) {
    snprintf(err, errlen, "MOONHIVE_TOKEN_BUDGET=%s is not a whole number of tokens", v);
    return -1;
  }
  v = getenv("MOONHIVE_COST_BUDGET");
  if (v && *v && mh_parse_cost(v, &lim->cost) != 0) {
    snprintf(err, errlen, "MOONHIVE_COST_BUDGET=%s is not an amount of dollars (example: 0.50)", v);
    return -1;
  }
  return 0;
}
