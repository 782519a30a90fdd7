/*
 * The cost model proper: profiles from the backends' facts, what a node costs on a device
 * (history, then the backend's estimate unless a calibrated fit of the node's op class is more
 * than COST_DISAGREE_RATIO away from it, then the roofline), what a link costs, and the
 * history table that measured runs feed.
 *
 * cost_node_seconds is on the placement's hot path (every node x device of graphs up to 10,000
 * nodes): it allocates nothing, builds the signature into a stack buffer only when the device
 * has any history at all, and takes a read lock for one hash-table probe.
 *
 * Defaults for facts a backend leaves 0 (conservative: they make an unknown device look slow
 * rather than fast, so placement only prefers it once measured):
 *   sustained f32 ops/s  0.6 x the reported peak (GEMM sustains 50-70% of peak); when no peak
 *                        is given: cpu 8 GFLOP/s per core, gpu 500 GFLOP/s, npu 1 TFLOP/s,
 *                        other 10 GFLOP/s
 *   f16 ops/s            0.6 x peak_flops_f16; else 2 x f32 when the device says has_fp16;
 *                        else unknown (0: the roofline uses the f32 figure)
 *   bandwidth            cpu 10 GB/s, gpu 100 GB/s, npu 20 GB/s, other 5 GB/s
 *   launch               cpu 2 us, gpu 10 us (20 us when it shares the host CPU), npu 50 us,
 *                        other 20 us
 *   host links           (devices that are not host-visible) 20 us + 8 GB/s each way; with
 *                        unified memory 5 us + the device's memory bandwidth
 *   power                cpu 10 W + 3 W per core, gpu 150 W, npu 5 W, other 20 W
 */
#include "cost_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COST_SUSTAINED_FRACTION 0.6

/* ---- profiles from facts ---------------------------------------------------------------- */

/* FNV-1a of the options the user gave backend BE ("key=value;" in declaration order), 0 when
 * none: part of the profile key, since an option (npu-sim's profile, OpenCL's layout) can
 * change what the device measures without changing its name. */
static uint32_t options_hash(const loom_runtime *rt, const loom_backend *be)
{
    if (be->struct_size < offsetof(loom_backend, n_options) + sizeof be->n_options ||
        !be->options)
        return 0;
    uint64_t h = 1469598103934665603ull;
    int any = 0;
    for (uint32_t k = 0; k < be->n_options; k++) {
        const char *key = be->options[k].key;
        const char *v = key ? backend_options_value(rt, be->name, key) : NULL;
        if (!v)
            continue;
        any = 1;
        for (const char *t = key; *t; t++)
            h = (h ^ (unsigned char)*t) * 1099511628211ull;
        h = (h ^ '=') * 1099511628211ull;
        for (const char *t = v; *t; t++)
            h = (h ^ (unsigned char)*t) * 1099511628211ull;
        h = (h ^ ';') * 1099511628211ull;
    }
    return any ? (uint32_t)(h ^ (h >> 32)) | 1u : 0;
}

void cost_profile_key(const loom_runtime *rt, const runtime_device *dev, char *key, size_t len)
{
    const loom_device_info *in = &dev->info;
    int v03 = LOOM_DEVICE_INFO_HAS_V03(in);
    uint32_t abi = dev->backend->abi_version;
    /* Facts that change a measurement's meaning: whether its memory is the host's (a profile
     * measured through upload/download links is not one of host memory), unified memory, an
     * in-order queue (pipelined launches), compute on the host's cores, fp16/fp64, the ABI
     * the backend speaks and the options it was given. */
    snprintf(key, len, "%.24s|%.120s|%.32s|t%u|hv%u,um%u,io%u,sc%u,f16%u,f64%u|abi%u.%u|o%08x",
             dev->backend->name, in->name, v03 ? in->driver : "", in->threads,
             in->host_visible != 0, v03 && in->unified_memory, v03 && in->in_order,
             v03 && in->shares_host_cpu, v03 && in->has_fp16, v03 && in->has_fp64, abi >> 16,
             abi & 0xffffu, rt ? options_hash(rt, dev->backend) : 0);
}

void cost_profile_from_facts(const loom_runtime *rt, const runtime_device *dev, cost_profile *p)
{
    const loom_device_info *in = &dev->info;
    int v03 = LOOM_DEVICE_INFO_HAS_V03(in);
    memset(p, 0, sizeof *p);
    cost_profile_key(rt, dev, p->key, sizeof p->key);
    uint32_t cores = in->compute_units ? in->compute_units : 1;
    double def_flops, def_bw, def_launch, def_power;
    p->shares_host_cpu = v03 && in->shares_host_cpu;
    switch (in->kind) {
    case LOOM_DEVICE_CPU:
        def_flops = 8e9 * cores, def_bw = 10e9, def_launch = 2e-6, def_power = 10 + 3.0 * cores;
        break;
    case LOOM_DEVICE_GPU:
        def_flops = 500e9, def_bw = 100e9, def_launch = p->shares_host_cpu ? 20e-6 : 10e-6;
        def_power = 150;
        break;
    case LOOM_DEVICE_NPU:
        def_flops = 1e12, def_bw = 20e9, def_launch = 50e-6, def_power = 5;
        break;
    default:
        def_flops = 10e9, def_bw = 5e9, def_launch = 20e-6, def_power = 20;
        break;
    }
    p->flops[0] = in->peak_flops_f32 > 0 ? in->peak_flops_f32 * COST_SUSTAINED_FRACTION : def_flops;
    if (v03 && in->peak_flops_f16 > 0)
        p->flops[1] = in->peak_flops_f16 * COST_SUSTAINED_FRACTION;
    else if (v03 && in->has_fp16)
        p->flops[1] = 2 * p->flops[0];
    p->mem_bandwidth = in->mem_bandwidth > 0 ? in->mem_bandwidth : def_bw;
    p->launch_s = in->launch_latency_s > 0 ? in->launch_latency_s : def_launch;
    p->host_visible = in->host_visible != 0;
    if (!p->host_visible) {
        int unified = v03 && in->unified_memory;
        p->to_host_latency_s = p->from_host_latency_s = unified ? 5e-6 : 20e-6;
        p->to_host_bandwidth = p->from_host_bandwidth = unified ? p->mem_bandwidth : 8e9;
    }
    p->power_w = def_power;
}

