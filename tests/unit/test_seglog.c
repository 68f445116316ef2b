/*
 * test_seglog.c - the segment log, the offsets store and CRC32C.
 *
 * The module sources are included so the tests reach their statics: the
 * write/read/fsync seams (fault injection), the fsync counters and the
 * in-memory index.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../common/crc32c.c"
#include "../../queue/offsets.c"
#include "../../queue/seglog.c"

#include <ftw.h>
#include <stdatomic.h>
#include <sys/stat.h>

/* ---- helpers ---- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_dir(void **state)
{
    char *dir = strdup("/tmp/test_seglog.XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    char *dir = *state;
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
    seglog_pwrite_fn = seglog_sys_pwrite;
    seglog_pread_fn = seglog_sys_pread;
    seglog_fsync_fn = seglog_sys_fsync;
    offsets_pwrite_fn = offsets_sys_pwrite;
    offsets_fsync_fn = offsets_sys_fsync;
    offsets_compact_min = 1u << 20;
    return 0;
}

static mq__seglog_config cfg_make(uint64_t segment_bytes, enum mq_flush flush)
{
    mq__seglog_config c = {
        .segment_bytes = segment_bytes,
        .flush = flush,
        .flush_interval_ms = 5,
        .index_interval_bytes = 256,
    };
    return c;
}

/* Record i: key "k<i>" (empty when i % 7 == 0), value "v<i>" padded to
 * 1 + i % 61 bytes, timestamp 1000 + i, producer 42, seq i + 1. */
typedef struct tr {
    char key[24];
    char val[80];
    mq__rec r;
} tr;

static void tr_make(tr *t, uint64_t i)
{
    memset(t, 0, sizeof(*t));
    int kl = i % 7 == 0 ? 0 : snprintf(t->key, sizeof(t->key), "k%" PRIu64, i);
    size_t vl = 1 + i % 61;
    snprintf(t->val, sizeof(t->val), "v%" PRIu64 "-", i);
    for (size_t j = strlen(t->val); j < vl; j++)
        t->val[j] = (char)('a' + (i + j) % 26);
    t->r.timestamp_ms = 1000 + i;
    t->r.producer_id = 42;
    t->r.seq = i + 1;
    t->r.key = kl ? t->key : NULL;
    t->r.key_len = (uint32_t)kl;
    t->r.value = t->val;
    t->r.value_len = (uint32_t)vl;
}

static void check_rec(const mq__rec *got, uint64_t i)
{
    tr t;
    tr_make(&t, i);
    assert_int_equal(got->offset, i);
    assert_int_equal(got->timestamp_ms, t.r.timestamp_ms);
    assert_int_equal(got->producer_id, t.r.producer_id);
    assert_int_equal(got->seq, t.r.seq);
    assert_int_equal(got->key_len, t.r.key_len);
    assert_int_equal(got->value_len, t.r.value_len);
    if (t.r.key_len)
        assert_memory_equal(got->key, t.r.key, t.r.key_len);
    assert_memory_equal(got->value, t.r.value, t.r.value_len);
}

static void append_range(mq__seglog *l, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i < to; i++) {
        tr t;
        uint64_t off = UINT64_MAX;
        tr_make(&t, i);
        assert_int_equal(mq__seglog_append(l, &t.r, &off), 0);
        assert_int_equal(off, i);
    }
}

typedef struct collect {
    uint64_t next; /* expected offset of the next record */
    size_t n;
    size_t stop_after; /* 0: never stop */
    uint64_t bytes;
} collect;

static int collect_cb(void *arg, const mq__rec *r)
{
    collect *c = arg;
    check_rec(r, c->next);
    c->next++;
    c->n++;
    c->bytes += (uint64_t)r->key_len + r->value_len;
    return c->stop_after && c->n >= c->stop_after;
}

/* Read every record from `from` and check they are dense and intact up to end. */
static void check_all(mq__seglog *l, uint64_t from, uint64_t end)
{
    collect c = {.next = from};
    while (c.next < end) {
        int n = mq__seglog_read(l, c.next, 97, 1 << 20, collect_cb, &c);
        assert_true(n > 0);
    }
    assert_int_equal(c.next, end);
    assert_int_equal(mq__seglog_read(l, end, 10, 1 << 20, collect_cb, &c), 0);
}

static size_t count_files(const char *dir, const char *ext)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    uint64_t base;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        n += (size_t)parse_seg_name(e->d_name, ext, &base);
    closedir(d);
    return n;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void seg_file(const char *dir, uint64_t base, const char *ext, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%020" PRIu64 ".%s", dir, base, ext);
}

static void append_bytes(const char *path, const void *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, n), (ssize_t)n);
    close(fd);
}

/* ---- CRC32C ---- */

