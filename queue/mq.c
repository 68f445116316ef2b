/*
 * mq.c - the embedded message queue: topics, partitions, consumer groups,
 * leases, redelivery, retry and dead letters. The contract is mq.h.
 *
 * STORAGE (struct part, one per partition, guarded by part.mu)
 *   Offsets [start, end) are retained. A record's metadata (struct rec) lives
 *   in fixed-size blocks of 2^bshift records, block b = offset >> bshift, found
 *   through a power-of-two table of block pointers (blk[b & (nblk - 1)]); the
 *   blocks [blk_lo, blk_end) are allocated and cover [start, end). Growing
 *   allocates one more block and, rarely, doubles the pointer table; a block
 *   is freed once start passes it. No record is ever copied, so a partition
 *   that retains millions of records (a log topic nobody reads yet) grows
 *   without the tens-of-ms stall a doubled-and-copied ring cost its producers.
 *   Memory topics keep key+value in a byte ring (the arena) whose live bytes
 *   run from ahead to atail in offset order, so freeing is moving ahead up to
 *   the next retained record. The arena grows by doubling when full (rare;
 *   copy under the lock; bounded by the topic's backlog limit) and never
 *   shrinks. Log topics keep only the metadata in memory and read key+value
 *   back from their mq__seglog, a batch at a time into the partition's
 *   read-ahead cache (part_payload()).
 *   MQ_FLUSH_SYNC log topics: part_append() writes the record under part.mu but
 *   waits for durability (mq__seglog_flush, the log's group commit) after
 *   dropping it, so producers of one partition share fsyncs; gp_collect()
 *   delivers only below part.durable_end, which part_append() raises once the
 *   flush returns. Records are stamped with the wall clock (mq_wall_now());
 *   the instance clock only times leases, acks and delays.
 *   A log topic's retry and DLQ topics are log topics too (RETRY/DLQ LOGS).
 *   start moves up in part_release(): to the lowest committed offset of the
 *   partition's readers (every group's gpos for that partition; with no reader
 *   nothing is freed), and in part_skip_to() when retention removed records.
 *   The topic's backlog (msgs, bytes) is a pair of atomics: part_append()
 *   reserves before storing (-ENOBUFS past a limit, nothing stored),
 *   part_release() gives back. No topic-wide lock on produce.
 *
 * IDEMPOTENCE (struct ptable, per partition, lazily allocated)
 *   producer id -> last stored seq, LRU-bounded to MQ_PRODUCERS_MAX entries.
 *   Checked and updated in part_append() under part.mu, so (seq order) ==
 *   (offset order). A producer we never saw must start at 1, unless the table
 *   has evicted someone: we cannot tell a forgotten producer from a new one,
 *   so any seq is then accepted.
 *
 * GROUP POSITION (struct gpos, per group and partition, under that part.mu)
 *   committed <= next <= hi <= end. [committed, next) is delivered and
 *   outstanding, [next, hi) was delivered before but is due again (after a
 *   rewind), >= hi never delivered. win[] holds, for [committed, hi), each
 *   offset's delivery count and last delivery time. Delivery is go-back-N:
 *   gp_collect() rewinds next to committed when the message at committed (the
 *   oldest outstanding, since mq_commit is cumulative) has been outstanding for
 *   ack_timeout_ms, and then delivers sequentially again; hence counts never
 *   increase with offset, and a message whose count reached max_deliveries is
 *   always at committed when it would be delivered again. gp_collect() then
 *   moves it (move_on()) instead of delivering it and advances committed:
 *   main partition p -> the group's retry topic, partition p (due after
 *   retry_delay_ms); retry -> the group's DLQ (one partition). If the move
 *   fails (retry/DLQ full) the message is delivered again instead: never lost.
 *   mq_commit() -> gp_advance() moves committed (and frees via part_release()).
 *   A takeover or a lease found expired rewinds next to committed (gp_take()).
 *   delivery reported = rec.base (deliveries in earlier topics) + count.
 *
 * LEASES (struct group, guarded by group.mu; owner[] is atomic)
 *   A consumer's lease on all its partitions is its last_seen time (atomic,
 *   renewed by every mq_fetch): owner[p] = c is valid while
 *   c->last_seen + lease_timeout_ms > now. rebalance() (called by mq_fetch)
 *   counts live members, computes share = ceil(P / live), gives back partitions
 *   above share (highest first), and takes free or expired ones (lowest first)
 *   up to share. The lease of main partition p also covers retry partition p.
 *   It skips group.mu when nothing can have changed (same membership epoch, full
 *   share, own lease valid, last full pass recent). mq_consumer_destroy() frees
 *   owner[] entries at once. mq_commit() refuses with -EPERM when owner[p] != c
 *   or c's lease has expired.
 *
 * RETENTION (main log topics): part_maintain(), called from mq_produce and for
 *   each held partition from mq_fetch, runs at most every MQ_MAINTAIN_MS of
 *   the instance clock per partition (a CAS on part.maintain_at elects one
 *   thread). mq__seglog_retain() compares segment ages with the wall clock and
 *   unlinks files holding only the log's retain mutex, not part.mu; then
 *   part_sync_start() takes part.mu and part_skip_to() moves start to the log's
 *   start, and every group below it up to it (gpos.skipped counts what it
 *   lost; not persisted, reopening clamps and counts again). A fetch that finds
 *   a record gone before the catch-up (the read is refused) catches up and goes
 *   on. Offsets between are never delivered.
 *
 * RETRY/DLQ LOGS (retry and DLQ topics of a log topic)
 *   <data_dir>/<topic>.<group>.retry/<p> and .dlq/0, each with its offsets
 *   store, opened by group_get_locked() (topic_open_parts()), which restores
 *   the group's committed offsets there. The fields of struct rec a plain log
 *   record lacks travel in an envelope before the key (ENV_*); due is stored
 *   on the wall clock and turned back into instance time on recovery.
 *   Crash-safety of a move (move_on(), mq_dlq_replay()): part_append() on a
 *   retry/DLQ partition returns only after fdatasync (part.sync is forced on),
 *   and the source's committed offset is persisted (gp_advance()) after that.
 *   A crash in between leaves the message in both: delivered twice, never
 *   lost. The fsync happens under the source partition's lock; moves are rare.
 *   No retention applies; part_maintain() trims segments below part.start (all
 *   committed). Replayed dead letters above the DLQ's committed offset are
 *   marked in memory only, so after a restart they are listed again.
 *
 * DLQ: rec.flags marks REPLAYING/REPLAYED; the group's dlq gpos.committed is the
 *   first dead letter not replayed, so replayed letters are freed from the head.
 *   mq_dlq_replay() appends to the retry partition the letter came from.
 *
 * WAITING: every topic family (main + its retry/DLQ topics) shares one waitq.
 *   part_append() and partition releases bump waitq.seq and broadcast only
 *   when waitq.waiters != 0. mq_fetch() sleeps on the condvar (CLOCK_MONOTONIC)
 *   in slices of MQ_WAIT_SLICE_MS so time-driven events (ack timeouts, retry
 *   due times, expired leases) are noticed without a timer thread.
 *   mq_destroy() sets closing, broadcasts, and waits for active fetches to
 *   leave (they return -ESHUTDOWN) before freeing anything.
 *
 * LIMITS (known): retention runs only while someone produces to or fetches
 *   the partition (no timer thread). Rings and the arena grow but never
 *   shrink. Groups live until mq_destroy; an idle group holds the backlog (by
 *   design: backlog = the slowest group).
 *
 * LOCK ORDER: q.mu -> topic.gmu -> group.mu -> part.mu(main) -> part.mu(retry)
 *   -> part.mu(dlq) -> waitq.mu. mq_dlq_replay() drops the DLQ lock before
 *   appending to retry. A partition's log mutexes (its retain mutex, then its
 *   mutex, seglog.c) come after that partition's part.mu; part_maintain()
 *   takes the log's alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mq.h"
#include "log.h"
#include "seglog.h"
#include "prefault.h"

#define MQ_PRODUCERS_MAX 1024
#define MQ_PRODUCER_BUCKETS 2048 /* power of two */
#define MQ_WAIT_SLICE_MS 50
#define MQ_NAME_MAX 200
#define MQ_PARTITIONS_MAX 4096
#define MQ_MAINTAIN_MS 1000 /* retention / trim at most this often per partition */
#define MQ_PREZERO_BYTES (1u << 20) /* zeros ahead of a flushed log's records */

/* Retry/DLQ log records carry what struct rec keeps beyond the log's fields in
 * an envelope stored before the key (the log's key is envelope + key):
 *   0 u32 ENV_MAGIC  4 u32 orig_partition  8 u64 orig_offset  16 u32 base
 *  20 u32 0         24 u64 due (wall clock ms; 0 for DLQ)    (little endian) */
#define ENV_MAGIC 0x5652514du /* "MQRV" */
#define ENV_BYTES 32u

enum topic_kind { TOPIC_MAIN, TOPIC_RETRY, TOPIC_DLQ };

#define REC_REPLAYING 1u
#define REC_REPLAYED 2u

struct rec {
    uint64_t ts;
    uint64_t producer_id;
    uint64_t seq;
    uint64_t pos;         /* memory topics: arena position of key, value follows */
    uint64_t due;         /* retry topics: not delivered before this time */
    uint64_t orig_offset; /* retry/DLQ: offset in the main partition */
    uint32_t key_len;
    uint32_t value_len;
    uint32_t orig_partition;
    uint32_t base;  /* deliveries in earlier topics (main -> retry -> DLQ) */
    uint32_t flags; /* DLQ: REC_REPLAYING, REC_REPLAYED */
};

struct prod {
    uint64_t id;
    uint64_t last;
    int32_t hnext; /* hash chain */
    int32_t prev;  /* LRU list, head = most recent */
    int32_t next;
};

struct ptable {
    struct prod e[MQ_PRODUCERS_MAX];
    int32_t bucket[MQ_PRODUCER_BUCKETS];
    int32_t head, tail;
    uint32_t n;
    uint64_t evicted;
};

struct wslot {
    uint64_t at;    /* last delivery time */
    uint32_t count; /* deliveries in this topic */
};

struct gpos {
    uint64_t committed, next, hi;
    uint64_t skipped;  /* removed by retention before this group committed them */
    struct wslot *win; /* [committed, hi), indexed by offset & (wcap - 1) */
    uint64_t wcap;
};

struct part {
    pthread_mutex_t mu;
    uint64_t start, end;
    struct rec **blk; /* nblk block pointers, power of two; NULL until first append */
    uint64_t nblk;
    uint64_t blk_lo, blk_end; /* blocks allocated: [blk_lo, blk_end), by block number */
    unsigned bshift;          /* 2^bshift records per block */
    uint8_t *arena; /* acap bytes, power of two */
    uint64_t acap, ahead, atail;
    struct gpos **readers; /* each group's position on this partition */
    size_t nreaders, readers_cap;
    struct ptable *prods;
    mq__seglog *log;
    uint32_t env;                     /* retry/DLQ logs: ENV_BYTES of envelope before the key */
    atomic_uint_fast64_t maintain_at; /* instance time of the next part_maintain() pass */
    bool sync;                        /* MQ_FLUSH_SYNC log: deliver only below durable_end */
    uint64_t durable_end;             /* log topics: every offset below is on disk */
    /* log topics: records [cache_from, cache_from + cache_n) read ahead into
     * scratch, the i-th at cache_pos[i]. Records never change once written. */
    uint8_t *scratch;
    size_t scratch_cap, scratch_len;
    uint64_t cache_from;
    size_t cache_n;
    size_t *cache_pos;
};

struct waitq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t seq;
    atomic_int waiters;
};

struct group;

