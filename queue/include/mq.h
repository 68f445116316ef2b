/*
 * mq.h - the embedded message queue: topics, partitions, consumer groups.
 *
 * A queue instance (mq) holds named topics. A topic has N partitions; every
 * message gets a dense per-partition offset. Consumer groups keep their own
 * committed offset per partition (stored by the queue), so several groups
 * read one topic independently. Inside a group a partition is held by one
 * consumer at a time through a lease; fetch renews the caller's leases.
 *
 * Delivery is at-least-once: a fetched message that is not committed within
 * the ack timeout is delivered again with a higher delivery count. After
 * max_deliveries it moves to the group's retry topic ("<topic>.<group>.retry",
 * redelivered after retry_delay_ms) and, failing there too, to the group's
 * dead-letter topic ("<topic>.<group>.dlq"), so a poison message never blocks
 * its partition.
 *
 * Errors: every call returns 0 (or a count) on success and a negative errno
 * value on failure:
 *   -EINVAL    bad argument or config
 *   -ENOENT    no such topic / group / dead letter
 *   -ENOBUFS   topic backlog full (messages or bytes): produce refused at once
 *   -EALREADY  (producer id, seq) already stored: idempotent duplicate, not stored again
 *   -EILSEQ    producer sequence gap: seq is not last + 1
 *   -EMSGSIZE  record larger than the topic allows
 *   -ENOSPC    disk full (log storage): nothing was stored
 *   -EIO       storage failure; a failed fsync makes the partition fail every
 *              later produce (never retry-and-continue)
 *   -ENOMEM    allocation failure
 *   -ESHUTDOWN mq_fetch woken by mq_destroy (the handle is gone: do not use it again)
 *
 * Time: the instance reads two millisecond clocks through mq_clock_fn hooks.
 *   - the instance clock (mq_set_clock, default CLOCK_MONOTONIC) drives
 *     leases, ack timeouts, retry delays and how often retention runs; it
 *     restarts at boot, so nothing stored on disk is stamped with it;
 *   - the wall clock (mq_set_wall_clock, default CLOCK_REALTIME) stamps records
 *     (mq_message.timestamp_ms) and is what log retention by age compares
 *     them with, so ages stay right across restarts and reboots.
 * Tests install fake ones. Blocking waits (mq_fetch's wait_ms) use real time.
 *
 * Retention (log topics with retention_ms / retention_bytes): whole old
 * segments are removed when the topic is opened and then while it is open, at
 * most once per second (instance clock) per partition, from mq_produce and
 * mq_fetch. A group whose committed offset fell below the retained start skips
 * to the start: those messages are never delivered to it. mq_lag counts from
 * the new start and mq_retention_skipped() reports how many were skipped.
 *
 * Retry and dead-letter topics of a log topic are log topics themselves
 * (<data_dir>/<topic>.<group>.retry and .dlq, committed offsets persisted):
 * a message is durably appended there (fdatasync) before the partition it
 * leaves commits past it, so a crash may deliver it twice but never loses it.
 * They are not subject to retention; segments every reader committed past are
 * removed.
 *
 * Thread safety: every function may be called from any thread. One consumer
 * handle must not be used by two threads at once.
 */
#ifndef SECKILL_MQ_H
#define SECKILL_MQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct mq mq;
typedef struct mq_topic mq_topic;
typedef struct mq_consumer mq_consumer;

typedef uint64_t (*mq_clock_fn)(void *arg);

enum mq_storage { MQ_STORAGE_MEMORY = 0, MQ_STORAGE_LOG = 1 };
enum mq_flush { MQ_FLUSH_NONE = 0, MQ_FLUSH_ASYNC = 1, MQ_FLUSH_SYNC = 2 };

