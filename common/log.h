/*
 * log.h - the log lines of seckill-gateway and seckill-worker.
 *
 * One line per event: the time (RFC 3339, UTC, milliseconds), the level, the
 * component (gateway, worker, store, registry, access...), the request id
 * when the line is about one request, and the message. As text:
 *
 *   2026-12-06T05:17:00.123Z info worker request_id=r-1: sold item=demo ...
 *
 * or, with format json, one object per line:
 *
 *   {"ts":"2026-12-06T05:17:00.123Z","level":"info","component":"worker",
 *    "request_id":"r-1","msg":"sold item=demo ..."}
 *
 * A line is formatted on the caller's stack and written with one write(2)
 * (at most SK_LOG_LINE_MAX bytes; a longer message is cut and ends in
 * "..."), so concurrent threads and processes sharing the file never
 * interleave within a line, and no lock is taken. Control characters in a
 * message become '?': one event is one line, whatever a client sent.
 *
 * Under systemd (JOURNAL_STREAM names the log descriptor, as systemd sets it
 * for a service whose stderr is the journal), each line goes to the journal
 * with sd_journal_send instead, as fields: MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, SECKILL_COMPONENT and SECKILL_REQUEST_ID (journalctl
 * SECKILL_REQUEST_ID=r-1 finds one purchase across processes). When
 * journald's socket is missing or refuses a line, the line is written to the
 * descriptor as text behind the "<N>" priority prefix journald reads on a
 * stream.
 *
 * Before sk_log_setup: text, level info, on stderr.
 */
#ifndef SECKILL_LOG_H
#define SECKILL_LOG_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#define SK_LOG_LINE_MAX 2048

enum sk_log_level { SK_LOG_ERROR = 0, SK_LOG_WARN, SK_LOG_INFO, SK_LOG_DEBUG };
enum sk_log_format { SK_LOG_TEXT = 0, SK_LOG_JSON };

/* Where lines go and how they look, for the whole process. ident is the
 * program's name (copied); fd the descriptor written (2: stderr). Call it
 * before starting threads; the level may change later. */
void sk_log_setup(const char *ident, enum sk_log_format fmt, enum sk_log_level level, int fd);
/* Any thread, at any time (a reload). */
void sk_log_set_level(enum sk_log_level level);
enum sk_log_level sk_log_level_get(void);
/* 1 when lines of this level are written: skip building a costly message. */
int sk_log_enabled(enum sk_log_level level);
/* 1 when lines go to the journal (JOURNAL_STREAM matched at setup). */
int sk_log_journal(void);

/* A reload of [log] level: when the names from and to differ (both valid),
 * set the level to `to` and log "[log] level FROM -> TO" (component reload)
 * whatever either level lets through. Returns 1 when it changed the level. */
int sk_log_level_reload(const char *from, const char *to);

/* "error", "warn", "info", "debug"; -EINVAL for anything else. */
int sk_log_level_parse(const char *s);
const char *sk_log_level_name(enum sk_log_level level);
/* "text", "json"; -EINVAL for anything else. */
int sk_log_format_parse(const char *s);

/* Log one line when level is enabled. request_id may be NULL or "". */
void sk_log(enum sk_log_level level, const char *component, const char *request_id, const char *fmt,
            ...) __attribute__((format(printf, 4, 5)));
/* The same, whatever the level (the sampled access log decides by itself). */
void sk_log_always(enum sk_log_level level, const char *component, const char *request_id,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A stream whose every line (up to '\n', or SK_LOG_LINE_MAX - 1 bytes) is
 * logged with sk_log at level under component: code that reports to a FILE
 * (a reload's changes) logs like the rest. Close it with fclose; a partial
 * last line is logged then. NULL when out of memory. Not for use by two
 * threads at once. */
FILE *sk_log_stream(enum sk_log_level level, const char *component);

/* Format one line, newline included, as it would be written at wall_ms
 * (ms since the epoch). Returns its length (< cap); cap must be at least 256. */
size_t sk_log_format_line(char *buf, size_t cap, enum sk_log_format fmt, uint64_t wall_ms,
                          enum sk_log_level level, const char *component, const char *request_id,
                          const char *msg);

#endif