struct mq_topic {
    mq *q;
    char *name;
    mq_topic_config cfg;
    enum topic_kind kind;
    struct part *parts;
    atomic_uint rr;
    atomic_uint_fast64_t backlog_msgs;
    atomic_uint_fast64_t backlog_bytes;
    struct waitq own_wq;
    struct waitq *wq; /* own_wq, or the main topic's for retry/DLQ topics */
    pthread_mutex_t gmu;
    struct group **groups;
    size_t ngroups, groups_cap;
    mq__offsets *offsets;    /* log topics */
    pthread_mutex_t list_mu; /* mq_dlq_list's buffer */
    uint8_t *list_buf;
    size_t list_cap;
};

struct group {
    mq_topic *t;
    char *name;
    pthread_mutex_t mu;
    mq_consumer **members;
    size_t nmembers, members_cap;
    atomic_uint epoch;             /* bumped on join, leave, and a member's return after expiry */
    _Atomic(mq_consumer *) *owner; /* [partitions] */
    struct gpos *main;             /* [partitions] */
    struct gpos *retry;            /* [partitions] */
    struct gpos dlq;
    mq_topic *retry_t, *dlq_t;
};

struct mq_consumer {
    mq_topic *t;
    struct group *g;
    char *id;
    atomic_uint_fast64_t last_seen;
    /* below: used only by the thread calling mq_fetch on this handle */
    unsigned seen_epoch;
    uint32_t held, share, rr;
    uint64_t last_balance;
    mq_message *msgs;
    size_t *koff; /* key offset in data per message; value follows the key */
    size_t n, mcap;
    uint8_t *data;
    size_t dlen, dcap;
};

struct mq {
    char *data_dir;
    mq_clock_fn clock; /* instance clock: leases, timeouts, delays */
    void *clock_arg;
    mq_clock_fn wall; /* wall clock: record timestamps, retention by age */
    void *wall_arg;
    pthread_mutex_t mu;
    mq_topic **topics;
    size_t ntopics, topics_cap;
    atomic_bool closing;
    atomic_int active;
};

/* ---------------------------------------------------------------- helpers */

static uint64_t mono_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t next_pow2(uint64_t v)
{
    uint64_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static uint64_t hash_bytes(const void *buf, size_t len)
{
    const uint8_t *b = buf;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

static int grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 8;
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(*arr, ncap * elem);
    if (!n)
        return -ENOMEM;
    *arr = n;
    *cap = ncap;
    return 0;
}

/* fsync the directory that holds path (path is modified and restored). */
static int fsync_parent(char *path)
{
    char *slash = strrchr(path, '/');
    const char *dir = slash == NULL ? "." : slash == path ? "/" : path;
    if (slash != NULL && slash != path)
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 || fsync(fd) != 0 ? -errno : 0;
    if (fd >= 0)
        close(fd);
    if (slash != NULL && slash != path)
        *slash = '/';
    return rc;
}

/* mkdir -p. A directory's entry is durable only once its parent is fsynced:
 * without that a power cut can take back a topic directory, and every
 * segment fsynced inside it with it. */
static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) == 0) {
            int rc = fsync_parent(buf);
            if (rc < 0)
                return rc;
        } else if (errno != EEXIST) {
            return -errno;
        }
        buf[i] = c;
    }
    return 0;
}

static bool name_ok(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > MQ_NAME_MAX || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    return true;
}

static void waitq_init(struct waitq *w)
{
    pthread_condattr_t ca;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&w->seq, 0);
    atomic_init(&w->waiters, 0);
}

