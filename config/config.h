/*
 * config.h - the INI configuration of a gateway (and its embedded worker).
 *
 * cfg_load() reads a file with inih; every key is checked against its row of
 * the key table (config.c), unknown sections and keys are errors (a typo must
 * not silently fall back to a default), so are a section or a key given twice
 * (but for repeatable keys), and the first error is reported as
 * "FILE:LINE: message".
 */
#ifndef SECKILL_CFG_H
#define SECKILL_CFG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct sockaddr_storage;

#define CFG_ID_MAX 64
#define CFG_MAX_ITEMS 1024
#define CFG_MAX_BLOCKLIST 4096
#define CFG_MAX_CORS_ORIGINS 64
/* [queue] data_dir: outside any checkout, so `make run` and `make test`
 * leave nothing in the repository; created at start */
#define CFG_DEFAULT_DATA_DIR "/var/tmp/seckill-gateway"

typedef struct cfg_item {
    char id[CFG_ID_MAX + 1];
    int64_t stock;           /* required, >= 0 */
    int64_t starts_at;       /* unix seconds; 0 = open */
    int64_t ends_at;         /* unix seconds; 0 = never ends */
    uint32_t per_user_limit; /* default 1 */
    uint32_t stock_buckets;  /* Redis Cluster: buckets of stock; 0 = one per master */
    int line;                /* where the section started, for messages */
} cfg_item;

