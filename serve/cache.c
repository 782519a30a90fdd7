/*
 * The result cache: values (serialized outputs) by a 128-bit key, bounded in bytes, the least
 * recently used evicted first; and the table of requests in flight, so that identical requests
 * arriving together run once (the first leads, the others wait for its value).
 */
#include "serve_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

sv_blob *sv_blob_new(size_t size)
{
    sv_blob *b = malloc(sizeof *b + size);
    if (!b)
        return NULL;
    b->refs = 1;
    b->size = size;
    return b;
}

void sv_blob_ref(sv_blob *b)
{
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
}

void sv_blob_release(sv_blob *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

typedef struct entry {
    sv_key key;
    struct entry *next_hash;
    struct entry *lru_prev, *lru_next; /* ready entries only; head = most recent */
    sv_blob *value;                     /* NULL while in flight */
    void **waiters;                     /* in flight: the requests that follow */
    size_t n_waiters, cap_waiters;
} entry;

struct sv_cache {
    pthread_mutex_t mu;
    size_t max_bytes, bytes;
    entry **buckets;
    size_t n_buckets, n_entries;
    entry *lru_head, *lru_tail;
    sv_cache_stats stats;
};

static size_t bucket_of(const sv_cache *c, sv_key k)
{
    return (size_t)(k.lo ^ (k.hi * 0x9E3779B97F4A7C15ull)) & (c->n_buckets - 1);
}

sv_cache *sv_cache_create(size_t max_bytes)
{
    sv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->n_buckets = 256;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void entry_free(entry *e)
{
    sv_blob_release(e->value);
    free(e->waiters);
    free(e);
}

void sv_cache_destroy(sv_cache *c)
{
    if (!c)
        return;
    for (size_t b = 0; b < c->n_buckets; b++) {
        entry *e = c->buckets[b];
        while (e) {
            entry *n = e->next_hash;
            entry_free(e);
            e = n;
        }
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static entry *find(sv_cache *c, sv_key k, entry ***link)
{
    entry **p = &c->buckets[bucket_of(c, k)];
    while (*p && ((*p)->key.lo != k.lo || (*p)->key.hi != k.hi))
        p = &(*p)->next_hash;
    if (link)
        *link = p;
    return *p;
}

static void lru_unlink(sv_cache *c, entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(sv_cache *c, entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = c->lru_head;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail)
        c->lru_tail = e;
}

static void remove_entry(sv_cache *c, entry *e)
{
    entry **link;
    find(c, e->key, &link);
    *link = e->next_hash;
    if (e->value) {
        lru_unlink(c, e);
        c->bytes -= e->value->size;
    }
    c->n_entries--;
    entry_free(e);
}

static void grow(sv_cache *c)
{
    size_t n = c->n_buckets * 2;
    entry **nb = calloc(n, sizeof *nb);
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t b = 0; b < c->n_buckets; b++) {
        entry *e = c->buckets[b];
        while (e) {
            entry *next = e->next_hash;
            size_t k = (size_t)(e->key.lo ^ (e->key.hi * 0x9E3779B97F4A7C15ull)) & (n - 1);
            e->next_hash = nb[k];
            nb[k] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->n_buckets = n;
}

sv_lookup sv_cache_begin(sv_cache *c, sv_key key, void *waiter, sv_blob **hit)
{
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, key, NULL);
    if (e && e->value) {
        lru_unlink(c, e);
        lru_push_front(c, e);
        sv_blob_ref(e->value);
        *hit = e->value;
        c->stats.hits++;
        pthread_mutex_unlock(&c->mu);
        return SV_CACHE_HIT;
    }
    if (e) {
        if (e->n_waiters == e->cap_waiters) {
            size_t cap = e->cap_waiters ? 2 * e->cap_waiters : 4;
            void **w = realloc(e->waiters, cap * sizeof *w);
            if (!w) {
                /* No room to follow: run it again instead. */
                c->stats.misses++;
                pthread_mutex_unlock(&c->mu);
                return SV_CACHE_LEAD;
            }
            e->waiters = w;
            e->cap_waiters = cap;
        }
        e->waiters[e->n_waiters++] = waiter;
        c->stats.coalesced++;
        c->stats.hits++;
        pthread_mutex_unlock(&c->mu);
        return SV_CACHE_FOLLOW;
    }
    c->stats.misses++;
    e = calloc(1, sizeof *e);
    if (e) {
        entry **link;
        find(c, key, &link);
        e->key = key;
        *link = e;
        c->n_entries++;
        if (c->n_entries > c->n_buckets)
            grow(c);
    }
    pthread_mutex_unlock(&c->mu);
    return SV_CACHE_LEAD;
}

size_t sv_cache_finish(sv_cache *c, sv_key key, sv_blob *value, void ***waiters)
{
    *waiters = NULL;
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, key, NULL);
    size_t n = 0;
    if (!e || e->value) { /* not registered (out of memory at begin) or already stored */
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    *waiters = e->waiters;
    n = e->n_waiters;
    e->waiters = NULL;
    e->n_waiters = e->cap_waiters = 0;
    if (!value || value->size > c->max_bytes) {
        remove_entry(c, e);
        pthread_mutex_unlock(&c->mu);
        return n;
    }
    while (c->bytes + value->size > c->max_bytes && c->lru_tail) {
        remove_entry(c, c->lru_tail);
        c->stats.evictions++;
    }
    sv_blob_ref(value);
    e->value = value;
    c->bytes += value->size;
    lru_push_front(c, e);
    c->stats.inserts++;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void sv_cache_get_stats(sv_cache *c, sv_cache_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    out->bytes = c->bytes;
    out->entries = c->n_entries;
    out->max_bytes = c->max_bytes;
    pthread_mutex_unlock(&c->mu);
}
