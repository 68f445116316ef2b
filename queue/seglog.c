/*
 * seglog.c - the durable log of one partition: segment files, a sparse index,
 * group commit and crash recovery.
 *
 * FILES (in the partition directory)
 *   <base>.log    records with offsets base, base+1, ...; base is 20 decimal
 *                 digits, zero padded, so names sort like offsets.
 *   <base>.index  written once when the segment is sealed (rolled): the sparse
 *                 index plus the segment's end offset, size and newest
 *                 timestamp. Only a hint: missing, short or stale files are
 *                 detected (magic, CRC, size, base) and rebuilt by a scan.
 *
 * RECORD FORMAT (little endian, 48-byte header, no padding)
 *     0  u32 len          bytes after this field = 44 + key_len + value_len
 *     4  u32 crc          CRC32C of bytes [8, 4 + len)
 *     8  u64 offset       must equal base + position in the segment
 *    16  u64 timestamp_ms
 *    24  u64 producer_id
 *    32  u64 seq
 *    40  u32 key_len
 *    44  u32 value_len
 *    48  key bytes, then value bytes
 *   A record is valid when len >= 44, key_len + value_len + 44 == len, the
 *   whole record lies inside the file, the CRC matches and the offset is the
 *   next expected one. Zero-filled space fails the first test.
 *
 * INDEX FILE (little endian)
 *     0 "MQIX"  4 u32 crc of [8, end)  8 u64 base  16 u64 end  24 u64 size
 *    32 u64 max_timestamp  40 u32 count  44 u32 0  48 count x {u32 offset - base, u32 pos}
 *   In memory every segment keeps the same array: one entry whenever at least
 *   index_interval_bytes were appended since the previous entry (offset base at
 *   position 0 is implicit). A read binary-searches it and scans from there.
 *
 * ZEROS AHEAD (cfg.prezero_bytes > 0; mq turns it on for flushed topics)
 *   An append into the end of a file changes the file's size, so fdatasync
 *   must write the inode as well as the data: two dependent disk writes. So
 *   the active segment is extended with zeros ahead of its records, a chunk
 *   at a time (a fill starts writeback at once, sync_file_range), and records
 *   overwrite them: most fdatasyncs then write only data pages (about half the
 *   latency, measured on ext4). Zeros fail a record's first test, so recovery
 *   treats them as the end of the log; reads stop at the records' size, never
 *   at the file's. A segment is truncated to its records before it is sealed
 *   (and on close), so sealed segments never hold zeros. A fill that fails
 *   (disk full) is abandoned: that segment appends plainly until rolled.
 *
 * FSYNC ORDERING (what makes recovery need only the tail segment)
 *   1. A segment is fdatasync'ed before the next segment file is created (in
 *      every flush mode), and the directory is fsync'ed after the creation. So
 *      whenever segment N+1 exists, segments <= N are complete on disk and
 *      only the newest segment can end in a torn record.
 *   2. MQ_FLUSH_SYNC, group commit: an appender writes its record under the
 *      log mutex, then waits until durable_end passes its offset. If no fsync
 *      is in flight it becomes the leader: it notes target = end, drops the
 *      mutex, fdatasyncs the active segment, retakes the mutex, raises
 *      durable_end to target and wakes everyone. Records written while the
 *      leader was in fdatasync are covered by the next leader, one fsync for
 *      all of them. Followers never fsync.
 *   3. MQ_FLUSH_ASYNC: the flusher thread runs the same leader step every
 *      flush_interval_ms, and close flushes. MQ_FLUSH_NONE: only rule 1 and
 *      explicit mq__seglog_flush calls; a crash of the machine (not of the
 *      process) may lose the unflushed tail.
 *   4. A failed fsync is fatal (the page cache may have dropped the dirty
 *      pages and a retry would report success): the log enters FAILED and every
 *      later append and flush returns -EIO. Records written but not durable at
 *      that moment may or may not be present after reopen.
 *   5. Retention (and trim) first detaches the oldest segments from the list
 *      under the mutex, then unlinks them oldest first and fsyncs the
 *      directory outside it (serialised by retain_mu), so surviving segments
 *      are always a contiguous range. A crash between detach and unlink brings
 *      the old segments back on the next open (removed again later); a crash
 *      in the middle of the unlinks leaves a gap that recovery drops.
 *
 * STATES
 *   OPEN      after mq__seglog_open: recovery done, tail fdatasync'ed, so
 *             durable_end == end. Appends write at the tail.
 *   FAILED    entered by a failed fsync/fdatasync, a write error other than
 *             ENOSPC, or a failed rollback of a partial write. Terminal until
 *             close; reads still work.
 *   ENOSPC is not a state: the partial record is truncated away (ftruncate to
 *   the old size), -ENOSPC is returned, no offset is consumed.
 *
 * RECOVERY (seglog_recover, on open)
 *   - list <base>.log files, sorted; remove *.index files without a log;
 *   - sealed segments: load the index file or, if it does not validate, scan
 *     the segment. If a sealed segment does not end where the next one begins
 *     (an interrupted retention can leave an old segment behind), everything
 *     before the discontinuity is dropped. A bad record inside a sealed
 *     segment (media corruption; rule 1 excludes torn writes there) turns that
 *     segment into the tail: it is truncated and later segments removed.
 *   - tail segment: scan every record; stop at the first whose length, offset
 *     or CRC is wrong; ftruncate there; rebuild its index; fdatasync.
 *   Recovery is idempotent, so a crash during recovery is harmless.
 *
 * CONCURRENCY
 *   One mutex per log guards the segment list, the active segment and all
 *   counters. fdatasync and reads run outside it; segments are reference
 *   counted so retention may unlink a segment while a reader or the fsync
 *   leader still holds its descriptor. Under MQ_FLUSH_SYNC reads stop at
 *   durable_end, so a consumer never sees a record that a crash could take back.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "seglog.h"
#include "log.h"

#define SEG_HDR 48u                 /* record header bytes */
#define SEG_LEN_MIN (SEG_HDR - 4u)  /* smallest value of the len field */
#define SEG_MAX_PAYLOAD (64u << 20) /* key + value of one record */
#define SEG_MAX_BYTES (1ull << 30)  /* segment_bytes upper bound: positions fit u32 */
#define SEG_DEFAULT_INDEX_INTERVAL 4096u
#define SEG_READ_BUF (64u << 10)
#define SEG_SCAN_BUF (1u << 20)
#define SEG_NAME_DIGITS 20
#define SEG_ZEROS (64u << 10)     /* one write of a zero fill */
#define IDX_MAGIC 0x5849514du /* "MQIX" */
#define IDX_HDR 48u

