/*
 * order_power_loss.c - power loss under the memory inventory's order log
 * (sale/order_log.c over queue/, order_flush = sync), in the manner
 * of SQLite's crash.test: a SIGKILL keeps the page cache, a power cut keeps
 * only what was synced.
 *
 * THE FILE LAYER. The writer's calls into the file system are wrapped
 * (-Wl,--wrap= of open, pwrite, ftruncate, fdatasync, fsync, rename, unlink,
 * mkdir, close: what queue/seglog.c, offsets.c and mq.c call to change files;
 * sync_file_range only starts writeback and promises nothing). The real files
 * always hold what the process sees; beside them the wrappers keep what a
 * disk would hold after a power cut:
 *   - every file (inode) has its content as of its last fsync/fdatasync, and
 *     the writes and truncations made since, in order;
 *   - every name in the data directory has the inode it points to now and the
 *     one a power cut would leave: creating, unlinking or renaming a name (and
 *     mkdir) becomes durable only with an fsync of its directory; a file or
 *     directory under a name that is not durable is gone with it.
 * A power cut ("crash") rewrites the data directory to that durable state,
 * then, for every file, applies a random prefix of its unsynced changes, the
 * next one torn at a random byte (the rest of its range left as it was or
 * filled with garbage). Real syncs are skipped: nothing here needs the
 * page cache on disk, only the record of what was synced.
 *
 * EACH ROUND forks a writer, which opens the data directory (recovering
 * whatever the last crash left, itself under the file layer), then decides
 * purchases in batches of 1-4 through the inventory's backend (each success
 * a reserved event in the order log, fsynced before decide returns: the 200
 * the buyer gets) and pays some of them, and reports every success and every
 * paid order to the parent through a pipe once the call returned. At a
 * random call into the file layer (1..MAX_CRASH_OP; sometimes during the
 * recovery) it crashes: writes the durable image and _exits. The parent then
 * recovers a copy of the directory (mq_create, sk_order_log_open,
 * sk_order_log_recover, as a gateway starts) and checks:
 *   - recovery returns 0: a torn tail is truncated, never fatal;
 *   - every order acknowledged in any round so far has exactly one reserved
 *     event, and every acknowledged payment exactly one paid event;
 *   - no order has two reserved or two paid events (acknowledged or not);
 *   - the inventory's stock left is its stock less the recovered orders.
 * The next round's writer starts from the crash image itself, not from the
 * parent's recovered copy, so recovery runs (and crashes) under the layer too.
 * Every CRASHES_PER_DIR rounds the data directory starts empty again.
 *
 * Small segments (ORDER_SEGMENT_BYTES) so segment rolls, sealed-segment index
 * files and new-segment directory fsyncs happen every few batches: the test
 * opens the order topic first with the order log's own settings but that
 * segment size, and sk_order_log_open then finds it open.
 *
 * Usage: order_power_loss [rounds [seed]]   (seed also from
 * SECKILL_CRASH_SEED; printed first, so a failure replays with it).
 * SECKILL_CRASH_TRACE=1 lists, at each crash, which names survive it.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mq.h"
#include "backend.h"
#include "sale/store_memory.h"
#include "sale/order_log.h"

#define MAX_CRASH_OP 200
#define CRASHES_PER_DIR 20 /* then a fresh data directory: the log stays small */
#define ORDER_SEGMENT_BYTES 16384
#define STOCK 100000000
#define MAX_FD 4096

/* ---- random numbers (splitmix64: one seed replays everything) ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return n ? rng_next(s) % n : 0;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "order_power_loss: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- the file layer ---- */

enum { OP_WRITE, OP_TRUNC };

typedef struct op {
    int kind;
    uint64_t off; /* OP_TRUNC: the new size */
    size_t len;
    uint8_t *data;
} op;

typedef struct inode {
    int is_dir;
    uint8_t *dur; /* content as of the last sync */
    size_t dur_len;
    op *ops; /* changes since, in order */
    size_t nops, cap_ops;
    uint8_t *img; /* crash: the content the image gets */
    size_t img_len;
    int img_done;
} inode;

typedef struct name {
    char *path;
    inode *live; /* what the path names now (NULL: nothing) */
    inode *dur;  /* what it names after a power cut */
} name;

