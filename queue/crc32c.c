/* Placeholder: replaced by the real implementation. */
#include <errno.h>
#include "seglog.h"
uint32_t mq__crc32c(uint32_t crc, const void *buf, size_t len)
{
    (void)buf;
    (void)len;
    return crc;
}
