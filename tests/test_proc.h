/*
 * test_proc.h - stopping a process for a test: kill(SIGSTOP) returns before
 * the target's threads have stopped, and on a loaded VM a thread may go on
 * for a moment (a worker was seen deciding the next purchase); a test that
 * relies on the stop waits for it.
 */
#ifndef SECKILL_TESTS_TEST_PROC_H
#define SECKILL_TESTS_TEST_PROC_H

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "test_time.h"

/* 1 when every thread of pid is stopped, 0 when one runs, -1 when pid is gone. */
static inline int proc_all_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int all = 1;
    struct dirent *e;
    while (all && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char stat[384], buf[512];
        snprintf(stat, sizeof stat, "%s/%s/stat", path, e->d_name);
        FILE *f = fopen(stat, "r");
        if (!f)
            continue; /* a thread that just ended */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        all = p && (p[2] == 'T' || p[2] == 't');
    }
    closedir(d);
    return all;
}

/* SIGSTOP pid and wait (up to 10 s) until all its threads have stopped. */
static inline void proc_pause(pid_t pid)
{
    kill(pid, SIGSTOP);
    for (uint64_t until = mono_ms() + 10000; proc_all_stopped(pid) == 0 && mono_ms() < until;)
        sleep_ms(1);
}

#endif