static void waitq_release(struct waitq *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

/* Something a fetcher may be waiting for happened on t's family. */
static void wake(mq_topic *t)
{
    struct waitq *w = t->wq;
    atomic_fetch_add(&w->seq, 1);
    if (atomic_load(&w->waiters) > 0) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

/* ------------------------------------------------------- producer table */

static uint32_t prod_bucket(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (uint32_t)id & (MQ_PRODUCER_BUCKETS - 1);
}

static struct ptable *ptable_create(void)
{
    struct ptable *pt = malloc(sizeof *pt);
    if (!pt)
        return NULL;
    for (int i = 0; i < MQ_PRODUCER_BUCKETS; i++)
        pt->bucket[i] = -1;
    pt->head = pt->tail = -1;
    pt->n = 0;
    pt->evicted = 0;
    return pt;
}

static struct prod *ptable_find(struct ptable *pt, uint64_t id)
{
    if (!pt)
        return NULL;
    for (int32_t i = pt->bucket[prod_bucket(id)]; i >= 0; i = pt->e[i].hnext)
        if (pt->e[i].id == id)
            return &pt->e[i];
    return NULL;
}

static void lru_unlink(struct ptable *pt, int32_t i)
{
    struct prod *e = &pt->e[i];
    if (e->prev >= 0)
        pt->e[e->prev].next = e->next;
    else
        pt->head = e->next;
    if (e->next >= 0)
        pt->e[e->next].prev = e->prev;
    else
        pt->tail = e->prev;
}

static void lru_push(struct ptable *pt, int32_t i)
{
    struct prod *e = &pt->e[i];
    e->prev = -1;
    e->next = pt->head;
    if (pt->head >= 0)
        pt->e[pt->head].prev = i;
    pt->head = i;
    if (pt->tail < 0)
        pt->tail = i;
}

/* 0 when seq may be stored for id, else -EALREADY / -EILSEQ. */
static int ptable_check(struct ptable *pt, uint64_t id, uint64_t seq)
{
    struct prod *e = ptable_find(pt, id);
    if (e) {
        if (seq <= e->last)
            return -EALREADY;
        return seq == e->last + 1 ? 0 : -EILSEQ;
    }
    if (seq == 1 || (pt && pt->evicted))
        return 0;
    return -EILSEQ;
}

/* Record id's last seq, making it the most recent; evicts the least recent when full. */
static void ptable_put(struct ptable *pt, uint64_t id, uint64_t seq)
{
    struct prod *e = ptable_find(pt, id);
    int32_t i;
    if (e) {
        i = (int32_t)(e - pt->e);
        if (seq > e->last)
            e->last = seq;
        lru_unlink(pt, i);
        lru_push(pt, i);
        return;
    }
    if (pt->n < MQ_PRODUCERS_MAX) {
        i = (int32_t)pt->n++;
    } else {
        i = pt->tail;
        lru_unlink(pt, i);
        int32_t *link = &pt->bucket[prod_bucket(pt->e[i].id)];
        while (*link != i)
            link = &pt->e[*link].hnext;
        *link = pt->e[i].hnext;
        pt->evicted++;
    }
    uint32_t b = prod_bucket(id);
    pt->e[i].id = id;
    pt->e[i].last = seq;
    pt->e[i].hnext = pt->bucket[b];
    pt->bucket[b] = i;
    lru_push(pt, i);
}

/* ------------------------------------------------------- partition store */

static struct rec *slot(struct part *pt, uint64_t off)
{
    return &pt->blk[(off >> pt->bshift) & (pt->nblk - 1)][off & ((1u << pt->bshift) - 1)];
}

/* Offsets below this may be delivered (SYNC logs: only what is durable). */
static uint64_t part_visible(const struct part *pt)
{
    return pt->sync ? pt->durable_end : pt->end;
}

static const uint8_t *arena_at(const struct part *pt, uint64_t pos)
{
    return pt->arena + (pos & (pt->acap - 1));
}

/* Free the metadata blocks wholly below start; called wherever start moves,
 * so ring_reserve finds [blk_lo, blk_end) starting at start's block. Caller
 * holds pt->mu. */
static void ring_trim(struct part *pt)
{
    if (!pt->blk)
        return;
    uint64_t lo = pt->start >> pt->bshift;
    for (; pt->blk_lo < lo && pt->blk_lo < pt->blk_end; pt->blk_lo++) {
        struct rec **b = &pt->blk[pt->blk_lo & (pt->nblk - 1)];
        free(*b);
        *b = NULL;
    }
    if (pt->blk_lo < lo) /* nothing allocated: start afresh at start's block */
        pt->blk_lo = pt->blk_end = lo;
}

/* Metadata room for offsets [end, end + n). Caller holds pt->mu. */
static int ring_reserve(mq_topic *t, struct part *pt, uint64_t n)
{
    if (n == 0)
        return 0;
    if (!pt->blk) {
        /* a block of up to 1024 records (72 KiB); retry/DLQ topics are
         * usually nearly empty and take 64 */
        uint64_t per = t->cfg.max_backlog_msgs / t->cfg.partitions;
        per = t->kind != TOPIC_MAIN ? 64 : per >= 1024 ? 1024 : per + 1;
        pt->bshift = (unsigned)__builtin_ctzll(next_pow2(per < 16 ? 16 : per));
        pt->nblk = 16;
        pt->blk = calloc(pt->nblk, sizeof *pt->blk);
        if (!pt->blk)
            return -ENOMEM;
        pt->blk_lo = pt->blk_end = pt->start >> pt->bshift;
    }
    uint64_t need_end = ((pt->end + n - 1) >> pt->bshift) + 1;
    if (need_end - pt->blk_lo > pt->nblk) {
        uint64_t ncap = pt->nblk * 2;
        while (ncap < need_end - pt->blk_lo)
            ncap *= 2;
        struct rec **nb = calloc(ncap, sizeof *nb);
        if (!nb)
            return -ENOMEM;
        for (uint64_t b = pt->blk_lo; b < pt->blk_end; b++)
            nb[b & (ncap - 1)] = pt->blk[b & (pt->nblk - 1)];
        free(pt->blk);
        pt->blk = nb;
        pt->nblk = ncap;
    }
    for (; pt->blk_end < need_end; pt->blk_end++) {
        struct rec *r = malloc(sizeof *r << pt->bshift);
        if (!r)
            return -ENOMEM;
        sk_prefault(r, sizeof *r << pt->bshift);
        pt->blk[pt->blk_end & (pt->nblk - 1)] = r;
    }
    return 0;
}

/* Re-pack the live records into a larger arena with room for need more bytes. */
static int arena_grow(mq_topic *t, struct part *pt, uint64_t need)
{
    uint64_t live = 0;
    for (uint64_t o = pt->start; o < pt->end; o++)
        live += (uint64_t)slot(pt, o)->key_len + slot(pt, o)->value_len;
    uint64_t ncap = pt->acap;
    if (!ncap) {
        uint64_t per = t->cfg.max_backlog_bytes / t->cfg.partitions;
        if (t->kind != TOPIC_MAIN)
            per = 4096;
        ncap = next_pow2(per < 4096 ? 4096 : per > (1u << 20) ? (1u << 20) : per);
    }
    while (ncap < 2 * (live + need)) {
        if (ncap > (UINT64_MAX >> 2))
            return -ENOMEM;
        ncap *= 2;
    }
    if (ncap > SIZE_MAX)
        return -ENOMEM;
    uint8_t *buf = malloc((size_t)ncap);
    if (!buf)
        return -ENOMEM;
    uint64_t w = 0;
    for (uint64_t o = pt->start; o < pt->end; o++) {
        struct rec *r = slot(pt, o);
        uint64_t len = (uint64_t)r->key_len + r->value_len;
        if (len)
            memcpy(buf + w, arena_at(pt, r->pos), len);
        r->pos = w;
        w += len;
    }
    free(pt->arena);
    pt->arena = buf;
    pt->acap = ncap;
    pt->ahead = 0;
    pt->atail = w;
    return 0;
}

/* OUT: *pos, where len contiguous bytes may be written. */
static int arena_alloc(mq_topic *t, struct part *pt, uint64_t len, uint64_t *pos)
{
    if (len == 0) {
        *pos = pt->atail;
        return 0;
    }
    for (;;) {
        if (pt->acap) {
            uint64_t p = pt->atail, idx = p & (pt->acap - 1);
            if (idx + len > pt->acap)
                p += pt->acap - idx; /* never split a record at the wrap */
            if (p + len - pt->ahead <= pt->acap) {
                pt->atail = p + len;
                *pos = p;
                return 0;
            }
        }
        int rc = arena_grow(t, pt, len);
        if (rc < 0)
            return rc;
    }
}

/* Free what every reader has committed past. Caller holds pt->mu. */
static void part_release(mq_topic *t, struct part *pt)
{
    if (pt->nreaders == 0)
        return;
    uint64_t min = pt->end;
    for (size_t i = 0; i < pt->nreaders; i++)
        if (pt->readers[i]->committed < min)
            min = pt->readers[i]->committed;
    if (min <= pt->start)
        return;
    uint64_t n = min - pt->start, bytes = 0;
    for (uint64_t o = pt->start; o < min; o++)
        bytes += (uint64_t)slot(pt, o)->key_len + slot(pt, o)->value_len;
    if (pt->arena)
        pt->ahead = min < pt->end ? slot(pt, min)->pos : pt->atail;
    pt->start = min;
    ring_trim(pt);
    atomic_fetch_sub(&t->backlog_msgs, n);
    atomic_fetch_sub(&t->backlog_bytes, bytes);
}

/* Retention removed [pt->start, to) from the log: forget it, and move every
 * group still below `to` up to it, counting what it skipped. Caller holds pt->mu. */
static void part_skip_to(mq_topic *t, struct part *pt, uint64_t to)
{
    if (to > pt->end)
        to = pt->end;
    if (to <= pt->start)
        return;
    uint64_t n = to - pt->start, bytes = 0;
    for (uint64_t o = pt->start; o < to; o++)
        bytes += (uint64_t)slot(pt, o)->key_len + slot(pt, o)->value_len;
    for (size_t i = 0; i < pt->nreaders; i++) {
        struct gpos *gp = pt->readers[i];
        if (gp->committed >= to)
            continue;
        gp->skipped += to - gp->committed;
        gp->committed = to;
        if (gp->next < to)
            gp->next = to;
        if (gp->hi < to)
            gp->hi = to;
    }
    pt->start = to;
    ring_trim(pt);
    atomic_fetch_sub(&t->backlog_msgs, n);
    atomic_fetch_sub(&t->backlog_bytes, bytes);
}

/* Catch up with a retention pass that ran on the log. Returns true when the
 * start moved. Caller holds pt->mu (lock order: pt->mu -> the log's mutex). */
static bool part_sync_start(mq_topic *t, struct part *pt)
{
    if (!pt->log || pt->env)
        return false;
    uint64_t ls = mq__seglog_start(pt->log);
    if (ls <= pt->start)
        return false;
    part_skip_to(t, pt, ls);
    return true;
}

/* Periodic log upkeep of partition p, at most once per MQ_MAINTAIN_MS of the
 * instance clock, by whichever thread gets there first. Main topics: run
 * retention (wall clock), then catch up under pt->mu. Retry/DLQ topics: remove
 * segments every reader committed past. The files are removed without pt->mu. */
static void part_maintain(mq_topic *t, uint32_t p, uint64_t now)
{
    struct part *pt = &t->parts[p];
    bool retain = t->cfg.retention_ms || t->cfg.retention_bytes;
    int rc;

    if (!pt->log || (t->kind == TOPIC_MAIN && !retain))
        return;
    uint_fast64_t at = atomic_load_explicit(&pt->maintain_at, memory_order_relaxed);
    if (now < at ||
        !atomic_compare_exchange_strong(&pt->maintain_at, &at, (uint_fast64_t)now + MQ_MAINTAIN_MS))
        return;
    if (t->kind == TOPIC_MAIN) {
        rc = mq__seglog_retain(pt->log, mq_wall_now(t->q));
        if (rc > 0) {
            pthread_mutex_lock(&pt->mu);
            part_sync_start(t, pt);
            pthread_mutex_unlock(&pt->mu);
        }
    } else {
        pthread_mutex_lock(&pt->mu);
        uint64_t below = pt->start;
        pthread_mutex_unlock(&pt->mu);
        rc = mq__seglog_trim(pt->log, below);
    }
    if (rc < 0)
        sk_log(SK_LOG_WARN, "mq", NULL, "%s/%u: removing old segments failed: %s", t->name, p,
               strerror(-rc));
}

static bool backlog_reserve(mq_topic *t, uint64_t bytes)
{
    if (atomic_fetch_add(&t->backlog_msgs, 1) + 1 > t->cfg.max_backlog_msgs) {
        atomic_fetch_sub(&t->backlog_msgs, 1);
        return false;
    }
    if (atomic_fetch_add(&t->backlog_bytes, bytes) + bytes > t->cfg.max_backlog_bytes) {
        atomic_fetch_sub(&t->backlog_bytes, bytes);
        atomic_fetch_sub(&t->backlog_msgs, 1);
        return false;
    }
    return true;
}

struct append {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    uint64_t ts, producer_id, seq, due, orig_offset;
    uint64_t due_wall; /* retry logs: due on the wall clock, survives restarts */
    uint32_t orig_partition, base;
    bool check_seq;
};

/* Store one record at the end of partition p without waiting for a SYNC
 * log's flush (part_make_durable() does that). OUT: *off. */
static int part_store(mq_topic *t, uint32_t p, const struct append *a, uint64_t *off)
{
    struct part *pt = &t->parts[p];
    uint64_t size = (uint64_t)a->key_len + a->value_len;
    bool seq = a->check_seq && a->producer_id;
    int rc;

    if (!backlog_reserve(t, size))
        return -ENOBUFS;
    pthread_mutex_lock(&pt->mu);
    if (seq) {
        rc = ptable_check(pt->prods, a->producer_id, a->seq);
        if (rc < 0)
            goto out_unreserve;
        if (!pt->prods && !(pt->prods = ptable_create())) {
            rc = -ENOMEM;
            goto out_unreserve;
        }
    }
    rc = ring_reserve(t, pt, 1);
    if (rc < 0)
        goto out_unreserve;
    struct rec r = {.ts = a->ts,
                    .producer_id = a->producer_id,
                    .seq = a->seq,
                    .due = a->due,
                    .orig_offset = a->orig_offset,
                    .key_len = (uint32_t)a->key_len,
                    .value_len = (uint32_t)a->value_len,
                    .orig_partition = a->orig_partition,
                    .base = a->base};
    if (pt->log) {
        uint8_t envbuf[ENV_BYTES + 224], *ek = NULL;
        mq__rec lr = {.timestamp_ms = a->ts,
                      .producer_id = a->producer_id,
                      .seq = a->seq,
                      .key = a->key,
                      .key_len = (uint32_t)a->key_len,
                      .value = a->value,
                      .value_len = (uint32_t)a->value_len};
        uint64_t loff;
        if (pt->env) { /* retry/DLQ: rare, so a copy is fine */
            size_t klen = ENV_BYTES + a->key_len;
            ek = klen <= sizeof envbuf ? envbuf : malloc(klen);
            if (!ek) {
                rc = -ENOMEM;
                goto out_unreserve;
            }
            sk_le_put32(ek, ENV_MAGIC);
            sk_le_put32(ek + 4, a->orig_partition);
            sk_le_put64(ek + 8, a->orig_offset);
            sk_le_put32(ek + 16, a->base);
            sk_le_put32(ek + 20, 0);
            sk_le_put64(ek + 24, a->due_wall);
            if (a->key_len)
                memcpy(ek + ENV_BYTES, a->key, a->key_len);
            lr.key = ek;
            lr.key_len = (uint32_t)klen;
        }
        rc = mq__seglog_append(pt->log, &lr, &loff);
        if (ek != envbuf)
            free(ek);
        if (rc < 0)
            goto out_unreserve;
        if (loff != pt->end) {
            sk_log(SK_LOG_ERROR, "mq", NULL,
                   "%s/%u: log assigned offset %" PRIu64 ", expected %" PRIu64 "", t->name, p, loff,
                   pt->end);
            rc = -EIO;
            goto out_unreserve;
        }
    } else {
        rc = arena_alloc(t, pt, size, &r.pos);
        if (rc < 0)
            goto out_unreserve;
        if (a->key_len)
            memcpy(pt->arena + (r.pos & (pt->acap - 1)), a->key, a->key_len);
        if (a->value_len)
            memcpy(pt->arena + (r.pos & (pt->acap - 1)) + a->key_len, a->value, a->value_len);
    }
    *slot(pt, pt->end) = r;
    *off = pt->end++;
    if (seq)
        ptable_put(pt->prods, a->producer_id, a->seq);
    pthread_mutex_unlock(&pt->mu);
    return 0;

out_unreserve:
    pthread_mutex_unlock(&pt->mu);
    atomic_fetch_sub(&t->backlog_msgs, 1);
    atomic_fetch_sub(&t->backlog_bytes, size);
    return rc;
}

/* Store recs[idx[0..m)] (produced to a log partition p of a main topic, none
 * with a producer id) at the end of p with one log write: all of them, or
 * none with the error in their rcs. OUT: *upto, one past the last offset. */
static void part_store_log_batch(mq_topic *t, uint32_t p, const mq_record *recs, size_t *idx,
                                 size_t m, uint64_t ts, mq__rec *lrecs, int *rcs, uint64_t *upto)
{
    struct part *pt = &t->parts[p];
    size_t k = 0;
    int rc;

    for (size_t j = 0; j < m; j++) { /* the backlog bound, record by record */
        const mq_record *rec = &recs[idx[j]];
        if (!backlog_reserve(t, (uint64_t)rec->key_len + rec->value_len)) {
            rcs[idx[j]] = -ENOBUFS;
            continue;
        }
        idx[k] = idx[j];
        lrecs[k++] = (mq__rec){.timestamp_ms = ts,
                               .key = rec->key,
                               .key_len = (uint32_t)rec->key_len,
                               .value = rec->value,
                               .value_len = (uint32_t)rec->value_len};
    }
    if (k == 0)
        return;
    uint64_t first;
    pthread_mutex_lock(&pt->mu);
    rc = ring_reserve(t, pt, k);
    if (rc == 0)
        rc = mq__seglog_append_batch(pt->log, lrecs, k, &first);
    if (rc == 0 && first != pt->end) {
        sk_log(SK_LOG_ERROR, "mq", NULL,
               "%s/%u: log assigned offset %" PRIu64 ", expected %" PRIu64 "", t->name, p, first,
               pt->end);
        rc = -EIO;
    }
    if (rc == 0) {
        for (size_t j = 0; j < k; j++) {
            *slot(pt, pt->end) = (struct rec){.ts = ts,
                                              .key_len = lrecs[j].key_len,
                                              .value_len = lrecs[j].value_len,
                                              .orig_partition = p};
            pt->end++;
        }
        *upto = pt->end;
    }
    pthread_mutex_unlock(&pt->mu);
    for (size_t j = 0; j < k; j++) {
        rcs[idx[j]] = rc;
        if (rc < 0) {
            atomic_fetch_sub(&t->backlog_msgs, 1);
            atomic_fetch_sub(&t->backlog_bytes, (uint64_t)lrecs[j].key_len + lrecs[j].value_len);
        }
    }
}

/* SYNC logs: make every record of pt below upto durable and visible. Called
 * outside pt->mu, so concurrent producers share one fsync (the log's group
 * commit); fetchers see a record once it is durable. */
static int part_make_durable(struct part *pt, uint64_t upto)
{
    int rc = mq__seglog_flush(pt->log);
    if (rc < 0)
        return rc; /* the log is failed now: every later append is -EIO */
    pthread_mutex_lock(&pt->mu);
    if (pt->durable_end < upto)
        pt->durable_end = upto;
    pthread_mutex_unlock(&pt->mu);
    return 0;
}

/* Store one record at the end of partition p (durably for SYNC logs).
 * OUT: *off (may be NULL). */
static int part_append(mq_topic *t, uint32_t p, const struct append *a, uint64_t *off)
{
    struct part *pt = &t->parts[p];
    uint64_t stored;
    int rc = part_store(t, p, a, &stored);
    if (rc < 0)
        return rc;
    if (pt->sync) {
        rc = part_make_durable(pt, stored + 1);
        if (rc < 0)
            return rc;
    }
    if (off)
        *off = stored;
    wake(t);
    return 0;
}

#define READAHEAD_RECORDS 256
#define READAHEAD_BYTES (1u << 20)

struct readahead {
    struct part *pt;
    uint64_t next; /* offset expected next */
    int rc;
};

static int readahead_cb(void *arg, const mq__rec *lr)
{
    struct readahead *ra = arg;
    struct part *pt = ra->pt;
    size_t len = (size_t)lr->key_len + lr->value_len;
    if (lr->offset != ra->next)
        return 1; /* keep the cache dense */
    if (pt->scratch_len + len > pt->scratch_cap) {
        size_t ncap = pt->scratch_cap ? pt->scratch_cap : 4096;
        while (ncap < pt->scratch_len + len)
            ncap *= 2;
        uint8_t *n = realloc(pt->scratch, ncap);
        if (!n) {
            ra->rc = -ENOMEM;
            return 1;
        }
        pt->scratch = n;
        pt->scratch_cap = ncap;
    }
    if (lr->key_len)
        memcpy(pt->scratch + pt->scratch_len, lr->key, lr->key_len);
    if (lr->value_len)
        memcpy(pt->scratch + pt->scratch_len + lr->key_len, lr->value, lr->value_len);
    pt->cache_pos[pt->cache_n++] = pt->scratch_len;
    pt->scratch_len += len;
    ra->next++;
    return 0;
}

/* Key and value of record off (value follows the key). Pointers valid until
 * pt->mu is released or the partition is next read or written. Caller holds
 * pt->mu. Log topics read ahead a batch on a miss. */
static int part_payload(struct part *pt, uint64_t off, const struct rec *r, const uint8_t **kv)
{
    if (!pt->log) {
        *kv = pt->arena ? arena_at(pt, r->pos) : NULL;
        return 0;
    }
    if (off < pt->cache_from || off >= pt->cache_from + pt->cache_n) {
        if (!pt->cache_pos && !(pt->cache_pos = malloc(READAHEAD_RECORDS * sizeof *pt->cache_pos)))
            return -ENOMEM;
        pt->cache_from = off;
        pt->cache_n = 0;
        pt->scratch_len = 0;
        struct readahead ra = {.pt = pt, .next = off, .rc = 0};
        int rc =
            mq__seglog_read(pt->log, off, READAHEAD_RECORDS, READAHEAD_BYTES, readahead_cb, &ra);
        if (rc < 0 || ra.rc < 0) {
            pt->cache_n = 0;
            return rc < 0 ? rc : ra.rc;
        }
        if (pt->cache_n == 0)
            return -EIO; /* metadata says it exists, the log does not have it */
    }
    *kv = pt->scratch + pt->cache_pos[off - pt->cache_from] + pt->env;
    return 0;
}

/* ------------------------------------------------------------ instance */

void mq_topic_config_init(mq_topic_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->partitions = 4;
    cfg->max_backlog_msgs = 65536;
    cfg->max_backlog_bytes = 64u << 20;
    cfg->max_record_bytes = 64u << 10;
    cfg->storage = MQ_STORAGE_MEMORY;
    cfg->flush = MQ_FLUSH_NONE;
    cfg->flush_interval_ms = 1000;
    cfg->segment_bytes = 64u << 20;
    cfg->retention_ms = 0;
    cfg->retention_bytes = 0;
    cfg->max_deliveries = 5;
    cfg->ack_timeout_ms = 30000;
    cfg->lease_timeout_ms = 10000;
    cfg->retry_delay_ms = 1000;
}

int mq_create(const char *data_dir, mq **out)
{
    int rc = -ENOMEM;
    if (!out)
        return -EINVAL;
    *out = NULL;
    mq *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    if (data_dir) {
        q->data_dir = strdup(data_dir);
        if (!q->data_dir)
            goto out_free_q;
        rc = mkdir_p(data_dir);
        if (rc < 0)
            goto out_free_dir;
    }
    pthread_mutex_init(&q->mu, NULL);
    q->clock = mono_ms;
    q->wall = wall_ms;
    atomic_init(&q->closing, false);
    atomic_init(&q->active, 0);
    *out = q;
    return 0;

out_free_dir:
    free(q->data_dir);
out_free_q:
    free(q);
    return rc;
}

void mq_set_clock(mq *q, mq_clock_fn fn, void *arg)
{
    q->clock = fn ? fn : mono_ms;
    q->clock_arg = fn ? arg : NULL;
}

uint64_t mq_now(const mq *q)
{
    return q->clock(q->clock_arg);
}

void mq_set_wall_clock(mq *q, mq_clock_fn fn, void *arg)
{
    q->wall = fn ? fn : wall_ms;
    q->wall_arg = fn ? arg : NULL;
}

uint64_t mq_wall_now(const mq *q)
{
    return q->wall(q->wall_arg);
}

static void gpos_release(struct gpos *gp)
{
    free(gp->win);
}

static void consumer_free(mq_consumer *c)
{
    free(c->msgs);
    free(c->koff);
    free(c->data);
    free(c->id);
    free(c);
}

static void group_free(struct group *g)
{
    uint32_t P = g->t->cfg.partitions;
    for (size_t i = 0; i < g->nmembers; i++)
        consumer_free(g->members[i]);
    free(g->members);
    for (uint32_t p = 0; p < P; p++) {
        if (g->main)
            gpos_release(&g->main[p]);
        if (g->retry)
            gpos_release(&g->retry[p]);
    }
    gpos_release(&g->dlq);
    free(g->main);
    free(g->retry);
    free((void *)g->owner);
    pthread_mutex_destroy(&g->mu);
    free(g->name);
    free(g);
}

static void topic_free(mq_topic *t)
{
    for (size_t i = 0; i < t->ngroups; i++)
        group_free(t->groups[i]);
    free(t->groups);
    if (t->parts) {
        for (uint32_t p = 0; p < t->cfg.partitions; p++) {
            struct part *pt = &t->parts[p];
            if (pt->log)
                mq__seglog_close(pt->log);
            if (pt->blk)
                for (uint64_t b = pt->blk_lo; b < pt->blk_end; b++)
                    free(pt->blk[b & (pt->nblk - 1)]);
            free(pt->blk);
            free(pt->arena);
            free(pt->readers);
            free(pt->prods);
            free(pt->scratch);
            free(pt->cache_pos);
            pthread_mutex_destroy(&pt->mu);
        }
        free(t->parts);
    }
    if (t->offsets)
        mq__offsets_close(t->offsets);
    waitq_release(&t->own_wq);
    pthread_mutex_destroy(&t->gmu);
    pthread_mutex_destroy(&t->list_mu);
    free(t->list_buf);
    free(t->name);
    free(t);
}

void mq_destroy(mq *q)
{
    if (!q)
        return;
    atomic_store(&q->closing, true);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        for (size_t i = 0; i < q->ntopics; i++) {
            struct waitq *w = &q->topics[i]->own_wq;
            pthread_mutex_lock(&w->mu);
            pthread_cond_broadcast(&w->cv);
            pthread_mutex_unlock(&w->mu);
        }
        pthread_mutex_unlock(&q->mu);
        if (atomic_load(&q->active) == 0)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < q->ntopics; i++)
        topic_free(q->topics[i]);
    free(q->topics);
    pthread_mutex_destroy(&q->mu);
    free(q->data_dir);
    free(q);
}

/* --------------------------------------------------------------- topics */

static mq_topic *topic_find_locked(mq *q, const char *name)
{
    for (size_t i = 0; i < q->ntopics; i++)
        if (!strcmp(q->topics[i]->name, name))
            return q->topics[i];
    return NULL;
}

mq_topic *mq_topic_find(mq *q, const char *name)
{
    if (!q || !name)
        return NULL;
    pthread_mutex_lock(&q->mu);
    mq_topic *t = topic_find_locked(q, name);
    pthread_mutex_unlock(&q->mu);
    return t;
}

const char *mq_topic_name(const mq_topic *t)
{
    return t->name;
}

uint32_t mq_topic_partitions(const mq_topic *t)
{
    return t->cfg.partitions;
}

static int config_check(const mq_topic_config *cfg)
{
    if (cfg->partitions < 1 || cfg->partitions > MQ_PARTITIONS_MAX || cfg->max_backlog_msgs < 1 ||
        cfg->max_backlog_bytes < 1 || cfg->max_record_bytes < 1 || cfg->max_deliveries < 1 ||
        cfg->lease_timeout_ms < 1 || cfg->ack_timeout_ms < 1 ||
        (cfg->storage != MQ_STORAGE_MEMORY && cfg->storage != MQ_STORAGE_LOG) ||
        cfg->flush > MQ_FLUSH_SYNC)
        return -EINVAL;
    return 0;
}

/* A new, registered, empty topic (no log opened yet). Caller holds q->mu. */
static int topic_new_locked(mq *q, const char *name, const mq_topic_config *cfg,
                            enum topic_kind kind, mq_topic *family, mq_topic **out)
{
    int rc = -ENOMEM;
    if (topic_find_locked(q, name))
        return -EEXIST;
    rc = grow_array((void **)&q->topics, &q->topics_cap, q->ntopics + 1, sizeof *q->topics);
    if (rc < 0)
        return rc;
    rc = -ENOMEM;
    mq_topic *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->name = strdup(name);
    if (!t->name)
        goto out_free_t;
    t->parts = calloc(cfg->partitions, sizeof *t->parts);
    if (!t->parts)
        goto out_free_name;
    t->q = q;
    t->cfg = *cfg;
    t->kind = kind;
    atomic_init(&t->rr, 0);
    atomic_init(&t->backlog_msgs, 0);
    atomic_init(&t->backlog_bytes, 0);
    waitq_init(&t->own_wq);
    t->wq = family ? family->wq : &t->own_wq;
    pthread_mutex_init(&t->gmu, NULL);
    pthread_mutex_init(&t->list_mu, NULL);
    for (uint32_t p = 0; p < cfg->partitions; p++)
        pthread_mutex_init(&t->parts[p].mu, NULL);
    q->topics[q->ntopics++] = t;
    *out = t;
    return 0;

out_free_name:
    free(t->name);
out_free_t:
    free(t);
    return rc;
}

static void topic_unregister_locked(mq *q, mq_topic *t)
{
    for (size_t i = 0; i < q->ntopics; i++) {
        if (q->topics[i] == t) {
            q->topics[i] = q->topics[--q->ntopics];
            break;
        }
    }
    topic_free(t);
}

/* Make room for one more reader (phase 1 of registering a group: may fail). */
static int part_reserve_reader(struct part *pt)
{
    pthread_mutex_lock(&pt->mu);
    int rc =
        grow_array((void **)&pt->readers, &pt->readers_cap, pt->nreaders + 1, sizeof *pt->readers);
    pthread_mutex_unlock(&pt->mu);
    return rc;
}

/* Phase 2: cannot fail once part_reserve_reader() succeeded. gp starts at the
 * oldest retained message. */
static void part_add_reader(struct part *pt, struct gpos *gp)
{
    pthread_mutex_lock(&pt->mu);
    gp->committed = gp->next = gp->hi = pt->start;
    pt->readers[pt->nreaders++] = gp;
    pthread_mutex_unlock(&pt->mu);
}

static struct group *group_find_locked(mq_topic *t, const char *name)
{
    for (size_t i = 0; i < t->ngroups; i++)
        if (!strcmp(t->groups[i]->name, name))
            return t->groups[i];
    return NULL;
}

static struct group *group_find(mq_topic *t, const char *name)
{
    if (!t || !name)
        return NULL;
    pthread_mutex_lock(&t->gmu);
    struct group *g = group_find_locked(t, name);
    pthread_mutex_unlock(&t->gmu);
    return g;
}

static int topic_open_parts(mq_topic *t);
static void gp_restore(struct part *pt, struct gpos *gp, uint64_t off);

/* Find or create group name on main topic t, with its retry and DLQ topics.
 * A new group starts at the oldest retained message. Caller holds q->mu. */
static int group_get_locked(mq_topic *t, const char *name, struct group **out)
{
    mq *q = t->q;
    uint32_t P = t->cfg.partitions;
    char tname[2 * MQ_NAME_MAX + 16];
    int rc;

    pthread_mutex_lock(&t->gmu);
    struct group *g = group_find_locked(t, name);
    if (g) {
        pthread_mutex_unlock(&t->gmu);
        *out = g;
        return 0;
    }
    rc = grow_array((void **)&t->groups, &t->groups_cap, t->ngroups + 1, sizeof *t->groups);
    if (rc < 0)
        goto out_unlock;
    rc = -ENOMEM;
    g = calloc(1, sizeof *g);
    if (!g)
        goto out_unlock;
    g->t = t;
    pthread_mutex_init(&g->mu, NULL);
    atomic_init(&g->epoch, 0);
    g->name = strdup(name);
    g->main = calloc(P, sizeof *g->main);
    g->retry = calloc(P, sizeof *g->retry);
    g->owner = calloc(P, sizeof *g->owner);
    if (!g->name || !g->main || !g->retry || !g->owner)
        goto out_free_group;
    for (uint32_t p = 0; p < P; p++)
        atomic_init(&g->owner[p], NULL);

    /* a log topic's retry and DLQ topics are log topics too (same storage) */
    mq_topic_config rcfg = t->cfg;
    snprintf(tname, sizeof tname, "%s.%s.retry", t->name, name);
    rc = topic_new_locked(q, tname, &rcfg, TOPIC_RETRY, t, &g->retry_t);
    if (rc < 0)
        goto out_free_group;
    rcfg.partitions = 1;
    snprintf(tname, sizeof tname, "%s.%s.dlq", t->name, name);
    rc = topic_new_locked(q, tname, &rcfg, TOPIC_DLQ, t, &g->dlq_t);
    if (rc < 0)
        goto out_free_retry;
    if (t->cfg.storage == MQ_STORAGE_LOG) {
        rc = topic_open_parts(g->retry_t);
        if (rc == 0)
            rc = topic_open_parts(g->dlq_t);
        if (rc < 0)
            goto out_free_dlq;
    }

    for (uint32_t p = 0; p < P && rc == 0; p++) {
        rc = part_reserve_reader(&t->parts[p]);
        if (rc == 0)
            rc = part_reserve_reader(&g->retry_t->parts[p]);
    }
    if (rc == 0)
        rc = part_reserve_reader(&g->dlq_t->parts[0]);
    if (rc < 0)
        goto out_free_dlq;
    for (uint32_t p = 0; p < P; p++) {
        part_add_reader(&t->parts[p], &g->main[p]);
        part_add_reader(&g->retry_t->parts[p], &g->retry[p]);
    }
    part_add_reader(&g->dlq_t->parts[0], &g->dlq);
    if (t->cfg.storage == MQ_STORAGE_LOG) {
        /* where this group was in its retry and DLQ logs */
        for (uint32_t p = 0; p <= P; p++) {
            mq_topic *rt = p < P ? g->retry_t : g->dlq_t;
            uint32_t rp = p < P ? p : 0;
            struct gpos *gp = p < P ? &g->retry[p] : &g->dlq;
            struct part *pt = &rt->parts[rp];
            uint64_t off;
            pthread_mutex_lock(&pt->mu);
            if (mq__offsets_get(rt->offsets, name, rp, &off) == 0)
                gp_restore(pt, gp, off);
            part_release(rt, pt);
            pthread_mutex_unlock(&pt->mu);
        }
    }
    t->groups[t->ngroups++] = g;
    pthread_mutex_unlock(&t->gmu);
    *out = g;
    return 0;

out_free_dlq:
    topic_unregister_locked(q, g->dlq_t);
out_free_retry:
    topic_unregister_locked(q, g->retry_t);
out_free_group:
    free((void *)g->owner);
    free(g->retry);
    free(g->main);
    free(g->name);
    pthread_mutex_destroy(&g->mu);
    free(g);
out_unlock:
    pthread_mutex_unlock(&t->gmu);
    return rc;
}

/* ------------------------------------------------------ log-topic wiring */

struct recover {
    mq_topic *t;
    uint32_t p;
    uint64_t now, wall; /* instance and wall clock at open */
    int rc;
};

static int recover_cb(void *arg, const mq__rec *lr)
{
    struct recover *rv = arg;
    mq_topic *t = rv->t;
    struct part *pt = &t->parts[rv->p];
    if (lr->offset != pt->end) {
        if (pt->end != pt->start) {
            rv->rc = -EIO;
            return 1;
        }
        pt->start = pt->end = lr->offset;
        ring_trim(pt);
    }
    int rc = ring_reserve(t, pt, 1);
    if (rc == 0 && lr->producer_id && !pt->prods && !(pt->prods = ptable_create()))
        rc = -ENOMEM;
    if (rc < 0) {
        rv->rc = rc;
        return 1;
    }
    struct rec r = {.ts = lr->timestamp_ms,
                    .producer_id = lr->producer_id,
                    .seq = lr->seq,
                    .key_len = lr->key_len,
                    .value_len = lr->value_len,
                    .orig_partition = rv->p};
    if (pt->env) {
        const uint8_t *e = lr->key;
        if (lr->key_len < pt->env || sk_le_get32(e) != ENV_MAGIC) {
            sk_log(SK_LOG_ERROR, "mq", NULL, "%s/%u: record %" PRIu64 " has no retry envelope",
                   t->name, rv->p, lr->offset);
            rv->rc = -EIO;
            return 1;
        }
        uint64_t due_wall = sk_le_get64(e + 24), left = 0;
        if (due_wall > rv->wall)
            left = due_wall - rv->wall;
        if (left > t->cfg.retry_delay_ms) /* the wall clock went back */
            left = t->cfg.retry_delay_ms;
        r.key_len = lr->key_len - pt->env;
        r.orig_partition = sk_le_get32(e + 4);
        r.orig_offset = sk_le_get64(e + 8);
        r.base = sk_le_get32(e + 16);
        r.due = rv->now + left;
    }
    *slot(pt, pt->end) = r;
    pt->end++;
    atomic_fetch_add(&t->backlog_msgs, 1);
    atomic_fetch_add(&t->backlog_bytes, (uint64_t)r.key_len + r.value_len);
    if (lr->producer_id)
        ptable_put(pt->prods, lr->producer_id, lr->seq);
    return 0;
}

struct saved_off {
    char *group;
    uint32_t partition;
    uint64_t offset;
};

struct saved_offs {
    struct saved_off *v;
    size_t n, cap;
    int rc;
};

static void saved_cb(void *arg, const char *group, uint32_t partition, uint64_t offset)
{
    struct saved_offs *s = arg;
    if (s->rc < 0)
        return;
    if (grow_array((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v) < 0 ||
        !(s->v[s->n].group = strdup(group))) {
        s->rc = -ENOMEM;
        return;
    }
    s->v[s->n].partition = partition;
    s->v[s->n].offset = offset;
    s->n++;
}

/* Open every partition's log and rebuild metadata and producer tables by
 * reading it, then open the topic's committed-offsets store. Main topics run
 * retention first. Retry/DLQ topics: no retention (only trim of what was
 * consumed, part_maintain()), records carry an envelope, and every append is
 * flushed before it returns (pt->sync), whatever the parent's policy: a move
 * must be durable before the source commits past it. Caller holds q->mu. */
static int topic_open_parts(mq_topic *t)
{
    char path[PATH_MAX];
    bool main_topic = t->kind == TOPIC_MAIN;
    int rc;
    mq__seglog_config scfg = {.segment_bytes = t->cfg.segment_bytes,
                              .retention_ms = main_topic ? t->cfg.retention_ms : 0,
                              .retention_bytes = main_topic ? t->cfg.retention_bytes : 0,
                              /* SYNC: part_append() flushes after dropping pt->mu */
                              .flush = t->cfg.flush == MQ_FLUSH_ASYNC && main_topic ? MQ_FLUSH_ASYNC
                                                                                    : MQ_FLUSH_NONE,
                              .flush_interval_ms = t->cfg.flush_interval_ms,
                              /* fdatasync of data pages only (seglog.c) */
                              .prezero_bytes = t->cfg.flush != MQ_FLUSH_NONE ? MQ_PREZERO_BYTES : 0};

    if (snprintf(path, sizeof path, "%s/%s", t->q->data_dir, t->name) >= (int)sizeof path)
        return -ENAMETOOLONG;
    rc = mkdir_p(path);
    if (rc < 0)
        return rc;
    for (uint32_t p = 0; p < t->cfg.partitions; p++) {
        struct part *pt = &t->parts[p];
        snprintf(path, sizeof path, "%s/%s/%u", t->q->data_dir, t->name, p);
        rc = mq__seglog_open(path, &scfg, &pt->log);
        if (rc < 0)
            return rc;
        pt->env = main_topic ? 0 : ENV_BYTES;
        rc = mq__seglog_retain(pt->log, mq_wall_now(t->q));
        if (rc < 0)
            return rc;
        pt->start = pt->end = mq__seglog_start(pt->log);
        uint64_t end = mq__seglog_end(pt->log);
        while (pt->end < end) {
            struct recover rv = {
                .t = t, .p = p, .now = mq_now(t->q), .wall = mq_wall_now(t->q), .rc = 0};
            rc = mq__seglog_read(pt->log, pt->end, SIZE_MAX, SIZE_MAX, recover_cb, &rv);
            if (rc < 0)
                return rc;
            if (rv.rc < 0)
                return rv.rc;
            if (rc == 0)
                break;
        }
        if (pt->end != end)
            return -EIO;
        pt->sync = t->cfg.flush == MQ_FLUSH_SYNC || !main_topic;
        pt->durable_end = end; /* open fdatasyncs the recovered tail */
    }
    snprintf(path, sizeof path, "%s/%s/offsets", t->q->data_dir, t->name);
    return mq__offsets_open(path, &t->offsets);
}

/* Set gp to a persisted committed offset, clamped to what the log retained;
 * below the start counts as skipped by retention. Caller holds pt->mu. */
static void gp_restore(struct part *pt, struct gpos *gp, uint64_t off)
{
    if (off > pt->end)
        off = pt->end;
    if (off < pt->start) {
        gp->skipped += pt->start - off;
        off = pt->start;
    }
    gp->committed = gp->next = gp->hi = off;
}

/* Open a main log topic: its partitions, then the groups that committed
 * offsets (with their retry/DLQ logs), then free what they all passed.
 * Caller holds q->mu. */
static int topic_open_log(mq_topic *t)
{
    struct saved_offs saved = {0};
    int rc = topic_open_parts(t);
    if (rc < 0)
        return rc;
    mq__offsets_foreach(t->offsets, saved_cb, &saved);
    rc = saved.rc;
    for (size_t i = 0; i < saved.n && rc == 0; i++) {
        struct group *g;
        if (saved.v[i].partition >= t->cfg.partitions || !name_ok(saved.v[i].group))
            continue;
        rc = group_get_locked(t, saved.v[i].group, &g);
        if (rc < 0)
            break;
        struct part *pt = &t->parts[saved.v[i].partition];
        pthread_mutex_lock(&pt->mu);
        gp_restore(pt, &g->main[saved.v[i].partition], saved.v[i].offset);
        pthread_mutex_unlock(&pt->mu);
    }
    for (size_t i = 0; i < saved.n; i++)
        free(saved.v[i].group);
    free(saved.v);
    if (rc < 0)
        return rc;
    for (uint32_t p = 0; p < t->cfg.partitions; p++) {
        pthread_mutex_lock(&t->parts[p].mu);
        part_release(t, &t->parts[p]);
        pthread_mutex_unlock(&t->parts[p].mu);
    }
    return 0;
}

int mq_topic_open(mq *q, const char *name, const mq_topic_config *cfg, mq_topic **out)
{
    mq_topic_config def;
    mq_topic *t;
    int rc;

    if (!q || !out || !name_ok(name))
        return -EINVAL;
    if (!cfg) {
        mq_topic_config_init(&def);
        cfg = &def;
    }
    rc = config_check(cfg);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&q->mu);
    t = topic_find_locked(q, name);
    if (t) {
        rc = (t->cfg.partitions == cfg->partitions && t->cfg.storage == cfg->storage) ? 0 : -EINVAL;
        goto out_unlock;
    }
    if (cfg->storage == MQ_STORAGE_LOG && !q->data_dir) {
        rc = -EINVAL;
        goto out_unlock;
    }
    rc = topic_new_locked(q, name, cfg, TOPIC_MAIN, NULL, &t);
    if (rc < 0)
        goto out_unlock;
    if (cfg->storage == MQ_STORAGE_LOG) {
        rc = topic_open_log(t);
        if (rc < 0) {
            /* its groups' retry/DLQ topics go too */
            for (size_t i = 0; i < t->ngroups; i++) {
                struct group *g = t->groups[i];
                for (size_t j = 0; j < q->ntopics; j++) {
                    if (q->topics[j] == g->retry_t || q->topics[j] == g->dlq_t) {
                        topic_free(q->topics[j]);
                        q->topics[j--] = q->topics[--q->ntopics];
                    }
                }
            }
            topic_unregister_locked(q, t);
            goto out_unlock;
        }
    }
out_unlock:
    pthread_mutex_unlock(&q->mu);
    if (rc == 0)
        *out = t;
    return rc;
}

/* ------------------------------------------------------------ producing */

uint32_t mq_topic_pick(mq_topic *t, const void *key, size_t key_len)
{
    if (key)
        return (uint32_t)(hash_bytes(key, key_len) % t->cfg.partitions);
    return atomic_fetch_add_explicit(&t->rr, 1, memory_order_relaxed) % t->cfg.partitions;
}

/* Check rec against t and resolve its partition. OUT: *p. */
static int produce_check(mq_topic *t, const mq_record *rec, uint32_t *p)
{
    if ((rec->key_len && !rec->key) || (rec->value_len && !rec->value))
        return -EINVAL;
    if (rec->key_len > t->cfg.max_record_bytes ||
        rec->value_len > t->cfg.max_record_bytes - rec->key_len)
        return -EMSGSIZE;
    if (rec->producer_id && rec->seq == 0)
        return -EINVAL;
    if (rec->partition == MQ_PARTITION_ANY) {
        if (rec->producer_id && !rec->key)
            return -EINVAL;
        *p = mq_topic_pick(t, rec->key, rec->key_len);
    } else if (rec->partition < 0 || (uint32_t)rec->partition >= t->cfg.partitions) {
        return -EINVAL;
    } else {
        *p = (uint32_t)rec->partition;
    }
    return 0;
}

int mq_produce_batch(mq_topic *t, const mq_record *recs, size_t n, int *rcs)
{
    /* per partition touched: one past the last offset stored by this call */
    struct touched {
        uint32_t p;
        uint64_t upto;
    } stack_touched[16], *touched = stack_touched;
    size_t ntouched = 0, cap = sizeof stack_touched / sizeof *stack_touched;
    uint32_t *parts = NULL;
    int first = 0;

    if (!t || (n && (!recs || !rcs)) || t->kind != TOPIC_MAIN)
        return -EINVAL;
    if (n == 0)
        return 0;
    if (t->cfg.partitions > cap) {
        cap = t->cfg.partitions;
        touched = malloc(cap * sizeof *touched);
    }
    /* a log topic without producer ids stores each partition's share of the
     * batch with one write; otherwise record by record */
    bool per_part = t->cfg.storage == MQ_STORAGE_LOG;
    for (size_t i = 0; i < n && per_part; i++)
        per_part = recs[i].producer_id == 0;
    /* scratch: [lrecs, idx when per_part] parts */
    size_t lead = per_part ? n * (sizeof(mq__rec) + sizeof(size_t)) : 0;
    char *scratch = malloc(lead + n * sizeof *parts);
    if (!touched || !scratch) {
        if (touched != stack_touched)
            free(touched);
        free(scratch);
        return -ENOMEM;
    }
    parts = (uint32_t *)(void *)(scratch + lead);
    if (per_part) {
        mq__rec *lrecs = (mq__rec *)(void *)scratch;
        size_t *idx = (size_t *)(void *)(lrecs + n);
        uint64_t ts = mq_wall_now(t->q), now = mq_now(t->q);
        for (size_t i = 0; i < n; i++)
            rcs[i] = produce_check(t, &recs[i], &parts[i]);
        for (size_t i = 0; i < n; i++) {
            if (rcs[i] < 0)
                continue;
            size_t k = 0;
            while (k < ntouched && touched[k].p != parts[i])
                k++;
            if (k < ntouched)
                continue; /* this partition's records went with its first */
            size_t m = 0;
            for (size_t j = i; j < n; j++)
                if (rcs[j] == 0 && parts[j] == parts[i])
                    idx[m++] = j;
            uint64_t upto = 0;
            part_maintain(t, parts[i], now);
            part_store_log_batch(t, parts[i], recs, idx, m, ts, lrecs, rcs, &upto);
            touched[ntouched++] = (struct touched){parts[i], upto};
        }
    }
    for (size_t i = 0; i < n && !per_part; i++) {
        const mq_record *rec = &recs[i];
        uint64_t off;
        rcs[i] = produce_check(t, rec, &parts[i]);
        if (rcs[i] < 0)
            continue;
        struct append a = {.key = rec->key,
                           .key_len = rec->key_len,
                           .value = rec->value,
                           .value_len = rec->value_len,
                           .ts = mq_wall_now(t->q),
                           .producer_id = rec->producer_id,
                           .seq = rec->seq,
                           .orig_partition = parts[i],
                           .check_seq = true};
        part_maintain(t, parts[i], mq_now(t->q));
        rcs[i] = part_store(t, parts[i], &a, &off);
        if (rcs[i] < 0)
            continue;
        size_t k = 0;
        while (k < ntouched && touched[k].p != parts[i])
            k++;
        if (k == ntouched)
            touched[ntouched++] = (struct touched){parts[i], 0};
        touched[k].upto = off + 1;
    }
    /* one flush per partition: the log's group commit covers the batch */
    for (size_t k = 0; k < ntouched; k++) {
        struct part *pt = &t->parts[touched[k].p];
        if (!pt->sync || touched[k].upto == 0)
            continue;
        int rc = part_make_durable(pt, touched[k].upto);
        if (rc < 0)
            for (size_t i = 0; i < n; i++)
                if (rcs[i] == 0 && parts[i] == touched[k].p)
                    rcs[i] = rc;
    }
    if (ntouched)
        wake(t);
    for (size_t i = 0; i < n && !first; i++)
        first = rcs[i];
    if (touched != stack_touched)
        free(touched);
    free(scratch);
    return first;
}

int mq_produce(mq_topic *t, const mq_record *rec, uint32_t *partition, uint64_t *offset)
{
    uint32_t p;
    uint64_t off;
    int rc;

    if (!t || !rec || t->kind != TOPIC_MAIN)
        return -EINVAL;
    rc = produce_check(t, rec, &p);
    if (rc < 0)
        return rc;
    struct append a = {.key = rec->key,
                       .key_len = rec->key_len,
                       .value = rec->value,
                       .value_len = rec->value_len,
                       .ts = mq_wall_now(t->q),
                       .producer_id = rec->producer_id,
                       .seq = rec->seq,
                       .orig_partition = p,
                       .check_seq = true};
    part_maintain(t, p, mq_now(t->q)); /* before: retention may free backlog */
    rc = part_append(t, p, &a, &off);
    if (rc < 0)
        return rc;
    if (partition)
        *partition = p;
    if (offset)
        *offset = off;
    return 0;
}

/* ------------------------------------------------------------ consuming */

int mq_consumer_create(mq_topic *t, const char *group, const char *consumer_id, mq_consumer **out)
{
    struct group *g;
    int rc;

    if (!t || !out || !name_ok(group) || !consumer_id || !*consumer_id || t->kind != TOPIC_MAIN)
        return -EINVAL;
    *out = NULL;
    pthread_mutex_lock(&t->q->mu);
    rc = group_get_locked(t, group, &g);
    pthread_mutex_unlock(&t->q->mu);
    if (rc == -EEXIST) /* a topic already has the retry/DLQ name */
        rc = -EINVAL;
    if (rc < 0)
        return rc;

    mq_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->id = strdup(consumer_id);
    if (!c->id) {
        rc = -ENOMEM;
        goto out_free_c;
    }
    c->t = t;
    c->g = g;
    /* joining counts as contact: the member is live (and owed a share) at once */
    atomic_init(&c->last_seen, mq_now(t->q));
    c->seen_epoch = UINT_MAX;

    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->nmembers; i++) {
        if (!strcmp(g->members[i]->id, consumer_id)) {
            rc = -EINVAL; /* ids are unique within a group */
            goto out_unlock;
        }
    }
    rc = grow_array((void **)&g->members, &g->members_cap, g->nmembers + 1, sizeof *g->members);
    if (rc < 0)
        goto out_unlock;
    g->members[g->nmembers++] = c;
    atomic_fetch_add(&g->epoch, 1);
    pthread_mutex_unlock(&g->mu);
    *out = c;
    return 0;

out_unlock:
    pthread_mutex_unlock(&g->mu);
out_free_c:
    free(c->id);
    free(c);
    return rc;
}

