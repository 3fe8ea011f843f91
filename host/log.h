/* log.h — the host's leveled log lines on stderr.
 *
 * MOONHIVE_LOG=error|warn|info|debug picks the level (default warn). Debug lines
 * at yield, resume and cleanup points are stable so tests can assert on them.
 * Text lines read "[level] message"; once mh_log_json(1) is called (the
 * service), every line is one JSON object: {"time", "level", "event",
 * "message"}. */
#ifndef MH_LOG_H
#define MH_LOG_H

#include <stddef.h>

typedef enum { MH_LOG_ERROR = 0, MH_LOG_WARN, MH_LOG_INFO, MH_LOG_DEBUG } mh_log_level;

void mh_log_init(void);
int mh_log_enabled(mh_log_level level);
void mh_log(mh_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports an event the user asked to hear about (a reload, say), whatever
 * the level: "[event] message" as text, or a JSON line at `level`. */
void mh_report(mh_log_level level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* From now on, lines are JSON objects (for the service's JSON log). */
void mh_log_json(int on);

struct mh_membuf;
/* Appends n bytes of s to b as the inside of a JSON string: quotes,
 * backslashes, control bytes and bytes above 0x7e escaped. */
void mh_log_escape(struct mh_membuf *b, const char *s, size_t n);

#define MH_DEBUG(...) do { if (mh_log_enabled(MH_LOG_DEBUG)) mh_log(MH_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