/* ---- fault-injection seam: tests replace these (see tests/unit/test_seglog.c) ---- */

static ssize_t seglog_sys_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}
static ssize_t seglog_sys_pread(int fd, void *buf, size_t n, off_t off)
{
    return pread(fd, buf, n, off);
}
static int seglog_sys_fsync(int fd)
{
    return fdatasync(fd);
}
static ssize_t (*seglog_pwrite_fn)(int, const void *, size_t, off_t) = seglog_sys_pwrite;
static ssize_t (*seglog_pread_fn)(int, void *, size_t, off_t) = seglog_sys_pread;
static int (*seglog_fsync_fn)(int) = seglog_sys_fsync;

/* ---- types ---- */

typedef struct seg_idx {
    uint32_t rel; /* offset - base */
    uint32_t pos; /* file position of that record */
} seg_idx;

typedef struct seg {
    uint64_t base;
    uint64_t end;    /* next offset after the last record */
    uint64_t size;   /* bytes of complete records */
    uint64_t file_len; /* active segment: bytes in the file, >= size (zeros after) */
    uint64_t max_ts; /* newest record timestamp; 0 when empty */
    int fd;
    int prezero_off; /* a zero fill failed (disk full): plain appends until rolled */
    int refs; /* the log's list holds one; readers and the fsync leader one each */
    seg_idx *idx;
    size_t n_idx, cap_idx;
    uint64_t last_idx_pos;
} seg;

struct mq__seglog {
    pthread_mutex_t mu;
    pthread_mutex_t retain_mu; /* serialises retention's unlinks (taken before mu) */
    pthread_cond_t durable_cv; /* durable_end moved, a flush finished, or failed */
    pthread_cond_t tick_cv;    /* wakes the async flusher for shutdown */
    char *dir;
    mq__seglog_config cfg;

    seg **segs; /* ascending base; segs[nsegs - 1] is active */
    size_t nsegs, cap_segs;
    uint64_t total_bytes;

    uint64_t end;         /* next offset to assign */
    uint64_t durable_end; /* every offset below is on disk */
    int flushing;         /* a leader is inside fdatasync */
    int failed;

    unsigned char *wbuf; /* encode buffer, used under mu */
    size_t wcap;
    unsigned char *rbuf; /* a spare read buffer (SEG_READ_BUF bytes) kept between reads */

    pthread_t flusher;
    int flusher_running;
    int stopping;

    /* statistics (under mu); the tests read them */
    uint64_t n_appends;
    uint64_t n_fsyncs;
};

/* ---- small file helpers ---- */

static int seg_path(const mq__seglog *l, uint64_t base, const char *ext, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%020" PRIu64 ".%s", l->dir, base, ext);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (seglog_fsync_fn(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* mkdir -p; fsyncs the parent of every directory it creates. */
static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) == 0) {
            char *slash = strrchr(buf, '/');
            if (slash == buf) {
                (void)fsync_dir("/");
            } else if (slash != NULL) {
                *slash = '\0';
                (void)fsync_dir(buf);
                *slash = '/';
            } else {
                (void)fsync_dir(".");
            }
        } else if (errno != EEXIST) {
            return -errno;
        }
        buf[i] = saved;
    }
    return 0;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = seglog_pread_fn(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

/* ---- segments ---- */

static seg *seg_new(uint64_t base, int fd)
{
    seg *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->base = base;
    s->end = base;
    s->fd = fd;
    s->refs = 1;
    return s;
}

/* Drops one reference; the last one closes and frees. Caller holds mu (or is
 * the only user, during open/close). */
static void seg_unref(seg *s)
{
    if (s == NULL || --s->refs > 0)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->idx);
    free(s);
}

static int seg_idx_push(seg *s, uint64_t offset, uint64_t pos)
{
    if (s->n_idx == s->cap_idx) {
        size_t cap = s->cap_idx ? s->cap_idx * 2 : 64;
        seg_idx *n = realloc(s->idx, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        s->idx = n;
        s->cap_idx = cap;
    }
    s->idx[s->n_idx].rel = (uint32_t)(offset - s->base);
    s->idx[s->n_idx].pos = (uint32_t)pos;
    s->n_idx++;
    s->last_idx_pos = pos;
    return 0;
}

/* Note one more record at pos in s; adds an index entry when due. An index
 * entry that cannot be allocated only makes reads scan further. */
static void seg_note_record(seg *s, uint64_t offset, uint64_t pos, uint64_t ts, uint32_t interval)
{
    if (pos > 0 && pos - s->last_idx_pos >= interval)
        (void)seg_idx_push(s, offset, pos);
    if (ts > s->max_ts)
        s->max_ts = ts;
}

/* Largest indexed (offset, pos) with offset <= target. Caller holds mu. */
static void seg_index_lookup(const seg *s, uint64_t target, uint64_t *off, uint64_t *pos)
{
    size_t lo = 0, hi = s->n_idx;

    *off = s->base;
    *pos = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->base + s->idx[mid].rel <= target)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0) {
        *off = s->base + s->idx[lo - 1].rel;
        *pos = s->idx[lo - 1].pos;
    }
}