typedef struct mq_topic_config {
    uint32_t partitions;          /* >= 1 */
    uint64_t max_backlog_msgs;    /* per topic: end - slowest group's committed offset */
    uint64_t max_backlog_bytes;   /* per topic, payload + key bytes */
    uint32_t max_record_bytes;    /* key + value of one record */
    enum mq_storage storage;
    enum mq_flush flush;          /* log storage only */
    uint32_t flush_interval_ms;   /* MQ_FLUSH_ASYNC: background flush period */
    uint64_t segment_bytes;       /* log: roll a new segment past this size */
    uint64_t retention_ms;        /* log: drop whole segments older than this (wall clock); 0 = keep */
    uint64_t retention_bytes;     /* log: keep at most this many bytes per partition; 0 = keep */
    uint32_t max_deliveries;      /* deliveries before a message moves to retry, then DLQ */
    uint64_t ack_timeout_ms;      /* fetched but uncommitted for this long: deliver again */
    uint64_t lease_timeout_ms;    /* a consumer that does not fetch for this long loses its partitions */
    uint64_t retry_delay_ms;      /* delay before a retry-topic message is delivered again */
} mq_topic_config;

/* Fill cfg with the defaults: 4 partitions, memory storage, backlog 65536 msgs / 64 MiB,
 * 64 KiB records, flush none, 1000 ms async interval, 64 MiB segments, no retention,
 * 5 deliveries, 30 s ack timeout, 10 s lease timeout, 1 s retry delay. */
void mq_topic_config_init(mq_topic_config *cfg);

/* data_dir: where log-storage topics live (created if missing); NULL for a
 * memory-only instance (opening a log topic then fails with -EINVAL).
 * OUT: *out, destroy with mq_destroy. */
int mq_create(const char *data_dir, mq **out);
/* Destroys every topic and consumer handle; wakes and fails blocked fetches first. */
void mq_destroy(mq *q);
/* Instance clock (monotonic ms): leases, ack timeouts, retry delays. NULL restores the default. */
void mq_set_clock(mq *q, mq_clock_fn fn, void *arg);
uint64_t mq_now(const mq *q);
/* Wall clock (ms since the epoch): record timestamps and retention by age.
 * NULL restores the default (CLOCK_REALTIME). */
void mq_set_wall_clock(mq *q, mq_clock_fn fn, void *arg);
uint64_t mq_wall_now(const mq *q);

/* Open (creating or recovering) a topic. Opening an existing name returns the
 * same handle when the config matches in partitions and storage, else -EINVAL.
 * The handle lives until mq_destroy. */
int mq_topic_open(mq *q, const char *name, const mq_topic_config *cfg, mq_topic **out);
mq_topic *mq_topic_find(mq *q, const char *name); /* NULL when absent */
const char *mq_topic_name(const mq_topic *t);
uint32_t mq_topic_partitions(const mq_topic *t);

/* ---- producing ---- */

#define MQ_PARTITION_ANY (-1)

typedef struct mq_record {
    const void *key;      /* may be NULL */
    size_t key_len;
    const void *value;
    size_t value_len;
    int32_t partition;    /* MQ_PARTITION_ANY: by key hash when key is set, else round-robin */
    uint64_t producer_id; /* 0: no sequence tracking; else partition must be resolved (explicit or key) */
    uint64_t seq;         /* per (producer, partition), first is 1, each next is last + 1 */
} mq_record;

/* The partition a record with this key would go to (round-robin pick when key is NULL). */
uint32_t mq_topic_pick(mq_topic *t, const void *key, size_t key_len);

/* Append one record. OUT: *partition and *offset where it was stored (either may be NULL).
 * With MQ_FLUSH_SYNC this returns only after the record is on disk (group commit).
 * A duplicate (producer_id, seq) returns -EALREADY and stores nothing. */
int mq_produce(mq_topic *t, const mq_record *rec, uint32_t *partition, uint64_t *offset);

/* Append recs[0..n) like mq_produce, each independently, and wait for
 * MQ_FLUSH_SYNC logs once per partition touched (one group commit for the
 * batch instead of one per record). OUT: rcs[i], 0 when recs[i] is stored
 * (durably for SYNC logs), else its negative errno; a failed flush fails
 * every record of that partition in the batch (they may still be on disk).
 * Returns 0 when every record is stored, else the first failure's code. */
int mq_produce_batch(mq_topic *t, const mq_record *recs, size_t n, int *rcs);

/* ---- consuming ---- */

