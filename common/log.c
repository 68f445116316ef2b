/*
 * log.c - one line per event, one write(2) per line (see log.h).
 */
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static atomic_int log_level = SK_LOG_INFO;
/* set by sk_log_setup before any thread logs, read-only afterwards */
static enum sk_log_format log_format = SK_LOG_TEXT;
static int log_fd = 2;
static int log_journal;        /* the journal's datagram socket, with fields */
static int log_journal_stream; /* the stream to journald, as text behind "<N>" */
static char log_ident[64] = "seckill";

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {3, 4, 6, 7}; /* LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */

const char *sk_log_level_name(enum sk_log_level level)
{
    return (unsigned)level <= SK_LOG_DEBUG ? level_names[level] : "debug";
}

int sk_log_level_parse(const char *s)
{
    for (int i = 0; i <= SK_LOG_DEBUG; i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -EINVAL;
}

int sk_log_format_parse(const char *s)
{
    if (s && strcmp(s, "text") == 0)
        return SK_LOG_TEXT;
    if (s && strcmp(s, "json") == 0)
        return SK_LOG_JSON;
    return -EINVAL;
}

/* JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected; it holds
 * for us only while fd is still that stream (not redirected by a wrapper). */
static int journal_stream_is(int fd)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(fd, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void sk_log_setup(const char *ident, enum sk_log_format fmt, enum sk_log_level level, int fd)
{
    if (ident)
        snprintf(log_ident, sizeof log_ident, "%s", ident);
    log_format = fmt;
    log_fd = fd;
    log_journal_stream = journal_stream_is(fd);
    /* sd_journal_send drops a line silently when journald's socket is
     * missing: only use it when it is there */
    log_journal = log_journal_stream && access("/run/systemd/journal/socket", W_OK) == 0;
    atomic_store(&log_level, level);
}

void sk_log_set_level(enum sk_log_level level)
{
    atomic_store(&log_level, level);
}

enum sk_log_level sk_log_level_get(void)
{
    return (enum sk_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

int sk_log_enabled(enum sk_log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

int sk_log_journal(void)
{
    return log_journal || log_journal_stream;
}

/* Copy s into out (room for cap bytes with the NUL) with every control or
 * non-ASCII byte as '?'; a cut string ends in "...". */
static void clean(char *out, size_t cap, const char *s)
{
    size_t n = 0, len = strlen(s);
    int cut = len >= cap;
    size_t keep = cut ? cap - 4 : len;
    for (; n < keep; n++) {
        unsigned char c = (unsigned char)s[n];
        out[n] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
    }
    if (cut) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static void timestamp(char out[32], uint64_t wall_ms)
{
    time_t s = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(wall_ms % 1000));
}

static size_t format_json(char *buf, size_t cap, const char *ts, const char *level,
                          const char *component, const char *rid, char *msg)
{
    /* escaping makes at most 2 bytes of 1 ('"', '\\'): halve until it fits */
    for (size_t room = strlen(msg);; room /= 2) {
        if (strlen(msg) > room)
            clean(msg, room + 1 > 4 ? room + 1 : 4, msg);
        json_t *o = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", level, "component", component);
        if (!o)
            break;
        if (rid && *rid)
            json_object_set_new(o, "request_id", json_string(rid));
        json_object_set_new(o, "msg", json_string(msg));
        size_t n = json_dumpb(o, buf, cap - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (n > 0 && n < cap - 1) {
            buf[n++] = '\n';
            buf[n] = '\0';
            return n;
        }
        if (room == 0)
            break;
    }
    int n = snprintf(buf, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"?\"}\n", ts, level);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t sk_log_format_line(char *buf, size_t cap, enum sk_log_format fmt, uint64_t wall_ms,
                          enum sk_log_level level, const char *component, const char *request_id,
                          const char *msg)
{
    char ts[32], comp[32], rid[80], m[SK_LOG_LINE_MAX];
    timestamp(ts, wall_ms);
    clean(comp, sizeof comp, component ? component : "-");
    clean(rid, sizeof rid, request_id ? request_id : "");
    clean(m, sizeof m < cap ? sizeof m : cap, msg ? msg : "");
    const char *ln = sk_log_level_name(level);
    if (fmt == SK_LOG_JSON)
        return format_json(buf, cap, ts, ln, comp, rid, m);
    int n = rid[0] ? snprintf(buf, cap, "%s %s %s request_id=%s: ", ts, ln, comp, rid)
                   : snprintf(buf, cap, "%s %s %s: ", ts, ln, comp);
    size_t at = n < 0 ? 0 : (size_t)n + 2 <= cap ? (size_t)n : cap - 2;
    size_t ml = strlen(m);
    if (at + ml + 2 > cap) { /* cut the message to fit, marked */
        ml = cap - 2 - at;
        if (ml >= 3)
            memcpy(m + ml - 3, "...", 3);
    }
    memcpy(buf + at, m, ml);
    at += ml;
    buf[at++] = '\n';
    buf[at] = '\0';
    return at;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report a failed log write */
        }
        p += w;
        n -= (size_t)w;
    }
}

static uint64_t wall_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int to_journal(enum sk_log_level level, const char *component, const char *rid,
                      const char *msg)
{
    char f_msg[SK_LOG_LINE_MAX + 8], f_prio[16], f_ident[96], f_comp[64], f_rid[96];
    struct iovec iov[5];
    int n = 0;
    snprintf(f_msg, sizeof f_msg, "MESSAGE=%s", msg);
    snprintf(f_prio, sizeof f_prio, "PRIORITY=%d", syslog_prio[level]);
    snprintf(f_ident, sizeof f_ident, "SYSLOG_IDENTIFIER=%s", log_ident);
    snprintf(f_comp, sizeof f_comp, "SECKILL_COMPONENT=%s", component ? component : "-");
    iov[n++] = (struct iovec){f_msg, strlen(f_msg)};
    iov[n++] = (struct iovec){f_prio, strlen(f_prio)};
    iov[n++] = (struct iovec){f_ident, strlen(f_ident)};
    iov[n++] = (struct iovec){f_comp, strlen(f_comp)};
    if (rid && *rid) {
        snprintf(f_rid, sizeof f_rid, "SECKILL_REQUEST_ID=%s", rid);
        iov[n++] = (struct iovec){f_rid, strlen(f_rid)};
    }
    return sd_journal_sendv(iov, n);
}

static void emit(enum sk_log_level level, const char *component, const char *rid, const char *fmt,
                 va_list ap)
{
    char msg[SK_LOG_LINE_MAX], line[SK_LOG_LINE_MAX + 4];
    if ((unsigned)level > SK_LOG_DEBUG)
        level = SK_LOG_DEBUG;
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (log_journal || log_journal_stream) {
        char m[SK_LOG_LINE_MAX];
        clean(m, sizeof m, msg);
        if (log_journal && to_journal(level, component, rid, m) >= 0)
            return;
        /* the journal refused: the stream, with the priority journald reads */
        int p = snprintf(line, sizeof line, "<%d>", syslog_prio[level]);
        size_t n = sk_log_format_line(line + p, sizeof line - (size_t)p, SK_LOG_TEXT, wall_ms_now(),
                                      level, component, rid, msg);
        write_all(log_fd, line, (size_t)p + n);
        return;
    }
    size_t n = sk_log_format_line(line, sizeof line, log_format, wall_ms_now(), level, component,
                                  rid, msg);
    write_all(log_fd, line, n);
}

void sk_log(enum sk_log_level level, const char *component, const char *request_id, const char *fmt,
            ...)
{
    if (!sk_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, component, request_id, fmt, ap);
    va_end(ap);
}

void sk_log_always(enum sk_log_level level, const char *component, const char *request_id,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, component, request_id, fmt, ap);
    va_end(ap);
}

int sk_log_level_reload(const char *from, const char *to)
{
    int level = sk_log_level_parse(to);
    if (!strcmp(from, to) || level < 0)
        return 0;
    sk_log_set_level((enum sk_log_level)level);
    sk_log_always(SK_LOG_INFO, "reload", NULL, "[log] level %s -> %s", from, to);
    return 1;
}

/* ---- sk_log_stream: a FILE over sk_log (fopencookie) ---- */

typedef struct log_cookie {
    enum sk_log_level level;
    char component[32];
    size_t len;
    char line[SK_LOG_LINE_MAX];
} log_cookie;

static void cookie_emit(log_cookie *k)
{
    k->line[k->len] = '\0';
    sk_log(k->level, k->component, NULL, "%s", k->line);
    k->len = 0;
}

static ssize_t cookie_write(void *arg, const char *buf, size_t n)
{
    log_cookie *k = arg;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            cookie_emit(k);
            continue;
        }
        k->line[k->len++] = buf[i];
        if (k->len == sizeof k->line - 1)
            cookie_emit(k);
    }
    return (ssize_t)n;
}

static int cookie_close(void *arg)
{
    log_cookie *k = arg;
    if (k->len)
        cookie_emit(k);
    free(k);
    return 0;
}

FILE *sk_log_stream(enum sk_log_level level, const char *component)
{
    log_cookie *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->level = level;
    snprintf(k->component, sizeof k->component, "%s", component);
    FILE *f =
        fopencookie(k, "w", (cookie_io_functions_t){.write = cookie_write, .close = cookie_close});
    if (!f)
        free(k);
    return f;
}