/* ---- signatures ------------------------------------------------------------------------- */

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

typedef struct sig_writer {
    char *buf;
    size_t len;
    int over; /* the text did not fit: what is kept is a prefix */
} sig_writer;

/* Room kept at the end of the buffer for "~" and 16 hex digits and the NUL. */
#define SIG_TAIL 18

static inline void put_c(sig_writer *w, char c)
{
    if (w->len < COST_SIG_MAX - SIG_TAIL)
        w->buf[w->len++] = c;
    else
        w->over = 1;
}

static inline void put_s(sig_writer *w, const char *s)
{
    while (*s)
        put_c(w, *s++);
}

static void put_i64(sig_writer *w, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0)
        put_c(w, '-');
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        put_c(w, tmp[--n]);
}

static void put_hex(sig_writer *w, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int k = digits - 1; k >= 0; k--)
        put_c(w, hex[(v >> (4 * k)) & 15]);
}

/* End W's text: a text that did not fit keeps its prefix and gets "~" and the 16 hex digits of
 * WHOLE (a hash of all of it), in the room SIG_TAIL keeps, so that it stays unique in practice
 * and deterministic; then the NUL. */
static void sig_finish(sig_writer *w, uint64_t whole)
{
    static const char hex[] = "0123456789abcdef";
    if (w->over) {
        w->buf[w->len++] = '~';
        for (int k = 15; k >= 0; k--)
            w->buf[w->len++] = hex[(whole >> (4 * k)) & 15];
    }
    w->buf[w->len] = '\0';
}

static const char *dtype_short(loom_dtype t)
{
    switch (t) {
    case LOOM_DTYPE_F32: return "f32";
    case LOOM_DTYPE_F16: return "f16";
    case LOOM_DTYPE_BF16: return "bf16";
    case LOOM_DTYPE_I8: return "i8";
    case LOOM_DTYPE_U8: return "u8";
    case LOOM_DTYPE_I32: return "i32";
    case LOOM_DTYPE_I64: return "i64";
    case LOOM_DTYPE_BOOL: return "b";
    default: return NULL;
    }
}

static void put_tensors(sig_writer *w, uint32_t n, const loom_tensor_desc *t)
{
    for (uint32_t k = 0; k < n; k++) {
        if (k)
            put_c(w, ';');
        if (!t || t[k].dtype == LOOM_DTYPE_UNDEFINED) {
            put_c(w, '-');
            continue;
        }
        const char *name = dtype_short(t[k].dtype);
        if (name) {
            put_s(w, name);
        } else {
            put_c(w, 'd');
            put_i64(w, t[k].dtype);
        }
        put_c(w, '[');
        uint32_t rank = t[k].rank < LOOM_MAX_RANK ? t[k].rank : LOOM_MAX_RANK;
        for (uint32_t d = 0; d < rank; d++) {
            if (d)
                put_c(w, ',');
            put_i64(w, t[k].dims[d]);
        }
        put_c(w, ']');
    }
}

