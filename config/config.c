/*
 * config.c - the INI configuration: one table row per key.
 *
 * keys[] names every key of the fixed sections once: section, name, type,
 * bounds, default, the field it fills and a line of help; item_keys[] does
 * the same for [item.<id>] with fields in cfg_item. cfg_init sets the
 * defaults from the tables, cfg_load parses and checks every key with them,
 * cfg_print writes the effective configuration back from them, and the unit
 * test checks every row is documented. Checks that span keys (TLS keys that go
 * together, a secret with RPC) are cfg_validate's, after loading.
 *
 * A section header appears once and a key is set once per file: a second one
 * is an error naming the first (a copy-pasted [item.x] would otherwise merge
 * two items, a repeated key would silently take the last value). Keys flagged
 * CFG_REPEAT add up instead ([risk] blocklist), and a section holding only
 * such keys may be opened again.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* What a list entry must be: a check and its name for the error message. */
struct cfg_list_kind {
    int (*valid)(const char *tok);
    const char *what;  /* "'x' is not <what>" */
    const char *items; /* "more than N <items>" */
};

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

static int rpc_addr_valid(const char *s)
{
    return strncmp(s, "tcp:", 4) == 0 || strncmp(s, "unix:", 5) == 0;
}

static int addr_valid(const char *s)
{
    return rpc_addr_valid(s) && strlen(s) <= 279;
}

/* An IPv4 or IPv6 address, optionally /PREFIX (at most 32 or 128). */
static int cidr_valid(const char *s)
{
    char host[INET6_ADDRSTRLEN + 1];
    unsigned char buf[16];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof host)
        return 0;
    memcpy(host, s, n);
    host[n] = 0;
    unsigned max = inet_pton(AF_INET, host, buf) == 1    ? 32
                   : inet_pton(AF_INET6, host, buf) == 1 ? 128
                                                         : 0;
    if (!max)
        return 0;
    if (!slash)
        return 1;
    char *end;
    if (!isdigit((unsigned char)slash[1]))
        return 0;
    unsigned long v = strtoul(slash + 1, &end, 10);
    return !*end && v <= max;
}

/* A web origin as browsers send it: scheme://host[:port], no path, or "*". */
static int origin_valid(const char *s)
{
    if (!strcmp(s, "*"))
        return 1;
    size_t n = strlen(s), skip;
    if (!strncmp(s, "http://", 7))
        skip = 7;
    else if (!strncmp(s, "https://", 8))
        skip = 8;
    else
        return 0;
    if (n == skip || n > 255 || s[n - 1] == '.')
        return 0;
    for (size_t i = skip; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != ':' && ch != '[' && ch != ']')
            return 0;
    }
    return 1;
}

static const cfg_list_kind user_ids = {id_valid, "a valid user id", "user ids"};
static const cfg_list_kind addresses = {addr_valid, "tcp:HOST:PORT or unix:SOCKET", "entries"};
static const cfg_list_kind cidrs = {cidr_valid, "an address or CIDR", "entries"};
static const cfg_list_kind origins = {origin_valid, "an origin (http[s]://HOST[:PORT] or *)",
                                      "origins"};