static void test_crc32c_check_values(void **state)
{
    (void)state;
    unsigned char zeros[32] = {0}, ones[32], inc[32];
    memset(ones, 0xff, sizeof(ones));
    for (int i = 0; i < 32; i++)
        inc[i] = (unsigned char)i;

    assert_int_equal(sk_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(sk_crc32c(0, "", 0), 0);
    /* RFC 3720 B.4 test vectors */
    assert_int_equal(sk_crc32c(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(sk_crc32c(0, ones, 32), 0x62A8AB43u);
    assert_int_equal(sk_crc32c(0, inc, 32), 0x46DD794Eu);
    /* chaining */
    assert_int_equal(sk_crc32c(sk_crc32c(0, "12345", 5), "6789", 4), 0xE3069283u);

    /* the software path agrees with whichever one is in use, at every alignment */
    unsigned char buf[1024 + 16];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (size_t a = 0; a < 16; a++)
        for (size_t n = 0; n < 1024; n += 37)
            assert_int_equal(~crc_sw(~0u, buf + a, n), sk_crc32c(0, buf + a, n));
}

/* ---- framing, offsets, index ---- */

static void test_framing_round_trip(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_NONE);
    mq__seglog *l;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_start(l), 0);
    assert_int_equal(mq__seglog_end(l), 0);
    append_range(l, 0, 200);
    assert_int_equal(mq__seglog_end(l), 200);
    check_all(l, 0, 200);

    /* binary key and value with NUL bytes and an empty value */
    unsigned char k[3] = {0, 1, 0}, v[5] = {0xff, 0, 0, 7, 0};
    mq__rec r = {.timestamp_ms = 7,
                 .producer_id = UINT64_MAX,
                 .seq = 1ull << 40,
                 .key = k,
                 .key_len = 3,
                 .value = v,
                 .value_len = 5};
    uint64_t off;
    assert_int_equal(mq__seglog_append(l, &r, &off), 0);
    assert_int_equal(off, 200);
    mq__rec e = {.timestamp_ms = 9};
    assert_int_equal(mq__seglog_append(l, &e, &off), 0);
    assert_int_equal(off, 201);

    /* the byte layout on disk is the documented one */
    char path[PATH_MAX];
    seg_file(dir, 0, "log", path, sizeof(path));
    unsigned char h[SEG_HDR + 8];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    off_t at = file_size(path) - (off_t)(SEG_HDR + SEG_HDR + 8);
    assert_int_equal(pread(fd, h, sizeof(h), at), (ssize_t)sizeof(h));
    close(fd);
    assert_int_equal(sk_le_get32(h), SEG_LEN_MIN + 8);
    assert_int_equal(sk_le_get32(h + 4), sk_crc32c(0, h + 8, SEG_HDR - 8 + 8));
    assert_int_equal(sk_le_get64(h + 8), 200);
    assert_int_equal(sk_le_get64(h + 16), 7);
    assert_int_equal(sk_le_get64(h + 24), UINT64_MAX);
    assert_int_equal(sk_le_get64(h + 32), 1ull << 40);
    assert_int_equal(sk_le_get32(h + 40), 3);
    assert_int_equal(sk_le_get32(h + 44), 5);
    assert_memory_equal(h + SEG_HDR, k, 3);
    assert_memory_equal(h + SEG_HDR + 3, v, 5);

    /* too large or inconsistent records are refused and consume no offset */
    mq__rec big = {.value = v, .value_len = SEG_MAX_PAYLOAD + 1};
    assert_int_equal(mq__seglog_append(l, &big, &off), -EMSGSIZE);
    mq__rec bad = {.key_len = 4};
    assert_int_equal(mq__seglog_append(l, &bad, &off), -EINVAL);
    assert_int_equal(mq__seglog_end(l), 202);
    mq__seglog_close(l);
}

static void test_dense_offsets_across_rolls(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(2048, MQ_FLUSH_NONE);
    mq__seglog *l;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 1000);
    size_t nsegs = count_files(dir, "log");
    assert_true(nsegs > 20);
    assert_int_equal(l->nsegs, nsegs);
    /* sealed segments have an index file, the active one not yet */
    assert_int_equal(count_files(dir, "index"), nsegs - 1);
    for (size_t i = 0; i + 1 < l->nsegs; i++) {
        assert_int_equal(l->segs[i]->end, l->segs[i + 1]->base);
        assert_true(l->segs[i]->size <= cfg.segment_bytes);
        char path[PATH_MAX];
        seg_file(dir, l->segs[i]->base, "log", path, sizeof(path));
        assert_int_equal(file_size(path), (off_t)l->segs[i]->size);
    }
    check_all(l, 0, 1000);
    /* one read spanning many segments */
    collect c = {.next = 3};
    assert_int_equal(mq__seglog_read(l, 3, 900, 1 << 20, collect_cb, &c), 900);
    assert_int_equal(c.next, 903);
    mq__seglog_close(l);
}

typedef struct mid_got {
    uint64_t off;
    char v[52];
} mid_got;

static int mid_cb(void *arg, const mq__rec *r)
{
    mid_got *g = arg;
    g->off = r->offset;
    assert_int_equal(r->value_len, sizeof(g->v));
    memcpy(g->v, r->value, sizeof(g->v));
    return 0;
}

static uint64_t pread_first_pos;
static int pread_calls;
static ssize_t pread_spy(int fd, void *buf, size_t n, off_t off)
{
    if (pread_calls++ == 0)
        pread_first_pos = (uint64_t)off;
    return pread(fd, buf, n, off);
}

static void test_read_mid_segment_via_index(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_NONE);
    mq__seglog *l;
    char v[52];
    const uint64_t rec_bytes = SEG_HDR + sizeof(v);

    cfg.index_interval_bytes = 1000;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    for (uint64_t i = 0; i < 5000; i++) {
        memset(v, 0, sizeof(v));
        snprintf(v, sizeof(v), "value %" PRIu64, i);
        mq__rec r = {.timestamp_ms = i, .value = v, .value_len = sizeof(v)};
        uint64_t off;
        assert_int_equal(mq__seglog_append(l, &r, &off), 0);
    }
    assert_int_equal(l->nsegs, 1);
    seg *s = l->segs[0];
    /* one entry per ~index_interval_bytes */
    assert_true(s->n_idx >= 5000 * rec_bytes / 1000 - 2);
    assert_true(s->n_idx <= 5000 * rec_bytes / 1000 + 1);

    for (uint64_t target = 1; target < 5000; target += 613) {
        mid_got got = {UINT64_MAX, {0}};
        pread_calls = 0;
        seglog_pread_fn = pread_spy;
        int n = mq__seglog_read(l, target, 1, 1 << 20, mid_cb, &got);
        seglog_pread_fn = seglog_sys_pread;
        assert_int_equal(n, 1);
        assert_int_equal(got.off, target);
        char want[52] = {0};
        snprintf(want, sizeof(want), "value %" PRIu64, target);
        assert_memory_equal(got.v, want, sizeof(want));
        /* the read started at an indexed position at most one interval (plus
         * one record) before the target, not at the segment start */
        uint64_t tpos = target * rec_bytes;
        assert_true(pread_first_pos <= tpos);
        assert_true(tpos - pread_first_pos < cfg.index_interval_bytes + rec_bytes);
    }
    mq__seglog_close(l);

    /* after reopen the tail index is rebuilt from the scan */
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_true(l->segs[0]->n_idx >= 5000 * rec_bytes / 1000 - 2);
    mq__seglog_close(l);
}

static int count_cb(void *arg, const mq__rec *r)
{
    (void)r;
    (*(size_t *)arg)++;
    return 0;
}

static void test_read_limits(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(4096, MQ_FLUSH_NONE);
    mq__seglog *l;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 300);

    collect c = {.next = 10};
    assert_int_equal(mq__seglog_read(l, 10, 5, 1 << 20, collect_cb, &c), 5);
    assert_int_equal(c.next, 15);

    /* max_bytes: never exceeded, except that one record always passes */
    c = (collect){.next = 100};
    int n = mq__seglog_read(l, 100, 1000, 200, collect_cb, &c);
    assert_true(n > 1);
    assert_true(c.bytes <= 200);
    tr t;
    tr_make(&t, 100 + (uint64_t)n);
    assert_true(c.bytes + t.r.key_len + t.r.value_len > 200);
    c = (collect){.next = 100};
    assert_int_equal(mq__seglog_read(l, 100, 1000, 0, collect_cb, &c), 1);

    /* a callback returning non-zero stops after that record */
    c = (collect){.next = 50, .stop_after = 3};
    assert_int_equal(mq__seglog_read(l, 50, 1000, 1 << 20, collect_cb, &c), 3);

    /* at and past the end: nothing */
    size_t cnt = 0;
    assert_int_equal(mq__seglog_read(l, 300, 10, 1 << 20, count_cb, &cnt), 0);
    assert_int_equal(mq__seglog_read(l, 5000, 10, 1 << 20, count_cb, &cnt), 0);
    assert_int_equal(mq__seglog_read(l, 0, 0, 1 << 20, count_cb, &cnt), 0);
    assert_int_equal(cnt, 0);
    assert_int_equal(mq__seglog_read(l, 0, 10, 1 << 20, NULL, NULL), -EINVAL);
    mq__seglog_close(l);
}