/* Set owner of partition p; with a new owner, both positions rewind to committed.
 * Caller holds g->mu. */
static void gp_take(struct group *g, uint32_t p, mq_consumer *c)
{
    struct part *pt = &g->t->parts[p];
    pthread_mutex_lock(&pt->mu);
    atomic_store(&g->owner[p], c);
    g->main[p].next = g->main[p].committed;
    pthread_mutex_unlock(&pt->mu);
    if (!c)
        return;
    pt = &g->retry_t->parts[p];
    pthread_mutex_lock(&pt->mu);
    g->retry[p].next = g->retry[p].committed;
    pthread_mutex_unlock(&pt->mu);
}

void mq_consumer_destroy(mq_consumer *c)
{
    if (!c)
        return;
    struct group *g = c->g;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->nmembers; i++) {
        if (g->members[i] == c) {
            g->members[i] = g->members[--g->nmembers];
            break;
        }
    }
    for (uint32_t p = 0; p < c->t->cfg.partitions; p++)
        if (atomic_load(&g->owner[p]) == c)
            gp_take(g, p, NULL);
    atomic_fetch_add(&g->epoch, 1);
    pthread_mutex_unlock(&g->mu);
    wake(c->t);
    consumer_free(c);
}

static bool lease_valid(const mq_consumer *c, uint64_t now)
{
    return atomic_load(&c->last_seen) + c->t->cfg.lease_timeout_ms > now;
}