static const char *const park_words[] = {"thread", "event", NULL};
static const char *const http_io_words[] = {"poll", "epoll", NULL};
static const char *const flush_words[] = {"sync", "async", NULL};
static const char *const inventory_words[] = {"memory", "redis", NULL};
static const char *const log_level_words[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_format_words[] = {"text", "json", NULL};
static const char *const scope_words[] = {"local", "global", NULL};
static const char *const client_header_words[] = {"x-forwarded-for", "forwarded", NULL};

#define F(field) offsetof(cfg, field), sizeof(((cfg *)0)->field)
#define IF(field) offsetof(cfg_item, field), sizeof(((cfg_item *)0)->field)

/* clang-format off */
static const cfg_key keys[] = {
    {"gateway", "listen", CFG_LISTEN, F(listen_host), offsetof(cfg, listen_port), 0, 0, "127.0.0.1:8080",
     "HOST:PORT", NULL, NULL, NULL, 0,
     "HTTP address: IPv4, [IPv6] or a host name resolved at start; port 0 = any free port"},
    {"gateway", "gateway_id", CFG_STR, F(gateway_id), 0, 36, 36, NULL,
     "a UUID (36 characters) or nothing", NULL, NULL, NULL, 0,
     "this gateway's UUID; a fresh one at every start when absent"},
    {"gateway", "wait_timeout_ms", CFG_U32, F(wait_timeout_ms), 0, 1, 600000, "2000", NULL, NULL, NULL, NULL, 0,
     "how long a request stays parked before 504"},
    {"gateway", "body_limit", CFG_U32, F(body_limit), 0, 64, 1048576, "4096", NULL, NULL, NULL, NULL, 0,
     "POST bodies above this many bytes get 413"},
    {"gateway", "max_connections", CFG_U32, F(max_connections), 0, 1, 1000000, "4096", NULL, NULL, NULL, NULL, 0,
     "open HTTP connections at most"},
    {"gateway", "max_connections_per_ip", CFG_U32, F(max_connections_per_ip), 0, 0, 1000000, "256", NULL, NULL, NULL, NULL, 0,
     "open connections one client address may hold; 0 = no cap"},
    {"gateway", "request_timeout_ms", CFG_U32, F(request_timeout_ms), 0, 0, 3600000, "10000", NULL, NULL, NULL, NULL, 0,
     "a request's headers and body must be in by then; 0 = none"},
    {"gateway", "result_ttl_s", CFG_U32, F(result_ttl_s), 0, 1, 86400, "300", NULL, NULL, NULL, NULL, 0,
     "how long GET /seckill/result/{id} remembers an outcome"},
    {"gateway", "result_capacity", CFG_U32, F(result_capacity), 0, 16, 100000000, "100000", NULL, NULL, NULL, NULL, 0,
     "outcomes remembered at most"},
    {"gateway", "park", CFG_ENUM, F(park), 0, 0, 0, "event", NULL, park_words, NULL, NULL, 0,
     "parked requests: suspended connections (event) or a thread each (thread)"},
    {"gateway", "http_io", CFG_ENUM, F(http_io), 0, 0, 0, "poll", NULL, http_io_words, NULL, NULL, 0,
     "event park: libmicrohttpd's poll threads or our epoll loops"},
    {"gateway", "pool_threads", CFG_U32, F(pool_threads), 0, 0, 256, "0", NULL, NULL, NULL, NULL, 0,
     "event park: HTTP threads; 0 = one per CPU"},
    {"gateway", "drain_delay_ms", CFG_U32, F(drain_delay_ms), 0, 0, 600000, "5000", NULL, NULL, NULL, NULL, 0,
     "after SIGTERM /readyz answers 503 this long while requests are still served"},

    {"http", "cors_origins", CFG_LIST, offsetof(cfg, cors_origins), 0, offsetof(cfg, ncors_origins), 0, CFG_MAX_CORS_ORIGINS, NULL, NULL, NULL, &origins, NULL, 0,
     "origins a browser app may call the API from (CORS), comma separated; * = any; none = no CORS headers"},

    {"token_bucket", "rate", CFG_RATE, F(tb_rate), 0, 0, 1000000000, "50000",
     "tokens per second from 0 (unlimited) to 1e9", NULL, NULL, NULL, 0,
     "admitted requests per second; 0 = unlimited"},
    {"token_bucket", "burst", CFG_U32, F(tb_burst), 0, 1, 100000000, "5000", NULL, NULL, NULL, NULL, 0,
     "tokens the bucket holds"},
    {"token_bucket", "scope", CFG_ENUM, F(tb_scope), 0, 0, 0, "local", NULL, scope_words, NULL, NULL, 0,
     "local: rate and burst per gateway; global: one bucket in Redis for every gateway"},
    {"token_bucket", "chunk", CFG_U32, F(tb_chunk), 0, 0, 100000000, "0", NULL, NULL, NULL, NULL, 0,
     "global: tokens a gateway takes from Redis per call; 0 = rate / 100"},

    {"limits", "per_user_rate", CFG_RATE, F(lim_user_rate), 0, 0, 1000000000, "0",
     "tokens per second from 0 (off) to 1e9", NULL, NULL, NULL, 0,
     "purchases per second per user id; 0 = no per-user limit"},
    {"limits", "per_user_burst", CFG_U32, F(lim_user_burst), 0, 1, 100000000, "5", NULL, NULL, NULL, NULL, 0,
     "tokens a user's bucket holds"},
    {"limits", "per_ip_rate", CFG_RATE, F(lim_ip_rate), 0, 0, 1000000000, "0",
     "tokens per second from 0 (off) to 1e9", NULL, NULL, NULL, 0,
     "purchases per second per client address (IPv4 address, IPv6 /64); 0 = no per-address limit"},
    {"limits", "per_ip_burst", CFG_U32, F(lim_ip_burst), 0, 1, 100000000, "50", NULL, NULL, NULL, NULL, 0,
     "tokens an address's bucket holds"},
    {"limits", "capacity", CFG_U32, F(lim_capacity), 0, 1024, 100000000, "65536", NULL, NULL, NULL, NULL, 0,
     "buckets kept per scope; past it the fullest bucket is forgotten (its key starts afresh)"},
    {"limits", "trusted_proxies", CFG_LIST, offsetof(cfg, lim_proxies), 0, offsetof(cfg, nlim_proxies), 0, 64, NULL, NULL, NULL, &cidrs, NULL, 0,
     "addresses or CIDRs of proxies whose client_header names the client"},
    {"limits", "client_header", CFG_ENUM, F(lim_client_header), 0, 0, 0, "x-forwarded-for", NULL, client_header_words, NULL, NULL, 0,
     "the header trusted proxies append the client to: x-forwarded-for or forwarded"},

    {"admission", "require_token", CFG_BOOL, F(adm_require_token), 0, 0, 0, "false", "true or false", NULL, NULL, NULL, 0,
     "POST /seckill and the order endpoints need a signed token of the user (403 bad_token)"},
    {"admission", "key", CFG_STR, F(adm_key), 0, 16, 256, NULL, "a key of 16 to 256 characters", NULL, NULL, NULL, CFG_SECRET,
     "HMAC-SHA256 key shared with the token issuer"},
    {"admission", "key_previous", CFG_STR, F(adm_key_previous), 0, 16, 256, NULL, "a key of 16 to 256 characters", NULL, NULL, NULL, CFG_SECRET,
     "the key before the last rotation, still accepted"},
    {"admission", "idempotency_ttl_s", CFG_U32, F(adm_idem_ttl_s), 0, 1, 604800, "3600", NULL, NULL, NULL, NULL, 0,
     "how long a gateway remembers the body an Idempotency-Key came with (422 for another)"},
    {"admission", "idempotency_capacity", CFG_U32, F(adm_idem_capacity), 0, 1024, 100000000, "100000", NULL, NULL, NULL, NULL, 0,
     "Idempotency-Keys a gateway remembers at once"},
    {"admission", "inflight_factor", CFG_U32, F(adm_inflight_factor), 0, 0, 1000, "0", NULL, NULL, NULL, NULL, 0,
     "k: at most k x (stock left - in flight) requests of an item in flight, else 429 busy; 0 = off"},
    {"admission", "deadline_gate", CFG_BOOL, F(adm_deadline_gate), 0, 0, 0, "false", "true or false", NULL, NULL, NULL, 0,
     "503 at once when the queue depth over the measured decision rate outlasts wait_timeout_ms"},
    {"admission", "open_window_ms", CFG_U32, F(adm_open_window_ms), 0, 0, 60000, "0", NULL, NULL, NULL, NULL, 0,
     "fair opening: purchases in the first W ms after an item's starts_at are queued in random order; 0 = off"},

    {"queue", "partitions", CFG_U32, F(queue_partitions), 0, 1, 1024, "4", NULL, NULL, NULL, NULL, 0,
     "partitions of the request topic"},
    {"queue", "max_backlog", CFG_U64, F(queue_max_backlog), 0, 1, 100000000, "65536", NULL, NULL, NULL, NULL, 0,
     "request messages waiting for a worker; past it 503"},
    {"queue", "max_backlog_bytes", CFG_U64, F(queue_max_backlog_bytes), 0, 1024, 1ULL << 40, "67108864", NULL, NULL, NULL, NULL, 0,
     "bytes of waiting request messages; past it 503"},
    {"queue", "ack_timeout_ms", CFG_U32, F(queue_ack_timeout_ms), 0, 10, 3600000, "5000", NULL, NULL, NULL, NULL, 0,
     "a delivered message not acknowledged by then is delivered again"},
    {"queue", "lease_timeout_ms", CFG_U32, F(queue_lease_timeout_ms), 0, 10, 3600000, "3000", NULL, NULL, NULL, NULL, 0,
     "a consumer's partition lease lasts this long unless renewed"},
    {"queue", "max_deliveries", CFG_U32, F(queue_max_deliveries), 0, 1, 1000, "5", NULL, NULL, NULL, NULL, 0,
     "deliveries of a message before it goes to the dead-letter topic"},
    {"queue", "data_dir", CFG_STR, F(queue_data_dir), 0, 1, 1023, CFG_DEFAULT_DATA_DIR,
     "a directory path of 1 to 1023 characters", NULL, NULL, NULL, 0,
     "memory inventory: the order log; one gateway per directory"},
    {"queue", "order_flush", CFG_ENUM, F(queue_order_flush), 0, 0, 0, "sync", NULL, flush_words, NULL, NULL, 0,
     "sync: an order is fsynced before its answer; async: every 100 ms"},

    {"worker", "embedded", CFG_BOOL, F(worker_embedded), 0, 0, 0, "true", "true or false", NULL, NULL, NULL, 0,
     "worker threads inside the gateway"},
    {"worker", "threads", CFG_U32, F(worker_threads), 0, 0, 256, "0", NULL, NULL, NULL, NULL, 0,
     "worker threads; 0 = 1 with the memory inventory, 2 with redis"},
    {"worker", "batch", CFG_U32, F(worker_batch), 0, 1, 4096, "64", NULL, NULL, NULL, NULL, 0,
     "messages a worker takes at once"},
    {"worker", "linger_us", CFG_U32, F(worker_linger_us), 0, 0, 100000, "0", NULL, NULL, NULL, NULL, 0,
     "after a batch smaller than batch, wait this long before the next fetch, so more requests share a store call; 0 = at once"},
    {"worker", "inventory", CFG_ENUM, F(worker_inventory), 0, 0, 0, "memory", NULL, inventory_words, NULL, NULL, 0,
     "where stock and orders live"},
    {"worker", "decision_capacity", CFG_U32, F(worker_decision_capacity), 0, 1024, 100000000, "1000000", NULL, NULL, NULL, NULL, 0,
     "request ids remembered so a redelivery is not decided twice"},
    {"worker", "pay_timeout_ms", CFG_U32, F(worker_pay_timeout_ms), 0, 1000, 86400000, "900000", NULL, NULL, NULL, NULL, 0,
     "reserved orders not paid by then are cancelled"},
    {"worker", "metrics_listen", CFG_LISTEN, F(worker_metrics_host), offsetof(cfg, worker_metrics_port), 0, 0, NULL,
     "HOST:PORT", NULL, NULL, NULL, 0,
     "seckill-worker: serve /metrics and /livez here; none = no HTTP port"},

    {"rpc", "listen", CFG_STR, F(rpc_listen), 0, 0, 279, NULL, "tcp:HOST:PORT or unix:SOCKET", NULL, NULL, rpc_addr_valid, 0,
     "gateway: serve the request queue to worker processes; none = no RPC"},
    {"rpc", "secret", CFG_STR, F(rpc_secret), 0, 8, 256, NULL, "a shared secret of 8 to 256 characters", NULL, NULL, NULL, CFG_SECRET,
     "shared by gateways and workers; required with RPC"},
    {"rpc", "gateways", CFG_LIST, offsetof(cfg, rpc_gateways), 0, offsetof(cfg, nrpc_gateways), 0, 64, NULL, NULL, NULL, &addresses, NULL, 0,
     "worker: gateway addresses; none = follow the Redis registry"},
    {"rpc", "registry_ttl_ms", CFG_U32, F(rpc_registry_ttl_ms), 0, 300, 600000, "3000", NULL, NULL, NULL, NULL, 0,
     "gateway: TTL of its Redis registry key"},
    {"rpc", "handshake_timeout_ms", CFG_U32, F(rpc_handshake_timeout_ms), 0, 100, 60000, "2000", NULL, NULL, NULL, NULL, 0,
     "gateway: a worker must prove the secret by then"},
    {"rpc", "tls_cert", CFG_STR, F(rpc_tls_cert), 0, 0, 1023, NULL, "a file path of at most 1023 characters", NULL, NULL, NULL, 0,
     "PEM certificate: the gateway's (serves TLS) or a worker's client certificate"},
    {"rpc", "tls_key", CFG_STR, F(rpc_tls_key), 0, 0, 1023, NULL, "a file path of at most 1023 characters", NULL, NULL, NULL, 0,
     "PEM private key of tls_cert"},
    {"rpc", "tls_ca", CFG_STR, F(rpc_tls_ca), 0, 0, 1023, NULL, "a file path of at most 1023 characters", NULL, NULL, NULL, 0,
     "PEM CA: a worker verifies gateways, a gateway requires client certificates"},

    {"admin", "listen", CFG_LISTEN, F(admin_host), offsetof(cfg, admin_port), 0, 0, NULL,
     "HOST:PORT", NULL, NULL, NULL, 0,
     "gateway: serve the admin API here (bearer token); none = no admin API"},
    {"admin", "token", CFG_STR, F(admin_token), 0, 16, 256, NULL, "a token of 16 to 256 characters", NULL, NULL, NULL, CFG_SECRET,
     "the admin API's bearer token; required with listen"},

    {"redis", "host", CFG_STR, F(redis_host), 0, 1, 255, "127.0.0.1", "a host name or address", NULL, NULL, NULL, 0,
     "Redis for inventory = redis and the registry"},
    {"redis", "port", CFG_U16, F(redis_port), 0, 1, 65535, "6379", NULL, NULL, NULL, NULL, 0,
     "its port"},
    {"redis", "timeout_ms", CFG_U32, F(redis_timeout_ms), 0, 1, 60000, "200", NULL, NULL, NULL, NULL, 0,
     "connect and each reply"},
    {"redis", "cluster", CFG_BOOL, F(redis_cluster), 0, 0, 0, "false", "true or false", NULL, NULL, NULL, 0,
     "inventory = redis on a Redis Cluster found through nodes (host and port then unused by the store)"},
    {"redis", "nodes", CFG_STR, F(redis_nodes), 0, 0, 1023, "", "host:port, host:port ...", NULL, NULL, NULL, 0,
     "cluster = true: seed nodes, comma or space separated; any one that answers gives the whole map"},
    {"redis", "min_replicas_ack", CFG_U32, F(redis_min_replicas_ack), 0, 0, 64, "0", NULL, NULL, NULL, NULL, 0,
     "a purchase is answered only once this many replicas acknowledged it (WAIT); 0 = off"},
    {"redis", "replica_ack_timeout_ms", CFG_U32, F(redis_replica_ack_timeout_ms), 0, 1, 60000, "100", NULL, NULL, NULL, NULL, 0,
     "how long each WAIT may take; fewer acknowledgements: retried, 504 at the deadline"},

    {"log", "level", CFG_ENUM, F(log_level), 0, 0, 0, "info", NULL, log_level_words, NULL, NULL, 0,
     "lines of this level and above: error, warn, info or debug"},
    {"log", "format", CFG_ENUM, F(log_format), 0, 0, 0, "text", NULL, log_format_words, NULL, NULL, 0,
     "text, or json (one object per line); under systemd lines go to the journal"},
    {"log", "access_sample", CFG_RATE, F(log_access_sample), 0, 0, 1, "0",
     "a share from 0 (no access log) to 1 (every request)", NULL, NULL, NULL, 0,
     "share of HTTP requests logged as an access line (method, path, status, latency, id, client)"},

    {"risk", "blocklist", CFG_LIST, offsetof(cfg, blocklist), 0, offsetof(cfg, nblocklist), 0, CFG_MAX_BLOCKLIST, NULL, NULL, NULL, &user_ids, NULL, CFG_REPEAT,
     "user ids refused with 403, comma or space separated; the key may repeat"},
};

static const cfg_key item_keys[] = {
    {"item.<id>", "stock", CFG_I64, IF(stock), 0, 0, 1000000000000ULL, NULL, NULL, NULL, NULL, NULL, 0,
     "units on sale; required"},
    {"item.<id>", "per_user_limit", CFG_U32, IF(per_user_limit), 0, 1, 1000000, "1", NULL, NULL, NULL, NULL, 0,
     "units one user may buy"},
    {"item.<id>", "starts_at", CFG_I64, IF(starts_at), 0, 0, 253402300799ULL, "0", "unix seconds (0 = none)", NULL, NULL, NULL, 0,
     "unix seconds the sale opens; 0 = open now"},
    {"item.<id>", "ends_at", CFG_I64, IF(ends_at), 0, 0, 253402300799ULL, "0", "unix seconds (0 = none)", NULL, NULL, NULL, 0,
     "unix seconds the sale ends; 0 = never"},
    {"item.<id>", "stock_buckets", CFG_U32, IF(stock_buckets), 0, 0, 1024, "0", NULL, NULL, NULL, NULL, 0,
     "Redis Cluster: buckets the stock is split into; 0 = one per master"},
};
/* clang-format on */

#define NKEYS (sizeof keys / sizeof *keys)
#define NITEM_KEYS (sizeof item_keys / sizeof *item_keys)

const cfg_key *cfg_keys(size_t *n)
{
    *n = NKEYS;
    return keys;
}

const cfg_key *cfg_item_keys(size_t *n)
{
    *n = NITEM_KEYS;
    return item_keys;
}

int cfg_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -EINVAL;
    const char *h = s;
    size_t hn = (size_t)(colon - s);
    if (*s == '[') { /* [IPv6]:PORT */
        if (hn < 3 || s[hn - 1] != ']')
            return -EINVAL;
        h = s + 1;
        hn -= 2;
    }
    if (hn >= hostlen || memchr(h, '[', hn) || memchr(h, ']', hn))
        return -EINVAL;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535 ||
        !isdigit((unsigned char)colon[1]))
        return -EINVAL;
    memcpy(host, h, hn);
    host[hn] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int cfg_listen_addr(const cfg *c, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    return cfg_resolve_addr("[gateway] listen", c->listen_host, c->listen_port, ss, err, errlen);
}