/* ---- retention ---- */

static int first_cb(void *arg, const mq__rec *r)
{
    *(uint64_t *)arg = r->offset;
    return 0;
}

static void test_retention_by_size(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1000, MQ_FLUSH_NONE);
    mq__seglog *l;
    char v[52] = "x";

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    /* 100-byte records: 10 per segment; 105 records -> 11 segments */
    for (int i = 0; i < 105; i++) {
        mq__rec r = {.timestamp_ms = 1, .value = v, .value_len = sizeof(v)};
        uint64_t off;
        assert_int_equal(mq__seglog_append(l, &r, &off), 0);
    }
    assert_int_equal(count_files(dir, "log"), 11);
    assert_int_equal(mq__seglog_retain(l, 2), 0); /* no limit configured */
    mq__seglog_close(l);

    cfg.retention_bytes = 3000;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(l->total_bytes, 10500);
    /* keep at most 3000 bytes: 10500 -> 2500 means dropping 8 whole segments */
    assert_int_equal(mq__seglog_retain(l, 2), 8);
    assert_int_equal(mq__seglog_start(l), 80);
    assert_int_equal(mq__seglog_end(l), 105);
    assert_int_equal(count_files(dir, "log"), 3);
    assert_int_equal(l->total_bytes, 2500);
    assert_int_equal(mq__seglog_retain(l, 2), 0);

    /* reading below the start begins at the first retained record */
    uint64_t first = UINT64_MAX;
    assert_int_equal(mq__seglog_read(l, 0, 1, 1 << 20, first_cb, &first), 1);
    assert_int_equal(first, 80);

    /* never the active segment, even when it alone exceeds the limit */
    cfg.retention_bytes = 1;
    mq__seglog_close(l);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_start(l), 80);
    assert_int_equal(mq__seglog_retain(l, 2), 2);
    assert_int_equal(mq__seglog_start(l), 100);
    assert_int_equal(count_files(dir, "log"), 1);
    assert_int_equal(mq__seglog_retain(l, 2), 0);
    mq__seglog_close(l);

    /* the start survives reopen and appends continue densely */
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_start(l), 100);
    assert_int_equal(mq__seglog_end(l), 105);
    mq__rec r = {.value = v, .value_len = 1};
    uint64_t off;
    assert_int_equal(mq__seglog_append(l, &r, &off), 0);
    assert_int_equal(off, 105);
    mq__seglog_close(l);
}

/* Retention removes files without holding the log mutex: appends and reads
 * of the partition go on while it unlinks and fsyncs the directory. */
static mq__seglog *probe_log;
static int probe_mu_free = -1;

static int probe_fsync(int fd)
{
    if (probe_log) {
        if (pthread_mutex_trylock(&probe_log->mu) == 0) {
            pthread_mutex_unlock(&probe_log->mu);
            probe_mu_free = 1;
        } else {
            probe_mu_free = 0;
        }
    }
    return fdatasync(fd);
}

static void test_retention_unlinks_outside_mutex(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1000, MQ_FLUSH_NONE);
    mq__seglog *l;
    char v[52] = "x";

    cfg.retention_ms = 10;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    for (int i = 0; i < 30; i++) {
        mq__rec r = {.timestamp_ms = 1, .value = v, .value_len = sizeof(v)};
        assert_int_equal(mq__seglog_append(l, &r, NULL), 0);
    }
    probe_log = l;
    seglog_fsync_fn = probe_fsync;
    assert_int_equal(mq__seglog_retain(l, 100), 2);
    seglog_fsync_fn = seglog_sys_fsync;
    probe_log = NULL;
    assert_int_equal(probe_mu_free, 1); /* the directory fsync ran without l->mu */
    assert_int_equal(count_files(dir, "log"), 1);
    assert_int_equal(mq__seglog_start(l), 20);
    mq__seglog_close(l);
}

/* trim: whole sealed segments below an offset go, never the active one. */
static void test_trim_below(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1000, MQ_FLUSH_NONE);
    mq__seglog *l;
    char v[52] = "x";

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    for (int i = 0; i < 35; i++) { /* segments [0,10) [10,20) [20,30) [30,35) */
        mq__rec r = {.timestamp_ms = 1, .value = v, .value_len = sizeof(v)};
        assert_int_equal(mq__seglog_append(l, &r, NULL), 0);
    }
    assert_int_equal(mq__seglog_trim(l, 0), 0);
    assert_int_equal(mq__seglog_trim(l, 9), 0);  /* [0,10) still has offset 9 */
    assert_int_equal(mq__seglog_trim(l, 15), 1); /* [0,10) */
    assert_int_equal(mq__seglog_start(l), 10);
    assert_int_equal(mq__seglog_trim(l, 1000), 2); /* all but the active one */
    assert_int_equal(mq__seglog_start(l), 30);
    assert_int_equal(count_files(dir, "log"), 1);
    assert_int_equal(mq__seglog_retain(l, 1000000), 0); /* no retention configured */
    mq__seglog_close(l);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_start(l), 30);
    assert_int_equal(mq__seglog_end(l), 35);
    mq__seglog_close(l);
}

static void test_retention_by_age(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1000, MQ_FLUSH_NONE);
    mq__seglog *l;
    char v[52] = "x";

    cfg.retention_ms = 5000;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    /* segment k holds offsets 10k..10k+9 with timestamps up to 1000k + 9 */
    for (uint64_t i = 0; i < 100; i++) {
        mq__rec r = {.timestamp_ms = 1000 * (i / 10) + i % 10, .value = v, .value_len = sizeof(v)};
        uint64_t off;
        assert_int_equal(mq__seglog_append(l, &r, &off), 0);
    }
    assert_int_equal(l->nsegs, 10);
    /* newest in segment 2 is 2009: 7009 - 2009 = 5000 is not older than 5000 */
    assert_int_equal(mq__seglog_retain(l, 7009), 2);
    assert_int_equal(mq__seglog_start(l), 20);
    assert_int_equal(mq__seglog_retain(l, 7010), 1);
    assert_int_equal(mq__seglog_start(l), 30);
    mq__seglog_close(l);

    /* newest timestamps of sealed segments survive reopen (index file) and a
     * rebuild by scan (index file removed) */
    char path[PATH_MAX];
    seg_file(dir, 50, "index", path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_start(l), 30);
    assert_int_equal(mq__seglog_retain(l, 10500), 3); /* segments 3, 4, 5 */
    assert_int_equal(mq__seglog_start(l), 60);
    /* far in the future: everything but the active segment */
    assert_int_equal(mq__seglog_retain(l, 1000000), 3);
    assert_int_equal(mq__seglog_start(l), 90);
    assert_int_equal(l->nsegs, 1);
    assert_int_equal(count_files(dir, "log"), 1);
    assert_int_equal(count_files(dir, "index"), 0);
    size_t cnt = 0;
    assert_int_equal(mq__seglog_read(l, 0, 1000, 1 << 20, count_cb, &cnt), 10);
    mq__seglog_close(l);
}

