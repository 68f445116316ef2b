/*
 * fuzz_request_id.c - libFuzzer target: the request id a client names
 * (gateway/request.c, gw_client_request_id), from X-Request-Id or W3C
 * traceparent.
 *
 * The input is the two header values as libmicrohttpd hands them over
 * (NUL-terminated strings): X-Request-Id up to the first newline, traceparent
 * after it (no newline: no traceparent). Checked on every input:
 *   - the answer is 0 (none: out is "") or 1;
 *   - an id is 1-64 characters of [A-Za-z0-9_.:@+/=-] (safe in a header, a
 *     log line and JSON), and either the X-Request-Id itself or 32 lowercase
 *     hex digits found in the traceparent;
 *   - it rides a request message and decodes back the same.
 * replay.c runs tests/fuzz/corpus_request_id/ through this same function in
 * the normal test suite.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/request.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_request_id: invariant failed: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact-size copies, so a read past either value is caught */
    const uint8_t *nl = memchr(data, '\n', size);
    size_t xl = nl ? (size_t)(nl - data) : size;
    char *xrid = malloc(xl + 1), *tp = NULL;
    fuzz_check(xrid != NULL, "malloc");
    memcpy(xrid, data, xl);
    xrid[xl] = '\0';
    if (nl) {
        size_t tl = size - xl - 1;
        tp = malloc(tl + 1);
        fuzz_check(tp != NULL, "malloc");
        memcpy(tp, nl + 1, tl);
        tp[tl] = '\0';
    }
    char out[SK_TRACE_MAX + 1];
    int got = gw_client_request_id(xrid, tp, out);
    fuzz_check(got == 0 || got == 1, "0 or 1");
    if (!got) {
        fuzz_check(out[0] == '\0', "none: empty");
    } else {
        size_t n = strnlen(out, sizeof out);
        fuzz_check(n < sizeof out && sk_trace_valid(out, n), "a valid id");
        int hex32 = n == 32 && strspn(out, "0123456789abcdef") == 32;
        fuzz_check(strcmp(out, xrid) == 0 || (tp && hex32 && strstr(tp, out)),
                   "the client's X-Request-Id or its traceparent's trace-id");
        sk_msg m, back;
        uint8_t wire[SK_MSG_MAX];
        memset(&m, 0, sizeof m);
        strcpy(m.user_id, "u");
        strcpy(m.item_id, "i");
        memcpy(m.trace, out, n + 1);
        int w = sk_msg_encode(&m, wire, sizeof wire);
        fuzz_check(w > 0, "the id encodes");
        fuzz_check(sk_msg_decode(wire, (size_t)w, &back) == 0 && strcmp(back.trace, out) == 0,
                   "the id survives the message");
    }
    free(xrid);
    free(tp);
    return 0;
}
