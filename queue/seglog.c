/* Placeholder: every call fails with -ENOSYS until the log lands. */
#include <errno.h>
#include "seglog.h"
int mq__seglog_open(const char *dir, const mq__seglog_config *cfg, mq__seglog **out)
{
    (void)dir;
    (void)cfg;
    *out = NULL;
    return -ENOSYS;
}
void mq__seglog_close(mq__seglog *l)
{
    (void)l;
}
int mq__seglog_append(mq__seglog *l, const mq__rec *rec, uint64_t *offset)
{
    (void)l;
    (void)rec;
    (void)offset;
    return -ENOSYS;
}
int mq__seglog_read(mq__seglog *l, uint64_t from, size_t max_records, size_t max_bytes,
                    int (*cb)(void *arg, const mq__rec *rec), void *arg)
{
    (void)l;
    (void)from;
    (void)max_records;
    (void)max_bytes;
    (void)cb;
    (void)arg;
    return -ENOSYS;
}
uint64_t mq__seglog_start(mq__seglog *l)
{
    (void)l;
    return 0;
}
uint64_t mq__seglog_end(mq__seglog *l)
{
    (void)l;
    return 0;
}
int mq__seglog_retain(mq__seglog *l, uint64_t now_ms)
{
    (void)l;
    (void)now_ms;
    return -ENOSYS;
}
int mq__seglog_flush(mq__seglog *l)
{
    (void)l;
    return -ENOSYS;
}
