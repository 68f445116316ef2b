/*
 * order_sink.h - the order sink's store: an append-only JSON-lines file of
 * order events, one line per (order id, event type), whatever source they
 * come from (Redis streams, or a gateway's order topic over rpc/).
 *
 * Delivery from either source is at least once; the sink is idempotent by
 * (order id, type): sk_sink_open loads the keys already in the file, and
 * sk_sink_put skips an event whose key is stored. A caller acknowledges
 * events to their source only after sk_sink_sync returned 0 (durable before
 * acknowledged): a crash in between re-delivers them and the keys drop the
 * copies. A torn last line (crash mid-write) is not loaded, so its event is
 * stored again when re-delivered.
 *
 * Line: {"order_id":"..","type":"reserved|paid|cancelled","item_id":"..",
 *        "user_id":"..","request_id":"..","at_ms":N}
 * Not thread-safe: one sink per thread (sk_sink_stats excepted).
 */
#ifndef SECKILL_SK_ORDER_SINK_H
#define SECKILL_SK_ORDER_SINK_H

#include <stdint.h>

typedef struct sk_sink sk_sink;

typedef struct sk_sink_record {
    const char *order_id;
    const char *type;       /* "reserved", "paid" or "cancelled" */
    const char *item_id;
    const char *user_id;
    const char *request_id; /* UUID text */
    uint64_t at_ms;
} sk_sink_record;

/* Load what path holds (missing: empty) and open it for appending.
 * OUT: *out, close with sk_sink_close. */
int sk_sink_open(const char *path, sk_sink **out);
/* Store r unless its (order id, type) is stored. 1 stored, 0 duplicate,
 * negative errno (nothing may be acknowledged then). */
int sk_sink_put(sk_sink *s, const sk_sink_record *r);
/* Make every stored line durable (fflush + fsync). */
int sk_sink_sync(sk_sink *s);
/* Open the path again (logrotate moved the file away: SIGUSR1): the lines
 * from now on go to a new file there; the keys stored so far still drop
 * duplicates. Flushes and syncs the old file first. On error the old file
 * stays in use. */
int sk_sink_reopen(sk_sink *s);
/* OUT: counts since open (either may be NULL); any thread may ask. */
void sk_sink_stats(const sk_sink *s, uint64_t *stored, uint64_t *duplicates);
void sk_sink_close(sk_sink *s);

#endif