int cfg_resolve_addr(const char *key, const char *host, uint16_t port_no,
                     struct sockaddr_storage *ss, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", port_no);
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc == EAI_NONAME) { /* not a literal: a name, resolved now */
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_ADDRCONFIG;
        rc = getaddrinfo(host, port, &hints, &res);
    }
    if (rc != 0 || !res) {
        snprintf(err, errlen, "%s: '%s' does not resolve: %s", key, host,
                 rc ? gai_strerror(rc) : "no address");
        if (res)
            freeaddrinfo(res);
        return -EINVAL;
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* ---- values ---- */

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

/* The text after "expected " in k's error message. */
static void want_of(const cfg_key *k, char *out, size_t outlen)
{
    if (k->want) {
        snprintf(out, outlen, "%s", k->want);
        return;
    }
    if (k->type == CFG_ENUM) {
        size_t n = 0;
        out[0] = '\0';
        for (size_t i = 0; k->words[i] && n < outlen; i++)
            n += (size_t)snprintf(out + n, outlen - n, "%s'%s'",
                                  i == 0            ? ""
                                  : k->words[i + 1] ? ", "
                                                    : " or ",
                                  k->words[i]);
        return;
    }
    snprintf(out, outlen, "an integer from %llu to %llu", (unsigned long long)k->min,
             (unsigned long long)k->max);
}

/* Append the comma/space separated entries of value to the list (a key may
 * repeat: its entries add up). On error writes the message to msg. */
static int add_list(void *base, const cfg_key *k, const char *section, const char *value, char *msg,
                    size_t msglen)
{
    char ***list = (char ***)((char *)base + k->off);
    size_t *n = (size_t *)((char *)base + k->off2);
    char *copy = strdup(value), *save = NULL;
    int rc = 0;
    if (!copy)
        goto out_oom;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (!k->list->valid(tok)) {
            snprintf(msg, msglen, "[%s] %s: '%.64s' is not %s", section, k->name, tok,
                     k->list->what);
            rc = -EINVAL;
            goto out_free;
        }
        if (*n == k->max) {
            snprintf(msg, msglen, "[%s] %s: more than %llu %s", section, k->name,
                     (unsigned long long)k->max, k->list->items);
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
    snprintf(msg, msglen, "out of memory");
    rc = -ENOMEM;
out_free:
    free(copy);
    return rc;
}

/* Parse value into k's field of base (a cfg, or a cfg_item for item keys).
 * Nothing is written on failure; the message goes to msg. */
static int set_key(void *base, const cfg_key *k, const char *section, const char *value, char *msg,
                   size_t msglen)
{
    char *field = (char *)base + k->off;
    uint64_t u;
    int64_t i;
    int b;
    switch (k->type) {
    case CFG_BOOL:
        if (parse_bool(value, &b) < 0)
            goto out_want;
        *(int *)field = b;
        return 0;
    case CFG_U16:
        if (parse_u64(value, k->min, k->max, &u) < 0)
            goto out_want;
        *(uint16_t *)field = (uint16_t)u;
        return 0;
    case CFG_U32:
        if (parse_u64(value, k->min, k->max, &u) < 0)
            goto out_want;
        *(uint32_t *)field = (uint32_t)u;
        return 0;
    case CFG_U64:
        if (parse_u64(value, k->min, k->max, &u) < 0)
            goto out_want;
        *(uint64_t *)field = u;
        return 0;
    case CFG_I64:
        if (parse_i64(value, (int64_t)k->min, (int64_t)k->max, &i) < 0)
            goto out_want;
        *(int64_t *)field = i;
        return 0;
    case CFG_RATE: {
        char *end;
        errno = 0;
        double r = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(r) || r < (double)k->min ||
            r > (double)k->max)
            goto out_want;
        *(double *)field = r;
        return 0;
    }
    case CFG_STR: {
        size_t n = strlen(value);
        if (k->valid && !k->valid(value))
            goto out_want;
        if (n < k->min || n > k->max || n >= k->size) {
            if (!k->valid)
                goto out_want;
            snprintf(msg, msglen, "[%s] %s: expected at most %llu characters", section, k->name,
                     (unsigned long long)k->max);
            return -EINVAL;
        }
        memcpy(field, value, n + 1);
        return 0;
    }
    case CFG_ENUM:
        for (size_t w = 0; k->words[w]; w++)
            if (!strcmp(value, k->words[w])) {
                snprintf(field, k->size, "%s", value);
                return 0;
            }
        goto out_want;
    case CFG_LIST:
        return add_list(base, k, section, value, msg, msglen);
    case CFG_LISTEN:
        if (cfg_parse_listen(value, field, k->size, (uint16_t *)((char *)base + k->off2)) < 0)
            goto out_want;
        return 0;
    }
out_want:;
    char want[160];
    want_of(k, want, sizeof want);
    snprintf(msg, msglen, "[%s] %s: expected %s", section, k->name, want);
    return -EINVAL;
}

/* Defaults of a table into base; rows without one stay zero. */
static void set_defaults(void *base, const cfg_key *t, size_t n)
{
    char msg[256];
    for (size_t i = 0; i < n; i++)
        if (t[i].def && set_key(base, &t[i], t[i].section, t[i].def, msg, sizeof msg) < 0)
            abort(); /* a default its own row refuses: the table is wrong */
}

void cfg_init(cfg *c)
{
    memset(c, 0, sizeof *c);
    set_defaults(c, keys, NKEYS);
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
    for (size_t i = 0; i < c->nlim_proxies; i++)
        free(c->lim_proxies[i]);
    free(c->lim_proxies);
    c->lim_proxies = NULL;
    c->nlim_proxies = 0;
    for (size_t i = 0; i < c->ncors_origins; i++)
        free(c->cors_origins[i]);
    free(c->cors_origins);
    c->cors_origins = NULL;
    c->ncors_origins = 0;
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

/* ---- loading ---- */

typedef struct seen_section {
    char name[128];
    int line;
} seen_section;

typedef struct load_ctx {
    cfg *c;
    FILE *f;
    int lineno;                    /* lines read so far: the line being handled */
    int err_line;                  /* line of the first error found */
    int section_line;              /* line of the last "[section]" header read */
    char section[128];             /* its name in full: inih cuts names at 49 characters */
    int key_line[NKEYS];           /* where each key was set, 0 = not yet */
    int item_key_line[NITEM_KEYS]; /* the same in the current [item.<id>] */
    seen_section *seen;            /* every section header so far */
    size_t nseen;
    char msg[256];
} load_ctx;

static int fail_at(load_ctx *L, int line)
{
    if (!L->err_line)
        L->err_line = line;
    return 0;
}

/* Only repeatable keys in it: the section may be opened again. */
static int section_reopens(const char *name)
{
    int any = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, name) != 0)
            continue;
        if (!(keys[i].flags & CFG_REPEAT))
            return 0;
        any = 1;
    }
    return any;
}