/* ---- record cursor: sequential, validating reader over [pos, lim) of one segment ---- */

typedef struct seg_cursor {
    int fd;
    uint64_t pos; /* file position of the next record */
    uint64_t lim; /* stop here */
    unsigned char *buf;
    size_t cap;
    uint64_t buf_pos; /* file position of buf[0] */
    size_t have;      /* valid bytes in buf */
} seg_cursor;

/* Ensure [pos, pos + n) is in the buffer. */
static int cursor_fill(seg_cursor *c, size_t n)
{
    if (c->pos >= c->buf_pos && c->pos + n <= c->buf_pos + c->have)
        return 0;
    if (n > c->cap) {
        unsigned char *nb = realloc(c->buf, n);
        if (nb == NULL)
            return -ENOMEM;
        c->buf = nb;
        c->cap = n;
    }
    uint64_t want = c->lim - c->pos;
    if (want > c->cap)
        want = c->cap;
    if (want < n)
        return -EBADMSG;
    size_t got = 0;
    int rc = pread_full(c->fd, c->buf, (size_t)want, c->pos, &got);
    if (rc < 0)
        return rc;
    c->buf_pos = c->pos;
    c->have = got;
    return got < n ? -EBADMSG : 0;
}

/* Decode the record at c->pos. Returns 1 with *r filled and *total set, 0 at a
 * clean end (pos == lim), -EBADMSG for a torn or corrupt record, or another
 * negative errno for I/O failure. Does not advance. */
static int cursor_peek(seg_cursor *c, uint64_t expect, mq__rec *r, uint32_t *total)
{
    int rc;

    if (c->pos >= c->lim)
        return 0;
    if (c->lim - c->pos < SEG_HDR)
        return -EBADMSG;
    rc = cursor_fill(c, SEG_HDR);
    if (rc < 0)
        return rc;
    const unsigned char *h = c->buf + (c->pos - c->buf_pos);
    uint32_t len = sk_le_get32(h);
    if (len < SEG_LEN_MIN || len > SEG_LEN_MIN + SEG_MAX_PAYLOAD ||
        (uint64_t)len + 4 > c->lim - c->pos)
        return -EBADMSG;
    uint32_t klen = sk_le_get32(h + 40), vlen = sk_le_get32(h + 44);
    if ((uint64_t)klen + vlen + SEG_LEN_MIN != len)
        return -EBADMSG;
    rc = cursor_fill(c, (size_t)len + 4);
    if (rc < 0)
        return rc;
    h = c->buf + (c->pos - c->buf_pos);
    if (sk_crc32c(0, h + 8, len - 4) != sk_le_get32(h + 4))
        return -EBADMSG;
    if (sk_le_get64(h + 8) != expect)
        return -EBADMSG;
    r->offset = expect;
    r->timestamp_ms = sk_le_get64(h + 16);
    r->producer_id = sk_le_get64(h + 24);
    r->seq = sk_le_get64(h + 32);
    r->key_len = klen;
    r->value_len = vlen;
    r->key = h + SEG_HDR;
    r->value = h + SEG_HDR + klen;
    *total = len + 4;
    return 1;
}

/* Scan s from position 0 up to its file size, validating every record and
 * rebuilding index, end, size and max_ts. *clean is set to 0 when the scan
 * stopped at a bad record before the end of the file. */
static int seg_scan(mq__seglog *l, seg *s, int *clean)
{
    struct stat st;
    seg_cursor c = {.fd = s->fd};
    uint64_t off = s->base;
    int rc;

    if (fstat(s->fd, &st) != 0)
        return -errno;
    c.lim = (uint64_t)st.st_size;
    c.cap = SEG_SCAN_BUF;
    c.buf = malloc(c.cap);
    if (c.buf == NULL)
        return -ENOMEM;
    s->n_idx = 0;
    s->last_idx_pos = 0;
    s->max_ts = 0;
    for (;;) {
        mq__rec r;
        uint32_t total;
        rc = cursor_peek(&c, off, &r, &total);
        if (rc <= 0)
            break;
        seg_note_record(s, off, c.pos, r.timestamp_ms, l->cfg.index_interval_bytes);
        c.pos += total;
        off++;
    }
    free(c.buf);
    if (rc < 0 && rc != -EBADMSG)
        return rc;
    *clean = rc == 0;
    s->end = off;
    s->size = c.pos;
    return 0;
}

static int seg_write_index(mq__seglog *l, const seg *s)
{
    char path[PATH_MAX];
    size_t n = IDX_HDR + s->n_idx * 8;
    unsigned char *b = NULL;
    int fd = -1, rc;

    rc = seg_path(l, s->base, "index", path, sizeof(path));
    if (rc < 0)
        return rc;
    b = malloc(n);
    if (b == NULL)
        return -ENOMEM;
    sk_le_put32(b, IDX_MAGIC);
    sk_le_put64(b + 8, s->base);
    sk_le_put64(b + 16, s->end);
    sk_le_put64(b + 24, s->size);
    sk_le_put64(b + 32, s->max_ts);
    sk_le_put32(b + 40, (uint32_t)s->n_idx);
    sk_le_put32(b + 44, 0);
    for (size_t i = 0; i < s->n_idx; i++) {
        sk_le_put32(b + IDX_HDR + i * 8, s->idx[i].rel);
        sk_le_put32(b + IDX_HDR + i * 8 + 4, s->idx[i].pos);
    }
    sk_le_put32(b + 4, sk_crc32c(0, b + 8, n - 8));
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = seglog_pwrite_fn(fd, b + done, n - done, (off_t)done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        done += (size_t)w;
    }
    close(fd);
    if (rc < 0)
        unlink(path); /* a missing index is rebuilt; a half one is only detected */
out_free:
    free(b);
    return rc;
}