typedef struct cfg {
    /* [gateway] */
    char listen_host[64];
    uint16_t listen_port;
    char gateway_id[37];             /* "" = a fresh UUID at start */
    uint32_t wait_timeout_ms;        /* 2000 */
    uint32_t body_limit;             /* 4096 */
    uint32_t max_connections;        /* 4096 */
    uint32_t max_connections_per_ip; /* 256; 0 = no cap */
    uint32_t request_timeout_ms;     /* 10000: a request's headers and body must be in by then,
                                      * counted from accept or the previous answer; 0 = none */
    uint32_t result_ttl_s;           /* 300 */
    uint32_t result_capacity;        /* 100000 */
    char park[8];                    /* "event" (default) | "thread" */
    char http_io[8];                 /* event park: "poll" (default) | "epoll" */
    uint32_t pool_threads;           /* event park: HTTP threads; 0 = one per CPU */
    uint32_t drain_delay_ms;         /* after SIGTERM: /readyz says 503 stopping this long
                                      * while requests are still served, then the listener
                                      * closes (5000) */
    /* [http] */
    char **cors_origins; /* origins browsers may call from ("*" = any); none = no CORS */
    size_t ncors_origins;
    /* [token_bucket] */
    double tb_rate; /* tokens per second; 0 = unlimited */
    uint32_t tb_burst;
    char tb_scope[8]; /* "local" (default) | "global" */
    uint32_t tb_chunk; /* global: tokens per Redis call; 0 = rate / 100 */
    /* [limits] per-client token buckets (gateway/client_limits.h) */
    double lim_user_rate; /* per user id, tokens per second; 0 = off */
    uint32_t lim_user_burst;
    double lim_ip_rate; /* per client address (IPv4, IPv6 /64); 0 = off */
    uint32_t lim_ip_burst;
    uint32_t lim_capacity;    /* buckets per scope */
    char **lim_proxies;       /* trusted_proxies: addresses or CIDRs */
    size_t nlim_proxies;
    char lim_client_header[16]; /* "x-forwarded-for" (default) | "forwarded" */
    /* [admission] signed tokens (gateway/admit_token.h) */
    int adm_require_token;
    char adm_key[257];          /* HMAC-SHA256 key the token issuer shares */
    char adm_key_previous[257]; /* still accepted during a rotation; "" = none */
    uint32_t adm_idem_ttl_s;    /* Idempotency-Key: how long a key's body is remembered */
    uint32_t adm_idem_capacity; /* keys remembered */
    uint32_t adm_inflight_factor; /* k of the stock-coupled gate; 0 = off */
    int adm_deadline_gate;        /* 503 when the queue outlasts wait_timeout_ms */
    uint32_t adm_open_window_ms;  /* fair opening: held and shuffled after starts_at; 0 = off */
    /* [queue] */
    uint32_t queue_partitions;
    uint64_t queue_max_backlog;
    uint64_t queue_max_backlog_bytes;
    uint32_t queue_ack_timeout_ms;
    uint32_t queue_lease_timeout_ms;
    uint32_t queue_max_deliveries;
    char queue_data_dir[1024]; /* durable topics (memory inventory: the order log) */
    char queue_order_flush[8]; /* "sync": an order is fsynced before it is confirmed;
                                * "async": fsynced every 100 ms (a crash of the machine,
                                * not of the process, loses the last confirmed orders) */
    /* [worker] */
    int worker_embedded;     /* 1 = worker threads inside the gateway */
    uint32_t worker_threads; /* 0: cfg_worker_threads picks */
    uint32_t worker_batch;
    uint32_t worker_linger_us; /* pause after a short batch: fuller store calls */
    char worker_inventory[16]; /* "memory" */
    uint32_t worker_decision_capacity;
    uint32_t worker_pay_timeout_ms; /* reserved orders not paid by then are cancelled */
    char worker_metrics_host[64];   /* seckill-worker: /metrics and /livez; "" = none */
    uint16_t worker_metrics_port;
    /* [admin] */
    char admin_host[64]; /* gateway: the admin API's address; "" = none */
    uint16_t admin_port;
    char admin_token[257]; /* its bearer token; required with admin_host */
    /* [rpc] */
    char rpc_listen[280];              /* gateway: "tcp:HOST:PORT" or "unix:PATH"; "" = no RPC */
    char rpc_secret[257];              /* shared by gateways and workers */
    char **rpc_gateways;               /* worker: gateway RPC addresses */
    size_t nrpc_gateways;              /* 0: the worker finds gateways in the Redis registry */
    uint32_t rpc_registry_ttl_ms;      /* gateway: TTL of its registry key, refreshed every ttl/3 */
    uint32_t rpc_handshake_timeout_ms; /* gateway: a worker's handshake must be done by then */
    /* TLS on tcp: RPC addresses (PEM paths; "" = plain). Gateway: tls_cert +
     * tls_key serve TLS, tls_ca then requires client certificates from that
     * CA. Worker: tls_ca turns TLS on and verifies the gateway, tls_cert +
     * tls_key are its client certificate. The files are read by rpc/
     * (rpc_tls_check at start); here only which keys go together. */
    char rpc_tls_cert[1024];
    char rpc_tls_key[1024];
    char rpc_tls_ca[1024];
    /* [redis] */
    char redis_host[256];
    uint16_t redis_port;
    uint32_t redis_timeout_ms;
    int redis_cluster;                     /* 1 = a Redis Cluster, seeded by redis_nodes */
    char redis_nodes[1024];                /* "host:port, host:port ..." */
    uint32_t redis_min_replicas_ack;       /* 0 = off */
    uint32_t redis_replica_ack_timeout_ms;
    /* [log] */
    char log_level[8];        /* "error" | "warn" | "info" (default) | "debug" */
    char log_format[8];       /* "text" (default) | "json" */
    double log_access_sample; /* share of HTTP requests with an access line: 0 (none) to 1 */
    /* [risk] */
    char **blocklist;
    size_t nblocklist;
    /* [item.<id>] */
    cfg_item *items;
    size_t nitems;
} cfg;

/* One key of the table: what cfg_init, cfg_load and cfg_print know of it. */
typedef enum cfg_type {
    CFG_BOOL,   /* int: true/yes/on/1 or false/no/off/0 */
    CFG_U16,    /* uint16_t from min to max */
    CFG_U32,    /* uint32_t from min to max */
    CFG_U64,    /* uint64_t from min to max */
    CFG_I64,    /* int64_t from min to max */
    CFG_RATE,   /* double from min to max */
    CFG_STR,    /* char[size], min to max characters */
    CFG_ENUM,   /* char[size], one of words */
    CFG_LIST,   /* char ** at off with its count (size_t) at off2, at most max entries */
    CFG_LISTEN, /* host char[size] at off, uint16_t port at off2 */
} cfg_type;