typedef struct mq_message {
    const char *topic;     /* the topic it was read from (main or the group's retry topic) */
    uint32_t partition;
    uint64_t offset;
    uint32_t delivery;     /* 1 on first delivery */
    uint64_t timestamp_ms; /* produce time, from the wall clock (ms since the epoch) */
    uint64_t producer_id;
    uint64_t seq;
    const void *key;       /* valid until the next mq_fetch or mq_consumer_destroy on this handle */
    size_t key_len;
    const void *value;
    size_t value_len;
} mq_message;

/* Join group on topic t. consumer_id names the member (unique within the group).
 * OUT: *out, destroy with mq_consumer_destroy (which releases its leases at once). */
int mq_consumer_create(mq_topic *t, const char *group, const char *consumer_id, mq_consumer **out);
void mq_consumer_destroy(mq_consumer *c);

/* Renew this consumer's leases, take free or expired partitions up to its fair
 * share, and return up to max messages from the partitions it holds (and due
 * messages of the group's retry topic). Blocks up to wait_ms for at least one.
 * OUT: *msgs points into storage owned by c. Returns the number of messages. */
int mq_fetch(mq_consumer *c, size_t max, uint32_t wait_ms, const mq_message **msgs);

/* Acknowledge every message of m's topic and partition up to and including m.
 * Refused with -EPERM when the consumer no longer holds that partition's lease
 * (the new holder redelivers from the committed offset). */
int mq_commit(mq_consumer *c, const mq_message *m);

/* Number of consumers of the group that fetched within the lease timeout. */
uint32_t mq_group_live(mq_topic *t, const char *group);

/* end offset - committed offset of the group on one partition. After retention
 * removed messages the group had not committed, committed is the new start. */
int mq_lag(mq_topic *t, const char *group, uint32_t partition, uint64_t *lag);
/* OUT: *skipped, messages of one partition that retention removed before the
 * group committed them (since the topic was opened, including on open). */
int mq_retention_skipped(mq_topic *t, const char *group, uint32_t partition, uint64_t *skipped);
/* Messages held against the backlog limit, over all partitions. */
uint64_t mq_topic_backlog(mq_topic *t);
/* Bytes of record metadata the topic holds in memory (its blocks, over all
 * partitions; not its retry/DLQ topics): it follows what is retained, and
 * shrinks as groups commit. */
uint64_t mq_topic_meta_bytes(mq_topic *t);
/* Next offset to be assigned on a partition. */
uint64_t mq_end_offset(mq_topic *t, uint32_t partition);

/* ---- reading by offset (no group, nothing committed) ---- */

/* Call fn for the records of one partition from offset `from` upward (from
 * the first retained one when from is below it), at most max of them, in
 * offset order. Log topics read the segments, so records every group has
 * committed are still passed (recovery replays a topic from 0 this way);
 * SYNC logs pass only durable records. m->delivery is 0; m's pointers are
 * valid during the call only; fn must not call into this topic. fn
 * returning non-zero stops the read. Returns the number of records passed
 * (including the one that stopped it), or negative errno (-EIO: a record
 * failed its CRC). */
int mq_read(mq_topic *t, uint32_t partition, uint64_t from, size_t max,
            int (*fn)(void *arg, const mq_message *m), void *arg);

/* ---- dead letters ---- */

/* Copy up to max dead letters of group (oldest first) into out; pointers valid
 * until the next call on t. Returns the number listed. */
int mq_dlq_list(mq_topic *t, const char *group, mq_message *out, size_t max);
/* Send the dead letter at DLQ offset back to the group's retry topic with its
 * delivery count reset; it is then delivered to that group only. */
int mq_dlq_replay(mq_topic *t, const char *group, uint64_t dlq_offset);

/* ---- loss detection (consumer side) ---- */

typedef struct mq_seqcheck mq_seqcheck;
int mq_seqcheck_create(mq_seqcheck **out);
void mq_seqcheck_destroy(mq_seqcheck *s);
/* Record that (producer_id, seq) was seen on partition. Returns how many
 * sequence numbers are missing before it (0 when dense), logs one line naming
 * the gap on stderr and adds it to the counter. Duplicates and reorders below
 * the highest seen are not gaps. */
uint64_t mq_seqcheck_observe(mq_seqcheck *s, uint32_t partition, uint64_t producer_id, uint64_t seq);
uint64_t mq_seqcheck_missing(const mq_seqcheck *s);

#endif