static inline uint64_t fnv_bytes(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* Hash of the canonical attributes (names and values), for ops whose attributes change the
 * work without changing any shape (Transpose's perm, Gemm's transposes, a reduction's axes). */
static uint64_t attrs_hash(const loom_node_desc *node)
{
    uint64_t h = FNV_OFFSET;
    for (uint32_t k = 0; k < node->n_attrs; k++) {
        const loom_attr *a = &node->attrs[k];
        if (a->name)
            h = fnv_bytes(h, a->name, strlen(a->name) + 1);
        h = fnv_bytes(h, &a->kind, sizeof a->kind);
        switch (a->kind) {
        case LOOM_ATTR_INT: h = fnv_bytes(h, &a->i, sizeof a->i); break;
        case LOOM_ATTR_FLOAT: h = fnv_bytes(h, &a->f, sizeof a->f); break;
        case LOOM_ATTR_STRING:
            if (a->s)
                h = fnv_bytes(h, a->s, strlen(a->s));
            break;
        case LOOM_ATTR_INTS:
            if (a->ints)
                h = fnv_bytes(h, a->ints, a->count * sizeof *a->ints);
            break;
        case LOOM_ATTR_FLOATS:
            if (a->floats)
                h = fnv_bytes(h, a->floats, a->count * sizeof *a->floats);
            break;
        }
    }
    return h;
}

/* Hash of LEN bytes of text, eight at a time (signatures are hashed on the hot path). */
static uint64_t text_hash(const char *s, size_t len)
{
    uint64_t h = FNV_OFFSET ^ (len * 0x9E3779B97F4A7C15ull);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        h = (h ^ x) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 32;
    }
    uint64_t x = 0;
    memcpy(&x, s + i, len - i);
    h = (h ^ x) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

/* Mix a device group into a text hash (splitmix64's finaliser). */
static inline uint64_t group_mix(uint64_t h, uint32_t group)
{
    h ^= ((uint64_t)group + 1) * 0xD6E8FEB86659FD93ull;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
}

uint64_t cost_sig_hash(const char *sig, uint32_t group)
{
    return group_mix(text_hash(sig, strlen(sig)), group);
}

/* Hash of everything a signature says about NODE, straight from the descriptor: what makes a
 * cut signature (one too long to keep) unique. */
static uint64_t desc_hash(const loom_node_desc *node)
{
    uint64_t h = FNV_OFFSET;
    if (node->op_name)
        h = fnv_bytes(h, node->op_name, strlen(node->op_name));
    for (int side = 0; side < 2; side++) {
        uint32_t n = side ? node->n_outputs : node->n_inputs;
        const loom_tensor_desc *t = side ? node->outputs : node->inputs;
        h = fnv_bytes(h, &n, sizeof n);
        for (uint32_t k = 0; t && k < n; k++) {
            uint32_t rank = t[k].rank < LOOM_MAX_RANK ? t[k].rank : LOOM_MAX_RANK;
            h = fnv_bytes(h, &t[k].dtype, sizeof t[k].dtype);
            h = fnv_bytes(h, t[k].dims, rank * sizeof *t[k].dims);
        }
    }
    uint32_t prec = LOOM_NODE_DESC_HAS_PRECISION(node) ? node->precision : 0;
    h = fnv_bytes(h, &prec, sizeof prec);
    uint64_t ah = node->n_attrs && node->attrs ? attrs_hash(node) : 0;
    return fnv_bytes(h, &ah, sizeof ah);
}

/* NODE's signature text into BUF; returns the text's hash (before mixing in a group). */
static uint64_t sig_text(const loom_node_desc *node, char *buf)
{
    sig_writer w = {buf, 0, 0};
    put_s(&w, node->op_name ? node->op_name : "?");
    put_c(&w, '|');
    put_tensors(&w, node->n_inputs, node->inputs);
    put_c(&w, '|');
    put_tensors(&w, node->n_outputs, node->outputs);
    put_c(&w, '|');
    put_c(&w, 'p');
    put_i64(&w, LOOM_NODE_DESC_HAS_PRECISION(node) ? node->precision : 0);
    if (node->n_attrs && node->attrs) {
        put_s(&w, "|a");
        put_hex(&w, attrs_hash(node), 8);
    }
    /* Too long to keep whole (a Concat of hundreds of inputs): the prefix and the desc's hash. */
    sig_finish(&w, w.over ? desc_hash(node) : 0);
    return text_hash(buf, w.len);
}

uint64_t cost_sig(const loom_node_desc *node, uint32_t group, char *buf)
{
    return group_mix(sig_text(node, buf), group);
}

/* ---- the history table ------------------------------------------------------------------ */

cost_hist *cost_table_find(const cost_table *t, const char *sig, uint32_t group, uint64_t hash)
{
    if (!t->cap)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        cost_hist *e = t->slots[i];
        if (!e)
            return NULL;
        if (e->hash == hash && e->group == group && strcmp(e->sig, sig) == 0)
            return e;
    }
}

static int table_grow(cost_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 256;
    cost_hist **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return 0;
    for (size_t i = 0; i < t->cap; i++) {
        cost_hist *e = t->slots[i];
        if (!e)
            continue;
        size_t j = e->hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = e;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 1;
}

/* A new empty entry (SIG, GROUP, HASH) in T; NULL when out of memory. */
static cost_hist *table_insert(cost_table *t, atomic_uint *group_count, const char *sig,
                               uint32_t group, uint64_t hash)
{
    if ((t->count + 1) * 10 > t->cap * 7 && !table_grow(t))
        return NULL;
    cost_hist *e = calloc(1, sizeof *e);
    if (!e || !(e->sig = strdup(sig))) {
        free(e);
        return NULL;
    }
    e->hash = hash;
    e->group = group;
    size_t j = hash & (t->cap - 1);
    while (t->slots[j])
        j = (j + 1) & (t->cap - 1);
    t->slots[j] = e;
    t->count++;
    if (group_count)
        atomic_fetch_add(&group_count[group], 1);
    return e;
}

static void hist_append(cost_hist *e, double seconds)
{
    e->samples[e->next] = seconds;
    e->next = (e->next + 1) % COST_HISTORY_KEEP;
    if (e->n < COST_HISTORY_KEEP)
        e->n++;
    double tmp[COST_HISTORY_KEEP];
    memcpy(tmp, e->samples, e->n * sizeof *tmp);
    e->median = cost_robust_median(tmp, e->n);
    e->dirty = 1;
}

cost_hist *cost_table_add(cost_table *t, atomic_uint *group_count, const char *sig,
                          uint32_t group, uint64_t hash, double seconds)
{
    cost_hist *e = cost_table_find(t, sig, group, hash);
    if (!e && !(e = table_insert(t, group_count, sig, group, hash)))
        return NULL;
    hist_append(e, seconds);
    return e;
}

void cost_table_free(cost_table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i]) {
            free(t->slots[i]->sig);
            free(t->slots[i]);
        }
    free(t->slots);
    t->slots = NULL;
    t->cap = t->count = 0;
}

/* Entries of the model's group G: its own and its snapshot's (read without the lock). */
static unsigned group_entries(const cost_model *m, uint32_t g)
{
    unsigned n = atomic_load_explicit(&m->group_count[g], memory_order_relaxed);
    if (m->base && g < m->base->n_groups)
        n += m->base->group_count[g];
    return n;
}

/* The entry (SIG, GROUP, HASH) as the model sees it: its own, else its snapshot's. The caller
 * holds the lock (read or write). */
static const cost_hist *hist_find(const cost_model *m, const char *sig, uint32_t group,
                                  uint64_t hash)
{
    const cost_hist *e = cost_table_find(&m->own, sig, group, hash);
    if (!e && m->base)
        e = cost_table_find(&m->base->table, sig, group, hash);
    return e;
}

