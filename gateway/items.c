/*
 * items.c - the sale's items as this gateway sees them: the table built from
 * the config (g->items, in the config's and the store's order), an
 * open-addressing index by id, the stock view workers and the store report
 * into, and GET /items/{id}.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "message.h"

static uint64_t item_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int gw__items_init(gw *g)
{
    const cfg *c = g->cfg;
    g->nitems = c->nitems;
    g->items = calloc(c->nitems ? c->nitems : 1, sizeof *g->items);
    g->windows = calloc(c->nitems ? c->nitems : 1, sizeof *g->windows);
    size_t isz = 16;
    while (isz < c->nitems * 2)
        isz <<= 1;
    g->item_index = malloc(isz * sizeof *g->item_index);
    if (!g->items || !g->windows || !g->item_index)
        return -ENOMEM; /* gw_destroy frees what was allocated */
    g->index_mask = isz - 1;
    memset(g->item_index, 0xff, isz * sizeof *g->item_index);
    for (size_t i = 0; i < c->nitems; i++) {
        const cfg_item *ci = &c->items[i];
        g->items[i].c = ci;
        atomic_init(&g->items[i].left, ci->stock);
        atomic_init(&g->items[i].sold_out, ci->stock == 0);
        atomic_init(&g->items[i].stock, ci->stock);
        atomic_init(&g->items[i].starts_at, ci->starts_at);
        atomic_init(&g->items[i].ends_at, ci->ends_at);
        atomic_init(&g->items[i].per_user_limit, ci->per_user_limit);
        gw__opening_init_item(g, &g->items[i]);
        size_t k = item_hash(ci->id) & g->index_mask;
        while (g->item_index[k] >= 0)
            k = (k + 1) & g->index_mask;
        g->item_index[k] = (int32_t)i;
        g->windows[i] = (sk_item_window){ci->id, ci->starts_at, ci->ends_at};
    }
    return 0;
}

gw_item *gw__item_find(gw *g, const char *id)
{
    for (size_t i = item_hash(id) & g->index_mask;; i = (i + 1) & g->index_mask) {
        int32_t k = g->item_index[i];
        if (k < 0)
            return NULL;
        if (strcmp(g->items[k].c->id, id) == 0)
            return &g->items[k];
    }
}

void gw__item_report(gw_item *it, int64_t left)
{
    /* Stock goes down with sales and up when an unpaid order is cancelled.
     * Reports may arrive out of order; workers repeat the current figure
     * every second, so a stale one is corrected within a second. The flag
     * only saves work: the worker's decision is what prevents overselling. */
    atomic_store(&it->left, left);
    atomic_store(&it->sold_out, left <= 0);
}

/* The store's own counter when it keeps one here (its items are in
 * g->items' order), else the workers' last report. */
int64_t gw__item_left(const gw *g, const gw_item *it)
{
    sale_item_stats st;
    if (sale_store_stats(g->store, (size_t)(it - g->items), &st) == 0)
        return st.left;
    return atomic_load(&((gw_item *)it)->left);
}

const char *gw__item_status(const gw_item *it, int64_t left, int64_t now)
{
    /* the window a reload may have moved */
    int64_t starts_at = atomic_load(&((gw_item *)it)->starts_at);
    int64_t ends_at = atomic_load(&((gw_item *)it)->ends_at);
    if (starts_at && now < starts_at)
        return "upcoming";
    if (ends_at && now >= ends_at)
        return "ended";
    return left <= 0 ? "sold_out" : "on_sale";
}

enum MHD_Result gw__get_item(gw *g, struct MHD_Connection *conn, const char *id)
{
    char buf[512];
    gw_item *it = sk_id_valid(id, strlen(id)) ? gw__item_find(g, id) : NULL;
    if (!it)
        return gw__reply_str(conn, 404, "{\"result\":\"unknown_item\"}");
    /* ask the store, the authority, rather than the last report */
    int64_t now = (int64_t)(sk_wall_ms() / 1000), left, stock; /* the clock purchases use */
    uint32_t limit;
    sale_item_state st;
    if (sale_store_item_state(g->store, (size_t)(it - g->items), &st) == 0) {
        left = st.left;
        stock = st.stock;
        limit = st.per_user_limit;
    } else {
        left = sale_store_left(g->store, (size_t)(it - g->items));
        if (left < 0)
            left = gw__item_left(g, it);
        stock = atomic_load(&it->stock);
        limit = atomic_load(&it->per_user_limit);
    }
    int64_t starts_at = atomic_load(&it->starts_at), ends_at = atomic_load(&it->ends_at);
    const char *status = gw__item_status(it, left, now);
    int n = snprintf(buf, sizeof buf,
                     "{\"item_id\":\"%s\",\"stock_total\":%lld,\"stock_left\":%lld,"
                     "\"status\":\"%s\",\"starts_at\":%lld,\"ends_at\":%lld,"
                     "\"per_user_limit\":%u}",
                     it->c->id, (long long)stock, (long long)left, status, (long long)starts_at,
                     (long long)ends_at, limit);
    return gw__reply(conn, 200, buf, (size_t)n, NULL, NULL, NULL);
}