/* A section header: refuse a second one of the same name. */
static void on_section(load_ctx *L)
{
    memset(L->item_key_line, 0, sizeof L->item_key_line);
    for (size_t i = 0; i < L->nseen; i++) {
        if (strcmp(L->seen[i].name, L->section) != 0)
            continue;
        if (!section_reopens(L->section)) {
            snprintf(L->msg, sizeof L->msg, "[%s]: section appears twice (first at line %d)",
                     L->section, L->seen[i].line);
            fail_at(L, L->lineno);
        }
        return;
    }
    seen_section *n = realloc(L->seen, (L->nseen + 1) * sizeof *n);
    if (!n) {
        snprintf(L->msg, sizeof L->msg, "out of memory");
        fail_at(L, L->lineno);
        return;
    }
    L->seen = n;
    snprintf(n[L->nseen].name, sizeof n[L->nseen].name, "%s", L->section);
    n[L->nseen++].line = L->lineno;
}

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
            int closed = p[1 + n] == ']';
            if (n >= sizeof L->section)
                n = sizeof L->section - 1;
            memcpy(L->section, p + 1, n);
            L->section[n] = '\0';
            L->section_line = L->lineno;
            if (closed && !L->err_line)
                on_section(L);
        }
    }
    return r;
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
    set_defaults(it, item_keys, NITEM_KEYS);
    it->stock = -1; /* required: cfg_load checks it was set */
    it->line = L->section_line;
    return it;
}

