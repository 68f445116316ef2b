/*
 * fuzz_purchase_body.c - libFuzzer target: the POST /seckill body parser
 * (gateway/request.c, gw_parse_purchase) and the Content-Type check beside it.
 *
 * The input is the body as libmicrohttpd hands it over: any bytes, not
 * NUL-terminated. Checked on every input:
 *   - accepted: both ids are valid ids (1-64 characters of [A-Za-z0-9_.:-]),
 *     and the request message built from them encodes and decodes back to the
 *     same ids (what the gateway produces to the queue next);
 *   - refused: -EINVAL, and the 400 answer's body in the gateway's 512-byte
 *     buffer is a JSON object with "result": "bad_request" (every answer is
 *     well formed, whatever the client sent);
 *   - a short error buffer is still NUL-terminated inside its length;
 *   - the same input as a Content-Type value: gw_is_json_type answers 0 or 1.
 * Nothing may crash or leak (the parser's stack arena must hand every block
 * back). replay.c runs tests/fuzz/corpus_purchase_body/ through this same
 * function in the normal test suite.
 */
#include <errno.h>
#include <jansson.h>
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
        fprintf(stderr, "fuzz_purchase_body: invariant failed: %s\n", what);
        abort();
    }
}

static void check_accepted(const gw_purchase *p)
{
    size_t ul = strnlen(p->user_id, sizeof p->user_id);
    size_t il = strnlen(p->item_id, sizeof p->item_id);
    fuzz_check(ul < sizeof p->user_id && il < sizeof p->item_id, "ids NUL-terminated");
    fuzz_check(sk_id_valid(p->user_id, ul), "user_id is a valid id");
    fuzz_check(sk_id_valid(p->item_id, il), "item_id is a valid id");

    sk_msg m, back;
    uint8_t wire[SK_MSG_MAX];
    memset(&m, 0, sizeof m);
    memcpy(m.user_id, p->user_id, ul + 1);
    memcpy(m.item_id, p->item_id, il + 1);
    int n = sk_msg_encode(&m, wire, sizeof wire);
    fuzz_check(n > 0, "accepted ids encode");
    fuzz_check(sk_msg_decode(wire, (size_t)n, &back) == 0, "encoded message decodes");
    fuzz_check(strcmp(back.user_id, p->user_id) == 0 && strcmp(back.item_id, p->item_id) == 0,
               "ids survive the message");
}

static void check_refused(const char *err)
{
    json_error_t je;
    json_t *o = json_loads(err, 0, &je);
    fuzz_check(o != NULL && json_is_object(o), "400 body is a JSON object");
    json_t *r = json_object_get(o, "result");
    fuzz_check(json_is_string(r) && strcmp(json_string_value(r), "bad_request") == 0,
               "400 body says bad_request");
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_purchase p;
    char err[512]; /* the size the gateway answers from */
    char small[20];

    /* an exact-size copy, so reading one byte past the body is caught */
    char *body = malloc(size ? size : 1);
    fuzz_check(body != NULL, "malloc");
    memcpy(body, data, size);

    memset(err, 'x', sizeof err);
    int rc = gw_parse_purchase(body, size, &p, err, sizeof err);
    fuzz_check(rc == 0 || rc == -EINVAL, "0 or -EINVAL");
    if (rc == 0) {
        check_accepted(&p);
    } else {
        fuzz_check(memchr(err, '\0', sizeof err) != NULL, "error NUL-terminated");
        check_refused(err);
    }

    memset(small, 'x', sizeof small);
    int rc2 = gw_parse_purchase(body, size, &p, small, sizeof small);
    fuzz_check(rc2 == rc, "the answer does not depend on the error buffer");
    if (rc2 < 0)
        fuzz_check(memchr(small, '\0', sizeof small) != NULL, "short error NUL-terminated");

    char *ct = malloc(size + 1);
    fuzz_check(ct != NULL, "malloc");
    memcpy(ct, data, size);
    ct[size] = '\0';
    int j = gw_is_json_type(ct);
    fuzz_check(j == 0 || j == 1, "gw_is_json_type is 0 or 1");
    free(ct);
    free(body);
    return 0;
}