/* ---- recovery ---- */

static void test_reopen_recovers_every_record(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(3000, MQ_FLUSH_SYNC);
    mq__seglog *l;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 400);
    size_t nsegs = l->nsegs;
    mq__seglog_close(l);

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(l->nsegs, nsegs);
    assert_int_equal(mq__seglog_start(l), 0);
    assert_int_equal(mq__seglog_end(l), 400);
    check_all(l, 0, 400);
    append_range(l, 400, 450);
    mq__seglog_close(l);

    /* a missing and a damaged index file are rebuilt by scanning */
    char path[PATH_MAX];
    seg_file(dir, 0, "index", path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    uint64_t b1 = l->segs[1]->base;
    size_t idx0 = l->segs[0]->n_idx;
    assert_true(idx0 > 0);
    mq__seglog_close(l);
    assert_int_equal(count_files(dir, "index"), count_files(dir, "log") - 1);
    seg_file(dir, b1, "index", path, sizeof(path));
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff\xff", 2, 50), 2);
    close(fd);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(l->segs[0]->n_idx, idx0);
    assert_int_equal(mq__seglog_end(l), 450);
    check_all(l, 0, 450);
    mq__seglog_close(l);
}

/* Reopen after damaging the tail; expect end `want`, dense records, and that
 * appends continue from there and survive another reopen. */
static void reopen_expect(const char *dir, const mq__seglog_config *cfg, uint64_t want)
{
    mq__seglog *l;

    assert_int_equal(mq__seglog_open(dir, cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), want);
    check_all(l, 0, want);
    append_range(l, want, want + 10);
    mq__seglog_close(l);
    assert_int_equal(mq__seglog_open(dir, cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), want + 10);
    check_all(l, 0, want + 10);
    mq__seglog_close(l);
}

static uint64_t rec_size(uint64_t i)
{
    tr t;
    tr_make(&t, i);
    return SEG_HDR + t.r.key_len + t.r.value_len;
}

static void test_torn_tail_truncated(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_NONE);
    mq__seglog *l;
    char path[PATH_MAX];

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 50);
    mq__seglog_close(l);
    seg_file(dir, 0, "log", path, sizeof(path));
    off_t full = file_size(path);

    /* cut into the last record's value, then into its header */
    assert_int_equal(truncate(path, full - 3), 0);
    reopen_expect(dir, &cfg, 49);
    full = file_size(path);
    assert_int_equal(truncate(path, full - (off_t)rec_size(58) + 10), 0);
    reopen_expect(dir, &cfg, 58);
    /* the tail was cut back to the last valid record */
    uint64_t want = 0;
    for (uint64_t i = 0; i < 68; i++)
        want += rec_size(i);
    assert_int_equal(file_size(path), (off_t)want);
}

static void test_torn_tail_garbage(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_NONE);
    mq__seglog *l;
    char path[PATH_MAX];
    unsigned char junk[4096];

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 50);
    mq__seglog_close(l);
    seg_file(dir, 0, "log", path, sizeof(path));
    off_t good = file_size(path);

    /* random bytes */
    uint32_t x = 99;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (unsigned char)(x >> 16);
    }
    append_bytes(path, junk, 37);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), 50);
    assert_int_equal(file_size(path), good);
    mq__seglog_close(l);

    /* zeros, as a filesystem may leave after a crash */
    memset(junk, 0, sizeof(junk));
    append_bytes(path, junk, sizeof(junk));
    reopen_expect(dir, &cfg, 50);

    /* a well-formed header whose CRC is wrong */
    tr t;
    tr_make(&t, 60);
    unsigned char rec[SEG_HDR + 128];
    size_t n = SEG_HDR + t.r.key_len + t.r.value_len;
    sk_le_put32(rec, (uint32_t)(n - 4));
    sk_le_put64(rec + 8, 60);
    sk_le_put64(rec + 16, 1);
    sk_le_put64(rec + 24, 2);
    sk_le_put64(rec + 32, 3);
    sk_le_put32(rec + 40, t.r.key_len);
    sk_le_put32(rec + 44, t.r.value_len);
    memcpy(rec + SEG_HDR, t.key, t.r.key_len);
    memcpy(rec + SEG_HDR + t.r.key_len, t.val, t.r.value_len);
    sk_le_put32(rec + 4, sk_crc32c(0, rec + 8, n - 8) ^ 1);
    append_bytes(path, rec, n);
    reopen_expect(dir, &cfg, 60);

    /* a valid record with the wrong offset (a stale record) */
    sk_le_put64(rec + 8, 12345);
    sk_le_put32(rec + 4, sk_crc32c(0, rec + 8, n - 8));
    append_bytes(path, rec, n);
    reopen_expect(dir, &cfg, 70);

    /* a flipped byte inside an earlier record: recovery stops there */
    good = 0;
    for (uint64_t i = 0; i < 20; i++)
        good += (off_t)rec_size(i);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char byte;
    assert_int_equal(pread(fd, &byte, 1, good + SEG_HDR), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, good + SEG_HDR), 1);
    close(fd);
    reopen_expect(dir, &cfg, 20);
}

static void test_torn_tail_after_roll(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1000, MQ_FLUSH_NONE);
    mq__seglog *l;
    char path[PATH_MAX];
    uint64_t n = 0, tail;

    /* append until a roll has just happened: the tail holds one record */
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    do {
        append_range(l, n, n + 1);
        n++;
        tail = l->segs[l->nsegs - 1]->base;
    } while (l->nsegs < 3 || n - tail != 1);
    mq__seglog_close(l);

    /* that record is torn: the tail segment recovers empty and is reused */
    seg_file(dir, tail, "log", path, sizeof(path));
    assert_int_equal(truncate(path, file_size(path) - 1), 0);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), tail);
    assert_int_equal(l->segs[l->nsegs - 1]->base, tail);
    assert_int_equal(file_size(path), 0);
    mq__seglog_close(l);
    reopen_expect(dir, &cfg, tail);

    /* a stale index for the tail (a crash between the index write and the
     * next segment's directory entry) is discarded */
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    tail = l->segs[l->nsegs - 1]->base;
    uint64_t end = mq__seglog_end(l);
    mq__seglog_close(l);
    seg_file(dir, tail, "index", path, sizeof(path));
    append_bytes(path, "MQIXgarbage", 11);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), end);
    mq__seglog_close(l);
    assert_int_equal(access(path, F_OK), -1);
}

/* ---- faults ---- */

