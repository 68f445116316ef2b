/*
 * reload.c - gw_reload: what a new configuration may change while the
 * gateway serves (SIGHUP).
 *
 * Applied at once, each logged with its old and new value: the token
 * bucket's rate and burst (tb_set), the blocklist and the sale windows (the
 * item atomics purchase.c reads, and the embedded workers' copy through
 * sk_worker_set_risk), stock increases (sale_store_raise_stock: the units
 * added become stock left, once across every process sharing the store),
 * drain_delay_ms and the log level. Everything else that differs is named as needing a
 * restart and keeps its running value (cfg_report_restart), and so does a
 * stock decrease: orders may hold the units already.
 *
 * The running configuration (run, which g->cfg points to) takes the applied
 * values, so the next reload compares against the file as last loaded; no
 * other thread reads those fields after start. A reload applies what changed
 * in the file: a change made through the admin API stays until the file
 * changes the same key. ctl_lock keeps it apart from the admin API.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "log.h"

static const char *const live_keys[] = {
    "token_bucket.rate",      "token_bucket.burst", "risk.blocklist",
    "gateway.drain_delay_ms", "item.stock",         "item.starts_at",
    "item.ends_at",           "log.level",          NULL};

/* Lines go to log: main.c passes a stream of the log module (component
 * reload), one log line per line written. */

static int reload_bucket(gw *g, cfg *run, const cfg *n, FILE *log)
{
    if (run->tb_rate == n->tb_rate && run->tb_burst == n->tb_burst)
        return 0;
    if (g->gbucket) { /* one bucket in Redis for every gateway: not this one's to change */
        fprintf(log, "[token_bucket] rate, burst: scope = global: needs a restart of every "
                     "gateway with the same values (the running values stay)\n");
        return 0;
    }
    if (tb_set(&g->bucket, n->tb_rate, n->tb_burst) < 0) {
        fprintf(log, "[token_bucket]: rate %g burst %u refused\n", n->tb_rate, n->tb_burst);
        return 0;
    }
    fprintf(log, "[token_bucket] rate %g -> %g, burst %u -> %u\n", g->tb_rate, n->tb_rate,
            g->tb_burst, n->tb_burst);
    run->tb_rate = g->tb_rate = n->tb_rate;
    run->tb_burst = g->tb_burst = n->tb_burst;
    return 1;
}

/* Windows and stock of each item; the items are the same (cfg_same_items). */
static int reload_items(gw *g, cfg *run, const cfg *n, FILE *log, int *windows_changed)
{
    int changes = 0;
    for (size_t i = 0; i < n->nitems; i++) {
        cfg_item *r = &run->items[i];
        const cfg_item *ni = &n->items[i];
        gw_item *it = &g->items[i];
        if (r->starts_at != ni->starts_at || r->ends_at != ni->ends_at) {
            fprintf(log, "[item.%s] starts_at %lld -> %lld, ends_at %lld -> %lld\n", r->id,
                    (long long)r->starts_at, (long long)ni->starts_at, (long long)r->ends_at,
                    (long long)ni->ends_at);
            r->starts_at = ni->starts_at;
            r->ends_at = ni->ends_at;
            atomic_store(&it->starts_at, ni->starts_at);
            atomic_store(&it->ends_at, ni->ends_at);
            g->windows[i] = (sk_item_window){r->id, r->starts_at, r->ends_at};
            *windows_changed = 1;
            changes++;
        }
        if (ni->stock < r->stock) {
            fprintf(log,
                    "[item.%s] stock %lld -> %lld: a decrease needs a restart (orders "
                    "may hold the units; the running stock stays)\n",
                    r->id, (long long)r->stock, (long long)ni->stock);
        } else if (ni->stock > r->stock) {
            int64_t added = sale_store_raise_stock(g->store, i, ni->stock);
            if (added < 0) {
                fprintf(log, "[item.%s] stock %lld -> %lld failed: %s (the running stock stays; %s)\n",
                        r->id, (long long)r->stock, (long long)ni->stock, strerror((int)-added),
                        added == -EOPNOTSUPP ? "the store needs a restart for it" : "reload again");
                continue;
            }
            fprintf(log, "[item.%s] stock %lld -> %lld (%lld units added to stock left)\n", r->id,
                    (long long)r->stock, (long long)ni->stock, (long long)added);
            r->stock = ni->stock;
            atomic_store(&it->stock, ni->stock);
            int64_t left = sale_store_left(g->store, i);
            if (left >= 0) /* the sold-out flag clears now, not at the next report */
                gw__item_report(it, left);
            changes++;
        }
    }
    return changes;
}

int gw_reload(gw *g, cfg *run, cfg *n, FILE *log)
{
    int changes = 0, windows_changed = 0;
    pthread_mutex_lock(&g->ctl_lock);
    cfg_report_restart(run, n, live_keys, log);
    if (sk_log_level_reload(run->log_level, n->log_level)) {
        memcpy(run->log_level, n->log_level, sizeof run->log_level);
        changes++;
    }
    changes += reload_bucket(g, run, n, log);
    if (run->drain_delay_ms != n->drain_delay_ms) {
        fprintf(log, "[gateway] drain_delay_ms %u -> %u\n", run->drain_delay_ms, n->drain_delay_ms);
        run->drain_delay_ms = n->drain_delay_ms;
        changes++;
    }
    if (cfg_same_items(run, n))
        changes += reload_items(g, run, n, log, &windows_changed);
    int blocklist_changed = cfg_key_differs(cfg_find_key("risk", "blocklist"), run, n);
    if (blocklist_changed) {
        fprintf(log, "[risk] blocklist: %zu -> %zu user ids%s\n", run->nblocklist, n->nblocklist,
                g->worker ? "" : " (decided by the seckill-worker processes: reload them too)");
        /* swap: n takes the old list and frees it with itself */
        char **l = run->blocklist;
        size_t nl = run->nblocklist;
        run->blocklist = n->blocklist;
        run->nblocklist = n->nblocklist;
        n->blocklist = l;
        n->nblocklist = nl;
        changes++;
    }
    if (blocklist_changed && gw__blocklist_replace(g, run->blocklist, run->nblocklist) < 0)
        fprintf(log, "out of memory: the gateway keeps the previous blocklist\n");
    else if (g->worker && (blocklist_changed || windows_changed) && gw__risk_apply(g) < 0)
        fprintf(log, "out of memory: the workers keep the previous blocklist and windows\n");
    pthread_mutex_unlock(&g->ctl_lock);
    if (!changes)
        fprintf(log, "nothing to change\n");
    fflush(log);
    return changes;
}
