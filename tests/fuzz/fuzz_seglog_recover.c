/*
 * fuzz_seglog_recover.c - libFuzzer target: log recovery (queue/seglog.c).
 *
 * The input becomes the files of one partition directory, then the log is
 * opened (recovery: scan, truncate the torn tail, drop discontinuities), every
 * recovered record is read, one record is appended and read back, and the log
 * is reopened once more. Nothing may crash or leak, and the log must keep its
 * own promises: dense offsets from start to end, the appended record gets
 * offset end and reads back byte for byte, a second recovery finds the same
 * range (recovery is idempotent).
 *
 * Input formats:
 *   - anything not starting with "MQFZ": the whole input is the segment file
 *     00000000000000000000.log;
 *   - "MQFZ" then up to FUZZ_MAX_FILES entries
 *       u8 kind (even: .log, odd: .index), u8 base, u16 len (little endian), len bytes
 *     so sealed segments, gaps and index files are reachable too;
 *   - "MQCR" then one segment file whose record CRCs the harness fixes up
 *     (walking the len fields), so mutations get past the CRC check and reach
 *     the length, offset and key/value-length checks behind it.
 *
 * replay_seglog.c runs every file of tests/fuzz/corpus_seglog/ through this
 * same function in the normal (gcc) test suite.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/seglog.h"

#define FUZZ_MAX_FILES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[64];

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_seglog_recover: invariant failed: %s\n", what);
        abort();
    }
}

static void dir_clear(void)
{
    DIR *d = opendir(fuzz_dir);
    struct dirent *e;
    char path[PATH_MAX];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", fuzz_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void dir_remove(void)
{
    dir_clear();
    rmdir(fuzz_dir);
}

static void write_file(uint64_t base, const char *ext, const uint8_t *buf, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%020" PRIu64 ".%s", fuzz_dir, base, ext);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    fuzz_check(fd >= 0, "create input file");
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, len - done);
        fuzz_check(w > 0, "write input file");
        done += (size_t)w;
    }
    close(fd);
}

/* "MQCR": rewrite the CRC of every record whose len field fits. */
static void lay_out_crc_fixed(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    fuzz_check(b != NULL, "malloc");
    memcpy(b, data, size);
    for (size_t pos = 0; pos + 8 <= size;) {
        uint32_t len = sk_le_get32(b + pos);
        if (len < 4 || len > size - pos - 4)
            break;
        sk_le_put32(b + pos + 4, sk_crc32c(0, b + pos + 8, len - 4));
        pos += 4 + (size_t)len;
    }
    write_file(0, "log", b, size);
    free(b);
}

static void lay_out(const uint8_t *data, size_t size)
{
    if (size >= 4 && memcmp(data, "MQCR", 4) == 0) {
        lay_out_crc_fixed(data + 4, size - 4);
        return;
    }
    if (size < 4 || memcmp(data, "MQFZ", 4) != 0) {
        write_file(0, "log", data, size);
        return;
    }
    size_t pos = 4;
    for (int i = 0; i < FUZZ_MAX_FILES && pos + 4 <= size; i++) {
        uint8_t kind = data[pos], base = data[pos + 1];
        size_t len = (size_t)data[pos + 2] | (size_t)data[pos + 3] << 8;
        pos += 4;
        if (len > size - pos)
            len = size - pos;
        write_file(base, kind & 1 ? "index" : "log", data + pos, len);
        pos += len;
    }
}

struct walk {
    uint64_t next; /* offset expected next */
    uint64_t n;
    const mq__rec *want; /* when set: the record that must come back */
    int matched;
};

static int walk_cb(void *arg, const mq__rec *r)
{
    struct walk *w = arg;
    fuzz_check(r->offset == w->next, "read offsets are dense");
    fuzz_check(r->key_len == 0 || r->key != NULL, "key pointer");
    fuzz_check(r->value_len == 0 || r->value != NULL, "value pointer");
    if (w->want) {
        const mq__rec *x = w->want;
        w->matched = r->timestamp_ms == x->timestamp_ms && r->producer_id == x->producer_id &&
                     r->seq == x->seq && r->key_len == x->key_len && r->value_len == x->value_len &&
                     !memcmp(r->key, x->key, x->key_len) &&
                     !memcmp(r->value, x->value, x->value_len);
    }
    w->next++;
    w->n++;
    return 0;
}

/* Read [start, end) in small batches; the records must be exactly those. */
static int read_all(mq__seglog *l, uint64_t start, uint64_t end)
{
    struct walk w = {.next = start};
    while (w.next < end) {
        int n = mq__seglog_read(l, w.next, 7, 1u << 16, walk_cb, &w);
        if (n < 0)
            return n; /* -EIO: a sealed segment's index pointed at garbage */
        fuzz_check(n > 0, "read makes progress below end");
    }
    fuzz_check(w.next == end, "read stops at end");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mq__seglog_config cfg = {
        .segment_bytes = 4096, .flush = MQ_FLUSH_NONE, .index_interval_bytes = 64};
    mq__seglog *l = NULL;

    if (fuzz_dir[0] == '\0') {
        const char *tmp = getenv("TMPDIR"); /* TMPDIR=/dev/shm: no disk fsyncs */
        if (tmp == NULL || strlen(tmp) > sizeof fuzz_dir - 20)
            tmp = "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/fuzz_seglog.XXXXXX", tmp);
        fuzz_check(mkdtemp(fuzz_dir) != NULL, "mkdtemp");
        atexit(dir_remove);
    }
    dir_clear();
    lay_out(data, size);

    if (mq__seglog_open(fuzz_dir, &cfg, &l) != 0) {
        dir_clear();
        return 0;
    }
    uint64_t start = mq__seglog_start(l), end = mq__seglog_end(l);
    fuzz_check(start <= end, "start <= end");
    int rc = read_all(l, start, end);

    /* Append after whatever recovery left and read it back. */
    static const char key[] = "fuzz-key", value[] = "fuzz-value";
    mq__rec rec = {.timestamp_ms = 1234,
                   .producer_id = 7,
                   .seq = 9,
                   .key = key,
                   .key_len = sizeof key - 1,
                   .value = value,
                   .value_len = sizeof value - 1};
    uint64_t off = 0;
    if (rc == 0 && mq__seglog_append(l, &rec, &off) == 0) {
        fuzz_check(off == end, "append gets the end offset");
        fuzz_check(mq__seglog_end(l) == end + 1, "end moves by one");
        struct walk w = {.next = off, .want = &rec};
        fuzz_check(mq__seglog_read(l, off, 1, SIZE_MAX, walk_cb, &w) == 1, "read back appended");
        fuzz_check(w.matched, "appended record reads back equal");
        end++;
    }
    mq__seglog_close(l);

    /* Recovery is idempotent: a second open finds the same records. */
    if (rc == 0 && mq__seglog_open(fuzz_dir, &cfg, &l) == 0) {
        fuzz_check(mq__seglog_end(l) == end, "reopen keeps the end");
        fuzz_check(mq__seglog_start(l) == start, "reopen keeps the start");
        fuzz_check(read_all(l, start, end) == 0, "reopen reads everything");
        mq__seglog_close(l);
    }
    dir_clear();
    return 0;
}
