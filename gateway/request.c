#include "request.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message.h"

/* jansson allocates a dozen small blocks to parse one purchase body and frees
 * them all before gw_parse_purchase returns. While a parse runs, its thread
 * points parse_arena at a buffer on its stack and jansson's blocks are carved
 * from there; free() of them is a no-op. Everything else (other threads,
 * larger parses once the buffer is used up) goes to malloc as before. */
typedef struct arena {
    size_t used;
    alignas(max_align_t) unsigned char buf[2048];
} arena;

static _Thread_local arena *parse_arena;

static void *arena_malloc(size_t n)
{
    arena *a = parse_arena;
    size_t need = (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    if (a && need >= n && need <= sizeof a->buf - a->used) {
        void *p = a->buf + a->used;
        a->used += need;
        return p;
    }
    return malloc(n);
}

static void arena_free(void *p)
{
    arena *a = parse_arena;
    if (a && (unsigned char *)p >= a->buf && (unsigned char *)p < a->buf + sizeof a->buf)
        return;
    free(p);
}

static void install_arena(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
}

static void bad_request(char *err, size_t errlen, const char *msg, const json_error_t *je)
{
    json_t *o = je ? json_pack("{s:s, s:s, s:i, s:i, s:i}", "result", "bad_request", "error", msg,
                               "line", je->line, "column", je->column, "position", je->position)
                   : json_pack("{s:s, s:s}", "result", "bad_request", "error", msg);
    size_t n = o ? json_dumpb(o, err, errlen - 1, JSON_COMPACT) : 0;
    if (n == 0 || n >= errlen)
        n = (size_t)snprintf(err, errlen, "{\"result\":\"bad_request\"}");
    err[n < errlen ? n : errlen - 1] = '\0';
    json_decref(o);
}

static int take_id(json_t *obj, const char *key, char *out, char *err, size_t errlen)
{
    char msg[160];
    json_t *v = json_object_get(obj, key);
    if (!v) {
        snprintf(msg, sizeof msg, "%s is required", key);
        bad_request(err, errlen, msg, NULL);
        return -EINVAL;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (sk_id_valid(s, n)) {
            memcpy(out, s, n + 1);
            return 0;
        }
    } else if (json_is_integer(v) && json_integer_value(v) >= 0) {
        snprintf(out, SK_ID_MAX + 1, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return 0;
    }
    snprintf(msg, sizeof msg,
             "%s must be a string of 1-64 characters from [A-Za-z0-9_.:-] or a non-negative "
             "integer",
             key);
    bad_request(err, errlen, msg, NULL);
    return -EINVAL;
}

static int parse_purchase(const char *body, size_t len, gw_purchase *p, char *err, size_t errlen);

int gw_parse_purchase(const char *body, size_t len, gw_purchase *p, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    arena a;
    pthread_once(&once, install_arena);
    a.used = 0;
    parse_arena = &a;
    int rc = parse_purchase(body, len, p, err, errlen);
    parse_arena = NULL; /* every block of the parse was freed by now */
    return rc;
}

static int parse_purchase(const char *body, size_t len, gw_purchase *p, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    int rc = -EINVAL;
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON: %s", je.text);
        bad_request(err, errlen, msg, &je);
        return -EINVAL;
    }
    if (!json_is_object(root)) {
        bad_request(err, errlen, "body must be a JSON object", NULL);
        goto out_free_root;
    }
    if (take_id(root, "user_id", p->user_id, err, errlen) < 0 ||
        take_id(root, "item_id", p->item_id, err, errlen) < 0)
        goto out_free_root;
    rc = 0;
out_free_root:
    json_decref(root);
    return rc;
}

int gw_is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, sizeof want - 1) != 0)
        return 0;
    ct += sizeof want - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* n lowercase hex digits at s, not all zero */
static int hex_id(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        nonzero |= s[i] != '0';
    }
    return nonzero;
}

/* W3C Trace Context: version "-" trace-id "-" parent-id "-" flags */
static int traceparent_id(const char *tp, char *out)
{
    size_t len = strnlen(tp, 513);
    if (len < 55 || len > 512 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
        return 0;
    if (!(hex_id(tp, 2) || !strncmp(tp, "00", 2)) || !strncmp(tp, "ff", 2))
        return 0;
    if (!strncmp(tp, "00", 2) ? len != 55 : len > 55 && tp[55] != '-')
        return 0;
    if (!hex_id(tp + 3, 32) || !hex_id(tp + 36, 16) ||
        !(hex_id(tp + 53, 2) || !strncmp(tp + 53, "00", 2)))
        return 0;
    memcpy(out, tp + 3, 32);
    out[32] = '\0';
    return 1;
}

int gw_client_request_id(const char *x_request_id, const char *traceparent, char *out)
{
    if (x_request_id) {
        size_t n = strnlen(x_request_id, SK_TRACE_MAX + 1);
        if (sk_trace_valid(x_request_id, n)) {
            memcpy(out, x_request_id, n);
            out[n] = '\0';
            return 1;
        }
    }
    if (traceparent && traceparent_id(traceparent, out))
        return 1;
    out[0] = '\0';
    return 0;
}
