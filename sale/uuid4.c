#include "uuid4.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <uuid/uuid.h>

#define POOL 4096

static __thread uint8_t pool[POOL];
static __thread size_t pool_left;

void sk_uuid4(uint8_t out[16])
{
    if (pool_left < 16) {
        size_t got = 0;
        while (got < POOL) {
            ssize_t n = getrandom(pool + got, POOL - got, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                uuid_generate_random(out); /* no kernel randomness: libuuid's own path */
                return;
            }
            got += (size_t)n;
        }
        pool_left = POOL;
    }
    memcpy(out, pool + POOL - pool_left, 16);
    memset(pool + POOL - pool_left, 0, 16); /* an id's bytes are not kept around */
    pool_left -= 16;
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40); /* version 4 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}
