#include "order_sink.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sk_sink {
    FILE *f;
    char *path;
    char **seen; /* "order_id/type" keys, in the order stored */
    size_t nseen, cap;
    size_t *buckets; /* open addressing: index + 1 into seen, 0 = empty */
    size_t nbuckets;
    _Atomic uint64_t stored, duplicates; /* read by the metrics thread */
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int sink_has(const sk_sink *s, const char *key)
{
    if (!s->nbuckets)
        return 0;
    for (size_t i = str_hash(key) & (s->nbuckets - 1);; i = (i + 1) & (s->nbuckets - 1)) {
        size_t k = s->buckets[i];
        if (k == 0)
            return 0;
        if (!strcmp(s->seen[k - 1], key))
            return 1;
    }
}

static int sink_add(sk_sink *s, const char *key)
{
    if ((s->nseen + 1) * 2 > s->nbuckets) {
        size_t nb = s->nbuckets ? s->nbuckets * 2 : 1024;
        size_t *b = calloc(nb, sizeof *b);
        if (!b)
            return -ENOMEM;
        for (size_t k = 0; k < s->nseen; k++) {
            size_t i = str_hash(s->seen[k]) & (nb - 1);
            while (b[i])
                i = (i + 1) & (nb - 1);
            b[i] = k + 1;
        }
        free(s->buckets);
        s->buckets = b;
        s->nbuckets = nb;
    }
    if (s->nseen == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        char **n = realloc(s->seen, nc * sizeof *n);
        if (!n)
            return -ENOMEM;
        s->seen = n;
        s->cap = nc;
    }
    char *dup = strdup(key);
    if (!dup)
        return -ENOMEM;
    s->seen[s->nseen++] = dup;
    size_t i = str_hash(key) & (s->nbuckets - 1);
    while (s->buckets[i])
        i = (i + 1) & (s->nbuckets - 1);
    s->buckets[i] = s->nseen;
    return 0;
}

/* Load what an earlier run stored, so a restart stays idempotent. A torn
 * last line (a crash mid-write) is cut off, so the next line starts clean;
 * its event was not acknowledged and comes again. */
static int sink_load(sk_sink *s, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    long good = 0; /* end of the last whole line */
    int rc = 0;
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    while (fgets(line, sizeof line, f)) {
        char order[64] = "", type[16] = "", key[96];
        if (!strchr(line, '\n'))
            break;
        good = ftell(f);
        const char *o = strstr(line, "\"order_id\":\""), *t = strstr(line, "\"type\":\"");
        if (!o || !t || sscanf(o + 12, "%63[^\"]", order) != 1 ||
            sscanf(t + 8, "%15[^\"]", type) != 1)
            continue;
        snprintf(key, sizeof key, "%s/%s", order, type);
        if (!sink_has(s, key) && sink_add(s, key) < 0) {
            rc = -ENOMEM;
            break;
        }
    }
    if (rc == 0 && fseek(f, 0, SEEK_END) == 0 && ftell(f) > good && truncate(path, good) != 0)
        rc = -errno;
    fclose(f);
    return rc;
}

int sk_sink_open(const char *path, sk_sink **out)
{
    sk_sink *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->path = strdup(path);
    int rc = s->path ? sink_load(s, path) : -ENOMEM;
    if (rc == 0) {
        s->f = fopen(path, "a");
        if (!s->f)
            rc = -errno;
    }
    if (rc < 0) {
        sk_sink_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int sk_sink_put(sk_sink *s, const sk_sink_record *r)
{
    char key[96];
    snprintf(key, sizeof key, "%s/%s", r->order_id, r->type);
    if (sink_has(s, key)) {
        atomic_fetch_add_explicit(&s->duplicates, 1, memory_order_relaxed);
        return 0;
    }
    if (fprintf(s->f,
                "{\"order_id\":\"%s\",\"type\":\"%s\",\"item_id\":\"%s\",\"user_id\":\"%s\","
                "\"request_id\":\"%s\",\"at_ms\":%llu}\n",
                r->order_id, r->type, r->item_id, r->user_id, r->request_id,
                (unsigned long long)r->at_ms) < 0)
        return -EIO;
    int rc = sink_add(s, key);
    if (rc < 0)
        return rc;
    atomic_fetch_add_explicit(&s->stored, 1, memory_order_relaxed);
    return 1;
}

int sk_sink_sync(sk_sink *s)
{
    if (fflush(s->f) != 0 || fsync(fileno(s->f)) != 0)
        return -(errno ? errno : EIO);
    return 0;
}

int sk_sink_reopen(sk_sink *s)
{
    int rc = sk_sink_sync(s);
    if (rc < 0)
        return rc;
    FILE *f = fopen(s->path, "a");
    if (!f)
        return -errno;
    fclose(s->f);
    s->f = f;
    return 0;
}

void sk_sink_stats(const sk_sink *s, uint64_t *stored, uint64_t *duplicates)
{
    sk_sink *m = (sk_sink *)s;
    if (stored)
        *stored = atomic_load_explicit(&m->stored, memory_order_relaxed);
    if (duplicates)
        *duplicates = atomic_load_explicit(&m->duplicates, memory_order_relaxed);
}

void sk_sink_close(sk_sink *s)
{
    if (!s)
        return;
    if (s->f)
        fclose(s->f);
    for (size_t i = 0; i < s->nseen; i++)
        free(s->seen[i]);
    free(s->seen);
    free(s->buckets);
    free(s->path);
    free(s);
}
