/*
 * fuzz_config_load.c - libFuzzer target: the INI configuration loader
 * (config/config.c, cfg_load over inih).
 *
 * The input is written as a configuration file and loaded over the defaults,
 * as the gateway does at start. cfg_load must return an error or a config;
 * nothing may crash, and cfg_release must free everything either way (the
 * leak checker runs at exit). Checked:
 *   - an error is negative, and its message names the file;
 *   - a config passes cfg_validate, every item has a valid id, a stock, a
 *     per-user limit and an end after its start, ids are unique
 *     (cfg_find_item finds each item itself), list entries are within their
 *     bounds, and every text field is NUL-terminated inside its array.
 * replay.c runs tests/fuzz/corpus_config_load/ through this same function in
 * the normal test suite.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_path[80];
static int fuzz_fd = -1;

static void fuzz_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config_load: invariant failed: %s\n", what);
        abort();
    }
}

static void file_remove(void)
{
    if (fuzz_fd >= 0)
        close(fuzz_fd);
    unlink(fuzz_path);
}

static void write_input(const uint8_t *data, size_t size)
{
    if (fuzz_fd < 0) {
        const char *tmp = getenv("TMPDIR"); /* TMPDIR=/dev/shm: no disk at all */
        if (tmp == NULL || strlen(tmp) > sizeof fuzz_path - 24)
            tmp = "/tmp";
        snprintf(fuzz_path, sizeof fuzz_path, "%s/fuzz_config.XXXXXX", tmp);
        fuzz_fd = mkstemp(fuzz_path);
        fuzz_check(fuzz_fd >= 0, "mkstemp");
        atexit(file_remove);
    }
    fuzz_check(ftruncate(fuzz_fd, 0) == 0, "ftruncate");
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fuzz_fd, data + done, size - done, (off_t)done);
        fuzz_check(w > 0, "write input file");
        done += (size_t)w;
    }
}

#define TERMINATED(field) fuzz_check(memchr(c->field, '\0', sizeof c->field) != NULL, #field)

static int id_ok(const char *s)
{
    size_t n = strnlen(s, CFG_ID_MAX + 1);
    if (n == 0 || n > CFG_ID_MAX)
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == n;
}

static void check_config(const cfg *c)
{
    char err[512];
    fuzz_check(cfg_validate(c, err, sizeof err) == 0, "a loaded config validates");
    TERMINATED(listen_host);
    TERMINATED(gateway_id);
    TERMINATED(park);
    TERMINATED(http_io);
    TERMINATED(queue_data_dir);
    TERMINATED(queue_order_flush);
    TERMINATED(worker_inventory);
    TERMINATED(rpc_listen);
    TERMINATED(rpc_secret);
    TERMINATED(redis_host);
    fuzz_check(c->nitems >= 1 && c->nitems <= CFG_MAX_ITEMS, "1 to CFG_MAX_ITEMS items");
    for (size_t i = 0; i < c->nitems; i++) {
        const cfg_item *it = &c->items[i];
        fuzz_check(id_ok(it->id), "item id valid");
        fuzz_check(it->stock >= 0, "item has a stock");
        fuzz_check(it->per_user_limit >= 1, "per-user limit at least 1");
        fuzz_check(!it->starts_at || !it->ends_at || it->ends_at > it->starts_at,
                   "ends after it starts");
        fuzz_check(cfg_find_item(c, it->id) == it, "item ids are unique");
    }
    fuzz_check(c->nblocklist <= CFG_MAX_BLOCKLIST, "blocklist bounded");
    for (size_t i = 0; i < c->nblocklist; i++)
        fuzz_check(id_ok(c->blocklist[i]), "blocklist entry is a user id");
    for (size_t i = 0; i < c->nrpc_gateways; i++)
        fuzz_check(strncmp(c->rpc_gateways[i], "tcp:", 4) == 0 ||
                       strncmp(c->rpc_gateways[i], "unix:", 5) == 0,
                   "gateway address has a scheme");
    fuzz_check(cfg_worker_threads(c) >= 1, "worker threads resolved");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cfg c;
    char err[512];

    write_input(data, size);
    cfg_init(&c);
    memset(err, 'x', sizeof err);
    int rc = cfg_load(&c, fuzz_path, err, sizeof err);
    if (rc == 0) {
        check_config(&c);
    } else {
        fuzz_check(rc < 0, "negative errno on error");
        fuzz_check(memchr(err, '\0', sizeof err) != NULL, "message NUL-terminated");
        fuzz_check(strncmp(err, fuzz_path, strlen(fuzz_path)) == 0, "message names the file");
    }
    cfg_release(&c);
    return 0;
}
