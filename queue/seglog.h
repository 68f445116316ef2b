/*
 * seglog.h - internal: the durable log of one partition (segment files).
 *
 * Used by mq.c for topics with MQ_STORAGE_LOG. One mq__seglog per partition
 * directory. The design comment (record format, fsync ordering, recovery
 * states) is at the top of seglog.c.
 */
#ifndef SECKILL_MQ_SEGLOG_H
#define SECKILL_MQ_SEGLOG_H

#include <stddef.h>
#include <stdint.h>

#include "crc32c.h" /* common/: sk_crc32c, the CRC of every record */
#include "le.h"     /* common/: the little-endian fields of records and entries */
#include "mq.h"

typedef struct mq__seglog mq__seglog;

typedef struct mq__seglog_config {
    uint64_t segment_bytes;       /* roll past this size */
    uint64_t retention_ms;        /* 0 = keep */
    uint64_t retention_bytes;     /* 0 = keep */
    enum mq_flush flush;
    uint32_t flush_interval_ms;   /* MQ_FLUSH_ASYNC */
    uint32_t index_interval_bytes;/* one sparse index entry per this many log bytes; 0 = 4096 */
    uint32_t prezero_bytes;       /* write zeros this far ahead of the records, so
                                   * that an fdatasync of appended records need
                                   * not write the file's size (0 = off) */
} mq__seglog_config;

/* One record as stored. Pointers are valid only during the callback / call. */
typedef struct mq__rec {
    uint64_t offset;
    uint64_t timestamp_ms;
    uint64_t producer_id;
    uint64_t seq;
    const void *key;
    uint32_t key_len;
    const void *value;
    uint32_t value_len;
} mq__rec;

/* Open dir (created if missing) and recover: scan the tail, stop at the first
 * record whose length or CRC is wrong, truncate there. OUT: *out. */
int mq__seglog_open(const char *dir, const mq__seglog_config *cfg, mq__seglog **out);
/* Flushes (per policy), stops the async flusher, closes files. */
void mq__seglog_close(mq__seglog *l);

/* Append one record (rec->offset is ignored). OUT: *offset.
 * MQ_FLUSH_SYNC: returns only after the record is durable; concurrent appenders
 * share one fsync (group commit). -ENOSPC: disk full, nothing stored.
 * -EIO: write/fsync failed; the log is then failed and refuses every later append. */
int mq__seglog_append(mq__seglog *l, const mq__rec *rec, uint64_t *offset);
/* Append n records (n >= 1) with one write: all of them are stored, with
 * consecutive offsets from *first, or none is (same errors as above). The
 * batch starts a new segment when it would not fit the current one, and is
 * never split over two. */
int mq__seglog_append_batch(mq__seglog *l, const mq__rec *recs, size_t n, uint64_t *first);

/* Call cb for records from offset `from` upward, at most max_records of them and
 * stopping once max_bytes of key+value were passed (at least one record is
 * passed when any exists). cb returning non-zero stops the read. Returns the
 * number of records passed or a negative errno. from below the start offset
 * (removed by retention) starts at the first retained record. The records of
 * one call have consecutive offsets. MQ_FLUSH_SYNC: only durable records are
 * passed (a record becomes readable when its append may return). -EIO: a
 * stored record failed its CRC (media corruption). */
int mq__seglog_read(mq__seglog *l, uint64_t from, size_t max_records, size_t max_bytes,
                    int (*cb)(void *arg, const mq__rec *rec), void *arg);

uint64_t mq__seglog_start(mq__seglog *l); /* first retained offset */
uint64_t mq__seglog_end(mq__seglog *l);   /* next offset to assign */
/* Remove whole segments past retention (never the active one): age compares a
 * segment's newest record timestamp with now_ms (both wall clock). Files are
 * unlinked without holding the log mutex. Returns segments removed. */
int mq__seglog_retain(mq__seglog *l, uint64_t now_ms);
/* Remove whole sealed segments whose records all lie below offset `below`
 * (everything every reader has consumed). Returns segments removed. */
int mq__seglog_trim(mq__seglog *l, uint64_t below);
int mq__seglog_flush(mq__seglog *l);

/* ---- committed offsets of consumer groups, persisted beside the log ---- */

typedef struct mq__offsets mq__offsets;
/* Open (or create) the offsets store file at path and load the last committed
 * value of every (group, partition). A torn tail is ignored. */
int mq__offsets_open(const char *path, mq__offsets **out);
void mq__offsets_close(mq__offsets *o);
/* Durably record group's committed offset for partition (fsync before return). */
int mq__offsets_put(mq__offsets *o, const char *group, uint32_t partition, uint64_t offset);
/* -ENOENT when never recorded. */
int mq__offsets_get(mq__offsets *o, const char *group, uint32_t partition, uint64_t *offset);
/* Call cb for every recorded (group, partition, offset). */
void mq__offsets_foreach(mq__offsets *o, void (*cb)(void *arg, const char *group, uint32_t partition,
                                                   uint64_t offset), void *arg);

#endif