static struct {
    int on; /* the writer child only */
    char root[PATH_MAX];
    size_t root_len;
    name *names;
    size_t nnames, cap_names;
    inode *fd_file[MAX_FD];
    char *fd_dir[MAX_FD];
    uint64_t ops_seen, crash_at;
    uint64_t rng;
    int sorted; /* names sorted by path: the crash only reads them */
} fl;

int __real_open(const char *path, int flags, ...);
ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
int __real_ftruncate(int fd, off_t len);
int __real_fdatasync(int fd);
int __real_fsync(int fd);
int __real_rename(const char *from, const char *to);
int __real_unlink(const char *path);
int __real_mkdir(const char *path, mode_t mode);
int __real_close(int fd);

int __wrap_open(const char *path, int flags, ...);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);
int __wrap_ftruncate(int fd, off_t len);
int __wrap_fdatasync(int fd);
int __wrap_fsync(int fd);
int __wrap_rename(const char *from, const char *to);
int __wrap_unlink(const char *path);
int __wrap_mkdir(const char *path, mode_t mode);
int __wrap_close(int fd);
int __wrap_sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags);

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* The data directory and everything below it. */
static int in_scope(const char *path)
{
    return fl.on && strncmp(path, fl.root, fl.root_len) == 0 &&
           (path[fl.root_len] == '/' || path[fl.root_len] == '\0');
}

static inode *inode_new(int is_dir)
{
    inode *i = calloc(1, sizeof *i);
    if (!i)
        die("out of memory");
    i->is_dir = is_dir;
    return i;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const name *)a)->path, ((const name *)b)->path);
}

static name *name_find(const char *path)
{
    if (fl.sorted) {
        name key = {.path = (char *)path};
        return bsearch(&key, fl.names, fl.nnames, sizeof *fl.names, by_path);
    }
    for (size_t i = 0; i < fl.nnames; i++)
        if (strcmp(fl.names[i].path, path) == 0)
            return &fl.names[i];
    return NULL;
}

static name *name_add(const char *path)
{
    name *n;
    if (fl.nnames == fl.cap_names) {
        fl.cap_names = fl.cap_names ? fl.cap_names * 2 : 256;
        fl.names = realloc(fl.names, fl.cap_names * sizeof *fl.names);
        if (!fl.names)
            die("out of memory");
    }
    n = &fl.names[fl.nnames++];
    n->path = strdup(path);
    n->live = n->dur = NULL;
    return n;
}

static name *name_get(const char *path)
{
    name *n = name_find(path);
    return n ? n : name_add(path);
}

static void op_add(inode *i, int kind, uint64_t off, const void *data, size_t len)
{
    if (i->nops == i->cap_ops) {
        i->cap_ops = i->cap_ops ? i->cap_ops * 2 : 16;
        i->ops = realloc(i->ops, i->cap_ops * sizeof *i->ops);
        if (!i->ops)
            die("out of memory");
    }
    op *o = &i->ops[i->nops++];
    o->kind = kind;
    o->off = off;
    o->len = len;
    o->data = NULL;
    if (kind == OP_WRITE) {
        o->data = xmalloc(len);
        memcpy(o->data, data, len);
    }
}

/* Apply o to (*buf, *len), only the first `keep` bytes of a write; with
 * garbage, the rest of the write's range gets random bytes. */
static void op_apply(uint8_t **buf, size_t *len, const op *o, size_t keep, int garbage)
{
    if (o->kind == OP_TRUNC) {
        size_t n = (size_t)o->off;
        if (n > *len) {
            *buf = realloc(*buf, n ? n : 1);
            if (!*buf)
                die("out of memory");
            memset(*buf + *len, 0, n - *len);
        }
        *len = n;
        return;
    }
    size_t end = (size_t)o->off + (garbage ? o->len : keep);
    if (end > *len) {
        *buf = realloc(*buf, end ? end : 1);
        if (!*buf)
            die("out of memory");
        memset(*buf + *len, 0, end - *len);
        *len = end;
    }
    if (keep)
        memcpy(*buf + o->off, o->data, keep);
    if (garbage)
        for (size_t k = keep; k < o->len; k++)
            (*buf)[o->off + k] = (uint8_t)rng_next(&fl.rng);
}

static void inode_sync(inode *i)
{
    for (size_t k = 0; k < i->nops; k++) {
        op_apply(&i->dur, &i->dur_len, &i->ops[k], i->ops[k].len, 0);
        free(i->ops[k].data);
    }
    i->nops = 0;
}