/* Renew c's lease and bring its partitions to its fair share. */
static void rebalance(mq_consumer *c, uint64_t now)
{
    struct group *g = c->g;
    uint32_t P = c->t->cfg.partitions;
    uint64_t lease = c->t->cfg.lease_timeout_ms;
    uint64_t prev = atomic_load(&c->last_seen);
    bool self_expired = prev + lease <= now;
    bool released = false;

    if (!self_expired && c->seen_epoch == atomic_load(&g->epoch) && c->held >= c->share &&
        now - c->last_balance < lease / 4 + 1) {
        atomic_store(&c->last_seen, now);
        return;
    }
    pthread_mutex_lock(&g->mu);
    atomic_store(&c->last_seen, now);
    uint32_t live = 0;
    for (size_t i = 0; i < g->nmembers; i++)
        if (g->members[i] == c || lease_valid(g->members[i], now))
            live++;
    uint32_t share = (P + live - 1) / live;
    uint32_t held = 0;
    for (uint32_t p = 0; p < P; p++) {
        if (atomic_load(&g->owner[p]) != c)
            continue;
        if (self_expired) /* our lease lapsed: whatever we had out is void */
            gp_take(g, p, c);
        held++;
    }
    for (uint32_t p = P; p-- > 0 && held > share;) {
        if (atomic_load(&g->owner[p]) == c) {
            gp_take(g, p, NULL);
            held--;
            released = true;
        }
    }
    for (uint32_t p = 0; p < P && held < share; p++) {
        mq_consumer *o = atomic_load(&g->owner[p]);
        if (o == c || (o && lease_valid(o, now)))
            continue;
        gp_take(g, p, c);
        held++;
    }
    if (self_expired)
        atomic_fetch_add(&g->epoch, 1); /* back after expiry: others recompute shares */
    c->seen_epoch = atomic_load(&g->epoch);
    c->held = held;
    c->share = share;
    c->last_balance = now;
    pthread_mutex_unlock(&g->mu);
    if (released)
        wake(c->t);
}

