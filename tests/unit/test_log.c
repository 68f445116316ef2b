/*
 * test_log.c - the log lines (common/log.c): the exact text and JSON forms,
 * hostile messages kept to one line, the cut of long ones, levels, lines of
 * many threads never interleaving, and the journal's fallback on a stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

/* 2026-12-06T05:17:00.123Z */
#define T0 1796534220123ULL

static void test_text_line(void **state)
{
    (void)state;
    char buf[512];
    size_t n = sk_log_format_line(buf, sizeof buf, SK_LOG_TEXT, T0, SK_LOG_INFO, "worker", "r-1",
                                  "sold item=demo");
    assert_string_equal(buf,
                        "2026-12-06T05:17:00.123Z info worker request_id=r-1: sold item=demo\n");
    assert_int_equal(n, strlen(buf));
    sk_log_format_line(buf, sizeof buf, SK_LOG_TEXT, T0 + 877, SK_LOG_WARN, "mq", NULL, "x");
    assert_string_equal(buf, "2026-12-06T05:17:01.000Z warn mq: x\n");
    sk_log_format_line(buf, sizeof buf, SK_LOG_TEXT, 5, SK_LOG_ERROR, "gateway", "", "y");
    assert_string_equal(buf, "1970-01-01T00:00:00.005Z error gateway: y\n");
}

static json_t *parse_line(const char *line)
{
    size_t n = strlen(line);
    assert_true(n > 0 && line[n - 1] == '\n');
    assert_null(memchr(line, '\n', n - 1)); /* one line */
    json_error_t e;
    json_t *o = json_loadb(line, n, 0, &e);
    if (!o)
        fail_msg("not JSON (%s): %s", e.text, line);
    return o;
}

static void test_json_line(void **state)
{
    (void)state;
    char buf[512];
    sk_log_format_line(buf, sizeof buf, SK_LOG_JSON, T0, SK_LOG_DEBUG, "access", "abc-1",
                       "POST /seckill 200 \"quoted\" back\\slash");
    assert_string_equal(buf, "{\"ts\":\"2026-12-06T05:17:00.123Z\",\"level\":\"debug\","
                             "\"component\":\"access\",\"request_id\":\"abc-1\",\"msg\":"
                             "\"POST /seckill 200 \\\"quoted\\\" back\\\\slash\"}\n");
    json_t *o = parse_line(buf);
    assert_string_equal(json_string_value(json_object_get(o, "msg")),
                        "POST /seckill 200 \"quoted\" back\\slash");
    json_decref(o);

    /* no request id: no key */
    sk_log_format_line(buf, sizeof buf, SK_LOG_JSON, T0, SK_LOG_INFO, "gateway", NULL, "up");
    o = parse_line(buf);
    assert_null(json_object_get(o, "request_id"));
    assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
    json_decref(o);
}

/* Newlines, escapes and bytes that are not ASCII never break a line (a user
 * id or a path in a message could carry them). */
static void test_hostile_message(void **state)
{
    (void)state;
    const char *msg = "a\nb\rc\td\x1b[31me\xc3\xa9"
                      "f\x7f";
    char buf[512];
    sk_log_format_line(buf, sizeof buf, SK_LOG_TEXT, T0, SK_LOG_INFO, "x\ny", "r\n1", msg);
    assert_string_equal(buf,
                        "2026-12-06T05:17:00.123Z info x?y request_id=r?1: a?b?c?d?[31me??f?\n");
    sk_log_format_line(buf, sizeof buf, SK_LOG_JSON, T0, SK_LOG_INFO, "x", NULL, msg);
    json_t *o = parse_line(buf);
    assert_string_equal(json_string_value(json_object_get(o, "msg")), "a?b?c?d?[31me??f?");
    json_decref(o);
}