static atomic_int fail_fsync;
static int fsync_inject(int fd)
{
    if (atomic_load(&fail_fsync)) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static void test_fsync_eio_is_fatal(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_SYNC);
    mq__seglog *l;
    uint64_t off = 77;
    tr t;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 5);
    seglog_fsync_fn = fsync_inject;
    atomic_store(&fail_fsync, 1);
    tr_make(&t, 5);
    assert_int_equal(mq__seglog_append(l, &t.r, &off), -EIO);
    assert_int_equal(off, 77);
    /* the disk "recovers", the log does not: no retry-and-continue */
    atomic_store(&fail_fsync, 0);
    assert_int_equal(mq__seglog_append(l, &t.r, &off), -EIO);
    assert_int_equal(mq__seglog_flush(l), -EIO);
    /* reads still serve what was durable */
    check_all(l, 0, 5);
    mq__seglog_close(l);

    /* reopening recovers; the record whose fsync failed may or may not be there */
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    uint64_t end = mq__seglog_end(l);
    assert_true(end == 5 || end == 6);
    check_all(l, 0, end);
    append_range(l, end, end + 3);
    mq__seglog_close(l);

    /* async: the flusher's failure fails later appends too */
    cfg.flush = MQ_FLUSH_ASYNC;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    atomic_store(&fail_fsync, 1);
    tr_make(&t, end + 3);
    assert_int_equal(mq__seglog_append(l, &t.r, &off), 0);
    for (int i = 0; i < 400; i++) {
        pthread_mutex_lock(&l->mu);
        int failed = l->failed;
        pthread_mutex_unlock(&l->mu);
        if (failed)
            break;
        usleep(5000);
    }
    assert_int_equal(mq__seglog_append(l, &t.r, &off), -EIO);
    atomic_store(&fail_fsync, 0);
    mq__seglog_close(l);
}

/* Write part of the buffer, then fail with ENOSPC. */
static int enospc_armed;
static ssize_t pwrite_enospc(int fd, const void *buf, size_t n, off_t off)
{
    if (enospc_armed == 2) {
        enospc_armed = 1;
        return pwrite(fd, buf, n / 2, off);
    }
    if (enospc_armed == 1) {
        errno = ENOSPC;
        return -1;
    }
    return pwrite(fd, buf, n, off);
}

static void test_enospc_stores_nothing(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_SYNC);
    mq__seglog *l;
    char path[PATH_MAX];
    uint64_t off = 77;
    tr t;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 10);
    seg_file(dir, 0, "log", path, sizeof(path));
    off_t before = file_size(path);

    seglog_pwrite_fn = pwrite_enospc;
    enospc_armed = 2; /* a partial write first */
    tr_make(&t, 10);
    assert_int_equal(mq__seglog_append(l, &t.r, &off), -ENOSPC);
    assert_int_equal(off, 77);
    assert_int_equal(file_size(path), before);
    assert_int_equal(mq__seglog_end(l), 10);
    assert_int_equal(mq__seglog_append(l, &t.r, &off), -ENOSPC); /* still full */
    assert_int_equal(file_size(path), before);

    enospc_armed = 0; /* space returns */
    append_range(l, 10, 20);
    check_all(l, 0, 20);
    mq__seglog_close(l);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), 20);
    check_all(l, 0, 20);
    mq__seglog_close(l);
}

/* ---- batches ---- */

static int pwrites_counted;

static ssize_t pwrite_counting(int fd, const void *buf, size_t n, off_t off)
{
    pwrites_counted++;
    return enospc_armed ? pwrite_enospc(fd, buf, n, off) : pwrite(fd, buf, n, off);
}

/* A batch is one write with consecutive offsets; a failed write stores none
 * of it; a batch that does not fit the segment starts the next one whole. */
static void test_append_batch(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(4096, MQ_FLUSH_SYNC);
    mq__seglog *l;
    tr t[40];
    mq__rec r[40];
    uint64_t first = 77;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    for (int i = 0; i < 40; i++) {
        tr_make(&t[i], (uint64_t)i);
        r[i] = t[i].r;
    }
    seglog_pwrite_fn = pwrite_counting;
    assert_int_equal(mq__seglog_append_batch(l, r, 10, &first), 0);
    assert_int_equal(first, 0);
    assert_int_equal(pwrites_counted, 1);
    assert_int_equal(mq__seglog_end(l), 10);
    assert_int_equal(l->durable_end, 10); /* SYNC: durable on return */

    /* disk full halfway through the write: nothing of the batch is kept */
    enospc_armed = 2;
    assert_int_equal(mq__seglog_append_batch(l, &r[10], 10, &first), -ENOSPC);
    assert_int_equal(first, 0);
    assert_int_equal(mq__seglog_end(l), 10);
    enospc_armed = 0;
    r[12].value = NULL; /* a bad record refuses the batch before any write */
    pwrites_counted = 0;
    assert_int_equal(mq__seglog_append_batch(l, &r[10], 10, &first), -EINVAL);
    assert_int_equal(mq__seglog_append_batch(l, &r[10], 0, &first), -EINVAL);
    assert_int_equal(pwrites_counted, 0);
    r[12] = t[12].r;

    /* 30 records (about 1.9 KiB) after 10: the first segment takes the next
     * batch of 30 only while it fits 4 KiB, so the second one is rolled to */
    assert_int_equal(mq__seglog_append_batch(l, &r[10], 30, &first), 0);
    assert_int_equal(first, 10);
    uint64_t segs_before = l->nsegs;
    for (int i = 0; i < 40; i++) {
        tr_make(&t[i], (uint64_t)(40 + i));
        r[i] = t[i].r;
    }
    assert_int_equal(mq__seglog_append_batch(l, r, 40, &first), 0);
    assert_int_equal(first, 40);
    assert_true(l->nsegs == segs_before + 1);
    assert_int_equal(l->segs[l->nsegs - 1]->base, 40);
    check_all(l, 0, 80);
    mq__seglog_close(l);

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), 80);
    check_all(l, 0, 80);
    mq__seglog_close(l);
}

/* ---- group commit ---- */

#define GC_THREADS 8
#define GC_PER_THREAD 250

typedef struct gc_arg {
    mq__seglog *l;
    int id;
    uint64_t offs[GC_PER_THREAD];
    int bad;
} gc_arg;

static void *gc_thread(void *p)
{
    gc_arg *a = p;
    char v[40];

    for (int i = 0; i < GC_PER_THREAD; i++) {
        snprintf(v, sizeof(v), "t%d-%d", a->id, i);
        mq__rec r = {.timestamp_ms = 1,
                     .producer_id = (uint64_t)a->id + 1,
                     .seq = (uint64_t)i + 1,
                     .value = v,
                     .value_len = (uint32_t)strlen(v)};
        uint64_t off;
        if (mq__seglog_append(a->l, &r, &off) != 0) {
            a->bad++;
            continue;
        }
        /* durable when acknowledged: the watermark has passed it */
        pthread_mutex_lock(&a->l->mu);
        if (a->l->durable_end <= off)
            a->bad++;
        pthread_mutex_unlock(&a->l->mu);
        a->offs[i] = off;
    }
    return NULL;
}

typedef struct gc_check {
    unsigned char seen[GC_THREADS][GC_PER_THREAD];
    uint64_t next;
} gc_check;

static int gc_cb(void *arg, const mq__rec *r)
{
    gc_check *c = arg;
    assert_int_equal(r->offset, c->next);
    c->next++;
    assert_true(r->producer_id >= 1 && r->producer_id <= GC_THREADS);
    assert_true(r->seq >= 1 && r->seq <= GC_PER_THREAD);
    c->seen[r->producer_id - 1][r->seq - 1]++;
    return 0;
}