static const cfg_key *find_key(const cfg_key *t, size_t n, const char *section, const char *name,
                               size_t *idx)
{
    for (size_t i = 0; i < n; i++)
        if ((!section || !strcmp(t[i].section, section)) && !strcmp(t[i].name, name)) {
            *idx = i;
            return &t[i];
        }
    return NULL;
}

/* Set one key, refusing a second setting of a key that does not repeat. */
static int set_once(load_ctx *L, void *base, const cfg_key *k, int *first, const char *section,
                    const char *value)
{
    if (*first && !(k->flags & CFG_REPEAT)) {
        snprintf(L->msg, sizeof L->msg, "[%s] %s: set twice (first at line %d)", section, k->name,
                 *first);
        return 0;
    }
    if (set_key(base, k, section, value, L->msg, sizeof L->msg) < 0)
        return 0;
    if (!*first)
        *first = L->lineno;
    return 1;
}

static int on_key_checked(load_ctx *L, const char *section, const char *name, const char *value)
{
    size_t idx;
    const cfg_key *k;
    if (!name) /* a section header alone (inih INI_CALL_HANDLER_ON_NEW_SECTION) */
        return 1;
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
        k = find_key(item_keys, NITEM_KEYS, NULL, name, &idx);
        if (!k)
            goto out_unknown_key;
        return set_once(L, it, k, &L->item_key_line[idx], section, value);
    }
    k = find_key(keys, NKEYS, section, name, &idx);
    if (k)
        return set_once(L, L->c, k, &L->key_line[idx], section, value);
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section))
            goto out_unknown_key;
    snprintf(L->msg, sizeof L->msg, "unknown section [%s]", section);
    return 0;