static size_t parent_len(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? (size_t)(slash - path) : 0;
}

/* fsync of a directory: its entries, as they are now, survive a power cut. */
static void dir_sync(const char *dir)
{
    size_t n = strlen(dir);
    for (size_t i = 0; i < fl.nnames; i++) {
        name *e = &fl.names[i];
        if (parent_len(e->path) == n && strncmp(e->path, dir, n) == 0)
            e->dur = e->live;
    }
}

/* A name survives when it and every directory above it (below root) do. */
static int name_survives(const name *e)
{
    char buf[PATH_MAX];
    if (!e->dur)
        return 0;
    snprintf(buf, sizeof buf, "%s", e->path);
    for (;;) {
        size_t p = parent_len(buf);
        if (p <= fl.root_len)
            return 1;
        buf[p] = '\0';
        const name *up = name_find(buf);
        if (!up || !up->dur || !up->dur->is_dir)
            return 0;
    }
}

/* What a file holds after the power cut: synced content, then a random
 * prefix of the later changes, the next one torn. */
static void inode_image(inode *i)
{
    if (i->img_done)
        return;
    i->img_done = 1;
    i->img_len = i->dur_len;
    i->img = xmalloc(i->dur_len);
    if (i->dur_len)
        memcpy(i->img, i->dur, i->dur_len);
    size_t keep_ops = (size_t)rng_below(&fl.rng, i->nops + 1);
    for (size_t k = 0; k < keep_ops; k++)
        op_apply(&i->img, &i->img_len, &i->ops[k], i->ops[k].len, 0);
    if (keep_ops < i->nops && i->ops[keep_ops].kind == OP_WRITE) {
        const op *o = &i->ops[keep_ops];
        op_apply(&i->img, &i->img_len, o, (size_t)rng_below(&fl.rng, o->len),
                 (int)rng_below(&fl.rng, 2));
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0 && remove(path) != 0)
        die("remove %s: %s", path, strerror(errno));
    return 0;
}

static void tree_clear(const char *root)
{
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    int fd = __real_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die("create %s: %s", path, strerror(errno));
    for (size_t done = 0; done < len;) {
        ssize_t w = __real_pwrite(fd, buf + done, len - done, (off_t)done);
        if (w <= 0)
            die("write %s: %s", path, strerror(errno));
        done += (size_t)w;
    }
    __real_close(fd);
}

/* The power cut: the data directory becomes what the disk kept. Never returns. */
static void crash(void)
{
    fl.on = 0;
    qsort(fl.names, fl.nnames, sizeof *fl.names, by_path); /* parents first */
    fl.sorted = 1;
    for (size_t i = 0; i < fl.nnames; i++)
        if (fl.names[i].dur && !fl.names[i].dur->is_dir)
            inode_image(fl.names[i].dur);
    int *survives = xmalloc(fl.nnames * sizeof *survives);
    for (size_t i = 0; i < fl.nnames; i++)
        survives[i] = name_survives(&fl.names[i]);
    if (getenv("SECKILL_CRASH_TRACE"))
        for (size_t i = 0; i < fl.nnames; i++)
            fprintf(stderr, "crash at op %" PRIu64 ": %s %s%s\n", fl.ops_seen,
                    fl.names[i].path + fl.root_len, survives[i] ? "survives" : "is lost",
                    fl.names[i].dur ? "" : " (its entry never synced)");
    tree_clear(fl.root);
    for (size_t i = 0; i < fl.nnames; i++) {
        name *e = &fl.names[i];
        if (!survives[i])
            continue;
        if (e->dur->is_dir) {
            if (__real_mkdir(e->path, 0755) != 0)
                die("mkdir %s: %s", e->path, strerror(errno));
        } else {
            write_file(e->path, e->dur->img, e->dur->img_len);
        }
    }
    _exit(0);
}

/* Every call that changes the disk is a point where the power may go. */
static void crash_point(void)
{
    if (++fl.ops_seen == fl.crash_at)
        crash();
}

static uint8_t *read_whole(const char *path, size_t *len)
{
    int fd = __real_open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        die("open %s: %s", path, strerror(errno));
    uint8_t *b = xmalloc((size_t)st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
        if (r <= 0)
            die("read %s: %s", path, strerror(errno));
        got += (size_t)r;
    }
    __real_close(fd);
    *len = got;
    return b;
}