static void test_group_commit(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(64 << 10, MQ_FLUSH_SYNC);
    mq__seglog *l;
    static gc_arg args[GC_THREADS];
    pthread_t th[GC_THREADS];

    /* single appender: one fsync per append */
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    uint64_t f0 = l->n_fsyncs;
    append_range(l, 0, 20);
    assert_int_equal(l->n_fsyncs - f0, 20);
    mq__seglog_close(l);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    f0 = l->n_fsyncs;
    for (int i = 0; i < GC_THREADS; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].l = l;
        args[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, gc_thread, &args[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(th[i], NULL);

    const uint64_t total = GC_THREADS * GC_PER_THREAD;
    pthread_mutex_lock(&l->mu);
    uint64_t appends = l->n_appends, fsyncs = l->n_fsyncs - f0;
    pthread_mutex_unlock(&l->mu);
    print_message("group commit: %" PRIu64 " appends, %" PRIu64 " fsyncs (%d threads, %.1f "
                  "appends per fsync)\n",
                  appends, fsyncs, GC_THREADS, (double)appends / (double)fsyncs);
    assert_int_equal(appends, total);
    assert_true(fsyncs < appends);

    static unsigned char used[GC_THREADS * GC_PER_THREAD];
    memset(used, 0, sizeof(used));
    for (int i = 0; i < GC_THREADS; i++) {
        assert_int_equal(args[i].bad, 0);
        for (int j = 0; j < GC_PER_THREAD; j++) {
            assert_true(args[i].offs[j] < total);
            assert_int_equal(used[args[i].offs[j]]++, 0);
            /* each thread's own appends are ordered */
            if (j > 0)
                assert_true(args[i].offs[j] > args[i].offs[j - 1]);
        }
    }
    assert_int_equal(mq__seglog_end(l), total);
    mq__seglog_close(l);

    /* every acknowledged record is there after reopen, exactly once */
    static gc_check chk;
    memset(&chk, 0, sizeof(chk));
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    while (chk.next < total)
        assert_true(mq__seglog_read(l, chk.next, 1000, 1 << 20, gc_cb, &chk) > 0);
    for (int i = 0; i < GC_THREADS; i++)
        for (int j = 0; j < GC_PER_THREAD; j++)
            assert_int_equal(chk.seen[i][j], 1);
    mq__seglog_close(l);
}

/* Readers run while appenders roll segments and retention removes them. */
typedef struct rr_arg {
    mq__seglog *l;
    atomic_int *stop;
    int bad;
} rr_arg;

typedef struct rr_pos {
    int started, bad;
    uint64_t next;
} rr_pos;

static int rr_cb(void *arg, const mq__rec *r)
{
    rr_pos *p = arg;
    char want[32];
    snprintf(want, sizeof(want), "%" PRIu64, r->offset);
    /* the first record may lie past the start we asked for: retention can
     * remove a segment between mq__seglog_start and the read */
    if ((p->started && r->offset != p->next) || r->value_len != strlen(want) ||
        memcmp(r->value, want, r->value_len) != 0) {
        p->bad = 1;
        return 1;
    }
    p->started = 1;
    p->next = r->offset + 1;
    return 0;
}

static void *rr_reader(void *p)
{
    rr_arg *a = p;
    while (!atomic_load(a->stop)) {
        rr_pos pos = {0};
        int n = mq__seglog_read(a->l, mq__seglog_start(a->l), 500, 1 << 20, rr_cb, &pos);
        if (n < 0 || pos.bad || (n > 0 && !pos.started)) {
            fprintf(stderr, "reader: n=%d bad=%d next=%" PRIu64 "\n", n, pos.bad, pos.next);
            a->bad++;
        }
    }
    return NULL;
}

static void *rr_retainer(void *p)
{
    rr_arg *a = p;
    while (!atomic_load(a->stop)) {
        if (mq__seglog_retain(a->l, 0) < 0)
            a->bad++;
        usleep(200);
    }
    return NULL;
}

static void test_concurrent_read_roll_retain(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(2048, MQ_FLUSH_NONE);
    mq__seglog *l;
    atomic_int stop = 0;
    pthread_t th[3];

    cfg.retention_bytes = 8192;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    rr_arg a[3] = {{l, &stop, 0}, {l, &stop, 0}, {l, &stop, 0}};
    assert_int_equal(pthread_create(&th[0], NULL, rr_reader, &a[0]), 0);
    assert_int_equal(pthread_create(&th[1], NULL, rr_reader, &a[1]), 0);
    assert_int_equal(pthread_create(&th[2], NULL, rr_retainer, &a[2]), 0);
    for (uint64_t i = 0; i < 20000; i++) {
        char v[32];
        snprintf(v, sizeof(v), "%" PRIu64, i);
        mq__rec r = {.value = v, .value_len = (uint32_t)strlen(v)};
        uint64_t off;
        assert_int_equal(mq__seglog_append(l, &r, &off), 0);
        assert_int_equal(off, i);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].bad, 0);
    }
    assert_true(mq__seglog_start(l) > 0);
    mq__seglog_close(l);
}

static void test_async_flusher(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_ASYNC);
    mq__seglog *l;

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    uint64_t f0 = l->n_fsyncs;
    append_range(l, 0, 10);
    int ok = 0;
    for (int i = 0; i < 400 && !ok; i++) {
        pthread_mutex_lock(&l->mu);
        ok = l->durable_end == 10 && l->n_fsyncs > f0;
        pthread_mutex_unlock(&l->mu);
        if (!ok)
            usleep(5000);
    }
    assert_true(ok);
    assert_int_equal(mq__seglog_flush(l), 0);
    mq__seglog_close(l);
}

static void test_open_rejects_bad_config(void **state)
{
    const char *dir = *state;
    mq__seglog *l = (mq__seglog *)1;
    mq__seglog_config cfg = cfg_make(0, MQ_FLUSH_NONE);

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), -EINVAL);
    assert_null(l);
    cfg = cfg_make(1 << 20, MQ_FLUSH_ASYNC);
    cfg.flush_interval_ms = 0;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), -EINVAL);

    /* a nested directory is created */
    char sub[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/a/b/p0", dir);
    cfg = cfg_make(1 << 20, MQ_FLUSH_NONE);
    assert_int_equal(mq__seglog_open(sub, &cfg, &l), 0);
    append_range(l, 0, 3);
    mq__seglog_close(l);
    assert_int_equal(count_files(sub, "log"), 1);
}

/* ---- offsets store ---- */

typedef struct fe {
    int n;
    uint64_t sum;
} fe;

static void fe_cb(void *arg, const char *group, uint32_t partition, uint64_t offset)
{
    fe *f = arg;
    assert_true(strcmp(group, "g1") == 0 || strcmp(group, "g2") == 0);
    f->n++;
    f->sum += offset + partition;
}

