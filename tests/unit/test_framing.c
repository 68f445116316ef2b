/*
 * test_framing.c - the framing verdict for a request's header fields, as a
 * table: each set of fields with the verdict it must get (RFC 9112 section 6),
 * then the size limits and the answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "gateway/framing.h"

typedef struct row {
    const char *name;
    const char *fields[6][2]; /* name, value; ends at a NULL name */
    enum gw_frame want;
} row;

static const row rows[] = {
    {"no body", {{"Host", "x"}}, GW_FRAME_OK},
    {"Content-Length", {{"Content-Length", "33"}}, GW_FRAME_OK},
    {"Content-Length, any case", {{"content-length", "33"}}, GW_FRAME_OK},
    {"the same length twice", {{"Content-Length", "33"}, {"Content-Length", "033"}}, GW_FRAME_OK},
    {"two lengths", {{"Content-Length", "33"}, {"Content-Length", "66"}}, GW_FRAME_BAD_LENGTH},
    {"two lengths, zero first",
     {{"Content-Length", "0"}, {"Content-Length", "7"}},
     GW_FRAME_BAD_LENGTH},
    {"a length and a list",
     {{"Content-Length", "33"}, {"Content-Length", "33, 33"}},
     GW_FRAME_BAD_LENGTH},
    {"a signed length", {{"Content-Length", "+33"}}, GW_FRAME_BAD_LENGTH},
    {"an empty length", {{"Content-Length", ""}}, GW_FRAME_BAD_LENGTH},
    {"chunked", {{"Transfer-Encoding", "chunked"}}, GW_FRAME_OK},
    {"Chunked", {{"transfer-encoding", "Chunked"}}, GW_FRAME_OK},
    {"chunked with a length",
     {{"Content-Length", "4"}, {"Transfer-Encoding", "chunked"}},
     GW_FRAME_CLOSE},
    {"chunked with two lengths",
     {{"Content-Length", "4"}, {"Transfer-Encoding", "chunked"}, {"Content-Length", "9"}},
     GW_FRAME_CLOSE},
    {"gzip, chunked", {{"Transfer-Encoding", "gzip, chunked"}}, GW_FRAME_UNKNOWN_TE},
    {"gzip then chunked fields",
     {{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}},
     GW_FRAME_UNKNOWN_TE},
    {"chunked twice", {{"Transfer-Encoding", "chunked, chunked"}}, GW_FRAME_UNKNOWN_TE},
    {"chunked with a parameter", {{"Transfer-Encoding", "chunked;x=1"}}, GW_FRAME_UNKNOWN_TE},
    {"xchunked", {{"Transfer-Encoding", "xchunked"}}, GW_FRAME_BAD_TE},
    {"chunked, gzip", {{"Transfer-Encoding", "chunked, gzip"}}, GW_FRAME_BAD_TE},
    {"chunked then gzip fields",
     {{"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "gzip"}},
     GW_FRAME_BAD_TE},
    {"identity", {{"Transfer-Encoding", "identity"}}, GW_FRAME_BAD_TE},
    {"empty coding", {{"Transfer-Encoding", ""}}, GW_FRAME_BAD_TE},
    {"commas only", {{"Transfer-Encoding", " , ,"}}, GW_FRAME_BAD_TE},
};

/* HTTP/1.0 has no Transfer-Encoding: its presence is faulty framing */
static void test_http10(void **state)
{
    (void)state;
    gw_frame_scan s;
    memset(&s, 0, sizeof s);
    s.http10 = 1;
    gw_frame_add(&s, "Content-Length", 14, "5", 1);
    assert_int_equal(gw_frame_verdict(&s, 0), GW_FRAME_OK);
    gw_frame_add(&s, "Transfer-Encoding", 17, "chunked", 7);
    assert_int_equal(gw_frame_verdict(&s, 0), GW_FRAME_TE_HTTP10);
    const char *body;
    assert_int_equal(gw_frame_answer(GW_FRAME_TE_HTTP10, &body), 400);
}

static enum gw_frame verdict(const row *r)
{
    gw_frame_scan s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < 6 && r->fields[i][0]; i++)
        gw_frame_add(&s, r->fields[i][0], strlen(r->fields[i][0]), r->fields[i][1],
                     strlen(r->fields[i][1]));
    return gw_frame_verdict(&s, 0);
}

static void test_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        enum gw_frame got = verdict(&rows[i]);
        if (got != rows[i].want)
            fail_msg("%s: verdict %d, want %d", rows[i].name, got, rows[i].want);
    }
}

static void test_limits(void **state)
{
    (void)state;
    /* header fields: names, values, ": " and CRLF add up to GW_HEAD_MAX */
    char *v = malloc(GW_HEAD_MAX);
    assert_non_null(v);
    memset(v, 'a', GW_HEAD_MAX);
    gw_frame_scan s;
    memset(&s, 0, sizeof s);
    gw_frame_add(&s, "X-A", 3, v, GW_HEAD_MAX - 3 - 4);
    assert_int_equal(gw_frame_verdict(&s, 0), GW_FRAME_OK);
    gw_frame_add(&s, "B", 1, "", 0);
    assert_int_equal(gw_frame_verdict(&s, 0), GW_FRAME_HEADERS_TOO_LARGE);
    /* the request-target, seen by the URI log hook */
    char *uri = malloc(GW_URI_MAX + 2);
    assert_non_null(uri);
    memset(uri, 'u', GW_URI_MAX + 1);
    uri[GW_URI_MAX] = '\0';
    assert_null(gw_frame_uri_log(NULL, uri, NULL));
    uri[GW_URI_MAX] = 'u';
    uri[GW_URI_MAX + 1] = '\0';
    void *mark = gw_frame_uri_log(NULL, uri, NULL);
    assert_non_null(mark);
    assert_true(gw_frame_uri_mark(mark));
    assert_false(gw_frame_uri_mark(NULL));
    assert_false(gw_frame_uri_mark(uri));
    memset(&s, 0, sizeof s);
    assert_int_equal(gw_frame_verdict(&s, 1), GW_FRAME_URI_TOO_LONG);
    free(uri);
    free(v);
}

static void test_answers(void **state)
{
    (void)state;
    const char *body;
    assert_int_equal(gw_frame_answer(GW_FRAME_OK, &body), 0);
    assert_int_equal(gw_frame_answer(GW_FRAME_CLOSE, &body), 0);
    assert_int_equal(gw_frame_answer(GW_FRAME_BAD_LENGTH, &body), 400);
    assert_string_equal(
        body, "{\"result\":\"bad_request\",\"error\":\"conflicting or invalid Content-Length\"}");
    assert_int_equal(gw_frame_answer(GW_FRAME_BAD_TE, &body), 400);
    assert_int_equal(gw_frame_answer(GW_FRAME_UNKNOWN_TE, &body), 501);
    assert_int_equal(gw_frame_answer(GW_FRAME_URI_TOO_LONG, &body), 414);
    assert_string_equal(body, "{\"result\":\"uri_too_long\"}");
    assert_int_equal(gw_frame_answer(GW_FRAME_HEADERS_TOO_LARGE, &body), 431);
    assert_string_equal(body, "{\"result\":\"headers_too_large\"}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