/* The files found at start are on disk: durable as they are. */
static int scan_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    if (ftw->level == 0)
        return 0;
    name *n = name_add(path); /* the layer starts with no names */
    n->live = n->dur = inode_new(S_ISDIR(st->st_mode));
    if (!n->live->is_dir)
        n->live->dur = read_whole(path, &n->live->dur_len);
    return 0;
}

static void layer_start(const char *root, uint64_t crash_at, uint64_t seed)
{
    snprintf(fl.root, sizeof fl.root, "%s", root);
    fl.root_len = strlen(root);
    fl.crash_at = crash_at;
    fl.rng = seed;
    fl.on = 1;
    nftw(root, scan_entry, 16, FTW_PHYS);
}

int __wrap_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (!in_scope(path))
        return __real_open(path, flags, mode);
    struct stat st;
    int existed = stat(path, &st) == 0;
    if ((flags & O_CREAT && !existed) || (flags & O_TRUNC && existed))
        crash_point();
    int fd = __real_open(path, flags, mode);
    if (fd < 0 || fd >= MAX_FD)
        return fd;
    free(fl.fd_dir[fd]);
    fl.fd_dir[fd] = NULL;
    fl.fd_file[fd] = NULL;
    if ((flags & O_DIRECTORY) || (existed && S_ISDIR(st.st_mode))) {
        fl.fd_dir[fd] = strdup(path);
        return fd;
    }
    name *n = name_get(path);
    if (!existed || !n->live)
        n->live = inode_new(0);
    else if (flags & O_TRUNC)
        op_add(n->live, OP_TRUNC, 0, NULL, 0);
    fl.fd_file[fd] = n->live;
    return fd;
}

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    inode *i = fl.on && fd >= 0 && fd < MAX_FD ? fl.fd_file[fd] : NULL;
    if (!i)
        return __real_pwrite(fd, buf, n, off);
    if (fl.ops_seen + 1 == fl.crash_at && n > 0)
        op_add(i, OP_WRITE, (uint64_t)off, buf, n); /* in flight: may be torn */
    crash_point();
    ssize_t w = __real_pwrite(fd, buf, n, off);
    if (w > 0)
        op_add(i, OP_WRITE, (uint64_t)off, buf, (size_t)w);
    return w;
}

int __wrap_ftruncate(int fd, off_t len)
{
    inode *i = fl.on && fd >= 0 && fd < MAX_FD ? fl.fd_file[fd] : NULL;
    if (!i)
        return __real_ftruncate(fd, len);
    crash_point();
    int rc = __real_ftruncate(fd, len);
    if (rc == 0)
        op_add(i, OP_TRUNC, (uint64_t)len, NULL, 0);
    return rc;
}

/* No real sync anywhere in this program: the layer's record is the disk. */
static int layer_sync(int fd)
{
    if (!fl.on || fd < 0 || fd >= MAX_FD || (!fl.fd_file[fd] && !fl.fd_dir[fd]))
        return fcntl(fd, F_GETFD) < 0 ? -1 : 0;
    crash_point();
    if (fl.fd_file[fd])
        inode_sync(fl.fd_file[fd]);
    else
        dir_sync(fl.fd_dir[fd]);
    return 0;
}

int __wrap_fdatasync(int fd)
{
    return layer_sync(fd);
}

int __wrap_fsync(int fd)
{
    return layer_sync(fd);
}

int __wrap_sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
    (void)fd;
    (void)off;
    (void)n;
    (void)flags;
    return 0;
}

int __wrap_rename(const char *from, const char *to)
{
    if (!in_scope(from) || !in_scope(to))
        return __real_rename(from, to);
    crash_point();
    int rc = __real_rename(from, to);
    if (rc == 0) {
        inode *moved = name_get(from)->live;
        name_get(from)->live = NULL;
        name_get(to)->live = moved;
    }
    return rc;
}

int __wrap_unlink(const char *path)
{
    if (!in_scope(path))
        return __real_unlink(path);
    crash_point();
    int rc = __real_unlink(path);
    if (rc == 0)
        name_get(path)->live = NULL;
    return rc;
}