static void test_offsets_put_get_reopen(void **state)
{
    const char *dir = *state;
    char path[PATH_MAX];
    mq__offsets *o;
    uint64_t v;

    snprintf(path, sizeof(path), "%s/offsets", dir);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(mq__offsets_get(o, "g1", 0, &v), -ENOENT);
    assert_int_equal(mq__offsets_put(o, "g1", 0, 5), 0);
    assert_int_equal(mq__offsets_put(o, "g1", 1, 7), 0);
    assert_int_equal(mq__offsets_put(o, "g2", 0, 9), 0);
    assert_int_equal(mq__offsets_put(o, "g1", 0, 6), 0);
    assert_int_equal(mq__offsets_put(o, "g1", 3, 1ull << 40), 0);
    assert_int_equal(mq__offsets_put(o, "", 0, 1), -EINVAL);
    assert_int_equal(mq__offsets_get(o, "g1", 0, &v), 0);
    assert_int_equal(v, 6);
    assert_int_equal(mq__offsets_get(o, "g1", 2, &v), -ENOENT);
    assert_int_equal(mq__offsets_get(o, "g", 0, &v), -ENOENT);
    /* many keys: the table grows */
    for (uint32_t p = 0; p < 200; p++)
        assert_int_equal(mq__offsets_put(o, "g2", p + 10, p * 3), 0);
    mq__offsets_close(o);

    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(mq__offsets_get(o, "g1", 0, &v), 0);
    assert_int_equal(v, 6);
    assert_int_equal(mq__offsets_get(o, "g1", 1, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(mq__offsets_get(o, "g1", 3, &v), 0);
    assert_int_equal(v, 1ull << 40);
    assert_int_equal(mq__offsets_get(o, "g2", 0, &v), 0);
    assert_int_equal(v, 9);
    for (uint32_t p = 0; p < 200; p++) {
        assert_int_equal(mq__offsets_get(o, "g2", p + 10, &v), 0);
        assert_int_equal(v, p * 3);
    }
    fe f = {0};
    mq__offsets_foreach(o, fe_cb, &f);
    assert_int_equal(f.n, 204);
    uint64_t want = 6 + 7 + 1 + 9 + (1ull << 40) + 3;
    for (uint32_t p = 0; p < 200; p++)
        want += p * 3 + p + 10;
    assert_int_equal(f.sum, want);
    mq__offsets_close(o);
}

static void test_offsets_torn_tail(void **state)
{
    const char *dir = *state;
    char path[PATH_MAX];
    mq__offsets *o;
    uint64_t v;
    unsigned char rec[64];

    snprintf(path, sizeof(path), "%s/offsets", dir);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(mq__offsets_put(o, "grp", 0, 10), 0);
    assert_int_equal(mq__offsets_put(o, "grp", 0, 11), 0);
    mq__offsets_close(o);
    off_t good = file_size(path);

    /* half of a newer record: ignored, the file cut back */
    size_t n = ost_encode(rec, "grp", 3, 0, 12);
    append_bytes(path, rec, n - 4);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(mq__offsets_get(o, "grp", 0, &v), 0);
    assert_int_equal(v, 11);
    assert_int_equal(file_size(path), good);
    /* later puts follow valid records and survive reopen */
    assert_int_equal(mq__offsets_put(o, "grp", 0, 13), 0);
    mq__offsets_close(o);

    /* a whole record with a bad CRC, then garbage */
    n = ost_encode(rec, "grp", 3, 0, 14);
    rec[10] ^= 1;
    append_bytes(path, rec, n);
    append_bytes(path, "\x05\0\0\0zzzzzzzzzzzz", 16);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(mq__offsets_get(o, "grp", 0, &v), 0);
    assert_int_equal(v, 13);
    mq__offsets_close(o);
}

static void test_offsets_compaction(void **state)
{
    const char *dir = *state;
    char path[PATH_MAX], tmp[PATH_MAX];
    mq__offsets *o;
    uint64_t v;

    offsets_compact_min = 4096;
    snprintf(path, sizeof(path), "%s/offsets", dir);
    snprintf(tmp, sizeof(tmp), "%s/offsets.tmp", dir);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    for (uint64_t i = 1; i <= 2000; i++) {
        assert_int_equal(mq__offsets_put(o, "orders", (uint32_t)(i % 4), i), 0);
        assert_true(file_size(path) <= 4096 + 64);
    }
    assert_true(o->n_compactions >= 2000 * 27 / 4096 - 1);
    assert_int_equal(access(tmp, F_OK), -1);
    mq__offsets_close(o);

    /* a stale temp file from an interrupted compaction is ignored and removed */
    append_bytes(tmp, "junk", 4);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    for (uint32_t p = 0; p < 4; p++) {
        assert_int_equal(mq__offsets_get(o, "orders", p, &v), 0);
        assert_int_equal(v, 2000 - (4 - p) % 4);
    }
    mq__offsets_close(o);
}

static int ofail_fsync(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

static void test_offsets_faults(void **state)
{
    const char *dir = *state;
    char path[PATH_MAX];
    mq__offsets *o;
    uint64_t v;

    snprintf(path, sizeof(path), "%s/offsets", dir);
    assert_int_equal(mq__offsets_open(path, &o), 0);
    assert_int_equal(mq__offsets_put(o, "g", 0, 1), 0);
    off_t before = file_size(path);

    /* ENOSPC: partial record removed, value unchanged, later puts fine */
    offsets_pwrite_fn = pwrite_enospc;
    enospc_armed = 2;
    assert_int_equal(mq__offsets_put(o, "g", 0, 2), -ENOSPC);
    assert_int_equal(file_size(path), before);
    assert_int_equal(mq__offsets_get(o, "g", 0, &v), 0);
    assert_int_equal(v, 1);
    enospc_armed = 0;
    assert_int_equal(mq__offsets_put(o, "g", 0, 3), 0);

    /* EIO on fsync: fatal for the store */
    offsets_fsync_fn = ofail_fsync;
    assert_int_equal(mq__offsets_put(o, "g", 0, 4), -EIO);
    offsets_fsync_fn = offsets_sys_fsync;
    assert_int_equal(mq__offsets_put(o, "g", 0, 5), -EIO);
    assert_int_equal(mq__offsets_get(o, "g", 0, &v), 0);
    assert_int_equal(v, 3);
    mq__offsets_close(o);
}

/* ---- zeros written ahead of the records (cfg.prezero_bytes) ---- */

/* Bytes [from, to) of path are all zero. */
static int zero_from(const char *path, off_t from)
{
    unsigned char b[4096];
    int fd = open(path, O_RDONLY), ok = 1;
    ssize_t n;
    assert_true(fd >= 0);
    while ((n = pread(fd, b, sizeof b, from)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            ok &= b[i] == 0;
        from += n;
    }
    close(fd);
    return ok;
}

/* What a crash leaves: the files as they are while the log is open. */
static void copy_dir_files(const char *from, const char *to)
{
    DIR *d = opendir(from);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char src[PATH_MAX], dst[PATH_MAX];
        if (e->d_name[0] == '.')
            continue;
        snprintf(src, sizeof src, "%s/%s", from, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to, e->d_name);
        int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(in >= 0 && out >= 0);
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0)
            assert_int_equal(write(out, buf, (size_t)n), n);
        close(in);
        close(out);
    }
    closedir(d);
}

/* The active segment runs ahead of its records with zeros; a crash that
 * leaves them (or a torn record among them) recovers to the last record;
 * close cuts them. */
static void test_prezero_ahead_and_crash(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_SYNC);
    cfg.prezero_bytes = 16384;
    mq__seglog *l;
    char path[PATH_MAX], crash[256], cpath[PATH_MAX];

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 50);
    seg_file(dir, 0, "log", path, sizeof(path));
    off_t size = (off_t)l->segs[0]->size;
    assert_true(file_size(path) >= size + 8192); /* at least half a chunk ahead */
    assert_true(zero_from(path, size));
    check_all(l, 0, 50);
    /* records keep landing on zeros: the file grows a chunk at a time */
    append_range(l, 50, 400);
    size = (off_t)l->segs[0]->size;
    assert_true(size > 16384);
    assert_true(file_size(path) >= size + 8192);
    assert_true(file_size(path) <= size + 16384 + 4096);
    assert_true(zero_from(path, size));

    /* crash now: the copy recovers every record and drops the zeros */
    snprintf(crash, sizeof crash, "%s/crash", dir);
    assert_int_equal(mkdir(crash, 0755), 0);
    copy_dir_files(dir, crash);
    seg_file(crash, 0, "log", cpath, sizeof(cpath));
    reopen_expect(crash, &cfg, 400);
    seg_file(crash, 0, "log", cpath, sizeof(cpath));

    /* a torn record among the zeros: the first half of record 400 */
    tr t;
    tr_make(&t, 400);
    assert_int_equal(mq__seglog_append(l, &t.r, NULL), 0);
    copy_dir_files(dir, crash);
    int fd = open(cpath, O_RDWR);
    assert_true(fd >= 0);
    unsigned char junk[32] = {0};
    assert_int_equal(pwrite(fd, junk, sizeof junk, size + 20), (ssize_t)sizeof junk);
    close(fd);
    assert_true(file_size(cpath) > size + 8192);
    reopen_expect(crash, &cfg, 400);

    /* close cuts the zeros; the log reopens where it ended and fills again */
    mq__seglog_close(l);
    assert_int_equal(file_size(path), size + (off_t)rec_size(400));
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), 401);
    append_range(l, 401, 402);
    assert_true(file_size(path) > (off_t)l->segs[0]->size);
    check_all(l, 0, 402);
    mq__seglog_close(l);
}

