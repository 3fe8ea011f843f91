/* config.h — run limits and the parsing of human sizes and durations.
 *
 * Limits come from, in order: built-in defaults, MOONHIVE_MEMORY_LIMIT /
 * MOONHIVE_CPU_LIMIT / MOONHIVE_DEADLINE / MOONHIVE_TOKEN_BUDGET /
 * MOONHIVE_COST_BUDGET, then command-line options. */
#ifndef MH_CONFIG_H
#define MH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct mh_limits {
  size_t memory;        /* bytes per sandboxed state; 0 = no cap */
  uint64_t cpu_ns;      /* CPU budget per run; 0 = none */
  uint64_t deadline_ns; /* wall-clock deadline per run; 0 = none */
  uint64_t tokens;      /* model tokens (in + out) per run, tasks included; 0 = none */
  double cost;          /* model cost in USD per run, tasks included; 0 = none */
} mh_limits;

#define MH_DEFAULT_MEMORY   ((size_t)64 << 20)
#define MH_DEFAULT_CPU_NS   (10ull * 1000000000ull)
#define MH_DEFAULT_DEADLINE (30ull * 1000000000ull)

void mh_limits_default(mh_limits *lim);
/* Applies MOONHIVE_* environment overrides; returns 0, or -1 with err filled. */
int mh_limits_from_env(mh_limits *lim, char *err, size_t errlen);

/* "64M", "512k", "1G", "1048576" -> bytes; returns 0 or -1. */
int mh_parse_size(const char *s, size_t *out);
/* "30s", "250ms", "2m", "1.5s", "0" -> nanoseconds; returns 0 or -1. */
int mh_parse_duration(const char *s, uint64_t *out);
/* "5000" -> 5000 (a whole number); returns 0 or -1. */
int mh_parse_count(const char *s, uint64_t *out);
/* "0.50" or "$0.50" -> dollars; returns 0 or -1. */
int mh_parse_cost(const char *s, double *out);
/* Writes "64 MiB", "512 KiB" or "1000 bytes". */
void mh_format_size(size_t bytes, char *buf, size_t len);
/* Writes "30 s", "250 ms". */
void mh_format_duration(uint64_t ns, char *buf, size_t len);

#endif