/* Load s's index file. Returns 0 when it validates against the segment
 * (base, size, CRC), else a negative errno; the caller then scans. */
static int seg_load_index(mq__seglog *l, seg *s)
{
    char path[PATH_MAX];
    struct stat st, lst;
    unsigned char *b = NULL;
    size_t got = 0;
    int fd, rc;

    rc = seg_path(l, s->base, "index", path, sizeof(path));
    if (rc < 0)
        return rc;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0 || fstat(s->fd, &lst) != 0) {
        rc = -errno;
        goto out_close;
    }
    if (st.st_size < IDX_HDR || st.st_size > (off_t)(IDX_HDR + 8 * (SEG_MAX_BYTES / 64))) {
        rc = -EBADMSG;
        goto out_close;
    }
    b = malloc((size_t)st.st_size);
    if (b == NULL) {
        rc = -ENOMEM;
        goto out_close;
    }
    rc = pread_full(fd, b, (size_t)st.st_size, 0, &got);
    if (rc < 0)
        goto out_free;
    rc = -EBADMSG;
    if (got != (size_t)st.st_size || sk_le_get32(b) != IDX_MAGIC ||
        sk_le_get32(b + 4) != sk_crc32c(0, b + 8, got - 8) || sk_le_get64(b + 8) != s->base ||
        sk_le_get64(b + 24) != (uint64_t)lst.st_size || sk_le_get64(b + 16) <= s->base ||
        IDX_HDR + (size_t)sk_le_get32(b + 40) * 8 != got)
        goto out_free;
    size_t n = sk_le_get32(b + 40);
    seg_idx *idx = n ? malloc(n * sizeof(*idx)) : NULL;
    if (n && idx == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        idx[i].rel = sk_le_get32(b + IDX_HDR + i * 8);
        idx[i].pos = sk_le_get32(b + IDX_HDR + i * 8 + 4);
        if (idx[i].pos >= lst.st_size ||
            (i > 0 && (idx[i].rel <= idx[i - 1].rel || idx[i].pos <= idx[i - 1].pos))) {
            free(idx);
            goto out_free;
        }
    }
    free(s->idx);
    s->idx = idx;
    s->n_idx = s->cap_idx = n;
    s->last_idx_pos = n ? idx[n - 1].pos : 0;
    s->end = sk_le_get64(b + 16);
    s->size = sk_le_get64(b + 24);
    s->max_ts = sk_le_get64(b + 32);
    rc = 0;
out_free:
    free(b);
out_close:
    close(fd);
    return rc;
}

static void seg_remove_files(mq__seglog *l, uint64_t base)
{
    char path[PATH_MAX];

    if (seg_path(l, base, "log", path, sizeof(path)) == 0)
        unlink(path);
    if (seg_path(l, base, "index", path, sizeof(path)) == 0)
        unlink(path);
}