/* The model's own entry (SIG, GROUP, HASH), made as a copy of its snapshot's when only that
 * has it (not dirty: nothing new yet); NULL when neither has it or out of memory. The caller
 * holds the write lock. */
static cost_hist *hist_own(cost_model *m, const char *sig, uint32_t group, uint64_t hash)
{
    cost_hist *e = cost_table_find(&m->own, sig, group, hash);
    if (e || !m->base)
        return e;
    const cost_hist *b = cost_table_find(&m->base->table, sig, group, hash);
    if (!b || !(e = table_insert(&m->own, m->group_count, sig, group, hash)))
        return NULL;
    e->n = b->n;
    e->next = b->next;
    memcpy(e->samples, b->samples, sizeof e->samples);
    e->median = b->median;
    return e;
}

cost_hist *cost_hist_add(cost_model *m, const char *sig, uint32_t group, uint64_t hash,
                     double seconds)
{
    cost_hist *e = hist_own(m, sig, group, hash);
    if (!e && !(e = table_insert(&m->own, m->group_count, sig, group, hash)))
        return NULL;
    hist_append(e, seconds);
    return e;
}

cost_hist *cost_learn(cost_model *m, uint32_t dev, const char *sig, uint32_t group, uint64_t hash,
                      double seconds)
{
    const char *id = dev < m->n_devices ? m->rt->devices[dev].id : "?";
    if (!(seconds >= 0) || !isfinite(seconds)) {
        if (!atomic_exchange(&m->warned_invalid, 1))
            runtime_message(m->rt, "cost model: a measured time of %g s for %s on %s is not a "
                            "time; not learned (said once)", seconds, sig, id);
        return NULL;
    }
    cost_hist *e = hist_own(m, sig, group, hash);
    if (e && e->n >= COST_HISTORY_MIN && e->median > 0) {
        double ratio = seconds / e->median;
        if (ratio > COST_OUTLIER_RATIO || ratio < 1 / COST_OUTLIER_RATIO) {
            if (!e->warned) {
                e->warned = 1;
                runtime_message(m->rt, "cost model: %s on %s measured %.3g s, %.3gx %s the "
                                "prediction %.3g s; not learned (said once per signature)", sig,
                                id, seconds, ratio > 1 ? ratio : 1 / ratio,
                                ratio > 1 ? "above" : "below", e->median);
            }
            /* The same side as those held back, or a fresh run of them. */
            if (e->n_off && (e->off[e->n_off - 1] > e->median) != (seconds > e->median))
                e->n_off = 0;
            e->off[e->n_off++] = seconds;
            if (e->n_off < COST_HISTORY_MIN)
                return NULL;
            /* The device changed: start again from what it measures now. */
            e->n = e->next = 0;
            for (uint32_t k = 0; k + 1 < COST_HISTORY_MIN; k++)
                cost_hist_add(m, sig, group, hash, e->off[k]);
            e->n_off = 0;
        } else {
            e->n_off = 0;
        }
    }
    return cost_hist_add(m, sig, group, hash, seconds);
}

/* ---- opening and closing ---------------------------------------------------------------- */

loom_status cost_model_open(loom_runtime *rt, const char *cache_dir, cost_model **out)
{
    if (!out)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "cost model: out is NULL");
    *out = NULL;
    if (!rt)
        return loom_set_error(LOOM_ERR_INVALID_ARGUMENT, "cost model: runtime is NULL");
    cost_model *m = calloc(1, sizeof *m);
    if (!m)
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory opening the cost model");
    m->rt = rt;
    atomic_init(&m->warned_invalid, 0);
    m->n_devices = (uint32_t)rt->n_devices;
    size_t n = m->n_devices ? m->n_devices : 1;
    m->profiles = calloc(n, sizeof *m->profiles);
    m->profile_dirty = calloc(n, sizeof *m->profile_dirty);
    m->group = calloc(n, sizeof *m->group);
    m->group_count = calloc(n, sizeof *m->group_count);
    /* zero is a valid atomic_int on every platform Loom builds on (lock-free int) */
    m->disagree_said = calloc(n * (COST_CLASS_COUNT + 1), sizeof *m->disagree_said);
    char *dir = cost_default_cache_dir(cache_dir);
    m->cache_dir = dir ? dir : strdup("");
    if (!m->profiles || !m->profile_dirty || !m->group || !m->group_count || !m->cache_dir ||
        !m->disagree_said || pthread_rwlock_init(&m->lock, NULL) != 0) {
        free(m->disagree_said);
        free(m->profiles);
        free(m->profile_dirty);
        free(m->group);
        free(m->group_count);
        free(m->cache_dir);
        free(m);
        return loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory opening the cost model");
    }
    for (uint32_t d = 0; d < m->n_devices; d++) {
        cost_profile_from_facts(rt, &rt->devices[d], &m->profiles[d]);
        atomic_init(&m->group_count[d], 0);
        m->group[d] = d;
        for (uint32_t e = 0; e < d; e++)
            if (strcmp(m->profiles[e].key, m->profiles[d].key) == 0) {
                m->group[d] = e;
                break;
            }
    }
    if (m->cache_dir[0])
        cost_store_load(m);
    *out = m;
    return LOOM_OK;
}

static int model_dirty(cost_model *m)
{
    for (uint32_t d = 0; d < m->n_devices; d++)
        if (m->profile_dirty[d])
            return 1;
    for (size_t i = 0; i < m->own.cap; i++)
        if (m->own.slots[i] && m->own.slots[i]->dirty)
            return 1;
    return 0;
}