/* A message longer than a line is cut and marked; the line stays whole. */
static void test_long_message(void **state)
{
    (void)state;
    char *msg = malloc(10000), buf[SK_LOG_LINE_MAX];
    assert_non_null(msg);
    memset(msg, 'm', 9999);
    msg[9999] = '\0';
    for (int fmt = SK_LOG_TEXT; fmt <= SK_LOG_JSON; fmt++) {
        size_t n = sk_log_format_line(buf, sizeof buf, fmt, T0, SK_LOG_INFO, "c", "r", msg);
        assert_true(n < sizeof buf);
        assert_int_equal(n, strlen(buf));
        assert_true(n > sizeof buf / 2); /* cut, not dropped */
        assert_int_equal(buf[n - 1], '\n');
        assert_non_null(strstr(buf, "mmm..."));
        if (fmt == SK_LOG_JSON)
            json_decref(parse_line(buf));
    }
    /* quotes double in JSON: still one valid line */
    memset(msg, '"', 9999);
    size_t n = sk_log_format_line(buf, sizeof buf, SK_LOG_JSON, T0, SK_LOG_INFO, "c", "r", msg);
    assert_true(n < sizeof buf);
    json_decref(parse_line(buf));
    /* a small buffer */
    char small[256];
    n = sk_log_format_line(small, sizeof small, SK_LOG_TEXT, T0, SK_LOG_INFO, "c", "r", msg);
    assert_true(n < sizeof small);
    assert_int_equal(small[n - 1], '\n');
    free(msg);
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(sk_log_level_parse("error"), SK_LOG_ERROR);
    assert_int_equal(sk_log_level_parse("warn"), SK_LOG_WARN);
    assert_int_equal(sk_log_level_parse("info"), SK_LOG_INFO);
    assert_int_equal(sk_log_level_parse("debug"), SK_LOG_DEBUG);
    assert_int_equal(sk_log_level_parse("INFO"), -EINVAL);
    assert_int_equal(sk_log_level_parse("warning"), -EINVAL);
    assert_int_equal(sk_log_level_parse(""), -EINVAL);
    assert_int_equal(sk_log_level_parse(NULL), -EINVAL);
    assert_string_equal(sk_log_level_name(SK_LOG_WARN), "warn");
    assert_int_equal(sk_log_format_parse("text"), SK_LOG_TEXT);
    assert_int_equal(sk_log_format_parse("json"), SK_LOG_JSON);
    assert_int_equal(sk_log_format_parse("xml"), -EINVAL);
}

