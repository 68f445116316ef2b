/*
 * fuzz_rpc_frame.c - libFuzzer target: the input is a byte stream as a
 * socket would deliver it, decoded frame after frame until the first error.
 *
 * Checked on every frame that decodes: re-encoding it gives back exactly the
 * input bytes (the encoding is canonical), and every FETCH_OK message can be
 * walked. test_rpc replays tests/fuzz/corpus_rpc through this same function.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define FUZZ_MAX_FRAME (64u << 10)

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    while (off < size) {
        rpc_frame f;
        size_t used = 0;
        if (rpc_decode(data + off, size - off, FUZZ_MAX_FRAME, &f, &used) != 0)
            break;
        fuzz_check(used >= RPC_HEADER_SIZE && used <= size - off);

        uint8_t *again = malloc(used);
        size_t len = 0;
        fuzz_check(again != NULL);
        fuzz_check(rpc_encode(&f, again, used, &len) == 0);
        fuzz_check(len == used && memcmp(again, data + off, used) == 0);
        free(again);

        if (f.type == RPC_FETCH_OK) {
            rpc_msg_iter it;
            rpc_msg m;
            uint32_t n = 0;
            unsigned sum = 0;
            rpc_msg_iter_init(&it, &f.u.fetch_ok);
            while (rpc_msg_iter_next(&it, &m)) {
                const uint8_t *k = m.key.ptr, *v = m.value.ptr;
                if (m.key.len)
                    sum += k[m.key.len - 1];
                if (m.value.len)
                    sum += v[m.value.len - 1];
                n++;
            }
            (void)sum;
            fuzz_check(n == f.u.fetch_ok.count);
        }
        off += used;
    }
    return 0;
}