void cost_model_close(cost_model *m)
{
    if (!m)
        return;
    if (m->cache_dir[0] && model_dirty(m) && cost_model_save(m) != LOOM_OK)
        runtime_message(m->rt, "cost model: %s", loom_last_error());
    cost_table_free(&m->own);
    cost_snapshot_release(m->base);
    pthread_rwlock_destroy(&m->lock);
    free(m->disagree_said);
    free(m->profiles);
    free(m->profile_dirty);
    free(m->group);
    free(m->group_count);
    free(m->cache_dir);
    free(m);
}

const cost_profile *cost_profile_of(const cost_model *m, uint32_t dev)
{
    return m && dev < m->n_devices ? &m->profiles[dev] : NULL;
}

uint32_t cost_device_count(const cost_model *m)
{
    return m ? m->n_devices : 0;
}

const char *cost_cache_dir(const cost_model *m)
{
    return m ? m->cache_dir : "";
}

/* ---- node costs ------------------------------------------------------------------------- */

static int layout_only(loom_op_id op)
{
    return op == LOOM_OP_RESHAPE || op == LOOM_OP_SQUEEZE || op == LOOM_OP_UNSQUEEZE ||
           op == LOOM_OP_FLATTEN || op == LOOM_OP_IDENTITY;
}

static double tensor_bytes(const loom_tensor_desc *t)
{
    if (t->dtype == LOOM_DTYPE_UNDEFINED)
        return 0;
    return (double)loom_tensor_desc_numel(t) * (double)loom_dtype_size(t->dtype);
}

cost_op_class cost_op_class_of(loom_op_id op)
{
    switch (op) {
    case LOOM_OP_MATMUL: case LOOM_OP_GEMM: case LOOM_OP_EINSUM: case LOOM_OP_MAT_MUL_INTEGER:
    case LOOM_OP_QLINEAR_MAT_MUL: case LOOM_OP_LSTM: case LOOM_OP_GRU: case LOOM_OP_RNN:
        return COST_CLASS_MATMUL;
    case LOOM_OP_CONV: case LOOM_OP_CONV_TRANSPOSE:
        return COST_CLASS_CONV;
    case LOOM_OP_ADD: case LOOM_OP_SUB: case LOOM_OP_MUL: case LOOM_OP_MIN: case LOOM_OP_MAX:
    case LOOM_OP_WHERE: case LOOM_OP_AND: case LOOM_OP_OR: case LOOM_OP_EQUAL:
    case LOOM_OP_LESS: case LOOM_OP_GREATER: case LOOM_OP_SUM: case LOOM_OP_MEAN:
        return COST_CLASS_BINARY;
    case LOOM_OP_DIV: case LOOM_OP_POW: case LOOM_OP_SQRT: case LOOM_OP_RECIPROCAL:
        return COST_CLASS_DIV;
    case LOOM_OP_RELU: case LOOM_OP_LEAKY_RELU: case LOOM_OP_NEG: case LOOM_OP_ABS:
    case LOOM_OP_CLIP: case LOOM_OP_CAST: case LOOM_OP_FLOOR: case LOOM_OP_CEIL:
    case LOOM_OP_ROUND: case LOOM_OP_NOT: case LOOM_OP_HARD_SIGMOID: case LOOM_OP_HARD_SWISH:
    case LOOM_OP_DROPOUT: case LOOM_OP_QUANTIZE_LINEAR: case LOOM_OP_DEQUANTIZE_LINEAR:
        return COST_CLASS_UNARY;
    case LOOM_OP_SIGMOID: case LOOM_OP_TANH: case LOOM_OP_ERF: case LOOM_OP_GELU:
    case LOOM_OP_EXP: case LOOM_OP_LOG:
        return COST_CLASS_TRANSCENDENTAL;
    case LOOM_OP_SOFTMAX:
        return COST_CLASS_SOFTMAX;
    case LOOM_OP_LAYER_NORMALIZATION: case LOOM_OP_BATCH_NORMALIZATION:
    case LOOM_OP_INSTANCE_NORMALIZATION: case LOOM_OP_LRN:
    case LOOM_OP_MEAN_VARIANCE_NORMALIZATION:
        return COST_CLASS_NORM;
    case LOOM_OP_REDUCE_MEAN: case LOOM_OP_REDUCE_SUM: case LOOM_OP_REDUCE_MAX:
    case LOOM_OP_GLOBAL_AVERAGE_POOL: case LOOM_OP_ARG_MAX: case LOOM_OP_TOP_K:
    case LOOM_OP_GLOBAL_MAX_POOL:
        return COST_CLASS_REDUCE;
    case LOOM_OP_MAX_POOL: case LOOM_OP_AVERAGE_POOL:
        return COST_CLASS_POOL;
    case LOOM_OP_TRANSPOSE: case LOOM_OP_CONCAT: case LOOM_OP_SPLIT: case LOOM_OP_SLICE:
    case LOOM_OP_GATHER: case LOOM_OP_PAD: case LOOM_OP_TILE: case LOOM_OP_EXPAND:
    case LOOM_OP_RESIZE: case LOOM_OP_GATHER_ELEMENTS: case LOOM_OP_SCATTER_ELEMENTS:
    case LOOM_OP_GRID_SAMPLE: case LOOM_OP_ROI_ALIGN: case LOOM_OP_MAX_UNPOOL:
    case LOOM_OP_REVERSE_SEQUENCE:
        return COST_CLASS_COPY;
    case LOOM_OP_RESHAPE: case LOOM_OP_SQUEEZE: case LOOM_OP_UNSQUEEZE: case LOOM_OP_FLATTEN:
    case LOOM_OP_IDENTITY:
        return COST_CLASS_VIEW;
    default:
        return COST_CLASS_COUNT;
    }
}

int cost_op_class_counts_flops(cost_op_class c)
{
    return c == COST_CLASS_MATMUL || c == COST_CLASS_CONV;
}

