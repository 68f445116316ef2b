/*
 * offsets.c - committed offsets of consumer groups, persisted beside the log.
 *
 * FILE FORMAT: an append-only sequence of records (little endian)
 *     0  u32 len        bytes after the crc field = 14 + group_len
 *     4  u32 crc        CRC32C of bytes [8, 8 + len)
 *     8  u32 partition
 *    12  u64 offset
 *    20  u16 group_len  1..OFFSETS_MAX_GROUP
 *    22  group bytes (no NUL)
 *   The last record for a (group, partition) wins.
 *
 * DURABILITY: put writes one record and fdatasyncs before it returns; the
 * in-memory table changes only after that, so get never reports a value a
 * crash could take back. A failed fdatasync is fatal (every later put returns
 * -EIO); ENOSPC truncates the partial record away and returns -ENOSPC.
 *
 * LOAD: records are read until the first one whose length or CRC is wrong;
 * the file is truncated there (a torn tail from a crash), so later appends
 * follow valid records.
 *
 * COMPACTION: once the file exceeds max(offsets_compact_min, 4 x live bytes),
 * put rewrites the live entries to <path>.tmp, fdatasyncs it, renames it over
 * <path> and fsyncs the directory. A crash at any point leaves either the old
 * or the new file, both complete; a stale .tmp is removed on open. A failed
 * compaction leaves the old file in use (the put itself already succeeded).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "seglog.h"
#include "log.h"

#define OFFSETS_HDR 22u
#define OFFSETS_MAX_GROUP 1024u

/* fault-injection seam and compaction threshold, replaced by the unit test */
static ssize_t offsets_sys_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}
static int offsets_sys_fsync(int fd)
{
    return fdatasync(fd);
}
static ssize_t (*offsets_pwrite_fn)(int, const void *, size_t, off_t) = offsets_sys_pwrite;
static int (*offsets_fsync_fn)(int) = offsets_sys_fsync;
static uint64_t offsets_compact_min = 1u << 20;

typedef struct ost_entry {
    char *group; /* NULL: free slot */
    uint32_t partition;
    uint64_t offset;
    uint32_t hash;
} ost_entry;

struct mq__offsets {
    pthread_mutex_t mu;
    char *path;
    char *tmp_path;
    char *dir;
    int fd;
    uint64_t size; /* bytes of valid records in the file */
    int failed;
    ost_entry *tab; /* open addressing, power-of-two capacity */
    size_t cap, used;
    uint64_t live;          /* bytes a compacted file would take */
    uint64_t n_compactions; /* the tests read it */
};

static uint32_t ost_hash(const char *group, size_t glen, uint32_t partition)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < glen; i++)
        h = (h ^ (unsigned char)group[i]) * 16777619u;
    for (int i = 0; i < 4; i++)
        h = (h ^ ((partition >> (8 * i)) & 0xff)) * 16777619u;
    return h;
}

static ost_entry *ost_find(mq__offsets *o, const char *group, size_t glen, uint32_t partition,
                           uint32_t h)
{
    if (o->cap == 0)
        return NULL;
    for (size_t i = h & (o->cap - 1);; i = (i + 1) & (o->cap - 1)) {
        ost_entry *e = &o->tab[i];
        if (e->group == NULL)
            return e;
        if (e->hash == h && e->partition == partition && strlen(e->group) == glen &&
            memcmp(e->group, group, glen) == 0)
            return e;
    }
}

static int ost_grow(mq__offsets *o)
{
    size_t cap = o->cap ? o->cap * 2 : 16;
    ost_entry *t = calloc(cap, sizeof(*t));

    if (t == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < o->cap; i++) {
        ost_entry *e = &o->tab[i];
        if (e->group == NULL)
            continue;
        size_t j = e->hash & (cap - 1);
        while (t[j].group != NULL)
            j = (j + 1) & (cap - 1);
        t[j] = *e;
    }
    free(o->tab);
    o->tab = t;
    o->cap = cap;
    return 0;
}

/* Set the in-memory value, inserting when new. */
static int ost_set(mq__offsets *o, const char *group, size_t glen, uint32_t partition,
                   uint64_t offset)
{
    uint32_t h = ost_hash(group, glen, partition);
    ost_entry *e;

    if ((o->used + 1) * 4 > o->cap * 3) {
        int rc = ost_grow(o);
        if (rc < 0)
            return rc;
    }
    e = ost_find(o, group, glen, partition, h);
    if (e->group == NULL) {
        e->group = strndup(group, glen);
        if (e->group == NULL)
            return -ENOMEM;
        e->partition = partition;
        e->hash = h;
        o->used++;
        o->live += OFFSETS_HDR + glen;
    }
    e->offset = offset;
    return 0;
}