static int segs_push(mq__seglog *l, seg *s)
{
    if (l->nsegs == l->cap_segs) {
        size_t cap = l->cap_segs ? l->cap_segs * 2 : 16;
        seg **n = realloc(l->segs, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        l->segs = n;
        l->cap_segs = cap;
    }
    l->segs[l->nsegs++] = s;
    return 0;
}

/* Create an empty segment file for base and make it the active segment. */
static int seg_create(mq__seglog *l, uint64_t base)
{
    char path[PATH_MAX];
    seg *s;
    int fd, rc;

    rc = seg_path(l, base, "log", path, sizeof(path));
    if (rc < 0)
        return rc;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    s = seg_new(base, fd);
    if (s == NULL) {
        rc = -ENOMEM;
        goto out_unlink;
    }
    rc = fsync_dir(l->dir);
    if (rc < 0)
        goto out_unref;
    rc = segs_push(l, s);
    if (rc < 0)
        goto out_unref;
    return 0;
out_unref:
    seg_unref(s);
    fd = -1;
out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(path);
    return rc;
}

/* Keep zeros at least half a chunk ahead of the records once `need` bytes
 * are written: fills [file_len, need + prezero_bytes), capped at the segment
 * size unless the batch itself passes it. Caller holds mu. A failed fill
 * leaves what it wrote (zeros beyond the records are harmless) and turns
 * filling off for this segment. */
static void seg_prezero(mq__seglog *l, seg *s, uint64_t need)
{
    static const unsigned char zeros[SEG_ZEROS];
    uint64_t chunk = l->cfg.prezero_bytes;

    if (chunk == 0 || s->prezero_off || s->file_len >= need + chunk / 2)
        return;
    uint64_t from = s->file_len;
    uint64_t to = need + chunk;
    if (to > l->cfg.segment_bytes)
        to = l->cfg.segment_bytes;
    if (to <= need || to <= from) /* at the segment's end: the roll comes next */
        return;
    for (uint64_t at = from; at < to;) {
        size_t n = to - at < SEG_ZEROS ? (size_t)(to - at) : SEG_ZEROS;
        ssize_t w = seglog_pwrite_fn(s->fd, zeros, n, (off_t)at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            s->prezero_off = 1;
            return;
        }
        at += (uint64_t)w;
        s->file_len = at;
    }
    /* start writing the zeros now, so that the fdatasync that first
     * covers this range finds them on disk already */
    (void)sync_file_range(s->fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE);
}

/* Cut the zeros written ahead of s's records. Caller holds mu. */
static int seg_cut_zeros(seg *s)
{
    if (s->file_len <= s->size)
        return 0;
    if (ftruncate(s->fd, (off_t)s->size) != 0)
        return -errno;
    s->file_len = s->size;
    return 0;
}

/* ---- recovery ---- */

static int parse_seg_name(const char *name, const char *ext, uint64_t *base)
{
    size_t n = strlen(name), e = strlen(ext);
    uint64_t v = 0;

    if (n != SEG_NAME_DIGITS + 1 + e || name[SEG_NAME_DIGITS] != '.' ||
        strcmp(name + SEG_NAME_DIGITS + 1, ext) != 0)
        return 0;
    for (int i = 0; i < SEG_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *base = v;
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorted bases of every <base>.log in the directory; orphan index files removed. */
static int list_segments(mq__seglog *l, uint64_t **out, size_t *n_out)
{
    DIR *d = opendir(l->dir);
    struct dirent *e;
    uint64_t *v = NULL, *iv = NULL;
    size_t n = 0, cap = 0, in = 0, icap = 0;
    int rc = 0;

    if (d == NULL)
        return -errno;
    while ((e = readdir(d)) != NULL) {
        uint64_t base;
        if (parse_seg_name(e->d_name, "log", &base)) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                uint64_t *nv = realloc(v, cap * sizeof(*nv));
                if (nv == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                v = nv;
            }
            v[n++] = base;
        } else if (parse_seg_name(e->d_name, "index", &base)) {
            if (in == icap) {
                icap = icap ? icap * 2 : 16;
                uint64_t *nv = realloc(iv, icap * sizeof(*nv));
                if (nv == NULL) {
                    rc = -ENOMEM;
                    goto out;
                }
                iv = nv;
            }
            iv[in++] = base;
        }
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_u64);
    for (size_t i = 0; i < in; i++) {
        if (n == 0 || bsearch(&iv[i], v, n, sizeof(*v), cmp_u64) == NULL) {
            char path[PATH_MAX];
            if (seg_path(l, iv[i], "index", path, sizeof(path)) == 0)
                unlink(path);
        }
    }
    *out = v;
    *n_out = n;
    v = NULL;
out:
    closedir(d);
    free(v);
    free(iv);
    return rc;
}

/* Remove segments [from, nsegs) from the list and from disk. */
static void segs_drop_tail(mq__seglog *l, size_t from)
{
    while (l->nsegs > from) {
        seg *s = l->segs[--l->nsegs];
        seg_remove_files(l, s->base);
        seg_unref(s);
    }
}

/* Remove segments [0, upto) from the list and from disk. */
static void segs_drop_head(mq__seglog *l, size_t upto)
{
    for (size_t i = 0; i < upto; i++) {
        seg_remove_files(l, l->segs[i]->base);
        seg_unref(l->segs[i]);
    }
    memmove(l->segs, l->segs + upto, (l->nsegs - upto) * sizeof(*l->segs));
    l->nsegs -= upto;
}

static int seglog_recover(mq__seglog *l)
{
    uint64_t *bases = NULL;
    size_t n = 0;
    int rc, dir_dirty = 0;

    rc = list_segments(l, &bases, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        rc = seg_path(l, bases[i], "log", path, sizeof(path));
        if (rc < 0)
            goto out;
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
            goto out;
        }
        seg *s = seg_new(bases[i], fd);
        if (s == NULL) {
            close(fd);
            rc = -ENOMEM;
            goto out;
        }
        rc = segs_push(l, s);
        if (rc < 0) {
            seg_unref(s);
            goto out;
        }
    }

    /* Sealed segments: index file or scan; contiguity; corruption. */
    for (size_t i = 0; i + 1 < l->nsegs; i++) {
        seg *s = l->segs[i];
        int clean = 1;
        if (seg_load_index(l, s) != 0) {
            rc = seg_scan(l, s, &clean);
            if (rc < 0)
                goto out;
            if (clean)
                (void)seg_write_index(l, s);
        }
        if (!clean) {
            sk_log(SK_LOG_WARN, "seglog", NULL,
                   "%s: corrupt record at offset %" PRIu64 " in sealed segment %020" PRIu64
                   "; later segments dropped",
                   l->dir, s->end, s->base);
            segs_drop_tail(l, i + 1);
            dir_dirty = 1;
            break;
        }
        if (s->end != l->segs[i + 1]->base) {
            sk_log(SK_LOG_WARN, "seglog", NULL,
                   "%s: segment %020" PRIu64 " ends at %" PRIu64 " but the next begins at %" PRIu64
                   "; older segments dropped",
                   l->dir, s->base, s->end, l->segs[i + 1]->base);
            segs_drop_head(l, i + 1);
            dir_dirty = 1;
            i = (size_t)-1; /* restart over the survivors */
        }
    }

    if (l->nsegs == 0) {
        rc = seg_create(l, 0);
        if (rc < 0)
            goto out;
    } else {
        /* The tail: scan every record, truncate at the first bad one. */
        seg *t = l->segs[l->nsegs - 1];
        struct stat st;
        int clean;
        char path[PATH_MAX];

        if (seg_path(l, t->base, "index", path, sizeof(path)) == 0)
            unlink(path);
        rc = seg_scan(l, t, &clean);
        if (rc < 0)
            goto out;
        if (fstat(t->fd, &st) != 0) {
            rc = -errno;
            goto out;
        }
        if ((uint64_t)st.st_size != t->size) {
            if (ftruncate(t->fd, (off_t)t->size) != 0) {
                rc = -errno;
                goto out;
            }
        }
        t->file_len = t->size;
        if (seglog_fsync_fn(t->fd) != 0) {
            rc = -EIO;
            goto out;
        }
        l->n_fsyncs++;
    }
    if (dir_dirty) {
        rc = fsync_dir(l->dir);
        if (rc < 0)
            goto out;
    }
    l->total_bytes = 0;
    for (size_t i = 0; i < l->nsegs; i++)
        l->total_bytes += l->segs[i]->size;
    l->end = l->segs[l->nsegs - 1]->end;
    l->durable_end = l->end;
    rc = 0;
out:
    free(bases);
    return rc;
}

/* ---- flushing ---- */

/* Make every offset below target durable. Caller holds mu. Elects itself
 * leader when no fsync is in flight, else waits for the running one. */
static int seglog_wait_durable(mq__seglog *l, uint64_t target)
{
    while (l->durable_end < target) {
        if (l->failed)
            return -EIO;
        if (l->flushing) {
            pthread_cond_wait(&l->durable_cv, &l->mu);
            continue;
        }
        /* Leader. Everything below `upto` lives in the active segment or in
         * sealed ones, and sealed ones were fdatasync'ed when rolled. */
        seg *s = l->segs[l->nsegs - 1];
        uint64_t upto = l->end;
        s->refs++;
        l->flushing = 1;
        pthread_mutex_unlock(&l->mu);
        int rc = seglog_fsync_fn(s->fd);
        pthread_mutex_lock(&l->mu);
        l->flushing = 0;
        l->n_fsyncs++;
        seg_unref(s);
        if (rc != 0) {
            sk_log(SK_LOG_ERROR, "seglog", NULL, "%s: fdatasync failed (%s); log failed", l->dir,
                   strerror(errno));
            l->failed = 1;
        } else if (upto > l->durable_end) {
            l->durable_end = upto;
        }
        pthread_cond_broadcast(&l->durable_cv);
    }
    return 0;
}

static void *seglog_flusher(void *arg)
{
    mq__seglog *l = arg;
    struct timespec ts;

    pthread_mutex_lock(&l->mu);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    while (!l->stopping) {
        uint64_t ns = (uint64_t)l->cfg.flush_interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec += (long)(ns % 1000000000u);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!l->stopping && pthread_cond_timedwait(&l->tick_cv, &l->mu, &ts) != ETIMEDOUT)
            ;
        if (l->stopping)
            break;
        if (!l->failed)
            (void)seglog_wait_durable(l, l->end);
        clock_gettime(CLOCK_MONOTONIC, &ts);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- open / close ---- */

int mq__seglog_open(const char *dir, const mq__seglog_config *cfg, mq__seglog **out)
{
    mq__seglog *l = NULL;
    pthread_condattr_t ca;
    int rc;

    *out = NULL;
    if (dir == NULL || cfg == NULL || cfg->segment_bytes < SEG_HDR ||
        cfg->segment_bytes > SEG_MAX_BYTES || cfg->flush > MQ_FLUSH_SYNC ||
        (cfg->flush == MQ_FLUSH_ASYNC && cfg->flush_interval_ms == 0) ||
        strlen(dir) + 40 >= PATH_MAX)
        return -EINVAL;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->cfg = *cfg;
    if (l->cfg.index_interval_bytes == 0)
        l->cfg.index_interval_bytes = SEG_DEFAULT_INDEX_INTERVAL;
    l->dir = strdup(dir);
    if (l->dir == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }
    rc = mkdir_p(dir);
    if (rc < 0)
        goto out_free;
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->retain_mu, NULL);
    pthread_cond_init(&l->durable_cv, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->tick_cv, &ca);
    pthread_condattr_destroy(&ca);

    rc = seglog_recover(l);
    if (rc < 0)
        goto out_segs;
    if (l->cfg.flush == MQ_FLUSH_ASYNC) {
        rc = -pthread_create(&l->flusher, NULL, seglog_flusher, l);
        if (rc < 0)
            goto out_segs;
        l->flusher_running = 1;
    }
    *out = l;
    return 0;

out_segs:
    for (size_t i = 0; i < l->nsegs; i++)
        seg_unref(l->segs[i]);
    free(l->segs);
    pthread_cond_destroy(&l->tick_cv);
    pthread_cond_destroy(&l->durable_cv);
    pthread_mutex_destroy(&l->retain_mu);
    pthread_mutex_destroy(&l->mu);
out_free:
    free(l->dir);
    free(l);
    return rc;
}

void mq__seglog_close(mq__seglog *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_broadcast(&l->tick_cv);
    pthread_mutex_unlock(&l->mu);
    if (l->flusher_running)
        pthread_join(l->flusher, NULL);

    pthread_mutex_lock(&l->mu);
    if (l->cfg.flush != MQ_FLUSH_NONE && !l->failed)
        (void)seglog_wait_durable(l, l->end);
    /* tidy: the next open would cut the zeros anyway */
    (void)seg_cut_zeros(l->segs[l->nsegs - 1]);
    pthread_mutex_unlock(&l->mu);

    for (size_t i = 0; i < l->nsegs; i++)
        seg_unref(l->segs[i]);
    free(l->segs);
    free(l->wbuf);
    free(l->rbuf);
    pthread_cond_destroy(&l->tick_cv);
    pthread_cond_destroy(&l->durable_cv);
    pthread_mutex_destroy(&l->retain_mu);
    pthread_mutex_destroy(&l->mu);
    free(l->dir);
    free(l);
}

/* ---- append ---- */

/* Seal the active segment and start a new one at l->end. Caller holds mu. */
static int seglog_roll(mq__seglog *l)
{
    seg *old = l->segs[l->nsegs - 1];
    int rc;

    /* A sealed segment ends with its last record (its index records the
     * file size, and recovery would read zeros there as corruption). */
    rc = seg_cut_zeros(old);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "seglog", NULL,
               "%s: cannot truncate the sealed segment (%s); log failed", l->dir, strerror(-rc));
        l->failed = 1;
        pthread_cond_broadcast(&l->durable_cv);
        return -EIO;
    }
    /* Rule 1: the old segment is complete on disk before its successor exists. */
    if (seglog_fsync_fn(old->fd) != 0) {
        sk_log(SK_LOG_ERROR, "seglog", NULL, "%s: fdatasync on roll failed (%s); log failed",
               l->dir, strerror(errno));
        l->failed = 1;
        pthread_cond_broadcast(&l->durable_cv);
        return -EIO;
    }
    l->n_fsyncs++;
    if (old->end > l->durable_end) {
        l->durable_end = old->end;
        pthread_cond_broadcast(&l->durable_cv);
    }
    (void)seg_write_index(l, old);
    rc = seg_create(l, l->end);
    if (rc == -ENOSPC || rc == -EDQUOT)
        return -ENOSPC; /* stay on the old segment; the next append tries again */
    if (rc < 0 && rc != -ENOMEM && rc != -EMFILE && rc != -ENFILE) {
        l->failed = 1;
        pthread_cond_broadcast(&l->durable_cv);
        return -EIO;
    }
    return rc;
}