out_unknown_key:
    snprintf(L->msg, sizeof L->msg, "[%s] unknown key '%s'", section, name);
    return 0;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *L = user;

    if (L->err_line) /* report the first error only */
        return 1;
    /* a long [item.<id>] comes truncated: use the name as written, so an id
     * of 45-64 characters is kept whole and a longer one is refused */
    if (strncmp(L->section, section, strlen(section)) == 0)
        section = L->section;
    int ok = on_key_checked(L, section, name, value);
    if (!ok)
        fail_at(L, L->lineno);
    return ok;
}

int cfg_load(cfg *c, const char *path, char *err, size_t errlen)
{
    load_ctx *L = calloc(1, sizeof *L);
    int rc = -EINVAL;
    if (!L) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    L->c = c;
    L->f = fopen(path, "r");
    if (!L->f) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        goto out_free;
    }
    int line = ini_parse_stream(read_line, L, on_key, L);
    fclose(L->f);
    if (line < 0) {
        snprintf(err, errlen, "%s: cannot read", path);
        goto out_free;
    }
    if (L->err_line && (line == 0 || L->err_line <= line)) {
        snprintf(err, errlen, "%s:%d: %s", path, L->err_line, L->msg);
        goto out_free;
    }
    if (line != 0) {
        snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path,
                 line);
        goto out_free;
    }
    for (size_t i = 0; i < c->nitems; i++) {
        const cfg_item *it = &c->items[i];
        if (it->stock < 0) {
            snprintf(err, errlen, "%s:%d: [item.%s]: stock is required", path, it->line, it->id);
            goto out_free;
        }
        if (it->ends_at && it->starts_at && it->ends_at <= it->starts_at) {
            snprintf(err, errlen, "%s:%d: [item.%s]: ends_at must be after starts_at", path,
                     it->line, it->id);
            goto out_free;
        }
    }
    rc = cfg_validate(c, err, errlen);
    if (rc < 0) {
        /* prefix the file name so every config error names the file */
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s: %s", path, err);
        snprintf(err, errlen, "%s", tmp);
    }
