/*
 * log_crash.c - SIGKILL a process that appends to a sync-flushed segment log,
 * then check that recovery kept every acknowledged record exactly once.
 *
 * Each round forks a child that opens the log in one shared directory
 * (MQ_FLUSH_SYNC, small segments so rolls happen) and appends from 1-4
 * threads. After mq__seglog_append returns, the child writes (offset, id) to
 * a pipe: a 16-byte write, atomic on a pipe. The parent kills the child at a
 * random moment (sometimes before or during its recovery), drains the pipe,
 * reopens the log and checks:
 *   - offsets are dense from 0 to the end,
 *   - every record is intact (id, producer fields and payload agree),
 *   - no id appears twice,
 *   - every acknowledged (offset, id) of every round so far is present.
 * Usage: log_crash [rounds] [seed]
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "queue/seglog.h"

#define MAX_THREADS 4
#define MAX_PER_THREAD 20000

typedef struct ack {
    uint64_t offset;
    uint64_t id;
} ack;

static mq__seglog_config crash_cfg(void)
{
    mq__seglog_config c = {
        .segment_bytes = 8192,
        .flush = MQ_FLUSH_SYNC,
        .index_interval_bytes = 512,
    };
    return c;
}

/* The payload of record id: the id, then (id % 53) filler bytes. */
static size_t payload(uint64_t id, unsigned char *buf)
{
    size_t n = 8 + id % 53;
    memcpy(buf, &id, 8);
    for (size_t i = 8; i < n; i++)
        buf[i] = (unsigned char)(id * 31 + i);
    return n;
}

/* ---- child ---- */

typedef struct child_arg {
    mq__seglog *l;
    int fd;
    uint64_t round;
    uint64_t thread;
} child_arg;

static void *child_thread(void *p)
{
    child_arg *a = p;
    unsigned char v[64];

    for (uint64_t seq = 1; seq <= MAX_PER_THREAD; seq++) {
        uint64_t id = a->round << 32 | a->thread << 24 | seq;
        mq__rec r = {.timestamp_ms = (uint64_t)time(NULL) * 1000,
                     .producer_id = id,
                     .seq = seq,
                     .value = v,
                     .value_len = (uint32_t)payload(id, v)};
        uint64_t off;
        int rc = mq__seglog_append(a->l, &r, &off);
        if (rc != 0) {
            fprintf(stderr, "child: append: %s\n", strerror(-rc));
            _exit(3);
        }
        ack k = {off, id};
        if (write(a->fd, &k, sizeof(k)) != (ssize_t)sizeof(k))
            _exit(4);
    }
    return NULL;
}

static void run_child(const char *dir, uint64_t round, int nthreads, int fd)
{
    mq__seglog_config cfg = crash_cfg();
    mq__seglog *l;
    pthread_t th[MAX_THREADS];
    child_arg args[MAX_THREADS];
    int rc = mq__seglog_open(dir, &cfg, &l);

    if (rc != 0) {
        fprintf(stderr, "child: open: %s\n", strerror(-rc));
        _exit(2);
    }
    for (int i = 0; i < nthreads; i++) {
        args[i] = (child_arg){l, fd, round, (uint64_t)i};
        if (pthread_create(&th[i], NULL, child_thread, &args[i]) != 0)
            _exit(5);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    mq__seglog_close(l);
    _exit(0);
}

/* ---- parent ---- */

typedef struct acks {
    ack *v;
    size_t n, cap;
    unsigned char part[sizeof(ack)];
    size_t npart;
} acks;

static int acks_feed(acks *a, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        a->part[a->npart++] = b[i];
        if (a->npart < sizeof(ack))
            continue;
        a->npart = 0;
        if (a->n == a->cap) {
            size_t cap = a->cap ? a->cap * 2 : 1024;
            ack *nv = realloc(a->v, cap * sizeof(*nv));
            if (nv == NULL)
                return -ENOMEM;
            a->v = nv;
            a->cap = cap;
        }
        memcpy(&a->v[a->n++], a->part, sizeof(ack));
    }
    return 0;
}

typedef struct scan {
    uint64_t next;
    uint64_t *ids; /* by offset */
    size_t cap;
    int bad;
} scan;