/* Zeros never pass the segment size, and a sealed segment ends with its last
 * record: its index validates and recovery does not read zeros as damage. */
static void test_prezero_roll(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(4096, MQ_FLUSH_SYNC);
    cfg.prezero_bytes = 1 << 20;
    mq__seglog *l;
    char path[PATH_MAX];

    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 10);
    seg_file(dir, 0, "log", path, sizeof(path));
    assert_int_equal(file_size(path), 4096);
    append_range(l, 10, 300);
    assert_true(l->nsegs >= 3);
    for (size_t i = 0; i + 1 < l->nsegs; i++) {
        seg_file(dir, l->segs[i]->base, "log", path, sizeof(path));
        assert_int_equal(file_size(path), (off_t)l->segs[i]->size);
    }
    size_t sealed = l->nsegs - 1;
    mq__seglog_close(l);
    assert_int_equal(count_files(dir, "index"), sealed);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), 300);
    for (size_t i = 0; i + 1 < l->nsegs; i++) /* loaded from the index files */
        assert_true(l->segs[i]->n_idx > 0);
    check_all(l, 0, 300);
    mq__seglog_close(l);
}

/* Fail only the zero fills. */
static int zero_fill_fails;
static ssize_t pwrite_no_zeros(int fd, const void *buf, size_t n, off_t off)
{
    if (zero_fill_fails && n == SEG_ZEROS && ((const unsigned char *)buf)[0] == 0 &&
        !memcmp(buf, (const unsigned char *)buf + 1, n - 1)) {
        errno = ENOSPC;
        return -1;
    }
    return pwrite(fd, buf, n, off);
}

/* A disk too full for the zeros still takes records (appended plainly); a
 * record that does not fit either stores nothing and takes the zeros ahead
 * with it. */
static void test_prezero_disk_full(void **state)
{
    const char *dir = *state;
    mq__seglog_config cfg = cfg_make(1 << 20, MQ_FLUSH_SYNC);
    cfg.prezero_bytes = 1 << 20;
    mq__seglog *l;
    char path[PATH_MAX];
    tr t;

    seglog_pwrite_fn = pwrite_no_zeros;
    zero_fill_fails = 1;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 0, 20);
    seg_file(dir, 0, "log", path, sizeof(path));
    assert_int_equal(file_size(path), (off_t)l->segs[0]->size);
    assert_true(l->segs[0]->prezero_off);
    check_all(l, 0, 20);
    mq__seglog_close(l);

    /* with zeros ahead, a partial record write is cut with them */
    zero_fill_fails = 0;
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    append_range(l, 20, 30);
    off_t size = (off_t)l->segs[0]->size;
    assert_true(file_size(path) > size);
    seglog_pwrite_fn = pwrite_enospc;
    enospc_armed = 2;
    tr_make(&t, 30);
    assert_int_equal(mq__seglog_append(l, &t.r, NULL), -ENOSPC);
    assert_int_equal(file_size(path), size);
    assert_int_equal(l->segs[0]->file_len, (uint64_t)size);
    enospc_armed = 0;
    append_range(l, 30, 40);
    check_all(l, 0, 40);
    mq__seglog_close(l);
    assert_int_equal(mq__seglog_open(dir, &cfg, &l), 0);
    assert_int_equal(mq__seglog_end(l), 40);
    check_all(l, 0, 40);
    mq__seglog_close(l);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_crc32c_check_values),
        T(test_framing_round_trip),
        T(test_dense_offsets_across_rolls),
        T(test_read_mid_segment_via_index),
        T(test_read_limits),
        T(test_retention_by_size),
        T(test_retention_by_age),
        T(test_retention_unlinks_outside_mutex),
        T(test_trim_below),
        T(test_reopen_recovers_every_record),
        T(test_torn_tail_truncated),
        T(test_torn_tail_garbage),
        T(test_torn_tail_after_roll),
        T(test_fsync_eio_is_fatal),
        T(test_enospc_stores_nothing),
        T(test_append_batch),
        T(test_prezero_ahead_and_crash),
        T(test_prezero_roll),
        T(test_prezero_disk_full),
        T(test_group_commit),
        T(test_concurrent_read_roll_retain),
        T(test_async_flusher),
        T(test_open_rejects_bad_config),
        T(test_offsets_put_get_reopen),
        T(test_offsets_torn_tail),
        T(test_offsets_compaction),
        T(test_offsets_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