#define CFG_REPEAT 1u /* the key may repeat: its entries add up */
#define CFG_SECRET 2u /* cfg_print shows <set>, never the value */

typedef struct cfg_list_kind cfg_list_kind;

typedef struct cfg_key {
    const char *section; /* "item.<id>" for the item keys */
    const char *name;
    cfg_type type;
    size_t off;                 /* the field in cfg (in cfg_item for item keys) */
    size_t size;                /* its size */
    size_t off2;                /* CFG_LIST: the count; CFG_LISTEN: the port */
    uint64_t min, max;          /* numbers: bounds; strings: length; lists: max entries */
    const char *def;            /* the default as written in a file; NULL = zero/empty */
    const char *want;           /* the error's "expected ..."; NULL = made from type and bounds */
    const char *const *words;   /* CFG_ENUM: the allowed words, NULL-terminated */
    const cfg_list_kind *list;  /* CFG_LIST: what an entry must be */
    int (*valid)(const char *); /* CFG_STR: a further check, else "expected <want>" */
    unsigned flags;             /* CFG_REPEAT, CFG_SECRET */
    const char *help;           /* one line */
} cfg_key;

/* The tables: static, valid for the life of the program. */
const cfg_key *cfg_keys(size_t *n);      /* the fixed sections */
const cfg_key *cfg_item_keys(size_t *n); /* [item.<id>] */

/* The row of [section] name in the fixed sections, NULL when none. */
const cfg_key *cfg_find_key(const char *section, const char *name);
/* 1 when the field of k differs between a and b (two cfg, or two cfg_item
 * for item keys); lists compare entry by entry. */
int cfg_key_differs(const cfg_key *k, const void *a, const void *b);

/* A reload: write "[section] key: needs a restart (the
 * running value stays)" to log for every key that differs between run and n
 * and is not named in reloadable ("section.key", NULL-terminated; item keys
 * as "item.key"), and one line when the items themselves differ (added,
 * removed or reordered). Returns how many lines it wrote. */
int cfg_report_restart(const cfg *run, const cfg *n, const char *const *reloadable, FILE *log);
/* 1 when run and n have the same item ids in the same order. */
int cfg_same_items(const cfg *run, const cfg *n);

/* Set every default (no items). */
void cfg_init(cfg *c);
/* Load path over the defaults in *c (call cfg_init first). On error returns
 * negative errno and writes "path:line: message" to err. */
int cfg_load(cfg *c, const char *path, char *err, size_t errlen);
/* Checks across keys (e.g. at least one item, ends_at after starts_at). */
int cfg_validate(const cfg *c, char *err, size_t errlen);
/* Parse "HOST:PORT" or "[IPV6]:PORT" (port 0..65535; host without brackets). */
int cfg_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port);
/* The address the gateway binds for [gateway] listen: a literal, or a name
 * resolved now with getaddrinfo (its first address). --check-config and the
 * gateway's start both call it. OUT: *ss (AF_INET or AF_INET6). On error
 * returns -EINVAL with "[gateway] listen: ..." in err. */
int cfg_listen_addr(const cfg *c, struct sockaddr_storage *ss, char *err, size_t errlen);
/* The same for any HOST:PORT key (key names it in err), e.g. [admin] listen. */
int cfg_resolve_addr(const char *key, const char *host, uint16_t port,
                     struct sockaddr_storage *ss, char *err, size_t errlen);
/* Write the effective configuration as INI: every key of the table, the
 * items, secrets as <set>, unset keys commented out. */
void cfg_print(const cfg *c, FILE *f);
void cfg_release(cfg *c);

const cfg_item *cfg_find_item(const cfg *c, const char *id);
/* [worker] threads, 0 resolved: 1 with inventory = memory, 2 with redis. */
uint32_t cfg_worker_threads(const cfg *c);

#endif