int __wrap_mkdir(const char *path, mode_t mode)
{
    if (!in_scope(path))
        return __real_mkdir(path, mode);
    struct stat st;
    if (stat(path, &st) == 0) { /* EEXIST: nothing changes */
        errno = EEXIST;
        return -1;
    }
    crash_point();
    int rc = __real_mkdir(path, mode);
    if (rc == 0)
        name_get(path)->live = inode_new(1);
    return rc;
}

int __wrap_close(int fd)
{
    if (fd >= 0 && fd < MAX_FD) {
        fl.fd_file[fd] = NULL;
        free(fl.fd_dir[fd]);
        fl.fd_dir[fd] = NULL;
    }
    return __real_close(fd);
}

/* ---- the writer ---- */

typedef struct ack {
    char kind; /* 'R': order reserved (purchase answered 200), 'P': order paid */
    char order_id[SK_ORDER_ID_MAX + 1];
} ack;

static uint64_t wall_now = 1767225600000ull;

static uint64_t wall_ms(void *arg)
{
    (void)arg;
    return wall_now;
}

typedef struct opened {
    mq *q;
    sk_order_log *log;
    sk_inventory *inv;
} opened;

/* What a gateway with the memory inventory does at start (gateway.c
 * orders_open), with the order topic's segments made small first. */
static int open_orders(const char *dir, opened *o, size_t *applied)
{
    static const sk_item_spec items[] = {{"demo", STOCK, 1000}};
    mq_topic_config tc;
    mq_topic *t;
    int rc;

    memset(o, 0, sizeof *o);
    rc = mq_create(dir, &o->q);
    if (rc < 0)
        return rc;
    /* the order log's settings (order_log.c sk_order_log_open), small segments */
    mq_topic_config_init(&tc);
    tc.partitions = 1;
    tc.storage = MQ_STORAGE_LOG;
    tc.flush = MQ_FLUSH_SYNC;
    tc.flush_interval_ms = SK_ORDER_ASYNC_FLUSH_MS;
    tc.max_backlog_msgs = UINT64_MAX / 4;
    tc.max_backlog_bytes = UINT64_MAX / 4;
    tc.max_record_bytes = SK_ORDER_EVENT_MAX + SK_ORDER_ID_MAX;
    tc.segment_bytes = ORDER_SEGMENT_BYTES;
    rc = mq_topic_open(o->q, SK_ORDER_TOPIC, &tc, &t);
    if (rc == 0)
        rc = sk_order_log_open(o->q, 5000, 3000, 1, &o->log);
    if (rc == 0)
        rc = sk_inventory_create(items, 1, 1024, &o->inv);
    if (rc == 0)
        rc = sk_order_log_recover(o->log, o->inv, applied);
    return rc;
}

static void close_orders(opened *o)
{
    if (o->inv)
        sk_inventory_destroy(o->inv);
    if (o->log)
        sk_order_log_close(o->log);
    if (o->q)
        mq_destroy(o->q);
}

static void send_ack(int fd, char kind, const char *order_id)
{
    ack a;
    memset(&a, 0, sizeof a);
    a.kind = kind;
    snprintf(a.order_id, sizeof a.order_id, "%s", order_id);
    if (write(fd, &a, sizeof a) != (ssize_t)sizeof a) /* < PIPE_BUF: atomic */
        _exit(4);
}