static int win_reserve(struct gpos *gp, uint64_t off)
{
    if (off - gp->committed < gp->wcap)
        return 0;
    uint64_t ncap = gp->wcap ? gp->wcap * 2 : 64;
    while (off - gp->committed >= ncap)
        ncap *= 2;
    struct wslot *nw = malloc(ncap * sizeof *nw);
    if (!nw)
        return -ENOMEM;
    for (uint64_t o = gp->committed; o < gp->hi; o++)
        nw[o & (ncap - 1)] = gp->win[o & (gp->wcap - 1)];
    free(gp->win);
    gp->win = nw;
    gp->wcap = ncap;
    return 0;
}

static struct wslot *win(struct gpos *gp, uint64_t off)
{
    return &gp->win[off & (gp->wcap - 1)];
}

/* Move committed to `to` (persisting it for log topics) and free what all
 * groups passed. Caller holds pt->mu. */
static int gp_advance(mq_topic *t, struct group *g, uint32_t p, struct gpos *gp, uint64_t to)
{
    struct part *pt = &t->parts[p];
    if (to <= gp->committed)
        return 0;
    if (t->offsets) {
        int rc = mq__offsets_put(t->offsets, g->name, p, to);
        if (rc < 0)
            return rc;
    }
    gp->committed = to;
    if (gp->next < to)
        gp->next = to;
    if (gp->hi < to)
        gp->hi = to;
    part_release(t, pt);
    return 0;
}

