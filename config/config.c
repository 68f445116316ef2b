#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cfg_init(cfg *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen_host, "127.0.0.1");
    c->listen_port = 8080;
    c->wait_timeout_ms = 2000;
    c->body_limit = 4096;
    c->max_connections = 4096;
    c->max_connections_per_ip = 256;
    c->request_timeout_ms = 10000;
    c->result_ttl_s = 300;
    c->result_capacity = 100000;
    strcpy(c->park, "event");
    strcpy(c->http_io, "poll");
    c->tb_rate = 50000;
    c->tb_burst = 5000;
    c->queue_partitions = 4;
    c->queue_max_backlog = 65536;
    c->queue_max_backlog_bytes = 64ULL << 20;
    c->queue_ack_timeout_ms = 5000;
    c->queue_lease_timeout_ms = 3000;
    c->queue_max_deliveries = 5;
    strcpy(c->queue_data_dir, CFG_DEFAULT_DATA_DIR);
    strcpy(c->queue_order_flush, "sync");
    c->worker_embedded = 1;
    c->worker_threads = 0; /* cfg_worker_threads */
    c->worker_batch = 64;
    strcpy(c->worker_inventory, "memory");
    c->worker_decision_capacity = 1000000;
    c->worker_pay_timeout_ms = 900000;
    c->rpc_registry_ttl_ms = 3000;
    c->rpc_handshake_timeout_ms = 2000;
    strcpy(c->redis_host, "127.0.0.1");
    c->redis_port = 6379;
    c->redis_timeout_ms = 200;
}

void cfg_release(cfg *c)
{
    for (size_t i = 0; i < c->nblocklist; i++)
        free(c->blocklist[i]);
    free(c->blocklist);
    for (size_t i = 0; i < c->nrpc_gateways; i++)
        free(c->rpc_gateways[i]);
    free(c->rpc_gateways);
    c->rpc_gateways = NULL;
    c->nrpc_gateways = 0;
    free(c->items);
    c->blocklist = NULL;
    c->items = NULL;
    c->nblocklist = c->nitems = 0;
}

uint32_t cfg_worker_threads(const cfg *c)
{
    if (c->worker_threads)
        return c->worker_threads;
    /* memory: every decision ends in the one order log and its fsync, which
     * one thread batches best; redis: threads overlap Redis round trips */
    return strcmp(c->worker_inventory, "memory") == 0 ? 1 : 2;
}

const cfg_item *cfg_find_item(const cfg *c, const char *id)
{
    for (size_t i = 0; i < c->nitems; i++)
        if (strcmp(c->items[i].id, id) == 0)
            return &c->items[i];
    return NULL;
}

static int id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CFG_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '_' && ch != '.' && ch != ':' && ch != '-')
            return 0;
    }
    return 1;
}

int cfg_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return -EINVAL;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
        return -EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (uint16_t)p;
    return 0;
}

typedef struct load_ctx {
    cfg *c;
    FILE *f;
    int lineno;        /* lines read so far: the line being handled */
    int err_line;      /* line of the first error found by on_key */
    int section_line;  /* line of the last "[section]" header read */
    char section[128]; /* its name in full: inih cuts names at 49 characters */
    char msg[256];
} load_ctx;

/* inih reads one line per call: count them so errors name their line. */
static char *read_line(char *buf, int size, void *stream)
{
    load_ctx *L = stream;
    char *r = fgets(buf, size, L->f);
    if (r) {
        L->lineno++;
        const char *p = r + strspn(r, " \t");
        if (*p == '[') {
            size_t n = strcspn(p + 1, "]\r\n");
            if (n >= sizeof L->section)
                n = sizeof L->section - 1;
            memcpy(L->section, p + 1, n);
            L->section[n] = '\0';
            L->section_line = L->lineno;
        }
    }
    return r;
}

static int parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!*v || *v == '-' || isspace((unsigned char)*v))
        return -EINVAL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x < min || x > max)
        return -EINVAL;
    *out = x;
    return 0;
}

static int parse_i64(const char *v, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    if (!*v || isspace((unsigned char)*v))
        return -EINVAL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < min || x > max)
        return -EINVAL;
    *out = x;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") || !strcmp(v, "on"))
        *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "off"))
        *out = 0;
    else
        return -EINVAL;
    return 0;
}

