#include "redis_conn.h"

#include <errno.h>
#include <string.h>

struct timeval sk__ms_tv(uint32_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

int sk__redis_errno(const redisContext *c, int saved)
{
    if (!c)
        return -ENOMEM;
    switch (c->err) {
    case REDIS_ERR_IO:
        if (saved == EAGAIN || saved == EWOULDBLOCK || saved == ETIMEDOUT ||
            strstr(c->errstr, "timed out") || strstr(c->errstr, "temporarily unavailable"))
            return -ETIMEDOUT;
        return saved > 0 ? -saved : -EIO;
    case REDIS_ERR_EOF:
        return -ECONNRESET;
    case REDIS_ERR_OOM:
        return -ENOMEM;
    case REDIS_ERR_PROTOCOL:
        return -EPROTO;
    default:
        return -EIO;
    }
}

int sk__redis_connect(const char *host, int port, uint32_t timeout_ms, redisContext **out)
{
    struct timeval tv = sk__ms_tv(timeout_ms);
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        int rc = sk__redis_errno(c, errno);
        if (c)
            redisFree(c);
        return rc;
    }
    *out = c;
    return 0;
}
