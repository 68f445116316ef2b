/*
 * commits.h - what to commit after a batch of messages: per (topic,
 * partition), the last message that was handled. Commits are cumulative, so
 * one commit per partition acknowledges everything before it; a partition
 * marked failed keeps the last message before its failure, and nothing after
 * it is acknowledged (it comes again). Used by every consumer that commits
 * after handling a batch: the worker loop and the order sink.
 */
#ifndef SECKILL_SK_COMMITS_H
#define SECKILL_SK_COMMITS_H

#include <stddef.h>
#include <stdint.h>

#include "mq.h"

#define SK_COMMITS_MAX 64 /* partitions tracked per batch */

/* Caller-owned, one per batch; zero it (or sk_commits_init) before use. */
typedef struct sk_commits {
    size_t n;
    struct sk_commit_part {
        const char *topic;
        uint32_t partition;
        const mq_message *upto; /* the last message handled, NULL: none yet */
        int failed;
    } parts[SK_COMMITS_MAX];
} sk_commits;

void sk_commits_init(sk_commits *c);

/* The slot of m's partition, added when new; -ENOSPC when SK_COMMITS_MAX
 * partitions are tracked already (stop the batch there: the rest comes
 * again after the ack timeout). */
int sk_commits_slot(sk_commits *c, const mq_message *m);

/* m of slot k was handled: it becomes the partition's commit point, unless
 * the partition failed before. */
void sk_commits_done(sk_commits *c, int k, const mq_message *m);

/* Slot k failed: nothing from here on in its partition is committed. */
void sk_commits_fail(sk_commits *c, int k);
int sk_commits_failed(const sk_commits *c, int k);

/* Commit each partition's last handled message through commit(h, m). */
void sk_commits_flush(const sk_commits *c, int (*commit)(void *h, const mq_message *m), void *h);

#endif