double cost_roofline_seconds(const cost_profile *p, const loom_node_desc *node,
                           const loom_op_cost *cost)
{
    double bw = p->mem_bandwidth > 0 ? p->mem_bandwidth : 1e9;
    double flops = 0, bytes = 0;
    if (layout_only(node->op)) {
        bytes = node->n_outputs && node->outputs ? 2 * tensor_bytes(&node->outputs[0]) : 0;
    } else if (cost) {
        flops = cost->flops;
        bytes = cost->bytes_read + cost->bytes_written;
    } else {
        for (uint32_t k = 0; node->inputs && k < node->n_inputs; k++)
            bytes += tensor_bytes(&node->inputs[k]);
        for (uint32_t k = 0; node->outputs && k < node->n_outputs; k++)
            bytes += tensor_bytes(&node->outputs[k]);
    }
    /* Which arithmetic the node runs in: its first input's type, or what its precision lets
     * an f32 node use. */
    loom_dtype t = LOOM_DTYPE_F32;
    for (uint32_t k = 0; node->inputs && k < node->n_inputs; k++)
        if (node->inputs[k].dtype != LOOM_DTYPE_UNDEFINED) {
            t = node->inputs[k].dtype;
            break;
        }
    uint32_t prec = LOOM_NODE_DESC_HAS_PRECISION(node) ? node->precision : 0;
    int col = 0;
    if (t == LOOM_DTYPE_F16 || t == LOOM_DTYPE_BF16)
        col = 1;
    else if (t == LOOM_DTYPE_I8 || t == LOOM_DTYPE_U8)
        col = 2;
    else if (t == LOOM_DTYPE_F32 && prec == LOOM_PRECISION_INT8 && p->flops[2] > 0)
        col = 2;
    else if (t == LOOM_DTYPE_F32 && prec >= LOOM_PRECISION_F16 && p->flops[1] > 0)
        col = 1;
    double f = p->flops[col] > 0 ? p->flops[col] : p->flops[0];
    if (!(f > 0))
        f = 1e9;
    double tm = bytes / bw;
    cost_op_class c = cost_op_class_of(node->op);
    if (c < COST_CLASS_COUNT && (p->class_fixed_s[c] > 0 || p->class_rate[c] > 0)) {
        /* The class's fitted line; its rate was measured in column CLASS_COLUMN (f32, or f16
         * on a device without f32 arithmetic) and in cache. */
        double rate = p->class_rate[c], work = bytes;
        int ref = p->class_column >= 1 && p->class_column <= 2 ? (int)p->class_column : 0;
        if (cost_op_class_counts_flops(c)) {
            work = flops;
            if (!(rate > 0))
                /* A flat fit: the class's sizes all took the same time (a device whose launch
                 * dwarfs a small GEMM, a GPU's). It says nothing of larger work, which is not
                 * free: the profile's arithmetic rate prices it. */
                rate = f;
            else if (p->flops[ref] > 0 && f != p->flops[ref])
                rate *= f / p->flops[ref];
        }
        double s = rate > 0 ? work / rate : 0;
        if (bytes > p->cache_bytes && tm > s) /* streams from memory */
            s = tm;
        return p->class_fixed_s[c] + s;
    }
    double tc = flops / f;
    return p->launch_s + (tc > tm ? tc : tm);
}

/* The history median of NODE on DEV into *SECONDS when there are enough samples. */
static int history_lookup(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                          double *seconds)
{
    if (group_entries(m, m->group[dev]) == 0)
        return 0;
    char sig[COST_SIG_MAX];
    sig_text(node, sig);
    return cost_history_median(m, dev, sig, seconds);
}

static int backend_estimate(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                            double *seconds)
{
    const runtime_device *d = &m->rt->devices[dev];
    double (*est)(void *, uint32_t, const loom_node_desc *) = RUNTIME_SLOT(d->backend, estimate);
    if (!est)
        return 0;
    double s = est(d->backend->ctx, d->index, node);
    if (!(s >= 0) || !isfinite(s))
        return 0;
    *seconds = s;
    return 1;
}

/* The calibrated class fit's figure for NODE on DEV into *SECONDS: a measurement of NODE's
 * class on that device (cost_calibrate), when there is one. */
static int calibrated_class(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                            const loom_op_cost *cost, double *seconds)
{
    const cost_profile *p = &m->profiles[dev];
    cost_op_class c = cost_op_class_of(node->op);
    if (!p->calibrated || c >= COST_CLASS_COUNT ||
        !(p->class_fixed_s[c] > 0 || p->class_rate[c] > 0))
        return 0;
    double s = cost_roofline_seconds(p, node, cost);
    if (!(s > 0) || !isfinite(s))
        return 0;
    *seconds = s;
    return 1;
}

/* Whether A and B (both > 0) are more than COST_DISAGREE_RATIO apart, either way. */
static int disagree(double a, double b)
{
    return a > b * COST_DISAGREE_RATIO || b > a * COST_DISAGREE_RATIO;
}

/* Say once per device and op class that DEV's backend estimate is far off its measurement. */
static void note_disagreement(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                              const cost_choice *c)
{
    cost_op_class cls = cost_op_class_of(node->op);
    size_t slot = (size_t)dev * (COST_CLASS_COUNT + 1) + (cls <= COST_CLASS_COUNT ? cls : 0);
    if (!m->disagree_said || atomic_exchange(&m->disagree_said[slot], 1))
        return;
    double r = c->measured_s / c->estimate_s;
    runtime_message(m->rt, "cost model: %s's own estimate of %s nodes is %.3gx %s what was "
                    "measured (%s: %.3g ms, estimate %.3g ms); the measurement is used",
                    m->rt->devices[dev].id, node->op_name ? node->op_name : "?",
                    r >= 1 ? r : 1 / r, r >= 1 ? "below" : "above", c->source,
                    c->measured_s * 1e3, c->estimate_s * 1e3);
}

