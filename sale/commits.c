#include "commits.h"

#include <errno.h>
#include <string.h>

void sk_commits_init(sk_commits *c)
{
    c->n = 0;
}

int sk_commits_slot(sk_commits *c, const mq_message *m)
{
    size_t k = 0;
    while (k < c->n &&
           (c->parts[k].partition != m->partition || strcmp(c->parts[k].topic, m->topic) != 0))
        k++;
    if (k == c->n) {
        if (c->n == SK_COMMITS_MAX)
            return -ENOSPC;
        c->parts[c->n++] = (struct sk_commit_part){m->topic, m->partition, NULL, 0};
    }
    return (int)k;
}

void sk_commits_done(sk_commits *c, int k, const mq_message *m)
{
    if (!c->parts[k].failed)
        c->parts[k].upto = m;
}

void sk_commits_fail(sk_commits *c, int k)
{
    c->parts[k].failed = 1;
}

int sk_commits_failed(const sk_commits *c, int k)
{
    return c->parts[k].failed;
}

void sk_commits_flush(const sk_commits *c, int (*commit)(void *h, const mq_message *m), void *h)
{
    for (size_t k = 0; k < c->n; k++)
        if (c->parts[k].upto)
            commit(h, c->parts[k].upto);
}