/* Message off of t/p was delivered count times and timed out again: hand it
 * to the next stage (main -> retry, retry -> DLQ). Caller holds t/p's lock. */
static int move_on(struct group *g, mq_topic *t, uint32_t p, uint64_t off, const struct rec *r,
                   uint32_t count, uint64_t now)
{
    const uint8_t *kv = NULL;
    int rc = part_payload(&t->parts[p], off, r, &kv);
    if (rc < 0)
        return rc;
    struct append a = {.key = kv,
                       .key_len = r->key_len,
                       .value = kv ? kv + r->key_len : NULL,
                       .value_len = r->value_len,
                       .ts = r->ts,
                       .producer_id = r->producer_id,
                       .seq = r->seq,
                       .base = r->base + count};
    /* Log topics: the retry/DLQ partition is flushed before part_append()
     * returns (pt->sync), and only then does the caller persist the source's
     * committed offset past it. A crash in between duplicates, never loses. */
    if (t->kind == TOPIC_MAIN) {
        a.orig_partition = p;
        a.orig_offset = off;
        a.due = now + t->cfg.retry_delay_ms;
        a.due_wall = mq_wall_now(t->q) + t->cfg.retry_delay_ms;
        return part_append(g->retry_t, p, &a, NULL);
    }
    a.orig_partition = r->orig_partition;
    a.orig_offset = r->orig_offset;
    return part_append(g->dlq_t, 0, &a, NULL);
}

static int c_push(mq_consumer *c, mq_topic *t, uint32_t p, uint64_t off, uint32_t delivery,
                  const struct rec *r, const uint8_t *kv)
{
    size_t len = (size_t)r->key_len + r->value_len;
    int rc;
    if (c->n == c->mcap) {
        size_t ncap = c->mcap ? c->mcap * 2 : 16;
        mq_message *nm = realloc(c->msgs, ncap * sizeof *nm);
        if (!nm)
            return -ENOMEM;
        c->msgs = nm;
        size_t *nk = realloc(c->koff, ncap * sizeof *nk);
        if (!nk)
            return -ENOMEM;
        c->koff = nk;
        c->mcap = ncap;
    }
    rc = grow_array((void **)&c->data, &c->dcap, c->dlen + len, 1);
    if (rc < 0)
        return rc;
    if (len)
        memcpy(c->data + c->dlen, kv, len);
    c->koff[c->n] = c->dlen;
    c->dlen += len;
    c->msgs[c->n] = (mq_message){.topic = t->name,
                                 .partition = p,
                                 .offset = off,
                                 .delivery = delivery,
                                 .timestamp_ms = r->ts,
                                 .producer_id = r->producer_id,
                                 .seq = r->seq,
                                 .key_len = r->key_len,
                                 .value_len = r->value_len};
    c->n++;
    return 0;
}

/* Deliver from group position gp of t/p into c's batch, up to *room messages. */
static int gp_collect(mq_consumer *c, mq_topic *t, uint32_t p, struct gpos *gp, uint64_t now,
                      size_t *room)
{
    struct group *g = c->g;
    struct part *pt = &t->parts[p];
    const mq_topic_config *cfg = &g->t->cfg;
    int rc = 0;

    pthread_mutex_lock(&pt->mu);
    if (atomic_load(&g->owner[p]) != c)
        goto out_unlock;
    if (t->kind == TOPIC_MAIN && pt->log && (cfg->retention_ms || cfg->retention_bytes))
        part_sync_start(t, pt); /* retention may have run since */
    if (gp->next > gp->committed && win(gp, gp->committed)->at + cfg->ack_timeout_ms <= now)
        gp->next = gp->committed; /* oldest outstanding timed out: go back */
    while (*room > 0 && gp->next < part_visible(pt)) {
        uint64_t off = gp->next;
        struct rec *r = slot(pt, off);
        if (t->kind == TOPIC_RETRY && r->due > now)
            break;
        uint32_t count = off < gp->hi ? win(gp, off)->count : 0;
        if (count >= cfg->max_deliveries) {
            if (off != gp->committed)
                break; /* not reached: counts never increase with offset */
            if (move_on(g, t, p, off, r, count, now) == 0) {
                if (gp_advance(t, g, p, gp, off + 1) < 0)
                    sk_log(SK_LOG_ERROR, "mq", NULL, "%s/%u: cannot persist offset %" PRIu64 "",
                           t->name, p, off + 1);
                continue;
            }
            /* retry/DLQ full: deliver it once more rather than drop it */
        }
        rc = win_reserve(gp, off);
        if (rc < 0)
            break;
        const uint8_t *kv = NULL;
        rc = part_payload(pt, off, r, &kv);
        if (rc < 0) {
            if (part_sync_start(t, pt)) { /* retention removed it just now */
                rc = 0;
                continue;
            }
            break;
        }
        rc = c_push(c, t, p, off, r->base + count + 1, r, kv);
        if (rc < 0)
            break;
        if (off >= gp->hi)
            gp->hi = off + 1;
        win(gp, off)->count = count + 1;
        win(gp, off)->at = now;
        gp->next = off + 1;
        (*room)--;
    }
out_unlock:
    pthread_mutex_unlock(&pt->mu);
    return rc;
}

static int collect(mq_consumer *c, uint64_t now, size_t max)
{
    struct group *g = c->g;
    uint32_t P = c->t->cfg.partitions;
    size_t room = max;
    int rc = 0;

    c->n = 0;
    c->dlen = 0;
    for (uint32_t i = 0; i < P && room > 0 && rc == 0; i++) {
        uint32_t p = (c->rr + i) % P;
        if (atomic_load(&g->owner[p]) != c)
            continue;
        part_maintain(g->retry_t, p, now);
        part_maintain(c->t, p, now);
        rc = gp_collect(c, g->retry_t, p, &g->retry[p], now, &room);
        if (rc == 0)
            rc = gp_collect(c, c->t, p, &g->main[p], now, &room);
    }
    c->rr++;
    for (size_t i = 0; i < c->n; i++) {
        mq_message *m = &c->msgs[i];
        m->key = m->key_len ? c->data + c->koff[i] : NULL;
        m->value = m->value_len ? c->data + c->koff[i] + m->key_len : NULL;
    }
    if (c->n > 0 || rc == 0)
        return (int)c->n;
    return rc;
}

int mq_fetch(mq_consumer *c, size_t max, uint32_t wait_ms, const mq_message **msgs)
{
    if (!c || !msgs || max == 0 || max > INT_MAX)
        return -EINVAL;
    mq *q = c->t->q;
    struct waitq *w = c->t->wq;
    struct timespec deadline;
    int n;

    *msgs = NULL;
    atomic_fetch_add(&q->active, 1);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (atomic_load(&q->closing)) {
            n = -ESHUTDOWN;
            break;
        }
        uint_fast64_t seen = atomic_load(&w->seq);
        uint64_t now = mq_now(q);
        rebalance(c, now);
        n = collect(c, now, max);
        if (n != 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (wait_ms == 0 || ts.tv_sec > deadline.tv_sec ||
            (ts.tv_sec == deadline.tv_sec && ts.tv_nsec >= deadline.tv_nsec))
            break;
        ts.tv_nsec += MQ_WAIT_SLICE_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (ts.tv_sec > deadline.tv_sec ||
            (ts.tv_sec == deadline.tv_sec && ts.tv_nsec > deadline.tv_nsec))
            ts = deadline;
        atomic_fetch_add(&w->waiters, 1);
        pthread_mutex_lock(&w->mu);
        if (atomic_load(&w->seq) == seen && !atomic_load(&q->closing))
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        pthread_mutex_unlock(&w->mu);
        atomic_fetch_sub(&w->waiters, 1);
    }
    if (n > 0)
        *msgs = c->msgs;
    atomic_fetch_sub(&q->active, 1);
    return n;
}

