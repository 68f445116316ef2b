/*
 * fuzz_order_log_replay.c - libFuzzer target: recovery of the memory
 * inventory's order events (sale/order_log.c over queue/).
 *
 * The input becomes the order log's segment file in a fresh data_dir
 * (<data_dir>/seckill.orders/0/00000000000000000000.log); then the gateway's
 * start is replayed: mq_create, sk_order_log_open (log recovery: a torn or
 * corrupt tail is truncated), sk_order_log_recover into an inventory. The
 * documented outcomes are the only ones allowed:
 *   - 0: every stored event decoded and was applied or ignored;
 *   - -EBADMSG: a stored record passed the log's checks but is not an order
 *     event (recovery must not guess, the gateway refuses to start);
 *   - another negative errno from the queue (-EIO: a log it cannot trust).
 * After a 0: stock never goes below zero, every order is counted in exactly
 * one state, one more event appended through the journal lands after the
 * recovered ones, and a second start finds the same events plus that one
 * (recovery is idempotent). Nothing may crash or leak.
 *
 * Input formats:
 *   - anything not starting with "OLEV": the whole input is the segment file;
 *   - "OLEV" then entries {u8 len, len bytes}: each entry is framed as a valid
 *     log record (CRC, offset) whose value is those bytes, so mutations reach
 *     the event decoder and sk_inventory_apply rather than the CRC check; an
 *     entry whose len runs past the input is written raw (a torn tail).
 *
 * replay.c runs tests/fuzz/corpus_order_log_replay/ through this same function
 * in the normal test suite; gen_corpus_order_log.c writes that corpus.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "le.h"
#include "mq.h"
#include "sale/store_memory.h"
#include "sale/order_log.h"

#define SEG_HDR 48 /* the log's record header (queue/seglog.c) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[64];

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_order_log_replay: invariant failed: %s\n", what);
        abort();
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0)
        remove(path);
    return 0;
}

static void dir_clear(void)
{
    nftw(fuzz_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void dir_remove(void)
{
    dir_clear();
    rmdir(fuzz_dir);
}

static void put(int fd, const void *buf, size_t len, size_t *at)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(*at + done));
        fuzz_check(w > 0, "write input file");
        done += (size_t)w;
    }
    *at += len;
}

static void lay_out(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir, SK_ORDER_TOPIC);
    fuzz_check(mkdir(path, 0755) == 0, "mkdir topic");
    snprintf(path, sizeof path, "%s/%s/0", fuzz_dir, SK_ORDER_TOPIC);
    fuzz_check(mkdir(path, 0755) == 0, "mkdir partition");
    snprintf(path, sizeof path, "%s/%s/0/%020d.log", fuzz_dir, SK_ORDER_TOPIC, 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    fuzz_check(fd >= 0, "create segment");
    size_t at = 0;
    if (size < 4 || memcmp(data, "OLEV", 4) != 0) {
        put(fd, data, size, &at);
        close(fd);
        return;
    }
    uint64_t offset = 0;
    for (size_t pos = 4; pos < size;) {
        size_t len = data[pos];
        if (len > size - pos - 1) {
            put(fd, data + pos, size - pos, &at); /* a torn tail */
            break;
        }
        uint8_t h[SEG_HDR];
        sk_le_put32(h, (uint32_t)(SEG_HDR - 4 + len));
        sk_le_put64(h + 8, offset);
        sk_le_put64(h + 16, 1767225600000ull + offset); /* timestamp */
        sk_le_put64(h + 24, 0);                         /* no producer id */
        sk_le_put64(h + 32, 0);
        sk_le_put32(h + 40, 0); /* key_len: replay does not read keys */
        sk_le_put32(h + 44, (uint32_t)len);
        uint32_t crc = sk_crc32c(0, h + 8, SEG_HDR - 8);
        sk_le_put32(h + 4, sk_crc32c(crc, data + pos + 1, len));
        put(fd, h, sizeof h, &at);
        put(fd, data + pos + 1, len, &at);
        pos += 1 + len;
        offset++;
    }
    close(fd);
}