static int scan_cb(void *arg, const mq__rec *r)
{
    scan *s = arg;
    unsigned char want[64];

    if (r->offset != s->next) {
        fprintf(stderr, "offset %" PRIu64 " where %" PRIu64 " was expected\n", r->offset, s->next);
        s->bad = 1;
        return 1;
    }
    size_t n = payload(r->producer_id, want);
    if (r->key_len != 0 || r->value_len != n || memcmp(r->value, want, n) != 0 ||
        r->seq != (r->producer_id & 0xffffff)) {
        fprintf(stderr, "record %" PRIu64 " is damaged\n", r->offset);
        s->bad = 1;
        return 1;
    }
    if (s->next == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *nv = realloc(s->ids, s->cap * sizeof(*nv));
        if (nv == NULL) {
            s->bad = 1;
            return 1;
        }
        s->ids = nv;
    }
    s->ids[s->next++] = r->producer_id;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Reopen (recover) the log and check it against every acknowledgement. */
static int verify(const char *dir, const acks *a, uint64_t *records)
{
    mq__seglog_config cfg = crash_cfg();
    mq__seglog *l;
    scan s = {0};
    uint64_t *sorted = NULL;
    int rc = mq__seglog_open(dir, &cfg, &l), ok = 0;

    if (rc != 0) {
        fprintf(stderr, "verify: open: %s\n", strerror(-rc));
        return -1;
    }
    uint64_t end = mq__seglog_end(l);
    if (mq__seglog_start(l) != 0) {
        fprintf(stderr, "verify: start %" PRIu64 "\n", mq__seglog_start(l));
        goto out;
    }
    while (s.next < end && !s.bad) {
        rc = mq__seglog_read(l, s.next, 4096, 1 << 20, scan_cb, &s);
        if (rc <= 0) {
            fprintf(stderr, "verify: read at %" PRIu64 ": %d\n", s.next, rc);
            goto out;
        }
    }
    if (s.bad || s.next != end)
        goto out;
    sorted = malloc((end ? end : 1) * sizeof(*sorted));
    if (sorted == NULL)
        goto out;
    if (end)
        memcpy(sorted, s.ids, end * sizeof(*sorted));
    qsort(sorted, end, sizeof(*sorted), cmp_u64);
    for (uint64_t i = 1; i < end; i++) {
        if (sorted[i] == sorted[i - 1]) {
            fprintf(stderr, "verify: id %" PRIx64 " stored twice\n", sorted[i]);
            goto out;
        }
    }
    for (size_t i = 0; i < a->n; i++) {
        if (a->v[i].offset >= end || s.ids[a->v[i].offset] != a->v[i].id) {
            fprintf(stderr,
                    "verify: acknowledged id %" PRIx64 " at offset %" PRIu64
                    " is missing (end %" PRIu64 ")\n",
                    a->v[i].id, a->v[i].offset, end);
            goto out;
        }
    }
    *records = end;
    ok = 1;
out:
    mq__seglog_close(l);
    free(sorted);
    free(s.ids);
    return ok ? 0 : -1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    unsigned seed = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : (unsigned)time(NULL);
    char dir[] = "/tmp/log_crash.XXXXXX";
    acks a = {0};
    uint64_t records = 0, t0 = now_ms();
    int rc = 1;

    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    srand(seed);
    printf("log_crash: %d rounds, seed %u, dir %s\n", rounds, seed, dir);
    for (int round = 0; round < rounds; round++) {
        int fds[2];
        if (pipe(fds) != 0) {
            perror("pipe");
            goto out;
        }
        int nthreads = 1 + rand() % MAX_THREADS;
        uint64_t delay = (uint64_t)(rand() % 40); /* ms; 0-2 often kill the recovery */
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            goto out;
        }
        if (pid == 0) {
            close(fds[0]);
            run_child(dir, (uint64_t)round + 1, nthreads, fds[1]);
        }
        close(fds[1]);

        unsigned char buf[4096];
        uint64_t deadline = now_ms() + delay;
        for (;;) {
            uint64_t t = now_ms();
            if (t >= deadline)
                break;
            struct pollfd p = {.fd = fds[0], .events = POLLIN};
            if (poll(&p, 1, (int)(deadline - t)) > 0) {
                ssize_t n = read(fds[0], buf, sizeof(buf));
                if (n <= 0)
                    break;
                if (acks_feed(&a, buf, (size_t)n) != 0)
                    goto out;
            }
        }
        kill(pid, SIGKILL);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        for (;;) {
            ssize_t n = read(fds[0], buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            if (acks_feed(&a, buf, (size_t)n) != 0)
                goto out;
        }
        close(fds[0]);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            fprintf(stderr, "round %d: child ended by itself (status %d)\n", round, status);
            goto out;
        }
        if (a.npart != 0) {
            fprintf(stderr, "round %d: torn acknowledgement on the pipe\n", round);
            goto out;
        }
        if (verify(dir, &a, &records) != 0) {
            fprintf(stderr, "round %d: verification failed (seed %u)\n", round, seed);
            goto out;
        }
    }
    printf("log_crash: ok: %d rounds, %zu acknowledged, %" PRIu64 " records in the log, %" PRIu64
           " ms\n",
           rounds, a.n, records, now_ms() - t0);
    rc = 0;
out:
    if (rc == 0)
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "log_crash: directory kept for inspection: %s\n", dir);
    free(a.v);
    return rc;
}