/* A temp file the log writes to, and what it holds. */
static int tmp_fd(char *path)
{
    strcpy(path, "/tmp/test_log.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    return fd;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 22);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 22) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_levels(void **state)
{
    (void)state;
    char path[32];
    int fd = tmp_fd(path);
    unsetenv("JOURNAL_STREAM");
    sk_log_setup("test", SK_LOG_TEXT, SK_LOG_WARN, fd);
    assert_false(sk_log_journal());
    sk_log(SK_LOG_INFO, "c", NULL, "hidden %d", 1);
    sk_log(SK_LOG_WARN, "c", NULL, "shown %d", 2);
    sk_log(SK_LOG_ERROR, "c", "r", "shown %d", 3);
    sk_log_always(SK_LOG_INFO, "access", NULL, "shown %d", 4);
    assert_false(sk_log_enabled(SK_LOG_DEBUG));
    sk_log_set_level(SK_LOG_DEBUG);
    assert_true(sk_log_enabled(SK_LOG_DEBUG));
    assert_int_equal(sk_log_level_get(), SK_LOG_DEBUG);
    sk_log(SK_LOG_DEBUG, "c", NULL, "shown %d", 5);
    char *s = slurp(path);
    assert_null(strstr(s, "hidden"));
    assert_non_null(strstr(s, " warn c: shown 2\n"));
    assert_non_null(strstr(s, " error c request_id=r: shown 3\n"));
    assert_non_null(strstr(s, " info access: shown 4\n"));
    assert_non_null(strstr(s, " debug c: shown 5\n"));
    free(s);
    close(fd);
    unlink(path);
    sk_log_setup("test", SK_LOG_TEXT, SK_LOG_INFO, 2);
}

enum { THREADS = 8, LINES = 2000 };

static void *writer(void *arg)
{
    long t = (long)(intptr_t)arg;
    char rid[16];
    snprintf(rid, sizeof rid, "t%ld", t);
    for (int i = 0; i < LINES; i++)
        sk_log(SK_LOG_INFO, "thread", rid, "line %d of thread %ld %s", i, t,
               "padding-padding-padding-padding-padding-padding-padding-padding-padding");
    return NULL;
}

/* Lines of concurrent threads land whole: every line parses, each thread's
 * lines are all there and in its order. */
static void test_threads(void **state)
{
    (void)state;
    char path[32];
    int fd = tmp_fd(path);
    close(fd);
    fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    sk_log_setup("test", SK_LOG_JSON, SK_LOG_INFO, fd);
    pthread_t tid[THREADS];
    for (long t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&tid[t], NULL, writer, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(tid[t], NULL);
    sk_log_setup("test", SK_LOG_TEXT, SK_LOG_INFO, 2);
    close(fd);

    char *s = slurp(path);
    int next[THREADS] = {0}, lines = 0;
    for (char *line = s, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        json_error_t e;
        json_t *o = json_loadb(line, (size_t)(nl - line + 1), 0, &e);
        if (!o)
            fail_msg("line %d is not JSON: %.*s", lines, (int)(nl - line), line);
        int i;
        long t;
        const char *msg = json_string_value(json_object_get(o, "msg"));
        assert_non_null(msg);
        assert_int_equal(sscanf(msg, "line %d of thread %ld", &i, &t), 2);
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(i, next[t]);
        next[t]++;
        char rid[16];
        snprintf(rid, sizeof rid, "t%ld", t);
        assert_string_equal(json_string_value(json_object_get(o, "request_id")), rid);
        json_decref(o);
        lines++;
    }
    assert_int_equal(lines, THREADS * LINES);
    free(s);
    unlink(path);
}

/* JOURNAL_STREAM naming the log descriptor turns the journal on. With no
 * journald listening (this machine, a container), each line falls back to
 * the stream with the "<N>" priority journald would read. */
static void test_journal_stream(void **state)
{
    (void)state;
    char path[32], js[64];
    int fd = tmp_fd(path);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", "1:2", 1); /* another stream: not ours */
    sk_log_setup("test", SK_LOG_JSON, SK_LOG_INFO, fd);
    assert_false(sk_log_journal());
    setenv("JOURNAL_STREAM", js, 1);
    sk_log_setup("test", SK_LOG_JSON, SK_LOG_INFO, fd);
    assert_true(sk_log_journal());
    sk_log(SK_LOG_ERROR, "c", "r-9", "to the journal");
    sk_log(SK_LOG_INFO, "c", NULL, "again");
    unsetenv("JOURNAL_STREAM");
    sk_log_setup("test", SK_LOG_TEXT, SK_LOG_INFO, 2);
    char *s = slurp(path);
    if (access("/run/systemd/journal/socket", W_OK) != 0) {
        assert_int_equal(strncmp(s, "<3>", 3), 0);
        assert_non_null(strstr(s, " error c request_id=r-9: to the journal\n"));
        assert_non_null(strstr(s, "<6>"));
        assert_non_null(strstr(s, " info c: again\n"));
    } else {
        print_message("journald listens here: the lines went to the journal\n");
        assert_null(strstr(s, "to the journal"));
    }
    free(s);
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line),       cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_hostile_message), cmocka_unit_test(test_long_message),
        cmocka_unit_test(test_names),           cmocka_unit_test(test_levels),
        cmocka_unit_test(test_threads),         cmocka_unit_test(test_journal_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