static int seglog_reserve(mq__seglog *l, size_t n)
{
    if (n <= l->wcap)
        return 0;
    size_t cap = l->wcap ? l->wcap : 4096;
    while (cap < n)
        cap *= 2;
    unsigned char *b = realloc(l->wbuf, cap);
    if (b == NULL)
        return -ENOMEM;
    l->wbuf = b;
    l->wcap = cap;
    return 0;
}

int mq__seglog_append(mq__seglog *l, const mq__rec *rec, uint64_t *offset)
{
    return mq__seglog_append_batch(l, rec, 1, offset);
}

int mq__seglog_append_batch(mq__seglog *l, const mq__rec *recs, size_t n, uint64_t *first)
{
    uint64_t total = 0;
    int rc;

    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const mq__rec *rec = &recs[i];
        if ((rec->key_len && rec->key == NULL) || (rec->value_len && rec->value == NULL))
            return -EINVAL;
        uint64_t payload = (uint64_t)rec->key_len + rec->value_len;
        if (payload > SEG_MAX_PAYLOAD)
            return -EMSGSIZE;
        total += SEG_HDR + payload;
    }
    if (total > SEG_MAX_BYTES) /* positions in a segment fit 32 bits */
        return -EMSGSIZE;

    pthread_mutex_lock(&l->mu);
    if (l->failed) {
        rc = -EIO;
        goto out_unlock;
    }
    seg *s = l->segs[l->nsegs - 1];
    /* a batch is not split over segments: the one it starts may run past
     * segment_bytes by up to the batch */
    if (s->size > 0 && s->size + total > l->cfg.segment_bytes) {
        rc = seglog_roll(l);
        if (rc < 0)
            goto out_unlock;
        s = l->segs[l->nsegs - 1];
    }
    rc = seglog_reserve(l, (size_t)total);
    if (rc < 0)
        goto out_unlock;
    seg_prezero(l, s, s->size + total);

    unsigned char *b = l->wbuf;
    for (size_t i = 0, at = 0; i < n; i++) {
        const mq__rec *rec = &recs[i];
        size_t len = SEG_HDR + (size_t)rec->key_len + rec->value_len;
        unsigned char *r = b + at;
        sk_le_put32(r, (uint32_t)(len - 4));
        sk_le_put64(r + 8, l->end + i);
        sk_le_put64(r + 16, rec->timestamp_ms);
        sk_le_put64(r + 24, rec->producer_id);
        sk_le_put64(r + 32, rec->seq);
        sk_le_put32(r + 40, rec->key_len);
        sk_le_put32(r + 44, rec->value_len);
        if (rec->key_len)
            memcpy(r + SEG_HDR, rec->key, rec->key_len);
        if (rec->value_len)
            memcpy(r + SEG_HDR + rec->key_len, rec->value, rec->value_len);
        sk_le_put32(r + 4, sk_crc32c(0, r + 8, len - 8));
        at += len;
    }

    /* one write for the batch: every record of it is stored, or none */
    size_t done = 0;
    while (done < total) {
        ssize_t w = seglog_pwrite_fn(s->fd, b + done, total - done, (off_t)(s->size + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (w == 0) {
            rc = -ENOSPC;
            break;
        }
        done += (size_t)w;
    }
    if (rc < 0) {
        /* Nothing half-written may remain: a later record would follow garbage. */
        if (done > 0 && ftruncate(s->fd, (off_t)s->size) != 0) {
            sk_log(SK_LOG_ERROR, "seglog", NULL,
                   "%s: cannot truncate a partial record (%s); log failed", l->dir,
                   strerror(errno));
            l->failed = 1;
            rc = -EIO;
        } else {
            if (done > 0)
                s->file_len = s->size; /* the zeros ahead went with it */
            if (rc == -EDQUOT) {
                rc = -ENOSPC;
            } else if (rc != -ENOSPC) {
                l->failed = 1;
                rc = -EIO;
            }
        }
        if (l->failed)
            pthread_cond_broadcast(&l->durable_cv);
        goto out_unlock;
    }

    uint64_t off = l->end;
    for (size_t i = 0; i < n; i++) {
        seg_note_record(s, off + i, s->size, recs[i].timestamp_ms, l->cfg.index_interval_bytes);
        s->size += SEG_HDR + (uint64_t)recs[i].key_len + recs[i].value_len;
    }
    s->end = off + n;
    if (s->file_len < s->size)
        s->file_len = s->size;
    l->total_bytes += total;
    l->end = off + n;
    l->n_appends += n;
    if (l->cfg.flush == MQ_FLUSH_SYNC) {
        rc = seglog_wait_durable(l, off + n);
        if (rc < 0)
            goto out_unlock;
    }
    if (first)
        *first = off;
out_unlock:
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int mq__seglog_flush(mq__seglog *l)
{
    int rc;

    pthread_mutex_lock(&l->mu);
    rc = l->failed ? -EIO : seglog_wait_durable(l, l->end);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* ---- read ---- */

/* Find the segment holding `from` and pin it. Caller holds mu. */
static seg *seglog_find(mq__seglog *l, uint64_t from)
{
    size_t lo = 0, hi = l->nsegs;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->segs[mid]->base <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    seg *s = l->segs[lo - 1];
    s->refs++;
    return s;
}

int mq__seglog_read(mq__seglog *l, uint64_t from, size_t max_records, size_t max_bytes,
                    int (*cb)(void *arg, const mq__rec *rec), void *arg)
{
    seg_cursor c = {.fd = -1};
    size_t count = 0, bytes = 0;
    int rc = 0, stop = 0;

    if (cb == NULL)
        return -EINVAL;
    if (max_records == 0)
        return 0;
    /* Reuse the spare buffer: one partition usually has one reader at a time. */
    pthread_mutex_lock(&l->mu);
    c.buf = l->rbuf;
    l->rbuf = NULL;
    pthread_mutex_unlock(&l->mu);
    c.cap = SEG_READ_BUF;
    if (c.buf == NULL && (c.buf = malloc(c.cap)) == NULL)
        return -ENOMEM;

    while (!stop) {
        uint64_t off, vis_end, seg_end;
        pthread_mutex_lock(&l->mu);
        uint64_t start = l->segs[0]->base;
        if (from < start) {
            if (count > 0) {
                /* retention removed what follows: keep each batch dense */
                pthread_mutex_unlock(&l->mu);
                break;
            }
            from = start;
        }
        vis_end = l->cfg.flush == MQ_FLUSH_SYNC ? l->durable_end : l->end;
        if (from >= vis_end) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        seg *s = seglog_find(l, from);
        seg_index_lookup(s, from, &off, &c.pos);
        c.fd = s->fd;
        c.lim = s->size;
        seg_end = s->end < vis_end ? s->end : vis_end;
        c.have = 0;
        pthread_mutex_unlock(&l->mu);

        while (off < seg_end) {
            mq__rec r;
            uint32_t total;
            rc = cursor_peek(&c, off, &r, &total);
            if (rc <= 0) {
                if (rc == 0 || rc == -EBADMSG) {
                    sk_log(SK_LOG_ERROR, "seglog", NULL, "%s: bad record at offset %" PRIu64,
                           l->dir, off);
                    rc = -EIO;
                }
                stop = 1;
                break;
            }
            rc = 0;
            c.pos += total;
            off++;
            if (r.offset < from)
                continue;
            size_t sz = (size_t)r.key_len + r.value_len;
            if (count > 0 && bytes + sz > max_bytes) {
                stop = 1;
                break;
            }
            bytes += sz;
            count++;
            from = off;
            if (cb(arg, &r) != 0 || count >= max_records || bytes >= max_bytes) {
                stop = 1;
                break;
            }
        }
        pthread_mutex_lock(&l->mu);
        seg_unref(s);
        pthread_mutex_unlock(&l->mu);
        if (rc < 0)
            break;
    }
    pthread_mutex_lock(&l->mu);
    if (l->rbuf == NULL && c.cap == SEG_READ_BUF) {
        l->rbuf = c.buf;
        c.buf = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    free(c.buf);
    return rc < 0 ? rc : (int)(count > INT32_MAX ? INT32_MAX : count);
}

uint64_t mq__seglog_start(mq__seglog *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t v = l->segs[0]->base;
    pthread_mutex_unlock(&l->mu);
    return v;
}

uint64_t mq__seglog_end(mq__seglog *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t v = l->end;
    pthread_mutex_unlock(&l->mu);
    return v;
}

/* ---- retention ---- */

/* Detach the oldest segments chosen by retention (below == 0) or wholly below
 * offset `below` (trim), never the active one, then unlink them and fsync the
 * directory with only retain_mu held, so appends and reads go on meanwhile.
 * Readers still holding a detached segment keep its descriptor until they
 * unref it. retain_mu keeps the unlinks of concurrent calls oldest first. */
static int seglog_drop_old(mq__seglog *l, uint64_t now_ms, uint64_t below)
{
    uint64_t *bases = NULL;
    size_t drop = 0;
    uint64_t total;
    int rc = 0;

    pthread_mutex_lock(&l->retain_mu);
    pthread_mutex_lock(&l->mu);
    total = l->total_bytes;
    while (drop + 1 < l->nsegs) {
        seg *s = l->segs[drop];
        int go;
        if (below) {
            go = s->end <= below;
        } else {
            int old = l->cfg.retention_ms && now_ms > s->max_ts &&
                      now_ms - s->max_ts > l->cfg.retention_ms;
            int big = l->cfg.retention_bytes && total > l->cfg.retention_bytes;
            go = old || big;
        }
        if (!go)
            break;
        total -= s->size;
        drop++;
    }
    if (drop > 0 && (bases = malloc(drop * sizeof(*bases))) == NULL) {
        rc = -ENOMEM;
        drop = 0;
    }
    for (size_t i = 0; i < drop; i++) {
        bases[i] = l->segs[i]->base;
        seg_unref(l->segs[i]);
    }
    if (drop > 0) {
        memmove(l->segs, l->segs + drop, (l->nsegs - drop) * sizeof(*l->segs));
        l->nsegs -= drop;
        l->total_bytes = total;
    }
    pthread_mutex_unlock(&l->mu);
    if (drop > 0) {
        for (size_t i = 0; i < drop; i++)
            seg_remove_files(l, bases[i]);
        /* Rule 5: the unlinks are made durable so no old segment comes back. */
        if (fsync_dir(l->dir) < 0)
            rc = -EIO;
    }
    pthread_mutex_unlock(&l->retain_mu);
    free(bases);
    return rc < 0 ? rc : (int)drop;
}

int mq__seglog_retain(mq__seglog *l, uint64_t now_ms)
{
    if (l->cfg.retention_ms == 0 && l->cfg.retention_bytes == 0)
        return 0;
    return seglog_drop_old(l, now_ms, 0);
}

int mq__seglog_trim(mq__seglog *l, uint64_t below)
{
    if (below == 0)
        return 0;
    return seglog_drop_old(l, 0, below);
}
