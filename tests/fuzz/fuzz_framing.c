/*
 * fuzz_framing.c - libFuzzer target: the header fields of one request, as
 * "name:value" lines, through the framing verdict (gateway/framing.c).
 * The first byte sets HTTP/1.0 (bit 0) and an over-long URI (bit 1).
 *
 * Checked on every input: the byte count is the sum of the fields; a request
 * without Content-Length or Transfer-Encoding is never refused for framing;
 * a Transfer-Encoding is accepted only as exactly one field "chunked" (the
 * one libmicrohttpd decodes), never in HTTP/1.0; an accepted request without
 * one has no two different Content-Length values. replay_framing runs
 * tests/fuzz/corpus_framing through this same function in ctest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/framing.h"

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static int is_name(const char *s, size_t n, const char *want)
{
    return n == strlen(want) && strncasecmp(s, want, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    gw_frame_scan s;
    memset(&s, 0, sizeof s);
    s.http10 = data[0] & 1;
    int uri_long = (data[0] >> 1) & 1;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    size_t bytes = 0;
    unsigned n_cl = 0, n_te = 0, te_exact = 0;
    const char *cl0 = NULL;
    size_t cl0_len = 0;
    int cl_differ = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon) {
            size_t nlen = (size_t)(colon - p), vlen = (size_t)(line_end - colon - 1);
            gw_frame_add(&s, p, nlen, colon + 1, vlen);
            bytes += nlen + vlen + 4;
            if (is_name(p, nlen, "Content-Length")) {
                if (!cl0) {
                    cl0 = colon + 1;
                    cl0_len = vlen;
                } else if (vlen != cl0_len || memcmp(cl0, colon + 1, vlen) != 0) {
                    cl_differ = 1; /* as text: leading zeros may still make them equal */
                }
                n_cl++;
            }
            if (is_name(p, nlen, "Transfer-Encoding")) {
                te_exact += vlen == 7 && strncasecmp(colon + 1, "chunked", 7) == 0;
                n_te++;
            }
        }
        p = line_end + 1;
    }
    enum gw_frame v = gw_frame_verdict(&s, uri_long);
    fuzz_check(v >= GW_FRAME_OK && v <= GW_FRAME_HEADERS_TOO_LARGE);
    fuzz_check(s.head_bytes == bytes);
    if (uri_long)
        fuzz_check(v == GW_FRAME_URI_TOO_LONG);
    else if (bytes > GW_HEAD_MAX)
        fuzz_check(v == GW_FRAME_HEADERS_TOO_LARGE);
    if (v == GW_FRAME_OK || v == GW_FRAME_CLOSE) {
        if (n_te) {
            fuzz_check(n_te == 1 && te_exact == 1 && !s.http10);
            fuzz_check((v == GW_FRAME_CLOSE) == (n_cl > 0));
        } else {
            fuzz_check(v == GW_FRAME_OK);
            if (cl_differ) /* equal only when they differ in leading zeros */
                fuzz_check(!s.cl_bad);
        }
    }
    if (!n_te && !n_cl && !uri_long && bytes <= GW_HEAD_MAX)
        fuzz_check(v == GW_FRAME_OK);
    const char *body;
    unsigned status = gw_frame_answer(v, &body);
    fuzz_check((status == 0) == (v == GW_FRAME_OK || v == GW_FRAME_CLOSE));
    return 0;
}
