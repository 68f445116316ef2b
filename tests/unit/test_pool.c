/*
 * test_pool.c - fixed-size objects carved from chunks (common/pool.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/pool.h"
#include "common/prefault.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

enum { N = 5000 };

static size_t chunk_count(const sk_pool *p)
{
    size_t n = 0;
    for (void *c = p->chunks; c; c = *(void **)c)
        n++;
    return n;
}

/* Objects are distinct, zeroed, 16-byte aligned, keep what is written to
 * them, and cost one malloc per chunk, chunks doubling to the cap. */
static void test_alloc_distinct_zeroed(void **state)
{
    (void)state;
    sk_pool p;
    sk_pool_init(&p, 40);
    assert_int_equal(p.size, 48);
    assert_null(p.chunks); /* nothing taken before the first allocation */
    static unsigned char *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = sk_pool_alloc(&p);
        assert_non_null(objs[i]);
        assert_int_equal((uintptr_t)objs[i] % 16, 0);
        for (size_t k = 0; k < 40; k++)
            assert_int_equal(objs[i][k], 0);
        memset(objs[i], i & 0xff, 40);
    }
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < 40; k++)
            assert_int_equal(objs[i][k], i & 0xff);
    assert_int_equal(p.live, N);
    /* 16, 32, ... objects, then chunks of at most 64 KiB (1365 objects) */
    size_t chunks = chunk_count(&p);
    assert_true(chunks >= 7 && chunks <= 10);
    sk_pool_destroy(&p);
    assert_null(p.chunks);
}

/* A freed object is handed out again, zeroed, before any new chunk. */
static void test_free_reuses(void **state)
{
    (void)state;
    sk_pool p;
    sk_pool_init(&p, 100);
    void *a[16];
    for (int i = 0; i < 16; i++)
        a[i] = sk_pool_alloc(&p);
    assert_int_equal(chunk_count(&p), 1);
    memset(a[3], 0xab, 100);
    sk_pool_free(&p, a[3]);
    sk_pool_free(&p, a[7]);
    sk_pool_free(&p, NULL);
    assert_int_equal(p.live, 14);
    unsigned char *b = sk_pool_alloc(&p), *c = sk_pool_alloc(&p);
    assert_ptr_equal(b, a[7]); /* last freed, first reused */
    assert_ptr_equal(c, a[3]);
    for (int k = 0; k < 100; k++)
        assert_int_equal(c[k], 0);
    assert_int_equal(chunk_count(&p), 1);
    assert_non_null(sk_pool_alloc(&p)); /* the 17th object: a second chunk */
    assert_int_equal(chunk_count(&p), 2);
    sk_pool_destroy(&p);
}

/* Under AddressSanitizer a freed object and the unused rest of a chunk are
 * poisoned, so use after free is still caught. */
static void test_poisoned_when_free(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    sk_pool p;
    sk_pool_init(&p, 32);
    char *a = sk_pool_alloc(&p);
    assert_false(__asan_address_is_poisoned(a));
    assert_false(__asan_address_is_poisoned(a + 31));
    assert_true(__asan_address_is_poisoned(a + 32)); /* the next, unused slot */
    sk_pool_free(&p, a);
    assert_true(__asan_address_is_poisoned(a));
    assert_true(__asan_address_is_poisoned(a + 16));
    char *b = sk_pool_alloc(&p);
    assert_ptr_equal(a, b);
    assert_false(__asan_address_is_poisoned(b + 16));
    sk_pool_destroy(&p);
#else
    skip();
#endif
}

static int prefault_supported(void)
{
    long page = sysconf(_SC_PAGESIZE);
    void *probe = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
    assert_true(probe != MAP_FAILED);
    int ok = madvise(probe, (size_t)page, MADV_POPULATE_WRITE) == 0;
    munmap(probe, (size_t)page);
    return ok;
}

/* Pages of [from, from + len) that are resident. */
static size_t resident_pages(uintptr_t from, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t n = len / (size_t)page;
    unsigned char *vec = calloc(n, 1);
    assert_non_null(vec);
    assert_int_equal(mincore((void *)from, len, vec), 0);
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        r += vec[i] & 1;
    free(vec);
    return r;
}

/* sk_prefault populates exactly the pages wholly inside the range: on a
 * fresh mapping, a range starting mid-page leaves the first and last pages
 * alone and makes every page between them resident. */
static void test_prefault_range(void **state)
{
    (void)state;
    if (!prefault_supported())
        skip(); /* kernel before 5.14: pages fault on first touch, as before */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 10 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(resident_pages((uintptr_t)m, 10 * page), 0);
    sk_prefault(m + page + 100, 8 * page - 200); /* pages 2..7 are whole */
    assert_int_equal(resident_pages((uintptr_t)m, 2 * page), 0);
    assert_int_equal(resident_pages((uintptr_t)m + 2 * page, 6 * page), 6);
    assert_int_equal(resident_pages((uintptr_t)m + 8 * page, 2 * page), 0);
    munmap(m, 10 * page);
}

/* A new chunk's pages are faulted in when it is allocated, not one page
 * fault at a time as its objects are first touched. malloc is told to map
 * the 128 KiB chunk afresh (ASan's allocator does so anyway), so its pages
 * are resident only if the pool populated them. */
static void test_chunk_prefaulted(void **state)
{
    (void)state;
    if (!prefault_supported())
        skip();
    mallopt(M_MMAP_THRESHOLD, 64 << 10);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    sk_pool p;
    sk_pool_init(&p, 8192);
    assert_non_null(sk_pool_alloc(&p)); /* touches the first object only */
    uintptr_t c = (uintptr_t)p.chunks;
    uintptr_t from = (c + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t to = (c + 16 * 8192) & ~(uintptr_t)(page - 1);
    size_t n = (to - from) / page;
    size_t r = resident_pages(from, to - from);
    sk_pool_destroy(&p);
    assert_true(n >= 8);
    assert_int_equal(r, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_distinct_zeroed),
        cmocka_unit_test(test_free_reuses),
        cmocka_unit_test(test_poisoned_when_free),
        cmocka_unit_test(test_prefault_range),
        cmocka_unit_test(test_chunk_prefaulted),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