#define U32(key, field, lo, hi)                                                                    \
    if (!strcmp(name, key)) {                                                                      \
        uint64_t x;                                                                                \
        if (parse_u64(value, lo, hi, &x) < 0)                                                      \
            return fail(L, section, name, "an integer from " #lo " to " #hi);                      \
        c->field = (uint32_t)x;                                                                    \
        return 1;                                                                                  \
    }
#define U64(key, field, lo, hi)                                                                    \
    if (!strcmp(name, key)) {                                                                      \
        uint64_t x;                                                                                \
        if (parse_u64(value, lo, hi, &x) < 0)                                                      \
            return fail(L, section, name, "an integer from " #lo " to " #hi);                      \
        c->field = x;                                                                              \
        return 1;                                                                                  \
    }

static int fail(load_ctx *L, const char *section, const char *name, const char *want)
{
    if (want)
        snprintf(L->msg, sizeof L->msg, "[%s] %s: expected %s", section, name, want);
    else
        snprintf(L->msg, sizeof L->msg, "[%s] unknown key '%s'", section, name);
    return 0;
}

static cfg_item *item_for(load_ctx *L, const char *id)
{
    cfg *c = L->c;
    for (size_t i = 0; i < c->nitems; i++)
        if (strcmp(c->items[i].id, id) == 0)
            return &c->items[i];
    if (c->nitems == CFG_MAX_ITEMS)
        return NULL;
    cfg_item *n = realloc(c->items, (c->nitems + 1) * sizeof *n);
    if (!n)
        return NULL;
    c->items = n;
    cfg_item *it = &c->items[c->nitems++];
    memset(it, 0, sizeof *it);
    strcpy(it->id, id);
    it->stock = -1;
    it->per_user_limit = 1;
    it->line = L->section_line;
    return it;
}

static int on_key_checked(load_ctx *L, cfg *c, const char *section, const char *name,
                          const char *value);

/* What a list entry must be: a check and its name for the error message. */
typedef struct list_kind {
    int (*valid)(const char *tok);
    const char *what;  /* "'x' is not <what>" */
    const char *items; /* "more than N <items>" */
} list_kind;

static int addr_valid(const char *s)
{
    return (strncmp(s, "tcp:", 4) == 0 || strncmp(s, "unix:", 5) == 0) && strlen(s) <= 279;
}

static const list_kind user_ids = {id_valid, "a valid user id", "user ids"};
static const list_kind addresses = {addr_valid, "tcp:HOST:PORT or unix:SOCKET", "entries"};

/* Append the comma/space separated entries of value to *list (a key may
 * repeat: its entries add up), at most max in all. */
static int add_list(load_ctx *L, const char *value, const list_kind *kind, char ***list,
                    size_t *n, size_t max, const char *section, const char *name)
{
    char *copy = strdup(value), *save = NULL;
    int rc = 0;
    if (!copy)
        goto out_oom;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (!kind->valid(tok)) {
            snprintf(L->msg, sizeof L->msg, "[%s] %s: '%.64s' is not %s", section, name, tok,
                     kind->what);
            rc = -EINVAL;
            goto out_free;
        }
        if (*n == max) {
            snprintf(L->msg, sizeof L->msg, "[%s] %s: more than %zu %s", section, name, max,
                     kind->items);
            rc = -EINVAL;
            goto out_free;
        }
        char **nl = realloc(*list, (*n + 1) * sizeof *nl);
        if (nl)
            *list = nl;
        char *dup = nl ? strdup(tok) : NULL;
        if (!dup)
            goto out_oom;
        (*list)[(*n)++] = dup;
    }
    goto out_free;
out_oom:
    snprintf(L->msg, sizeof L->msg, "out of memory");
    rc = -ENOMEM;
out_free:
    free(copy);
    return rc;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *L = user;
    cfg *c = L->c;

    if (L->err_line) /* report the first error only */
        return 1;
    /* a long [item.<id>] comes truncated: use the name as written, so an id
     * of 45-64 characters is kept whole and a longer one is refused */
    if (strncmp(L->section, section, strlen(section)) == 0)
        section = L->section;
    int ok = on_key_checked(L, c, section, name, value);
    if (!ok)
        L->err_line = L->lineno;
    return ok;
}

static int on_key_checked(load_ctx *L, cfg *c, const char *section, const char *name,
                          const char *value)
{
    if (!name) /* a section header alone (inih INI_CALL_HANDLER_ON_NEW_SECTION) */
        return 1;
    if (!strcmp(section, "gateway")) {
        if (!strcmp(name, "listen")) {
            if (cfg_parse_listen(value, c->listen_host, sizeof c->listen_host, &c->listen_port) < 0)
                return fail(L, section, name, "HOST:PORT");
            return 1;
        }
        if (!strcmp(name, "gateway_id")) {
            if (strlen(value) != 36)
                return fail(L, section, name, "a UUID (36 characters) or nothing");
            strcpy(c->gateway_id, value);
            return 1;
        }
        U32("wait_timeout_ms", wait_timeout_ms, 1, 600000)
        U32("body_limit", body_limit, 64, 1048576)
        U32("max_connections", max_connections, 1, 1000000)
        U32("max_connections_per_ip", max_connections_per_ip, 0, 1000000)
        U32("request_timeout_ms", request_timeout_ms, 0, 3600000)
        U32("result_ttl_s", result_ttl_s, 1, 86400)
        U32("result_capacity", result_capacity, 16, 100000000)
        if (!strcmp(name, "park")) {
            if (strcmp(value, "thread") != 0 && strcmp(value, "event") != 0)
                return fail(L, section, name, "'thread' or 'event'");
            strcpy(c->park, value);
            return 1;
        }
        if (!strcmp(name, "http_io")) {
            if (strcmp(value, "poll") != 0 && strcmp(value, "epoll") != 0)
                return fail(L, section, name, "'poll' or 'epoll'");
            strcpy(c->http_io, value);
            return 1;
        }
        U32("pool_threads", pool_threads, 0, 256)
        return fail(L, section, name, NULL);
    }
    if (!strcmp(section, "token_bucket")) {
        if (!strcmp(name, "rate")) {
            char *end;
            errno = 0;
            double r = strtod(value, &end);
            if (errno || end == value || *end || !isfinite(r) || r < 0 || r > 1e9)
                return fail(L, section, name, "tokens per second from 0 (unlimited) to 1e9");
            c->tb_rate = r;
            return 1;
        }
        U32("burst", tb_burst, 1, 100000000)
        return fail(L, section, name, NULL);
    }
    if (!strcmp(section, "queue")) {
        U32("partitions", queue_partitions, 1, 1024)
        U64("max_backlog", queue_max_backlog, 1, 100000000)
        U64("max_backlog_bytes", queue_max_backlog_bytes, 1024, 1ULL << 40)
        U32("ack_timeout_ms", queue_ack_timeout_ms, 10, 3600000)
        U32("lease_timeout_ms", queue_lease_timeout_ms, 10, 3600000)
        U32("max_deliveries", queue_max_deliveries, 1, 1000)
        if (!strcmp(name, "data_dir")) {
            if (!*value || strlen(value) >= sizeof c->queue_data_dir)
                return fail(L, section, name, "a directory path of 1 to 1023 characters");
            strcpy(c->queue_data_dir, value);
            return 1;
        }
        if (!strcmp(name, "order_flush")) {
            if (strcmp(value, "sync") != 0 && strcmp(value, "async") != 0)
                return fail(L, section, name, "'sync' or 'async'");
            strcpy(c->queue_order_flush, value);
            return 1;
        }
        return fail(L, section, name, NULL);
    }
    if (!strcmp(section, "worker")) {
        if (!strcmp(name, "embedded")) {
            if (parse_bool(value, &c->worker_embedded) < 0)
                return fail(L, section, name, "true or false");
            return 1;
        }
        if (!strcmp(name, "inventory")) {
            if (strcmp(value, "memory") != 0 && strcmp(value, "redis") != 0)
                return fail(L, section, name, "'memory' or 'redis'");
            strcpy(c->worker_inventory, value);
            return 1;
        }
        U32("pay_timeout_ms", worker_pay_timeout_ms, 1000, 86400000)
        U32("threads", worker_threads, 0, 256)
        U32("batch", worker_batch, 1, 4096)
        U32("decision_capacity", worker_decision_capacity, 1024, 100000000)
        return fail(L, section, name, NULL);
    }
    if (!strcmp(section, "rpc")) {
        if (!strcmp(name, "listen")) {
            if (strncmp(value, "tcp:", 4) != 0 && strncmp(value, "unix:", 5) != 0)
                return fail(L, section, name, "tcp:HOST:PORT or unix:SOCKET");
            if (strlen(value) >= sizeof c->rpc_listen)
                return fail(L, section, name, "an address of at most 279 characters");
            strcpy(c->rpc_listen, value);
            return 1;
        }
        if (!strcmp(name, "secret")) {
            size_t n = strlen(value);
            if (n < 8 || n >= sizeof c->rpc_secret)
                return fail(L, section, name, "a shared secret of 8 to 256 characters");
            strcpy(c->rpc_secret, value);
            return 1;
        }
        if (!strcmp(name, "gateways")) {
            return add_list(L, value, &addresses, &c->rpc_gateways, &c->nrpc_gateways, 64,
                            section, name) == 0;
        }
        if (!strcmp(name, "tls_cert") || !strcmp(name, "tls_key") || !strcmp(name, "tls_ca")) {
            char *dst = !strcmp(name, "tls_cert")  ? c->rpc_tls_cert
                        : !strcmp(name, "tls_key") ? c->rpc_tls_key
                                                   : c->rpc_tls_ca;
            if (strlen(value) >= sizeof c->rpc_tls_cert)
                return fail(L, section, name, "a file path of at most 1023 characters");
            strcpy(dst, value);
            return 1;
        }
        U32("registry_ttl_ms", rpc_registry_ttl_ms, 300, 600000)
        U32("handshake_timeout_ms", rpc_handshake_timeout_ms, 100, 60000)
        return fail(L, section, name, NULL);
    }
    if (!strcmp(section, "redis")) {
        if (!strcmp(name, "host")) {
            if (!*value || strlen(value) >= sizeof c->redis_host)
                return fail(L, section, name, "a host name or address");
            strcpy(c->redis_host, value);
            return 1;
        }
        if (!strcmp(name, "port")) {
            uint64_t x;
            if (parse_u64(value, 1, 65535, &x) < 0)
                return fail(L, section, name, "an integer from 1 to 65535");
            c->redis_port = (uint16_t)x;
            return 1;
        }
        U32("timeout_ms", redis_timeout_ms, 1, 60000)
        return fail(L, section, name, NULL);
    }
    if (!strcmp(section, "risk")) {
        if (!strcmp(name, "blocklist")) {
            return add_list(L, value, &user_ids, &c->blocklist, &c->nblocklist,
                            CFG_MAX_BLOCKLIST, section, name) == 0;
        }
        return fail(L, section, name, NULL);
    }
    if (!strncmp(section, "item.", 5)) {
        const char *id = section + 5;
        if (!id_valid(id)) {
            snprintf(L->msg, sizeof L->msg,
                     "[%s]: item id must be 1-64 characters of A-Z a-z 0-9 _ . : -", section);
            return 0;
        }
        cfg_item *it = item_for(L, id);
        if (!it) {
            snprintf(L->msg, sizeof L->msg, "[%s]: too many items (at most %d)", section,
                     CFG_MAX_ITEMS);
            return 0;
        }
        int64_t x;
        if (!strcmp(name, "stock")) {
            if (parse_i64(value, 0, INT64_C(1000000000000), &x) < 0)
                return fail(L, section, name, "an integer from 0 to 1000000000000");
            it->stock = x;
            return 1;
        }
        if (!strcmp(name, "starts_at") || !strcmp(name, "ends_at")) {
            if (parse_i64(value, 0, INT64_C(253402300799), &x) < 0)
                return fail(L, section, name, "unix seconds (0 = none)");
            *(!strcmp(name, "starts_at") ? &it->starts_at : &it->ends_at) = x;
            return 1;
        }
        if (!strcmp(name, "per_user_limit")) {
            if (parse_i64(value, 1, 1000000, &x) < 0)
                return fail(L, section, name, "an integer from 1 to 1000000");
            it->per_user_limit = (uint32_t)x;
            return 1;
        }
        return fail(L, section, name, NULL);
    }
    snprintf(L->msg, sizeof L->msg, "unknown section [%s]", section);
    return 0;
}

int cfg_load(cfg *c, const char *path, char *err, size_t errlen)
{
    load_ctx L = {.c = c};
    L.f = fopen(path, "r");
    if (!L.f) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    int line = ini_parse_stream(read_line, &L, on_key, &L);
    fclose(L.f);
    if (line != 0) {
        if (line < 0)
            snprintf(err, errlen, "%s: cannot read", path);
        else if (L.err_line && L.err_line <= line)
            snprintf(err, errlen, "%s:%d: %s", path, L.err_line, L.msg);
        else
            snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
                     path, line);
        return -EINVAL;
    }
    for (size_t i = 0; i < c->nitems; i++) {
        const cfg_item *it = &c->items[i];
        if (it->stock < 0) {
            snprintf(err, errlen, "%s:%d: [item.%s]: stock is required", path, it->line, it->id);
            return -EINVAL;
        }
        if (it->ends_at && it->starts_at && it->ends_at <= it->starts_at) {
            snprintf(err, errlen, "%s:%d: [item.%s]: ends_at must be after starts_at", path,
                     it->line, it->id);
            return -EINVAL;
        }
    }
    int rc = cfg_validate(c, err, errlen);
    if (rc < 0) {
        /* prefix the file name so every config error names the file */
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s: %s", path, err);
        snprintf(err, errlen, "%s", tmp);
    }
    return rc;
}