static size_t ost_encode(unsigned char *b, const char *group, size_t glen, uint32_t partition,
                         uint64_t offset)
{
    sk_le_put32(b, (uint32_t)(OFFSETS_HDR - 8 + glen));
    sk_le_put32(b + 8, partition);
    sk_le_put64(b + 12, offset);
    b[20] = (unsigned char)(glen & 0xff);
    b[21] = (unsigned char)(glen >> 8);
    memcpy(b + OFFSETS_HDR, group, glen);
    sk_le_put32(b + 4, sk_crc32c(0, b + 8, OFFSETS_HDR - 8 + glen));
    return OFFSETS_HDR + glen;
}

static int ost_write_all(int fd, const unsigned char *b, size_t n, uint64_t at)
{
    size_t done = 0;

    while (done < n) {
        ssize_t w = offsets_pwrite_fn(fd, b + done, n - done, (off_t)(at + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -ENOSPC;
        done += (size_t)w;
    }
    return 0;
}

static int ost_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (offsets_fsync_fn(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Parse the file, fill the table; *valid = bytes of good records. */
static int ost_load(mq__offsets *o, uint64_t *valid)
{
    struct stat st;
    unsigned char *b = NULL;
    size_t pos = 0, got = 0;
    int rc = 0;

    if (fstat(o->fd, &st) != 0)
        return -errno;
    if (st.st_size == 0) {
        *valid = 0;
        return 0;
    }
    b = malloc((size_t)st.st_size);
    if (b == NULL)
        return -ENOMEM;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(o->fd, b + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out_free;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    while (got - pos >= OFFSETS_HDR) {
        const unsigned char *p = b + pos;
        uint32_t len = sk_le_get32(p);
        size_t glen = (size_t)p[20] | (size_t)p[21] << 8;
        if (len < OFFSETS_HDR - 8 + 1 || len > OFFSETS_HDR - 8 + OFFSETS_MAX_GROUP ||
            glen != len - (OFFSETS_HDR - 8) || got - pos < 8 + (size_t)len ||
            sk_crc32c(0, p + 8, len) != sk_le_get32(p + 4))
            break;
        rc = ost_set(o, (const char *)p + OFFSETS_HDR, glen, sk_le_get32(p + 8),
                     sk_le_get64(p + 12));
        if (rc < 0)
            goto out_free;
        pos += 8 + len;
    }
    *valid = pos;
out_free:
    free(b);
    return rc;
}

int mq__offsets_open(const char *path, mq__offsets **out)
{
    mq__offsets *o = NULL;
    uint64_t valid = 0;
    struct stat st;
    int rc;

    *out = NULL;
    if (path == NULL || *path == '\0')
        return -EINVAL;
    o = calloc(1, sizeof(*o));
    if (o == NULL)
        return -ENOMEM;
    o->fd = -1;
    o->path = strdup(path);
    o->tmp_path = malloc(strlen(path) + 5);
    o->dir = strdup(path);
    if (o->path == NULL || o->tmp_path == NULL || o->dir == NULL) {
        rc = -ENOMEM;
        goto out_free;
    }
    sprintf(o->tmp_path, "%s.tmp", path);
    char *slash = strrchr(o->dir, '/');
    if (slash == NULL)
        strcpy(o->dir, ".");
    else if (slash == o->dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    (void)unlink(o->tmp_path); /* an interrupted compaction; the main file is intact */

    o->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        rc = -errno;
        goto out_free;
    }
    rc = ost_load(o, &valid);
    if (rc < 0)
        goto out_close;
    if (fstat(o->fd, &st) != 0) {
        rc = -errno;
        goto out_close;
    }
    if ((uint64_t)st.st_size != valid) {
        if (ftruncate(o->fd, (off_t)valid) != 0) {
            rc = -errno;
            goto out_close;
        }
    }
    if (offsets_fsync_fn(o->fd) != 0) {
        rc = -EIO;
        goto out_close;
    }
    rc = ost_fsync_dir(o->dir); /* the file may have just been created */
    if (rc < 0)
        goto out_close;
    o->size = valid;
    pthread_mutex_init(&o->mu, NULL);
    *out = o;
    return 0;

out_close:
    close(o->fd);
out_free:
    for (size_t i = 0; i < o->cap; i++)
        free(o->tab[i].group);
    free(o->tab);
    free(o->dir);
    free(o->tmp_path);
    free(o->path);
    free(o);
    return rc;
}

void mq__offsets_close(mq__offsets *o)
{
    if (o == NULL)
        return;
    close(o->fd);
    for (size_t i = 0; i < o->cap; i++)
        free(o->tab[i].group);
    free(o->tab);
    free(o->dir);
    free(o->tmp_path);
    free(o->path);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

/* Rewrite the live entries into a fresh file. Caller holds mu. */
static int ost_compact(mq__offsets *o)
{
    unsigned char *b = NULL;
    size_t n = 0;
    int fd = -1, rc;

    b = malloc(o->live ? (size_t)o->live : 1);
    if (b == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < o->cap; i++) {
        const ost_entry *e = &o->tab[i];
        if (e->group != NULL)
            n += ost_encode(b + n, e->group, strlen(e->group), e->partition, e->offset);
    }
    fd = open(o->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    rc = ost_write_all(fd, b, n, 0);
    if (rc < 0)
        goto out_unlink;
    if (offsets_fsync_fn(fd) != 0) {
        rc = -errno;
        goto out_unlink;
    }
    if (rename(o->tmp_path, o->path) != 0) {
        rc = -errno;
        goto out_unlink;
    }
    /* From here the new file is the store whatever happens. */
    close(o->fd);
    o->fd = fd;
    o->size = n;
    o->n_compactions++;
    rc = ost_fsync_dir(o->dir);
    if (rc < 0) {
        /* The rename may not survive a crash; either file holds every value,
         * but a later put must not be acknowledged on an undurable name. */
        o->failed = 1;
        rc = -EIO;
    }
    goto out_free;
out_unlink:
    close(fd);
    unlink(o->tmp_path);
out_free:
    free(b);
    return rc;
}

int mq__offsets_put(mq__offsets *o, const char *group, uint32_t partition, uint64_t offset)
{
    unsigned char b[OFFSETS_HDR + OFFSETS_MAX_GROUP];
    size_t glen, n;
    int rc;

    if (group == NULL)
        return -EINVAL;
    glen = strlen(group);
    if (glen == 0 || glen > OFFSETS_MAX_GROUP)
        return -EINVAL;
    n = ost_encode(b, group, glen, partition, offset);

    pthread_mutex_lock(&o->mu);
    if (o->failed) {
        rc = -EIO;
        goto out_unlock;
    }
    rc = ost_write_all(o->fd, b, n, o->size);
    if (rc < 0) {
        if (rc == -EDQUOT)
            rc = -ENOSPC;
        if (ftruncate(o->fd, (off_t)o->size) != 0) {
            o->failed = 1;
            rc = -EIO;
        } else if (rc != -ENOSPC) {
            o->failed = 1;
            rc = -EIO;
        }
        goto out_unlock;
    }
    if (offsets_fsync_fn(o->fd) != 0) {
        sk_log(SK_LOG_ERROR, "offsets", NULL, "%s: fdatasync failed (%s); store failed", o->path,
               strerror(errno));
        o->failed = 1;
        rc = -EIO;
        goto out_unlock;
    }
    o->size += n;
    rc = ost_set(o, group, glen, partition, offset);
    if (rc < 0)
        goto out_unlock; /* durable, but not visible to get until reopen */

    if (o->size > offsets_compact_min && o->size > 4 * o->live) {
        int crc = ost_compact(o);
        if (crc < 0 && crc != -EIO)
            sk_log(SK_LOG_ERROR, "offsets", NULL, "%s: compaction failed (%s)", o->path,
                   strerror(-crc));
    }
out_unlock:
    pthread_mutex_unlock(&o->mu);
    return rc;
}

int mq__offsets_get(mq__offsets *o, const char *group, uint32_t partition, uint64_t *offset)
{
    int rc = -ENOENT;

    if (group == NULL)
        return -EINVAL;
    size_t glen = strlen(group);
    pthread_mutex_lock(&o->mu);
    ost_entry *e = ost_find(o, group, glen, partition, ost_hash(group, glen, partition));
    if (e != NULL && e->group != NULL) {
        *offset = e->offset;
        rc = 0;
    }
    pthread_mutex_unlock(&o->mu);
    return rc;
}

/* cb runs without the store's lock, on a snapshot, so it may call put/get.
 * Group strings live until close. On allocation failure nothing is reported. */
void mq__offsets_foreach(mq__offsets *o,
                         void (*cb)(void *arg, const char *group, uint32_t partition,
                                    uint64_t offset),
                         void *arg)
{
    ost_entry *snap;
    size_t n = 0;

    pthread_mutex_lock(&o->mu);
    snap = malloc((o->used ? o->used : 1) * sizeof(*snap));
    for (size_t i = 0; snap != NULL && i < o->cap; i++)
        if (o->tab[i].group != NULL)
            snap[n++] = o->tab[i];
    pthread_mutex_unlock(&o->mu);
    if (snap == NULL) {
        sk_log(SK_LOG_ERROR, "offsets", NULL, "%s: out of memory in foreach", o->path);
        return;
    }
    for (size_t i = 0; i < n; i++)
        cb(arg, snap[i].group, snap[i].partition, snap[i].offset);
    free(snap);
}