static void writer(const char *dir, int ack_fd, uint64_t crash_at, uint64_t seed)
{
    opened o;
    uint64_t rng = seed;
    char paid_pool[64][SK_ORDER_ID_MAX + 1];
    size_t npool = 0;

    layer_start(dir, crash_at, rng_next(&rng));
    int rc = open_orders(dir, &o, NULL);
    if (rc < 0) {
        fprintf(stderr, "order_power_loss: writer: start after a crash: %s\n", strerror(-rc));
        _exit(3);
    }
    sk_journal j = sk_order_log_journal(o.log);
    sk_orders_config oc = {.pay_timeout_ms = 3600000, .journal = &j, .wall_ms = wall_ms};
    sk_inventory_set_orders(o.inv, &oc);
    sk_backend be = sk_inventory_backend(o.inv);

    for (int round = 0; round < 1000000; round++) {
        sk_decide reqs[4];
        sk_outcome outs[4];
        int64_t left[4];
        uint8_t rids[4][16];
        char users[4][16];
        size_t n = 1 + (size_t)rng_below(&rng, 4);
        wall_now += 3;
        for (size_t i = 0; i < n; i++) {
            for (int k = 0; k < 16; k++)
                rids[i][k] = (uint8_t)rng_next(&rng);
            snprintf(users[i], sizeof users[i], "u%u", (unsigned)rng_below(&rng, 5000));
            reqs[i] = (sk_decide){.item_id = "demo", .user_id = users[i],
                                  .request_id = rids[i], .verdict = SK_SUCCESS};
        }
        rc = be.decide(be.impl, reqs, n, outs, left);
        if (rc < 0) {
            fprintf(stderr, "order_power_loss: writer: decide: %s\n", strerror(-rc));
            _exit(3);
        }
        for (size_t i = 0; i < n; i++) {
            if (outs[i].result != SK_SUCCESS)
                continue;
            send_ack(ack_fd, 'R', outs[i].order_id);
            if (npool < 64)
                memcpy(paid_pool[npool++], outs[i].order_id, SK_ORDER_ID_MAX + 1);
        }
        if (npool && rng_below(&rng, 3) == 0) {
            size_t k = (size_t)rng_below(&rng, npool);
            rc = sk_inventory_order_pay(o.inv, paid_pool[k], wall_now);
            if (rc == 0)
                send_ack(ack_fd, 'P', paid_pool[k]);
            else if (rc != -EAGAIN)
                _exit(5);
            memcpy(paid_pool[k], paid_pool[--npool], SK_ORDER_ID_MAX + 1);
        }
    }
    crash(); /* the crash point was never reached: cut the power now */
}

/* ---- the parent: what must have survived ---- */

typedef struct entry {
    char id[SK_ORDER_ID_MAX + 1];
    uint8_t acked_r, acked_p; /* acknowledged in some round */
    uint32_t seen_r, seen_p;  /* events in the recovered log (this check) */
} entry;

static struct {
    entry *slots;
    size_t cap, n;
} tab;

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static entry *tab_get(const char *id)
{
    if (tab.n * 2 >= tab.cap) {
        entry *old = tab.slots;
        size_t oc = tab.cap;
        tab.cap = tab.cap ? tab.cap * 2 : 4096;
        tab.slots = calloc(tab.cap, sizeof *tab.slots);
        if (!tab.slots)
            die("out of memory");
        tab.n = 0;
        for (size_t i = 0; i < oc; i++)
            if (old[i].id[0]) {
                *tab_get(old[i].id) = old[i];
            }
        free(old);
    }
    size_t i = hash_id(id) & (tab.cap - 1);
    while (tab.slots[i].id[0] && strcmp(tab.slots[i].id, id) != 0)
        i = (i + 1) & (tab.cap - 1);
    if (!tab.slots[i].id[0]) {
        snprintf(tab.slots[i].id, sizeof tab.slots[i].id, "%s", id);
        tab.n++;
    }
    return &tab.slots[i];
}

static int count_event(void *arg, const sk_order_event *ev)
{
    (void)arg;
    entry *e = tab_get(ev->order_id);
    if (ev->type == SK_ORDER_RESERVED)
        e->seen_r++;
    else if (ev->type == SK_ORDER_PAID)
        e->seen_p++;
    return 0;
}

static int copy_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw);
static const char *copy_from, *copy_to;

static int copy_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    char dst[PATH_MAX];
    (void)flag;
    if (ftw->level == 0)
        return 0;
    snprintf(dst, sizeof dst, "%s%s", copy_to, path + strlen(copy_from));
    if (S_ISDIR(st->st_mode)) {
        if (mkdir(dst, 0755) != 0)
            die("mkdir %s: %s", dst, strerror(errno));
    } else {
        size_t len;
        uint8_t *b = read_whole(path, &len);
        write_file(dst, b, len);
        free(b);
    }
    return 0;
}

static void tree_copy(const char *from, const char *to)
{
    tree_clear(to);
    copy_from = from;
    copy_to = to;
    nftw(from, copy_entry, 16, FTW_PHYS);
}

