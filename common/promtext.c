#include "promtext.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef SECKILL_VERSION
#define SECKILL_VERSION "unknown"
#endif
#ifndef SECKILL_COMMIT
#define SECKILL_COMMIT "unknown"
#endif

int sk_text_init(sk_text *t, size_t hint)
{
    memset(t, 0, sizeof *t);
    t->cap = hint ? hint : 4096;
    t->buf = malloc(t->cap);
    if (!t->buf) {
        t->failed = 1;
        return -ENOMEM;
    }
    t->buf[0] = '\0';
    return 0;
}

void sk_text_printf(sk_text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2;
        while (ncap - t->len <= (size_t)n)
            ncap *= 2;
        char *nb = realloc(t->buf, ncap);
        if (!nb) {
            t->buf[t->len] = '\0'; /* what was there stays a whole string */
            t->failed = 1;
            return;
        }
        t->buf = nb;
        t->cap = ncap;
    }
}

int sk_text_failed(const sk_text *t)
{
    return t->failed;
}

void sk_text_release(sk_text *t)
{
    free(t->buf);
    memset(t, 0, sizeof *t);
}

/* Fields 14-15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss) of
 * /proc/self/stat; the command name (2) may hold spaces, so parse after its
 * closing parenthesis. */
static int read_stat(double *cpu_s, double *start_s, unsigned long long *vsize,
                     unsigned long long *rss_pages)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p)
        return -EINVAL;
    unsigned long long ut, st, start;
    /* after ")": state(3) ppid(4) ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24) */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %llu %llu",
               &ut, &st, &start, vsize, rss_pages) != 5)
        return -EINVAL;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    *cpu_s = (double)(ut + st) / (double)hz;
    /* starttime counts ticks since boot: add the boot time */
    double btime = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "btime ", 6)) {
                btime = strtod(line + 6, NULL);
                break;
            }
        fclose(f);
    }
    *start_s = btime + (double)start / (double)hz;
    return btime > 0 ? 0 : -ENODATA;
}

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

void sk_prom_process(sk_text *t)
{
    double cpu, start;
    unsigned long long vsize, rss;
    int st = read_stat(&cpu, &start, &vsize, &rss);
    if (st == 0 || st == -ENODATA) {
        long page = sysconf(_SC_PAGESIZE);
        sk_text_printf(t,
                       "# HELP process_cpu_seconds_total User and system CPU time spent, in "
                       "seconds.\n# TYPE process_cpu_seconds_total counter\n"
                       "process_cpu_seconds_total %.2f\n"
                       "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                       "# TYPE process_resident_memory_bytes gauge\n"
                       "process_resident_memory_bytes %llu\n"
                       "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                       "# TYPE process_virtual_memory_bytes gauge\n"
                       "process_virtual_memory_bytes %llu\n",
                       cpu, rss * (unsigned long long)(page > 0 ? page : 4096), vsize);
        if (st == 0)
            sk_text_printf(t,
                           "# HELP process_start_time_seconds Start time of the process since "
                           "the epoch, in seconds.\n# TYPE process_start_time_seconds gauge\n"
                           "process_start_time_seconds %.2f\n",
                           start);
    }
    long fds = count_fds();
    if (fds >= 0)
        sk_text_printf(t,
                       "# HELP process_open_fds Open file descriptors.\n"
                       "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
                       fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        sk_text_printf(t,
                       "# HELP process_max_fds The limit of open file descriptors.\n"
                       "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
                       (unsigned long long)rl.rlim_cur);
}

void sk_prom_build_info(sk_text *t)
{
    sk_text_printf(t,
                   "# HELP seckill_build_info The version of this build and the git commit it "
                   "was built from.\n# TYPE seckill_build_info gauge\n"
                   "seckill_build_info{version=\"%s\",commit=\"%s\"} 1\n",
                   SECKILL_VERSION, SECKILL_COMMIT);
}