out_free:
    free(L->seen);
    free(L);
    return rc;
}

const cfg_key *cfg_find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

int cfg_key_differs(const cfg_key *k, const void *a, const void *b)
{
    const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
    switch (k->type) {
    case CFG_STR:
    case CFG_ENUM:
        return strcmp(fa, fb) != 0;
    case CFG_LISTEN:
        return strcmp(fa, fb) != 0 || *(const uint16_t *)((const char *)a + k->off2) !=
                                          *(const uint16_t *)((const char *)b + k->off2);
    case CFG_LIST: {
        char *const *la = *(char *const *const *)fa, *const *lb = *(char *const *const *)fb;
        size_t na = *(const size_t *)((const char *)a + k->off2);
        size_t nb = *(const size_t *)((const char *)b + k->off2);
        if (na != nb)
            return 1;
        for (size_t i = 0; i < na; i++)
            if (strcmp(la[i], lb[i]) != 0)
                return 1;
        return 0;
    }
    default: /* numbers: compare the field's bytes */
        return memcmp(fa, fb, k->size) != 0;
    }
}

static int named(const char *const *list, const char *section, const char *name)
{
    for (; list && *list; list++) {
        size_t n = strlen(section);
        if (!strncmp(*list, section, n) && (*list)[n] == '.' && !strcmp(*list + n + 1, name))
            return 1;
    }
    return 0;
}

int cfg_same_items(const cfg *run, const cfg *n)
{
    if (run->nitems != n->nitems)
        return 0;
    for (size_t i = 0; i < n->nitems; i++)
        if (strcmp(run->items[i].id, n->items[i].id) != 0)
            return 0;
    return 1;
}

int cfg_report_restart(const cfg *run, const cfg *n, const char *const *reloadable, FILE *log)
{
    int lines = 0;
    for (size_t i = 0; i < NKEYS; i++)
        if (!named(reloadable, keys[i].section, keys[i].name) &&
            cfg_key_differs(&keys[i], run, n)) {
            fprintf(log, "[%s] %s: needs a restart (the running value stays)\n",
                    keys[i].section, keys[i].name);
            lines++;
        }
    if (!cfg_same_items(run, n)) {
        fprintf(log, "items added, removed or reordered: needs a restart (the running "
                     "items stay)\n");
        return lines + 1;
    }
    for (size_t i = 0; i < n->nitems; i++)
        for (size_t j = 0; j < NITEM_KEYS; j++)
            if (!named(reloadable, "item", item_keys[j].name) &&
                cfg_key_differs(&item_keys[j], &run->items[i], &n->items[i])) {
                fprintf(log, "[item.%s] %s: needs a restart (the running value stays)\n",
                        n->items[i].id, item_keys[j].name);
                lines++;
            }
    return lines;
}