int mq_commit(mq_consumer *c, const mq_message *m)
{
    if (!c || !m || !m->topic)
        return -EINVAL;
    struct group *g = c->g;
    mq_topic *t;
    struct gpos *gp;
    if (m->partition >= c->t->cfg.partitions)
        return -EINVAL;
    if (m->topic == c->t->name || !strcmp(m->topic, c->t->name)) {
        t = c->t;
        gp = &g->main[m->partition];
    } else if (m->topic == g->retry_t->name || !strcmp(m->topic, g->retry_t->name)) {
        t = g->retry_t;
        gp = &g->retry[m->partition];
    } else {
        return -EINVAL;
    }
    struct part *pt = &t->parts[m->partition];
    uint64_t now = mq_now(c->t->q);
    int rc = 0;

    pthread_mutex_lock(&pt->mu);
    if (atomic_load(&g->owner[m->partition]) != c || !lease_valid(c, now))
        rc = -EPERM;
    else if (m->offset >= gp->hi)
        rc = -EINVAL; /* never delivered */
    else
        rc = gp_advance(t, g, m->partition, gp, m->offset + 1);
    pthread_mutex_unlock(&pt->mu);
    return rc;
}

uint32_t mq_group_live(mq_topic *t, const char *group)
{
    struct group *g = group_find(t, group);
    uint32_t live = 0;
    if (!g)
        return 0;
    uint64_t now = mq_now(t->q);
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->nmembers; i++)
        if (lease_valid(g->members[i], now))
            live++;
    pthread_mutex_unlock(&g->mu);
    return live;
}

/* A group's lag and retention-skipped count on one partition (either out may
 * be NULL), read under the partition lock. */
static int group_part_counts(mq_topic *t, const char *group, uint32_t partition, uint64_t *lag,
                             uint64_t *skipped)
{
    if (!t || !group || partition >= t->cfg.partitions)
        return -EINVAL;
    struct group *g = group_find(t, group);
    if (!g)
        return -ENOENT;
    struct part *pt = &t->parts[partition];
    pthread_mutex_lock(&pt->mu);
    if (t->kind == TOPIC_MAIN)
        part_sync_start(t, pt); /* a group below the retained start skips to it */
    if (lag)
        *lag = pt->end - g->main[partition].committed;
    if (skipped)
        *skipped = g->main[partition].skipped;
    pthread_mutex_unlock(&pt->mu);
    return 0;
}

int mq_lag(mq_topic *t, const char *group, uint32_t partition, uint64_t *lag)
{
    return lag ? group_part_counts(t, group, partition, lag, NULL) : -EINVAL;
}

int mq_retention_skipped(mq_topic *t, const char *group, uint32_t partition, uint64_t *skipped)
{
    return skipped ? group_part_counts(t, group, partition, NULL, skipped) : -EINVAL;
}

uint64_t mq_topic_backlog(mq_topic *t)
{
    return atomic_load(&t->backlog_msgs);
}

uint64_t mq_topic_meta_bytes(mq_topic *t)
{
    uint64_t bytes = 0;
    for (uint32_t p = 0; p < t->cfg.partitions; p++) {
        struct part *pt = &t->parts[p];
        pthread_mutex_lock(&pt->mu);
        if (pt->blk)
            bytes += (pt->blk_end - pt->blk_lo) * (sizeof(struct rec) << pt->bshift) +
                     pt->nblk * sizeof *pt->blk;
        pthread_mutex_unlock(&pt->mu);
    }
    return bytes;
}

uint64_t mq_end_offset(mq_topic *t, uint32_t partition)
{
    if (!t || partition >= t->cfg.partitions)
        return 0;
    struct part *pt = &t->parts[partition];
    pthread_mutex_lock(&pt->mu);
    uint64_t end = pt->end;
    pthread_mutex_unlock(&pt->mu);
    return end;
}

/* ------------------------------------------------------ reading by offset */

struct read_ctx {
    mq_topic *t;
    uint32_t p;
    int (*fn)(void *arg, const mq_message *m);
    void *arg;
    uint64_t next;
    size_t passed;
    int stopped;
};

static int read_cb(void *arg, const mq__rec *lr)
{
    struct read_ctx *rc = arg;
    mq_message m = {.topic = rc->t->name, .partition = rc->p, .offset = lr->offset,
                    .delivery = 0, .timestamp_ms = lr->timestamp_ms,
                    .producer_id = lr->producer_id, .seq = lr->seq, .key = lr->key,
                    .key_len = lr->key_len, .value = lr->value, .value_len = lr->value_len};
    rc->next = lr->offset + 1;
    rc->passed++;
    if (rc->fn(rc->arg, &m) != 0) {
        rc->stopped = 1;
        return 1;
    }
    return 0;
}

int mq_read(mq_topic *t, uint32_t partition, uint64_t from, size_t max,
            int (*fn)(void *arg, const mq_message *m), void *arg)
{
    if (!t || !fn || t->kind != TOPIC_MAIN || partition >= t->cfg.partitions)
        return -EINVAL;
    struct part *pt = &t->parts[partition];
    pthread_mutex_lock(&pt->mu);
    uint64_t visible = part_visible(pt), start = pt->start;
    pthread_mutex_unlock(&pt->mu);
    struct read_ctx rc = {.t = t, .p = partition, .fn = fn, .arg = arg, .next = from};
    if (!pt->log) {
        /* memory: what the ring still holds, copied out under the lock */
        if (rc.next < start)
            rc.next = start;
        while (rc.passed < max && !rc.stopped) {
            pthread_mutex_lock(&pt->mu);
            if (rc.next < pt->start)
                rc.next = pt->start; /* freed meanwhile */
            if (rc.next >= visible || rc.next >= pt->end) {
                pthread_mutex_unlock(&pt->mu);
                break;
            }
            struct rec r = *slot(pt, rc.next);
            size_t len = (size_t)r.key_len + r.value_len;
            uint8_t *copy = malloc(len ? len : 1);
            if (!copy) {
                pthread_mutex_unlock(&pt->mu);
                return -ENOMEM;
            }
            if (len)
                memcpy(copy, arena_at(pt, r.pos), len);
            pthread_mutex_unlock(&pt->mu);
            mq__rec lr = {.offset = rc.next, .timestamp_ms = r.ts, .producer_id = r.producer_id,
                          .seq = r.seq, .key = copy, .key_len = r.key_len,
                          .value = copy + r.key_len, .value_len = r.value_len};
            read_cb(&rc, &lr);
            free(copy);
        }
        return (int)(rc.passed > INT_MAX ? INT_MAX : rc.passed);
    }
    /* log: straight from the segments (the metadata ring may have freed what
     * every group committed; the segments of a main topic keep it unless
     * retention removed it) */
    while (rc.passed < max && !rc.stopped && rc.next < visible) {
        uint64_t want = visible - rc.next;
        if (want > max - rc.passed)
            want = max - rc.passed;
        uint64_t before = rc.next;
        int n = mq__seglog_read(pt->log, rc.next, (size_t)want, READAHEAD_BYTES, read_cb, &rc);
        if (n < 0)
            return n;
        if (n == 0 || rc.next == before)
            break;
    }
    return (int)(rc.passed > INT_MAX ? INT_MAX : rc.passed);
}

/* ---------------------------------------------------------- dead letters */

int mq_dlq_list(mq_topic *t, const char *group, mq_message *out, size_t max)
{
    if (!t || !group || (!out && max) || max > INT_MAX)
        return -EINVAL;
    struct group *g = group_find(t, group);
    if (!g)
        return -ENOENT;
    mq_topic *dt = g->dlq_t;
    struct part *pt = &dt->parts[0];
    size_t n = 0, need = 0, w = 0;
    int rc = 0;

    pthread_mutex_lock(&t->list_mu);
    pthread_mutex_lock(&pt->mu);
    for (uint64_t o = g->dlq.committed; o < pt->end && n < max; o++) {
        struct rec *r = slot(pt, o);
        if (r->flags)
            continue;
        need += (size_t)r->key_len + r->value_len;
        n++;
    }
    rc = grow_array((void **)&t->list_buf, &t->list_cap, need, 1);
    n = 0;
    for (uint64_t o = g->dlq.committed; rc == 0 && o < pt->end && n < max; o++) {
        struct rec *r = slot(pt, o);
        const uint8_t *kv = NULL;
        if (r->flags)
            continue;
        rc = part_payload(pt, o, r, &kv);
        if (rc < 0)
            break;
        size_t len = (size_t)r->key_len + r->value_len;
        if (len)
            memcpy(t->list_buf + w, kv, len);
        out[n] = (mq_message){.topic = dt->name,
                              .partition = 0,
                              .offset = o,
                              .delivery = r->base,
                              .timestamp_ms = r->ts,
                              .producer_id = r->producer_id,
                              .seq = r->seq,
                              .key = r->key_len ? t->list_buf + w : NULL,
                              .key_len = r->key_len,
                              .value = r->value_len ? t->list_buf + w + r->key_len : NULL,
                              .value_len = r->value_len};
        w += len;
        n++;
    }
    pthread_mutex_unlock(&pt->mu);
    pthread_mutex_unlock(&t->list_mu);
    return rc < 0 ? rc : (int)n;
}

int mq_dlq_replay(mq_topic *t, const char *group, uint64_t dlq_offset)
{
    if (!t || !group)
        return -EINVAL;
    struct group *g = group_find(t, group);
    if (!g)
        return -ENOENT;
    struct part *pt = &g->dlq_t->parts[0];
    uint8_t *copy = NULL;
    struct rec r;
    int rc = 0;

    pthread_mutex_lock(&pt->mu);
    if (dlq_offset < g->dlq.committed || dlq_offset >= pt->end || slot(pt, dlq_offset)->flags) {
        pthread_mutex_unlock(&pt->mu);
        return -ENOENT;
    }
    r = *slot(pt, dlq_offset);
    size_t len = (size_t)r.key_len + r.value_len;
    const uint8_t *kv = NULL;
    if (len && !(copy = malloc(len)))
        rc = -ENOMEM;
    if (rc == 0)
        rc = part_payload(pt, dlq_offset, &r, &kv);
    if (rc == 0 && len)
        memcpy(copy, kv, len);
    if (rc == 0)
        slot(pt, dlq_offset)->flags = REC_REPLAYING; /* not listed, not replayed twice */
    pthread_mutex_unlock(&pt->mu);
    if (rc < 0)
        goto out_free_copy;

    /* the DLQ lock is not held here: retry -> DLQ is the lock order */
    struct append a = {.key = copy,
                       .key_len = r.key_len,
                       .value = copy ? copy + r.key_len : NULL,
                       .value_len = r.value_len,
                       .ts = r.ts,
                       .producer_id = r.producer_id,
                       .seq = r.seq,
                       .due = mq_now(t->q),
                       .orig_partition = r.orig_partition,
                       .orig_offset = r.orig_offset,
                       .base = 0};
    rc = part_append(g->retry_t, r.orig_partition % t->cfg.partitions, &a, NULL);

    pthread_mutex_lock(&pt->mu);
    if (rc < 0) {
        slot(pt, dlq_offset)->flags = 0;
    } else {
        /* the retry append is durable (log topics): persisting the DLQ's
         * committed offset past the letter may follow */
        slot(pt, dlq_offset)->flags = REC_REPLAYED;
        uint64_t c = g->dlq.committed;
        while (c < pt->end && (slot(pt, c)->flags & REC_REPLAYED))
            c++;
        if (gp_advance(g->dlq_t, g, 0, &g->dlq, c) < 0)
            sk_log(SK_LOG_ERROR, "mq", NULL, "%s: cannot persist offset %" PRIu64 "",
                   g->dlq_t->name, c);
    }
    pthread_mutex_unlock(&pt->mu);
    if (rc == 0)
        part_maintain(g->dlq_t, 0, mq_now(t->q));
out_free_copy:
    free(copy);
    return rc;
}