/* Choose NODE's figure on DEV from HIST (the history median, NAN when none), the backend's
 * estimate, the calibrated class fit and the roofline, in that order of trust; a backend
 * estimate more than COST_DISAGREE_RATIO off the calibration loses to it. */
static void choose(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                   const loom_op_cost *cost, double hist, cost_choice *c)
{
    double est = -1, cal;
    int has_est = backend_estimate(m, dev, node, &est);
    c->estimate_s = has_est ? est : -1;
    c->measured_s = -1;
    if (!isnan(hist)) {
        c->seconds = hist;
        c->source = "history";
        if (has_est && hist > 0 && est > 0 && disagree(hist, est)) {
            c->measured_s = hist;
            note_disagreement(m, dev, node, c);
        }
        return;
    }
    if (has_est) {
        if (calibrated_class(m, dev, node, cost, &cal) && est > 0 && disagree(cal, est)) {
            c->seconds = c->measured_s = cal;
            c->source = "calibration";
            note_disagreement(m, dev, node, c);
            return;
        }
        c->seconds = est;
        c->source = "backend";
        return;
    }
    c->seconds = cost_roofline_seconds(&m->profiles[dev], node, cost);
    c->source = "roofline";
}

void cost_node_choose(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                      const loom_op_cost *cost, cost_choice *c)
{
    c->seconds = INFINITY;
    c->source = "roofline";
    c->estimate_s = c->measured_s = -1;
    if (!m || !node || dev >= m->n_devices)
        return;
    double h;
    choose(m, dev, node, cost, history_lookup(m, dev, node, &h) ? h : NAN, c);
}

double cost_node_seconds(const cost_model *m, uint32_t dev, const loom_node_desc *node,
                       const loom_op_cost *cost)
{
    cost_choice c;
    cost_node_choose(m, dev, node, cost, &c);
    return c.seconds;
}

void cost_node_seconds_all(const cost_model *m, const loom_node_desc *node,
                         const loom_op_cost *cost, double *seconds)
{
    if (!m || !node || !seconds)
        return;
    char sig[COST_SIG_MAX];
    uint64_t th = 0;
    int built = 0;
    cost_model *mm = (cost_model *)m; /* the lock is the only thing touched */
    /* History first, for every device at once under one read lock; NAN: none. */
    for (uint32_t d = 0; d < m->n_devices; d++) {
        seconds[d] = NAN;
        uint32_t g = m->group[d];
        if (group_entries(m, g) == 0)
            continue;
        if (!built) {
            th = sig_text(node, sig);
            built = 1;
            pthread_rwlock_rdlock(&mm->lock);
        }
        const cost_hist *e = hist_find(m, sig, g, group_mix(th, g));
        if (e && e->n >= COST_HISTORY_MIN)
            seconds[d] = e->median;
    }
    if (built)
        pthread_rwlock_unlock(&mm->lock);
    for (uint32_t d = 0; d < m->n_devices; d++) {
        cost_choice c;
        choose(m, d, node, cost, seconds[d], &c);
        seconds[d] = c.seconds;
    }
}

const char *cost_node_source(const cost_model *m, uint32_t dev, const loom_node_desc *node)
{
    /* The op's FLOPs and bytes from the registry, as the placement saw them. */
    loom_op_cost oc;
    const loom_op_cost *pc = NULL;
    const loom_op_def *def = node ? loom_op_get(node->op) : NULL;
    if (def && def->cost) {
        memset(&oc, 0, sizeof oc);
        def->cost(node, &oc);
        pc = &oc;
    }
    cost_choice c;
    cost_node_choose(m, dev, node, pc, &c);
    return c.source;
}

char *cost_choice_note(const cost_model *m, uint32_t dev, const cost_choice *c)
{
    if (!m || dev >= m->n_devices || !c || !(c->measured_s > 0) || !(c->estimate_s > 0))
        return NULL;
    double r = c->measured_s / c->estimate_s;
    char buf[256];
    snprintf(buf, sizeof buf, "cost from measurement (%.3g ms, %s); %s's estimate %.3g ms was "
             "%.0fx off", c->measured_s * 1e3,
             strcmp(c->source, "history") ? "calibration of its op class" : "measured history",
             m->rt->devices[dev].id, c->estimate_s * 1e3, r >= 1 ? r : 1 / r);
    return strdup(buf);
}

/* ---- links ------------------------------------------------------------------------------ */

void cost_link(const cost_model *m, uint32_t from, uint32_t to, double *latency_s, double *bandwidth)
{
    double lat = 0, bw = INFINITY;
    const cost_profile *pf = from != COST_HOST ? cost_profile_of(m, from) : NULL;
    const cost_profile *pt = to != COST_HOST ? cost_profile_of(m, to) : NULL;
    int hv_from = !pf || pf->host_visible, hv_to = !pt || pt->host_visible;
    if (from != to && !(hv_from && hv_to)) {
        if (!hv_from) {
            lat += pf->to_host_latency_s;
            bw = pf->to_host_bandwidth > 0 ? pf->to_host_bandwidth : bw;
        }
        if (!hv_to) {
            lat += pt->from_host_latency_s;
            if (pt->from_host_bandwidth > 0 && pt->from_host_bandwidth < bw)
                bw = pt->from_host_bandwidth;
        }
    }
    if (latency_s)
        *latency_s = lat;
    if (bandwidth)
        *bandwidth = bw;
}

/* ---- recording -------------------------------------------------------------------------- */

