/*
 * promtext.h - Prometheus text exposition shared by seckill-gateway and
 * seckill-worker: a growable output buffer (a scrape is never cut off,
 * whatever the number of items), the process_* metrics read from /proc, and
 * seckill_build_info.
 *
 * A sk_text grows by doubling; once an allocation fails it stays failed
 * (sk_text_failed) and the caller answers an error instead of a cut-off
 * scrape, which Prometheus would refuse whole.
 */
#ifndef SECKILL_PROMTEXT_H
#define SECKILL_PROMTEXT_H

#include <stddef.h>

typedef struct sk_text {
    char *buf; /* NUL-terminated; owned: sk_text_release, or taken by the caller */
    size_t len, cap;
    int failed; /* an allocation failed: the text is incomplete */
} sk_text;

/* Start empty with room for hint bytes (0: a default). -ENOMEM. */
int sk_text_init(sk_text *t, size_t hint);
void sk_text_printf(sk_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 when some output was lost to a failed allocation. */
int sk_text_failed(const sk_text *t);
void sk_text_release(sk_text *t);

/* process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds of the calling process, from /proc/self. A
 * figure that cannot be read is left out. */
void sk_prom_process(sk_text *t);

/* seckill_build_info{version,commit} 1: the version of the build and the git
 * commit it was configured from ("unknown" outside a git checkout). */
void sk_prom_build_info(sk_text *t);

#endif