/* Recover a copy of the crash image and check it. Returns events found. */
static size_t check(const char *image, const char *copy, int round, uint64_t seed)
{
    opened o;
    size_t applied = 0;
    tree_copy(image, copy);
    for (size_t i = 0; i < tab.cap; i++)
        tab.slots[i].seen_r = tab.slots[i].seen_p = 0;
    int rc = open_orders(copy, &o, &applied);
    if (rc < 0)
        die("round %d (seed %" PRIu64 "): recovery after the crash failed: %s", round, seed,
            strerror(-rc));
    int events = sk_order_log_replay(o.log, count_event, NULL);
    if (events < 0)
        die("round %d: replay: %s", round, strerror(-events));
    size_t orders = 0;
    for (size_t i = 0; i < tab.cap; i++) {
        entry *e = &tab.slots[i];
        if (!e->id[0])
            continue;
        if (e->acked_r && e->seen_r != 1)
            die("round %d (seed %" PRIu64 "): acknowledged order %s has %u reserved events",
                round, seed, e->id, e->seen_r);
        if (e->acked_p && e->seen_p != 1)
            die("round %d (seed %" PRIu64 "): acknowledged payment of %s has %u paid events",
                round, seed, e->id, e->seen_p);
        if (e->seen_r > 1 || e->seen_p > 1)
            die("round %d (seed %" PRIu64 "): order %s stored twice (%u reserved, %u paid)",
                round, seed, e->id, e->seen_r, e->seen_p);
        orders += e->seen_r;
    }
    if (sk_inventory_left(o.inv, 0) != STOCK - (int64_t)orders)
        die("round %d: stock left %" PRId64 " after %zu orders", round,
            sk_inventory_left(o.inv, 0), orders);
    close_orders(&o);
    return (size_t)events;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    const char *env = getenv("SECKILL_CRASH_SEED");
    uint64_t seed = argc > 2   ? strtoull(argv[2], NULL, 0)
                    : env      ? strtoull(env, NULL, 0)
                               : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    printf("order_power_loss: %d crashes, seed %" PRIu64 " (replay: %s %d %" PRIu64 ")\n",
           rounds, seed, argv[0], rounds, seed);
    fflush(stdout);

    char base[PATH_MAX - 16], image[PATH_MAX], copy[PATH_MAX];
    /* thousands of small files a run: memory (/dev/shm) unless TMPDIR says */
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base, sizeof base, "%s/order_power_loss.XXXXXX", tmp);
    if (!mkdtemp(base))
        die("mkdtemp: %s", strerror(errno));
    snprintf(image, sizeof image, "%s/image", base);
    snprintf(copy, sizeof copy, "%s/check", base);
    if (mkdir(image, 0755) != 0 || mkdir(copy, 0755) != 0)
        die("mkdir: %s", strerror(errno));

    uint64_t rng = seed, acked_r = 0, acked_p = 0, in_recovery = 0;
    size_t events = 0;
    for (int r = 0; r < rounds; r++) {
        if (r % CRASHES_PER_DIR == 0) {
            tree_clear(image);
            if (tab.slots)
                memset(tab.slots, 0, tab.cap * sizeof *tab.slots);
            tab.n = 0;
        }
        uint64_t crash_at = 1 + rng_below(&rng, MAX_CRASH_OP);
        uint64_t child_seed = rng_next(&rng);
        int p[2];
        if (pipe(p) != 0)
            die("pipe: %s", strerror(errno));
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(p[0]);
            writer(image, p[1], crash_at, child_seed);
        }
        close(p[1]);
        ack a;
        ssize_t got;
        size_t acks = 0;
        while ((got = read(p[0], &a, sizeof a)) == (ssize_t)sizeof a) {
            entry *e = tab_get(a.order_id);
            if (a.kind == 'R' && !e->acked_r) {
                e->acked_r = 1;
                acked_r++;
            } else if (a.kind == 'P' && !e->acked_p) {
                e->acked_p = 1;
                acked_p++;
            }
            acks++;
        }
        close(p[0]);
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("round %d (seed %" PRIu64 "): writer failed (status %d)", r, seed, st);
        if (acks == 0)
            in_recovery++;
        events = check(image, copy, r, seed);
    }
    printf("order_power_loss: %d crashes (%" PRIu64 " before the first acknowledgement of "
           "their round), %" PRIu64 " orders and %" PRIu64 " payments acknowledged, all "
           "recovered exactly once; %zu events in the last log\n",
           rounds, in_recovery, acked_r, acked_p, events);
    tree_clear(base);
    rmdir(base);
    free(tab.slots);
    return 0;
}
