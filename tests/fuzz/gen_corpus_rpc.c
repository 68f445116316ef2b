/*
 * gen_corpus_rpc.c - writes the seed corpus of fuzz_rpc_frame into a directory.
 *
 * Not part of the build; run by hand when the frame layout changes:
 *   cc -D_GNU_SOURCE -I . -I rpc -I rpc/include -I common tests/fuzz/gen_corpus_rpc.c rpc/frame.c common/crc32c.c \
 *      -lpthread -o /tmp/gen && /tmp/gen tests/fuzz/corpus_rpc
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "le.h"
#include "frame.h"

static uint8_t buf[1 << 16];

/* Recompute the CRC of a hand-edited frame of n bytes (its length field unchanged). */
static void fix_crc(uint8_t *p, size_t n)
{
    uint32_t crc = sk_crc32c(0, p, 16);
    crc = sk_crc32c(crc, p + RPC_HEADER_SIZE, n - RPC_HEADER_SIZE);
    sk_le_put32(p + 16, crc);
}

static void save(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static size_t enc(const rpc_frame *f, uint8_t *out)
{
    size_t n = 0;
    if (rpc_encode(f, out, sizeof(buf), &n) != 0)
        abort();
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const char *dir = argv[1];
    size_t n = 0, one;

    /* every type, back to back */
    rpc_msg msgs[2] = {{rpc_str("seckill.requests"), 1, 42, 1, rpc_str("k"), rpc_str("value")},
                       {rpc_str(""), 0, 0, 7, rpc_str(""), rpc_str("")}};
    rpc_frame fs[RPC_TYPE_MAX];
    memset(fs, 0, sizeof(fs));
    for (int t = 1; t <= RPC_TYPE_MAX; t++) {
        rpc_frame *f = &fs[t - 1];
        f->type = (uint8_t)t;
        f->call_id = (uint64_t)t * 1000;
    }
    fs[0].u.hello = (rpc_hello){rpc_str("w1"), rpc_str("seckill"), 1, {7}, 4096};
    fs[1].u.hello_ok = (rpc_hello_ok){1 << 20, 1000, {9}};
    fs[2].u.error = (rpc_error){13, rpc_str("authentication failed")};
    fs[3].u.fetch = (rpc_fetch){rpc_str("seckill.requests"), 32, 100};
    fs[4].u.fetch_ok = (rpc_fetch_ok){2, msgs, NULL, 0};
    fs[5].u.commit = (rpc_commit){rpc_str("seckill.requests"), 3, 99};
    memset(fs[6].u.result.gateway_id, 0xab, 16);
    memset(fs[6].u.result.request_id, 0xcd, 16);
    fs[6].u.result.result = 0;
    fs[6].u.result.item_id = rpc_str("item-1");
    fs[6].u.result.order_id = rpc_str("123e4567-e89b-12d3-a456-426614174000");
    fs[7].u.produce = (rpc_produce){rpc_str("orders"), rpc_str("key"), rpc_str("payload"), 7, 1};
    fs[8].u.produce_ok = (rpc_produce_ok){2, 77};
    fs[9].u.stock = (rpc_stock){rpc_str("item-1"), 0};
    fs[10].u.stock = (rpc_stock){rpc_str("item-2"), 5};
    fs[11].u.ping.value = 123;
    fs[12].u.ping.value = 123;
    for (int t = 0; t < RPC_TYPE_MAX; t++)
        n += enc(&fs[t], buf + n);
    save(dir, "all_types", buf, n);

    one = enc(&fs[4], buf);
    save(dir, "fetch_ok", buf, one);

    /* valid frame followed by a truncated one */
    n = enc(&fs[0], buf);
    n += enc(&fs[7], buf + n) - 5;
    save(dir, "valid_then_truncated", buf, n);

    /* header announcing 4 GiB */
    memset(buf, 0, RPC_HEADER_SIZE);
    sk_le_put32(buf, 0xFFFFFFFFu);
    buf[4] = RPC_VERSION;
    buf[5] = RPC_FETCH;
    save(dir, "length_4g", buf, RPC_HEADER_SIZE);

    /* length under the header */
    sk_le_put32(buf, 19);
    save(dir, "length_19", buf, RPC_HEADER_SIZE);

    /* a version this build does not speak (the one before, and the next), bad CRC */
    one = enc(&fs[3], buf);
    buf[4] = RPC_VERSION - 1;
    save(dir, "version_old", buf, one);
    buf[4] = RPC_VERSION + 1;
    save(dir, "version_next", buf, one);
    one = enc(&fs[3], buf);
    buf[one - 1] ^= 1;
    save(dir, "bad_crc", buf, one);

    /* unknown type with a valid CRC */
    one = enc(&fs[11], buf);
    buf[5] = 200;
    fix_crc(buf, one);
    save(dir, "unknown_type", buf, one);

    /* FETCH_OK claiming 2^32-1 messages */
    one = enc(&fs[4], buf);
    sk_le_put32(buf + RPC_HEADER_SIZE, 0xFFFFFFFFu);
    fix_crc(buf, one);
    save(dir, "fetch_ok_count_huge", buf, one);

    /* a key length past the payload, CRC valid */
    one = enc(&fs[7], buf);
    /* PRODUCE: u16 topic len + "orders" then u32 key len */
    sk_le_put32(buf + RPC_HEADER_SIZE + 2 + 6, 0x7FFFFFFFu);
    fix_crc(buf, one);
    save(dir, "produce_key_past_end", buf, one);

    /* HELLO worker id length 0xFFFF */
    one = enc(&fs[0], buf);
    buf[RPC_HEADER_SIZE] = 0xFF;
    buf[RPC_HEADER_SIZE + 1] = 0xFF;
    fix_crc(buf, one);
    save(dir, "hello_name_past_end", buf, one);

    /* frames with a MAC trailer (the codec carries it, auth.c checks it),
     * then the flag on a frame too short to hold one */
    static const uint8_t mac[RPC_MAC_SIZE] = {0x4d, 0x41, 0x43};
    fs[3].mac = mac;
    fs[11].mac = mac;
    n = enc(&fs[3], buf);
    n += enc(&fs[11], buf + n);
    save(dir, "with_mac", buf, n);
    fs[13].mac = NULL;
    one = enc(&fs[13], buf); /* ACK: the header alone */
    buf[6] |= RPC_FLAG_MAC;
    fix_crc(buf, one);
    save(dir, "mac_flag_no_room", buf, one);

    save(dir, "empty", buf, 0);
    return 0;
}