/* ---- the dump ---- */

static void print_key(FILE *f, const void *base, const cfg_key *k)
{
    const char *field = (const char *)base + k->off;
    switch (k->type) {
    case CFG_BOOL:
        fprintf(f, "%s = %s\n", k->name, *(const int *)field ? "true" : "false");
        break;
    case CFG_U16:
        fprintf(f, "%s = %u\n", k->name, *(const uint16_t *)field);
        break;
    case CFG_U32:
        fprintf(f, "%s = %u\n", k->name, *(const uint32_t *)field);
        break;
    case CFG_U64:
        fprintf(f, "%s = %llu\n", k->name, (unsigned long long)*(const uint64_t *)field);
        break;
    case CFG_I64:
        fprintf(f, "%s = %lld\n", k->name, (long long)*(const int64_t *)field);
        break;
    case CFG_RATE:
        fprintf(f, "%s = %.15g\n", k->name, *(const double *)field);
        break;
    case CFG_ENUM:
        fprintf(f, "%s = %s\n", k->name, field);
        break;
    case CFG_STR:
        if (!*field) /* not set: commented out, so the dump loads back */
            fprintf(f, "; %s =\n", k->name);
        else
            fprintf(f, "%s = %s\n", k->name, (k->flags & CFG_SECRET) ? "<set>" : field);
        break;
    case CFG_LIST: {
        char *const *list = *(char *const *const *)field;
        size_t n = *(const size_t *)((const char *)base + k->off2);
        if (n == 0)
            fprintf(f, "; %s =\n", k->name);
        else if (k->flags & CFG_REPEAT) /* one a line: a line of inih is short */
            for (size_t i = 0; i < n; i++)
                fprintf(f, "%s = %s\n", k->name, list[i]);
        else {
            fprintf(f, "%s = ", k->name);
            for (size_t i = 0; i < n; i++)
                fprintf(f, "%s%s", i ? ", " : "", list[i]);
            fputc('\n', f);
        }
        break;
    }
    case CFG_LISTEN: {
        uint16_t port = *(const uint16_t *)((const char *)base + k->off2);
        if (!*field) { /* not set: commented out, so the dump loads back */
            fprintf(f, "; %s =\n", k->name);
            break;
        }
        fprintf(f, strchr(field, ':') ? "%s = [%s]:%u\n" : "%s = %s:%u\n", k->name, field, port);
        break;
    }
    }
}

void cfg_print(const cfg *c, FILE *f)
{
    const char *section = NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        if (!section || strcmp(section, keys[i].section) != 0) {
            section = keys[i].section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
        }
        print_key(f, c, &keys[i]);
    }
    for (size_t i = 0; i < c->nitems; i++) {
        fprintf(f, "\n[item.%s]\n", c->items[i].id);
        for (size_t j = 0; j < NITEM_KEYS; j++)
            print_key(f, &c->items[i], &item_keys[j]);
    }
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
    if (c->adm_require_token && !c->adm_key[0]) {
        snprintf(err, errlen, "[admission] require_token = true needs key");
        return -EINVAL;
    }
    if (c->tb_rate > 0 && c->tb_burst == 0) {
        snprintf(err, errlen, "[token_bucket] burst must be at least 1");
        return -EINVAL;
    }
    if (!c->worker_embedded && !c->rpc_listen[0]) {
        snprintf(err, errlen,
                 "[worker] embedded = false: set [rpc] listen so workers can reach "
                 "this gateway's queue");
        return -EINVAL;
    }
    if (c->admin_host[0] && !c->admin_token[0]) {
        snprintf(err, errlen, "[admin] token is required when [admin] listen is set (the admin "
                              "API changes stock and sales: it is never served without one)");
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
    if (c->redis_cluster && !c->redis_nodes[0]) {
        snprintf(err, errlen, "[redis] cluster = true needs nodes = host:port, ...");
        return -EINVAL;
    }
    if (c->adm_open_window_ms && strcmp(c->park, "event") != 0) {
        /* a held request keeps its connection suspended, not a thread */
        snprintf(err, errlen, "[admission] open_window_ms needs [gateway] park = event");
        return -EINVAL;
    }
    if (c->adm_open_window_ms && c->adm_open_window_ms * 2 > c->wait_timeout_ms) {
        /* a request held through the window must still have time to be decided */
        snprintf(err, errlen,
                 "[admission] open_window_ms = %u must be at most half of [gateway] "
                 "wait_timeout_ms = %u",
                 c->adm_open_window_ms, c->wait_timeout_ms);
        return -EINVAL;
    }
    if (!c->worker_embedded && !strcmp(c->worker_inventory, "memory")) {
        /* separate worker processes with their own memory would each sell
         * the whole stock */
        snprintf(err, errlen,
                 "[worker] inventory = memory needs embedded = true; use redis "
                 "for separate worker processes");
        return -EINVAL;
    }
    return 0;
}