static int count_cb(void *arg, const sk_order_event *ev)
{
    (void)ev;
    (*(int *)arg)++;
    return 0;
}

static const sk_item_spec items[] = {{"demo", 3, 1}, {"i1", 1000, 2}, {"x", 0, 1}};
#define NITEMS (sizeof items / sizeof items[0])

typedef struct start {
    mq *q;
    sk_order_log *log;
    sk_inventory *inv;
    int events; /* what sk_order_log_replay counted */
} start;

/* The gateway's start over fuzz_dir. 0, or the error recovery reported. */
static int start_open(start *s)
{
    memset(s, 0, sizeof *s);
    fuzz_check(mq_create(fuzz_dir, &s->q) == 0, "mq_create");
    int rc = sk_order_log_open(s->q, 5000, 3000, 1, &s->log);
    if (rc < 0)
        return rc;
    fuzz_check(sk_inventory_create(items, NITEMS, 1024, &s->inv) == 0, "inventory");
    int counted = 0;
    s->events = sk_order_log_replay(s->log, count_cb, &counted);
    size_t applied = 0;
    rc = sk_order_log_recover(s->log, s->inv, &applied);
    if (rc == 0) {
        fuzz_check(s->events >= 0, "replay and recover agree");
        fuzz_check(applied <= (size_t)s->events, "applied at most every event");
    }
    return rc;
}

static void start_close(start *s)
{
    if (s->inv)
        sk_inventory_destroy(s->inv);
    if (s->log)
        sk_order_log_close(s->log);
    mq_destroy(s->q);
}

static void check_inventory(sk_inventory *inv)
{
    int64_t counts[3];
    for (size_t i = 0; i < NITEMS; i++) {
        int it = sk_inventory_find(inv, items[i].id);
        fuzz_check(it >= 0, "item found");
        fuzz_check(sk_inventory_left(inv, it) >= 0, "stock never below zero");
        fuzz_check(sk_inventory_left(inv, it) <= items[i].stock, "stock never above its start");
    }
    sk_inventory_order_counts(inv, counts);
    fuzz_check(counts[0] >= 0 && counts[1] >= 0 && counts[2] >= 0, "order counts");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    start s;

    if (fuzz_dir[0] == '\0') {
        const char *tmp = getenv("TMPDIR"); /* TMPDIR=/dev/shm: no disk fsyncs */
        if (tmp == NULL || strlen(tmp) > sizeof fuzz_dir - 24)
            tmp = "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/fuzz_order_log.XXXXXX", tmp);
        fuzz_check(mkdtemp(fuzz_dir) != NULL, "mkdtemp");
        atexit(dir_remove);
    }
    dir_clear();
    lay_out(data, size);

    int rc = start_open(&s);
    if (rc < 0) {
        start_close(&s);
        dir_clear();
        return 0;
    }
    check_inventory(s.inv);
    int events = s.events;

    /* the log goes on after what recovery kept */
    sk_order_event ev = {.type = SK_ORDER_RESERVED,
                         .at_ms = 1767225600000ull,
                         .pay_deadline_ms = 1767226500000ull};
    strcpy(ev.order_id, "fuzz-order");
    strcpy(ev.item_id, "i1");
    strcpy(ev.user_id, "fuzz-user");
    memset(ev.request_id, 0xfe, sizeof ev.request_id);
    sk_journal j = sk_order_log_journal(s.log);
    int jrc = 0;
    fuzz_check(j.append(j.arg, &ev, 1, &jrc) == 0 && jrc == 0, "append after recovery");
    start_close(&s);

    fuzz_check(start_open(&s) == 0, "a second start recovers");
    fuzz_check(s.events == events + 1, "a second start finds the same events and the new one");
    check_inventory(s.inv);
    start_close(&s);
    dir_clear();
    return 0;
}