int cfg_validate(const cfg *c, char *err, size_t errlen)
{
    if (c->nitems == 0) {
        snprintf(err, errlen, "no [item.<id>] section: nothing to sell");
        return -EINVAL;
    }
    for (size_t i = 0; i < c->nitems; i++) {
        const cfg_item *it = &c->items[i];
        if (it->ends_at && it->starts_at && it->ends_at <= it->starts_at) {
            snprintf(err, errlen, "[item.%s]: ends_at must be after starts_at", it->id);
            return -EINVAL;
        }
    }
    if (c->tb_rate > 0 && c->tb_burst == 0) {
        snprintf(err, errlen, "[token_bucket] burst must be at least 1");
        return -EINVAL;
    }
    if (!c->worker_embedded && !c->rpc_listen[0]) {
        snprintf(err, errlen, "[worker] embedded = false: set [rpc] listen so workers can reach "
                              "this gateway's queue");
        return -EINVAL;
    }
    if ((c->rpc_listen[0] || c->nrpc_gateways) && !c->rpc_secret[0]) {
        snprintf(err, errlen, "[rpc] secret is required when RPC is used");
        return -EINVAL;
    }
    if (!!c->rpc_tls_cert[0] != !!c->rpc_tls_key[0]) {
        snprintf(err, errlen, "[rpc] %s is required with %s",
                 c->rpc_tls_cert[0] ? "tls_key" : "tls_cert",
                 c->rpc_tls_cert[0] ? "tls_cert" : "tls_key");
        return -EINVAL;
    }
    if (c->rpc_tls_cert[0] && !strncmp(c->rpc_listen, "unix:", 5)) {
        /* refused rather than served in clear to an operator who asked for TLS */
        snprintf(err, errlen,
                 "[rpc] tls_cert: TLS applies to tcp: addresses; listen = %s is a "
                 "Unix socket (guarded by its file permissions): drop the tls_ keys "
                 "or listen on tcp:",
                 c->rpc_listen);
        return -EINVAL;
    }
    if (c->rpc_tls_ca[0] && !c->rpc_tls_cert[0] && c->rpc_listen[0]) {
        snprintf(err, errlen,
                 "[rpc] tls_ca: a gateway with listen serves TLS only with "
                 "tls_cert and tls_key; set them too");
        return -EINVAL;
    }
    if (!c->worker_embedded && !strcmp(c->worker_inventory, "memory")) {
        /* separate worker processes with their own memory would each sell
         * the whole stock */
        snprintf(err, errlen, "[worker] inventory = memory needs embedded = true; use redis "
                              "for separate worker processes");
        return -EINVAL;
    }
    return 0;
}
