/*
 * test_uuid4.c - sk_uuid4 makes RFC 4122 version 4 UUIDs that libuuid reads
 * as such, distinct across many calls and threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "uuid4.h"

#define PER 50000
#define THREADS 4

static uint8_t ids[THREADS][PER][16];

static void *gen(void *arg)
{
    uint8_t(*mine)[16] = arg;
    for (int i = 0; i < PER; i++)
        sk_uuid4(mine[i]);
    return NULL;
}

static int cmp16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void test_version_variant_and_text(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        uuid_t u, back;
        char text[37];
        sk_uuid4(u);
        assert_int_equal(uuid_type(u), UUID_TYPE_DCE_RANDOM);
        assert_int_equal(uuid_variant(u), UUID_VARIANT_DCE);
        uuid_unparse_lower(u, text);
        assert_int_equal(text[14], '4');
        assert_int_equal(uuid_parse(text, back), 0);
        assert_memory_equal(u, back, 16);
    }
}

static void test_distinct_across_threads(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, gen, ids[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* the random bits are not stuck: every byte position varies (before sorting) */
    for (int b = 0; b < 16; b++) {
        if (b == 6 || b == 8)
            continue;
        int varies = 0;
        for (size_t i = 1; i < 64 && !varies; i++)
            varies = ids[0][i][b] != ids[0][0][b];
        assert_true(varies);
    }
    qsort(ids, (size_t)THREADS * PER, 16, cmp16);
    uint8_t(*flat)[16] = (uint8_t(*)[16])ids;
    for (size_t i = 1; i < (size_t)THREADS * PER; i++)
        assert_true(memcmp(flat[i - 1], flat[i], 16) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_variant_and_text),
        cmocka_unit_test(test_distinct_across_threads),
    };
    return cmocka_run_group_tests_name("uuid4", tests, NULL, NULL);
}
