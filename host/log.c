/* log.c — leveled log lines on stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mh_log_level current_level = MH_LOG_WARN;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void mh_log_init(void) {
  const char *env = getenv("MOONHIVE_LOG");
  if (!env) return;
  for (int i = 0; i <= MH_LOG_DEBUG; i++)
    if (strcmp(env, level_names[i]) == 0) current_level = (mh_log_level)i;
}

int mh_log_enabled(mh_log_level level) { return level <= current_level; }

void mh_log(mh_log_level level, const char *fmt, ...) {
  if (!mh_log_enabled(level)) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[%s] %s\n", level_names[level], line);
}
