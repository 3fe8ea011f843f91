/* log.c — leveled log lines on stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "membuf.h"

static mh_log_level current_level = MH_LOG_WARN;
static int json_lines;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void mh_log_init(void) {
  const char *env = getenv("MOONHIVE_LOG");
  if (!env) return;
  for (int i = 0; i <= MH_LOG_DEBUG; i++)
    if (strcmp(env, level_names[i]) == 0) current_level = (mh_log_level)i;
}

int mh_log_enabled(mh_log_level level) { return level <= current_level; }

void mh_log_json(int on) { json_lines = on; }

void mh_log_escape(mh_membuf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[8];
    if (ch == '"' || ch == '\\') {
      esc[0] = '\\';
      esc[1] = (char)ch;
      mh_membuf_append(b, esc, 2);
    } else if (ch < 0x20 || ch >= 0x7f) {
      snprintf(esc, sizeof esc, "\\u%04x", ch);
      mh_membuf_append(b, esc, 6);
    } else {
      mh_membuf_append(b, &s[i], 1);
    }
  }
}

/* One line on stderr: "[tag] message", or a JSON object. */
static void write_line(mh_log_level level, const char *tag, const char *event, const char *message) {
  if (!json_lines) {
    fprintf(stderr, "[%s] %s\n", tag, message);
    fflush(stderr);
    return;
  }
  mh_membuf b = {0};
  char head[128];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(head, sizeof head, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"event\":\"",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, level_names[level]);
  mh_membuf_append(&b, head, (size_t)n);
  mh_log_escape(&b, event, strlen(event));
  mh_membuf_append(&b, "\",\"message\":\"", 13);
  mh_log_escape(&b, message, strlen(message));
  mh_membuf_append(&b, "\"}\n", 3);
  if (b.data) fwrite(b.data, 1, b.len, stderr);
  fflush(stderr);
  mh_membuf_free(&b);
}

void mh_log(mh_log_level level, const char *fmt, ...) {
  if (!mh_log_enabled(level)) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  write_line(level, level_names[level], "log", line);
}

void mh_report(mh_log_level level, const char *event, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  write_line(level, event, event, line);
}
