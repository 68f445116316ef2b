/*
 * test_request.c - validation of a POST /seckill body, as a table: each body
 * with the exact ids it yields or the exact 400 answer it gets. For malformed
 * JSON the message text is the JSON parser's, so those rows pin its prefix and
 * the reported line, column and position instead.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/request.h"
#include "message.h"

#define BAD(msg) "{\"result\":\"bad_request\",\"error\":\"" msg "\"}"
#define BAD_ID(key)                                                                                \
    BAD(key " must be a string of 1-64 characters from [A-Za-z0-9_.:-] or a non-negative "         \
            "integer")

#define ID64 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."
#define ID65 ID64 "-"

typedef struct row {
    const char *name;
    const char *body;
    const char *user; /* expected ids on success */
    const char *item;
    const char *err;            /* expected answer on failure (NULL: success or malformed) */
    int line, column, position; /* malformed JSON: where (line 0: not malformed) */
} row;

static const row rows[] = {
    /* accepted */
    {"strings", "{\"user_id\":\"u1\",\"item_id\":\"i1\"}", "u1", "i1"},
    {"all id characters", "{\"user_id\":\"" ID64 "\",\"item_id\":\"A-b_c.d:9\"}", ID64,
     "A-b_c.d:9"},
    {"one character", "{\"user_id\":\"x\",\"item_id\":\"-\"}", "x", "-"},
    {"integers", "{\"user_id\": 42, \"item_id\": 7}", "42", "7"},
    {"zero", "{\"user_id\": 0, \"item_id\": \"0\"}", "0", "0"},
    {"int64 max", "{\"user_id\": 9223372036854775807, \"item_id\": 1}", "9223372036854775807", "1"},
    {"extra keys ignored",
     "{\"x\":[1,2,{}],\"user_id\":\"u\",\"note\":null,\"item_id\":\"i\",\"qty\":3.5}", "u", "i"},
    {"whitespace", " \n\t{ \"item_id\" : \"i\" ,\n \"user_id\" : \"u\" } \n", "u", "i"},
    {"escape decoding to a valid id", "{\"user_id\":\"\\u0041b\",\"item_id\":\"i\"}", "Ab", "i"},

    /* refused: one of the ids */
    {"negative", "{\"user_id\": -1, \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"float", "{\"user_id\": 1.0, \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"exponent", "{\"user_id\": \"u\", \"item_id\": 1e3}", NULL, NULL, BAD_ID("item_id")},
    {"true", "{\"user_id\": true, \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"false", "{\"user_id\": \"u\", \"item_id\": false}", NULL, NULL, BAD_ID("item_id")},
    {"null", "{\"user_id\": null, \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"array", "{\"user_id\": [\"u\"], \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"object", "{\"user_id\": \"u\", \"item_id\": {}}", NULL, NULL, BAD_ID("item_id")},
    {"empty string", "{\"user_id\": \"\", \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"65 characters", "{\"user_id\": \"u\", \"item_id\": \"" ID65 "\"}", NULL, NULL,
     BAD_ID("item_id")},
    {"space", "{\"user_id\": \"a b\", \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"slash", "{\"user_id\": \"u\", \"item_id\": \"a/b\"}", NULL, NULL, BAD_ID("item_id")},
    {"unicode", "{\"user_id\": \"caf\xc3\xa9\", \"item_id\": \"i\"}", NULL, NULL,
     BAD_ID("user_id")},
    {"unicode escape", "{\"user_id\": \"\\u00e9\", \"item_id\": \"i\"}", NULL, NULL,
     BAD_ID("user_id")},
    {"quote", "{\"user_id\": \"a\\\"b\", \"item_id\": \"i\"}", NULL, NULL, BAD_ID("user_id")},
    {"both bad: user first", "{\"user_id\": \"\", \"item_id\": \"\"}", NULL, NULL,
     BAD_ID("user_id")},
    {"keys are case sensitive", "{\"User_id\": \"u\", \"item_id\": \"i\"}", NULL, NULL,
     BAD("user_id is required")},

    /* refused: shape */
    {"missing user_id", "{\"item_id\": \"i\"}", NULL, NULL, BAD("user_id is required")},
    {"missing item_id", "{\"user_id\": \"u\"}", NULL, NULL, BAD("item_id is required")},
    {"empty object", "{}", NULL, NULL, BAD("user_id is required")},
    {"array body", "[{\"user_id\": \"u\", \"item_id\": \"i\"}]", NULL, NULL,
     BAD("body must be a JSON object")},

    /* refused: malformed JSON */
    {"empty body", "", NULL, NULL, NULL, 1, 0, 0},
    {"string body", "\"str\"", NULL, NULL, NULL, 1, 5, 5},
    {"number body", "42", NULL, NULL, NULL, 1, 2, 2},
    {"truncated", "{\"user_id\": \"u1\",", NULL, NULL, NULL, 1, 17, 17},
    {"trailing garbage", "{\"user_id\": \"u1\", \"item_id\": \"i\"} x", NULL, NULL, NULL, 1, 35,
     35},
    {"two objects", "{\"user_id\":\"u\",\"item_id\":\"i\"}{}", NULL, NULL, NULL, 1, 30, 30},
    {"duplicate key", "{\"user_id\":\"a\",\"user_id\":\"b\",\"item_id\":\"i\"}", NULL, NULL, NULL,
     1, 24, 24},
    {"duplicate ignored key", "{\"user_id\":\"a\",\"item_id\":\"i\",\"x\":1,\"x\":2}", NULL, NULL,
     NULL, 1, 38, 38},
    {"third line", "{\n  \"user_id\": \"u1\",\n  \"item_id\": ]\n}", NULL, NULL, NULL, 3, 14, 35},
    {"single quotes", "{'user_id': 1}", NULL, NULL, NULL, 1, 2, 2},
    {"integer too big", "{\"user_id\": 99999999999999999999, \"item_id\": \"i\"}", NULL, NULL, NULL,
     1, 32, 32},
    {"NUL escape", "{\"user_id\": \"a\\u0000b\", \"item_id\": \"i\"}", NULL, NULL, NULL, 1, 22, 22},
    {"invalid UTF-8", "{\"user_id\": \"\xff\", \"item_id\": \"i\"}", NULL, NULL, NULL, 1, 13, 13},
};

static void check_row(const row *r, const char *body, size_t len)
{
    gw_purchase p;
    char err[512];
    memset(&p, 0x5a, sizeof p);
    memset(err, 0, sizeof err);
    int rc = gw_parse_purchase(body, len, &p, err, sizeof err);

    if (r->user) {
        if (rc != 0)
            fail_msg("%s: refused: %s", r->name, err);
        assert_string_equal(p.user_id, r->user);
        assert_string_equal(p.item_id, r->item);
        return;
    }
    if (rc != -EINVAL)
        fail_msg("%s: expected -EINVAL, got %d", r->name, rc);
    if (r->err) {
        if (strcmp(err, r->err) != 0)
            fail_msg("%s:\n  got  %s\n  want %s", r->name, err, r->err);
        return;
    }

    /* malformed JSON: a JSON answer naming where the parse failed */
    json_error_t je;
    json_t *o = json_loads(err, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        fail_msg("%s: the answer is not JSON: %s", r->name, err);
    json_t *res = json_object_get(o, "result"), *msg = json_object_get(o, "error");
    json_t *line = json_object_get(o, "line"), *col = json_object_get(o, "column");
    json_t *pos = json_object_get(o, "position");
    assert_int_equal(json_object_size(o), 5);
    assert_true(json_is_string(res));
    assert_string_equal(json_string_value(res), "bad_request");
    assert_true(json_is_string(msg));
    if (strncmp(json_string_value(msg), "malformed JSON: ", 16) != 0 ||
        strlen(json_string_value(msg)) <= 16)
        fail_msg("%s: error is '%s'", r->name, json_string_value(msg));
    assert_true(json_is_integer(line) && json_is_integer(col) && json_is_integer(pos));
    if (json_integer_value(line) != r->line || json_integer_value(col) != r->column ||
        json_integer_value(pos) != r->position)
        fail_msg("%s: at %d:%d (%d), want %d:%d (%d)", r->name, (int)json_integer_value(line),
                 (int)json_integer_value(col), (int)json_integer_value(pos), r->line, r->column,
                 r->position);
    json_decref(o);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        check_row(&rows[i], rows[i].body, strlen(rows[i].body));
}

static void test_length_is_respected(void **state)
{
    (void)state;
    /* The body is not NUL-terminated: only len bytes count. */
    static const char buf[] = "{\"user_id\":\"u\",\"item_id\":\"i\"}GARBAGE";
    static const row ok = {"prefix", NULL, "u", "i"};
    check_row(&ok, buf, strlen("{\"user_id\":\"u\",\"item_id\":\"i\"}"));
    static const row cut = {"cut short", NULL, NULL, NULL, NULL, 1, 27, 27};
    check_row(&cut, buf, strlen("{\"user_id\":\"u\",\"item_id\":\"i"));

    /* a NUL byte inside the body is not the end of it */
    static const char nul[] = "{\"user_id\":\"u\",\"item_id\":\"i\"}\0{}";
    gw_purchase p;
    char err[512];
    assert_int_equal(gw_parse_purchase(nul, sizeof nul - 1, &p, err, sizeof err), -EINVAL);
}

static void test_small_error_buffer(void **state)
{
    (void)state;
    gw_purchase p;
    char err[40];
    const char *body = "{\"user_id\": true, \"item_id\": \"i\"}";
    /* the full answer does not fit: a shorter JSON answer, still terminated */
    memset(err, 'x', sizeof err);
    assert_int_equal(gw_parse_purchase(body, strlen(body), &p, err, sizeof err), -EINVAL);
    assert_string_equal(err, "{\"result\":\"bad_request\"}");
    body = "{";
    memset(err, 'x', sizeof err);
    assert_int_equal(gw_parse_purchase(body, strlen(body), &p, err, sizeof err), -EINVAL);
    assert_string_equal(err, "{\"result\":\"bad_request\"}");
}

static void test_is_json_type(void **state)
{
    (void)state;
    static const struct {
        const char *ct;
        int want;
    } t[] = {
        {"application/json", 1},
        {"Application/JSON; charset=utf-8", 1},
        {"APPLICATION/JSON", 1},
        {"application/json;charset=utf-8", 1},
        {"application/json ; charset=utf-8", 1},
        {"  application/json", 1},
        {"application/json\t", 1},
        {"application/jsonx", 0},
        {"application/json-patch+json", 0},
        {"application/jso", 0},
        {"application/", 0},
        {"xapplication/json", 0},
        {"text/json", 0},
        {"text/plain", 0},
        {"text/plain; application/json", 0},
        {"", 0},
        {NULL, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (gw_is_json_type(t[i].ct) != t[i].want)
            fail_msg("gw_is_json_type(\"%s\") != %d", t[i].ct ? t[i].ct : "(null)", t[i].want);
}

/* ---- jansson's blocks come from the parse's stack buffer ---- */

static json_malloc_t inner_malloc;
static json_free_t inner_free;
static _Thread_local const char *stack_mark; /* a local of the test's frame */
static _Thread_local int on_stack, on_heap, live;

static void *spy_malloc(size_t n)
{
    void *p = inner_malloc(n);
    if (p) {
        long d = (const char *)stack_mark - (const char *)p;
        if (d > 0 && d < 64 * 1024) /* just below the caller's frame: the stack */
            on_stack++;
        else
            on_heap++;
        live++;
    }
    return p;
}

static void spy_free(void *p)
{
    if (p)
        live--;
    inner_free(p);
}

static void parse_counted(const char *body, int *stack, int *heap, int want_rc)
{
    char mark;
    gw_purchase p;
    char err[512];
    stack_mark = &mark;
    on_stack = on_heap = live = 0;
    assert_int_equal(gw_parse_purchase(body, strlen(body), &p, err, sizeof err), want_rc);
    assert_int_equal(live, 0); /* nothing jansson allocated outlives the parse */
    *stack = on_stack;
    *heap = on_heap;
}

static void test_parse_uses_no_heap(void **state)
{
    (void)state;
    gw_purchase p;
    char err[256];
    int stack, heap;
    /* the first parse installs the allocator; wrap it to see where blocks go */
    assert_int_equal(gw_parse_purchase("{}", 2, &p, err, sizeof err), -EINVAL);
    json_get_alloc_funcs(&inner_malloc, &inner_free);
    json_set_alloc_funcs(spy_malloc, spy_free);

    parse_counted("{\"user_id\":\"u123456\",\"item_id\":\"demo\"}", &stack, &heap, 0);
    assert_true(stack >= 4); /* an object, its table, two keys and values */
    assert_int_equal(heap, 0);
    parse_counted("{\"user_id\":\"u1\",\"item_id\":", &stack, &heap, -EINVAL);
    assert_int_equal(heap, 0);

    /* a body too big for the buffer: the rest of its blocks go to the heap,
     * and are freed like the others */
    char big[8192];
    int n = snprintf(big, sizeof big, "{\"user_id\":\"u1\",\"item_id\":\"demo\",\"pad\":[");
    for (int i = 0; i < 300; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "%s\"x%d\"", i ? "," : "", i);
    snprintf(big + n, sizeof big - (size_t)n, "]}");
    parse_counted(big, &stack, &heap, 0);
    assert_true(stack > 0);
    assert_true(heap > 0);

    /* jansson used outside a parse is served by the heap as before */
    stack_mark = (const char *)&stack;
    on_stack = on_heap = 0;
    json_t *o = json_pack("{s:s}", "a", "b");
    assert_non_null(o);
    json_decref(o);
    assert_int_equal(on_stack, 0);
    assert_true(on_heap > 0);
    json_set_alloc_funcs(inner_malloc, inner_free);
}

static void *parse_loop(void *arg)
{
    int *bad = arg;
    for (int i = 0; i < 20000; i++) {
        char body[96], err[256];
        gw_purchase p;
        snprintf(body, sizeof body, "{\"user_id\":\"t%d\",\"item_id\":\"i%d\"}", i, i % 7);
        if (gw_parse_purchase(body, strlen(body), &p, err, sizeof err) != 0)
            (*bad)++;
        char want[16];
        snprintf(want, sizeof want, "t%d", i);
        if (strcmp(p.user_id, want) != 0)
            (*bad)++;
    }
    return NULL;
}

/* Parses on several threads at once, each in its own buffer. */
/* X-Request-Id and W3C traceparent: what a client may name its request. */
static void test_client_request_id(void **state)
{
    (void)state;
    static const struct {
        const char *xrid, *tp, *want; /* want NULL: none */
    } ids[] = {
        {"abc-123", NULL, "abc-123"},
        {"A.b_c:d@e+f/g=h-9", NULL, "A.b_c:d@e+f/g=h-9"},
        {ID64, NULL, ID64},
        {ID65, NULL, NULL}, /* too long */
        {"", NULL, NULL},
        {"has space", NULL, NULL},
        {"quote\"", NULL, NULL},
        {"semi;colon", NULL, NULL},
        {"new\nline", NULL, NULL},
        {"caf\xc3\xa9", NULL, NULL},
        {"<script>", NULL, NULL},
        /* traceparent: its trace-id */
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "4bf92f3577b34da6a3ce929d0e0e4736"},
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
         "4bf92f3577b34da6a3ce929d0e0e4736"},
        /* X-Request-Id first; an invalid one gives way to traceparent */
        {"mine", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "mine"},
        {"bad id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "4bf92f3577b34da6a3ce929d0e0e4736"},
        /* a later version may append fields; ff is invalid */
        {NULL, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever",
         "4bf92f3577b34da6a3ce929d0e0e4736"},
        {NULL, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
         "4bf92f3577b34da6a3ce929d0e0e4736"},
        {NULL, "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL},
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", NULL},
        {NULL, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", NULL},
        /* all-zero ids, upper case, wrong lengths and separators */
        {NULL, "00-00000000000000000000000000000000-00f067aa0ba902b7-01", NULL},
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", NULL},
        {NULL, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", NULL},
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", NULL},
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", NULL},
        {NULL, "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", NULL},
        {NULL, "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL},
        {NULL, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", NULL},
        {NULL, "", NULL},
        {NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        char out[SK_TRACE_MAX + 1];
        memset(out, 'x', sizeof out);
        int got = gw_client_request_id(ids[i].xrid, ids[i].tp, out);
        if (got != (ids[i].want != NULL) || (ids[i].want && strcmp(out, ids[i].want)))
            fail_msg("row %zu (%s, %s): got %d '%s'", i, ids[i].xrid ? ids[i].xrid : "-",
                     ids[i].tp ? ids[i].tp : "-", got, got ? out : "");
        if (!got)
            assert_string_equal(out, "");
    }
}

static void test_parse_threads(void **state)
{
    (void)state;
    pthread_t th[4];
    int bad[4] = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, parse_loop, &bad[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(bad[i], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_length_is_respected),
        cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_is_json_type),
        cmocka_unit_test(test_parse_uses_no_heap),
        cmocka_unit_test(test_parse_threads),
        cmocka_unit_test(test_client_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
