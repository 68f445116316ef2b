/* Placeholder: every call fails with -ENOSYS until the offsets store lands. */
#include <errno.h>
#include "seglog.h"
int mq__offsets_open(const char *path, mq__offsets **out)
{
    (void)path;
    *out = NULL;
    return -ENOSYS;
}
void mq__offsets_close(mq__offsets *o)
{
    (void)o;
}
int mq__offsets_put(mq__offsets *o, const char *group, uint32_t partition, uint64_t offset)
{
    (void)o;
    (void)group;
    (void)partition;
    (void)offset;
    return -ENOSYS;
}
int mq__offsets_get(mq__offsets *o, const char *group, uint32_t partition, uint64_t *offset)
{
    (void)o;
    (void)group;
    (void)partition;
    (void)offset;
    return -ENOSYS;
}
void mq__offsets_foreach(mq__offsets *o,
                         void (*cb)(void *arg, const char *group, uint32_t partition, uint64_t offset),
                         void *arg)
{
    (void)o;
    (void)cb;
    (void)arg;
}