void cost_signature(const loom_node_desc *node, char *buf)
{
    sig_text(node, buf);
}

void cost_signature_unit(const char *label, const loom_node_desc *nodes, const uint32_t *which,
                         uint32_t n, char *buf)
{
    sig_writer w = {buf, 0, 0};
    uint64_t h = FNV_OFFSET;
    put_s(&w, "unit:");
    put_s(&w, label ? label : "?");
    for (uint32_t k = 0; k < n; k++) {
        char one[COST_SIG_MAX];
        sig_text(&nodes[which[k]], one);
        put_c(&w, '{');
        put_s(&w, one);
        put_c(&w, '}');
        h = fnv_bytes(h, one, strlen(one) + 1);
    }
    sig_finish(&w, h); /* when too long: the prefix and a hash of every member's signature */
}

int cost_history_median(const cost_model *m, uint32_t dev, const char *sig, double *seconds)
{
    if (!m || !sig || dev >= m->n_devices)
        return 0;
    uint32_t g = m->group[dev];
    if (group_entries(m, g) == 0)
        return 0;
    uint64_t h = cost_sig_hash(sig, g);
    int found = 0;
    cost_model *mm = (cost_model *)m; /* the lock is the only thing touched */
    pthread_rwlock_rdlock(&mm->lock);
    const cost_hist *e = hist_find(m, sig, g, h);
    if (e && e->n >= COST_HISTORY_MIN) {
        *seconds = e->median;
        found = 1;
    }
    pthread_rwlock_unlock(&mm->lock);
    return found;
}

void cost_record_signature(cost_model *m, uint32_t dev, const char *sig, double seconds)
{
    if (!m || !sig || dev >= m->n_devices)
        return;
    uint32_t g = m->group[dev];
    uint64_t h = cost_sig_hash(sig, g);
    pthread_rwlock_wrlock(&m->lock);
    cost_learn(m, dev, sig, g, h, seconds);
    pthread_rwlock_unlock(&m->lock);
}

void cost_record(cost_model *m, uint32_t dev, const loom_node_desc *node, double seconds)
{
    if (!m || !node || dev >= m->n_devices)
        return;
    char sig[COST_SIG_MAX];
    uint32_t g = m->group[dev];
    uint64_t h = cost_sig(node, g, sig);
    pthread_rwlock_wrlock(&m->lock);
    cost_learn(m, dev, sig, g, h, seconds);
    pthread_rwlock_unlock(&m->lock);
}

static uint64_t name_hash(const char *s)
{
    return s ? fnv_bytes(FNV_OFFSET, s, strlen(s)) : 0;
}

size_t cost_record_timeline(cost_model *m, const loom_graph *g, const loom_plan *plan,
                          const loom_run_stats *stats, uint32_t precision)
{
    if (!m || !g || !plan || !stats || !stats->timeline || !g->n_nodes)
        return 0;
    /* Graph nodes by name, so that each plan node finds its graph node in O(1); a name used
     * twice is matched in order (USED marks those taken). */
    size_t cap = 16;
    while (cap < 2 * g->n_nodes)
        cap *= 2;
    int32_t *slot = malloc(cap * sizeof *slot);
    char *used = calloc(g->n_nodes, 1);
    uint32_t max_in = 1, max_out = 1;
    for (size_t i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].n_inputs > max_in)
            max_in = g->nodes[i].n_inputs;
        if (g->nodes[i].n_outputs > max_out)
            max_out = g->nodes[i].n_outputs;
    }
    loom_tensor_desc *in_d = malloc(max_in * sizeof *in_d);
    loom_tensor_desc *out_d = malloc(max_out * sizeof *out_d);
    const void **in_c = malloc(max_in * sizeof *in_c);
    size_t recorded = 0;
    if (!slot || !used || !in_d || !out_d || !in_c)
        goto out;
    for (size_t i = 0; i < cap; i++)
        slot[i] = -1;
    for (size_t i = 0; i < g->n_nodes; i++) {
        size_t j = name_hash(g->nodes[i].name) & (cap - 1);
        while (slot[j] >= 0)
            j = (j + 1) & (cap - 1);
        slot[j] = (int32_t)i;
    }
    pthread_rwlock_wrlock(&m->lock);
    for (size_t t = 0; t < stats->timeline_count && t < stats->timeline_capacity; t++) {
        const loom_node_timing *tm = &stats->timeline[t];
        const char *name = loom_plan_node_name(plan, tm->node);
        const char *op = loom_plan_node_op(plan, tm->node);
        if (!name || !op || tm->device >= m->n_devices || tm->end_ns < tm->start_ns)
            continue;
        int32_t found = -1;
        for (size_t j = name_hash(name) & (cap - 1); slot[j] >= 0; j = (j + 1) & (cap - 1)) {
            const graph_node *gn = &g->nodes[slot[j]];
            if (!used[slot[j]] && gn->name && strcmp(gn->name, name) == 0 && strcmp(gn->def->name, op) == 0) {
                found = slot[j];
                break;
            }
        }
        if (found < 0)
            continue;
        used[found] = 1;
        loom_node_desc desc;
        graph_node_desc(g, (size_t)found, &desc, in_d, out_d, in_c);
        desc.precision = precision;
        char sig[COST_SIG_MAX];
        uint32_t grp = m->group[tm->device];
        uint64_t h = cost_sig(&desc, grp, sig);
        if (cost_learn(m, tm->device, sig, grp, h, (double)(tm->end_ns - tm->start_ns) * 1e-9))
            recorded++;
    }
    pthread_rwlock_unlock(&m->lock);
out:
    free(slot);
    free(used);
    free(in_d);
    free(out_d);
    free(in_c);
    return recorded;
}
