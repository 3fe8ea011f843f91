/* log.h — the host's leveled log lines on stderr.
 *
 * MOONHIVE_LOG=error|warn|info|debug picks the level (default warn). Debug lines
 * at yield, resume and cleanup points are stable so tests can assert on them. */
#ifndef MH_LOG_H
#define MH_LOG_H

typedef enum { MH_LOG_ERROR = 0, MH_LOG_WARN, MH_LOG_INFO, MH_LOG_DEBUG } mh_log_level;

void mh_log_init(void);
int mh_log_enabled(mh_log_level level);
void mh_log(mh_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define MH_DEBUG(...) do { if (mh_log_enabled(MH_LOG_DEBUG)) mh_log(MH_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
