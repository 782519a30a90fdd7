/*
 * The static memory plan: every intermediate tensor and every node's scratch gets an offset in
 * its device's arena, decided once at plan time, so runs never allocate. Tensors whose
 * lifetimes do not overlap share bytes.
 *
 * Lifetimes are positions in the plan's order; each device runs its nodes in that order, so a
 * tensor is dead on its device once its last reader has run. A tensor read or written by another
 * worker (a node of another device, a transfer) is kept for the whole run in bytes of its own
 * (that worker's progress is not ordered with this device's).
 *
 * Allocation walks the nodes in order with a best-fit free list (coalescing on free), the
 * classic scheme of static planners; a tensor is freed right after its last reader.
 *
 * Views: the output of a Reshape, Flatten, Squeeze or Unsqueeze run by the built-in CPU backend
 * (the same bytes in the same order) takes its input's bytes instead of bytes of its own when
 * both are intermediates of that device read by no other worker and the node has no fallback;
 * the input then lives until the view's last reader, and the CPU kernel, seeing its output at
 * its input, does nothing. BERT-base has 48 such Reshapes of [128, 768] per run. LOOM_VIEWS=0
 * turns it off.
 */
#include "sched_internal.h"

#include <stdlib.h>
#include <string.h>

/* Whether node N's output may take its input's bytes (see the header): returns the input
 * tensor, or -1. */
static int32_t view_source(const loom_plan *plan, const plan_node *n, const uint8_t *pinned)
{
    if (n->op != LOOM_OP_RESHAPE && n->op != LOOM_OP_FLATTEN && n->op != LOOM_OP_SQUEEZE &&
        n->op != LOOM_OP_UNSQUEEZE)
        return -1;
    /* Device 0 is the built-in CPU backend's (runtime.c adds it first), whose kernels for these
     * ops do nothing when their output is their input. */
    if (n->n_in < 1 || n->n_out != 1 || n->fb_kernel ||
        plan->rt->devices[n->device].backend != plan->rt->devices[0].backend)
        return -1;
    const int32_t ti = plan->io[n->io_first], to = plan->io[n->io_first + n->n_in];
    if (ti < 0 || to < 0 || pinned[ti] || pinned[to])
        return -1;
    const plan_tensor *in = &plan->tensors[ti], *out = &plan->tensors[to];
    if (in->kind != PLAN_T_INTERMEDIATE || out->kind != PLAN_T_INTERMEDIATE ||
        in->device != n->device || out->device != n->device || in->bytes != out->bytes)
        return -1;
    return ti;
}

#define ARENA_ALIGN 64

typedef struct block {
    size_t off, size;
} block;

typedef struct arena {
    block *free;  /* sorted by offset, coalesced */
    size_t n_free, cap_free;
    size_t top;   /* high-water mark = the arena's size */
} arena;

static size_t align_up(size_t v)
{
    return (v + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

static int arena_alloc(arena *a, size_t size, size_t *off)
{
    size = align_up(size ? size : 1);
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < a->n_free; i++)
        if (a->free[i].size >= size && (best == SIZE_MAX || a->free[i].size < a->free[best].size))
            best = i;
    if (best != SIZE_MAX) {
        *off = a->free[best].off;
        a->free[best].off += size;
        a->free[best].size -= size;
        if (!a->free[best].size) {
            memmove(&a->free[best], &a->free[best + 1], (a->n_free - best - 1) * sizeof(block));
            a->n_free--;
        }
        return 1;
    }
    /* Grow the arena; a free block at the very top is extended rather than wasted. */
    if (a->n_free && a->free[a->n_free - 1].off + a->free[a->n_free - 1].size == a->top) {
        block *b = &a->free[--a->n_free];
        *off = b->off;
        a->top = b->off + size;
        return 1;
    }
    *off = a->top;
    a->top += size;
    return 1;
}

static int arena_free(arena *a, size_t off, size_t size)
{
    size = align_up(size ? size : 1);
    size_t i = 0;
    while (i < a->n_free && a->free[i].off < off)
        i++;
    int merge_prev = i > 0 && a->free[i - 1].off + a->free[i - 1].size == off;
    int merge_next = i < a->n_free && off + size == a->free[i].off;
    if (merge_prev && merge_next) {
        a->free[i - 1].size += size + a->free[i].size;
        memmove(&a->free[i], &a->free[i + 1], (a->n_free - i - 1) * sizeof(block));
        a->n_free--;
    } else if (merge_prev) {
        a->free[i - 1].size += size;
    } else if (merge_next) {
        a->free[i].off = off;
        a->free[i].size += size;
    } else {
        if (a->n_free == a->cap_free) {
            size_t n = a->cap_free ? a->cap_free * 2 : 32;
            block *b = realloc(a->free, n * sizeof *b);
            if (!b)
                return 0;
            a->free = b;
            a->cap_free = n;
        }
        memmove(&a->free[i + 1], &a->free[i], (a->n_free - i) * sizeof(block));
        a->free[i].off = off;
        a->free[i].size = size;
        a->n_free++;
    }
    return 1;
}

loom_status plan_memory_plan(loom_plan *plan)
{
    uint32_t nt = plan->n_tensors, nn = plan->n_nodes;
    arena *arenas = calloc(plan->n_devs + 1, sizeof *arenas);
    /* free_at[p]: tensors whose last reader is node p, as a linked list through next_free */
    int32_t *free_head = malloc((nn + 1) * sizeof *free_head);
    int32_t *next_free = malloc((nt + 1) * sizeof *next_free);
    uint8_t *pinned = calloc(nt + 1, 1);
    int32_t *root = malloc((nt + 1) * sizeof *root), *end = malloc((nt + 1) * sizeof *end);
    loom_status st = LOOM_OK;
    if (!arenas || !free_head || !next_free || !pinned || !root || !end) {
        st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning memory");
        goto done;
    }
    for (uint32_t p = 0; p < nn; p++)
        free_head[p] = -1;
    /* Tensors read or written by another worker than their arena's device (another device,
     * or a transfer worker) live for the whole run: that worker's progress is not ordered
     * with this device's. */
    for (uint32_t p = 0; p < nn; p++) {
        const plan_node *n = &plan->nodes[p];
        for (uint32_t k = 0; k < n->n_in + n->n_out; k++) {
            int32_t t = plan->io[n->io_first + k];
            if (t >= 0 && plan->tensors[t].kind == PLAN_T_INTERMEDIATE &&
                plan->dev_slot[plan->tensors[t].device] != n->slot)
                pinned[t] = 1;
        }
    }
    /* Views: root[t] is the tensor whose bytes t uses (t itself when it has its own), end[r] the
     * last position any tensor on root r is used. Producers come before readers in plan order,
     * so a view's input already has its root. */
    const char *views_env = getenv("LOOM_VIEWS");
    const int views = !(views_env && strcmp(views_env, "0") == 0);
    for (uint32_t t = 0; t < nt; t++) {
        const plan_tensor *pt = &plan->tensors[t];
        root[t] = (int32_t)t;
        end[t] = pt->last_use >= 0 ? pt->last_use : pt->producer;
    }
    for (uint32_t p = 0; views && p < nn; p++) {
        const plan_node *n = &plan->nodes[p];
        const int32_t src = view_source(plan, n, pinned);
        if (src < 0)
            continue;
        const int32_t to = plan->io[n->io_first + n->n_in], r = root[src];
        root[to] = r;
        if (end[to] > end[r])
            end[r] = end[to];
    }
    for (uint32_t t = 0; t < nt; t++) {
        const plan_tensor *pt = &plan->tensors[t];
        next_free[t] = -1;
        if (pt->kind != PLAN_T_INTERMEDIATE || pinned[t] || root[t] != (int32_t)t)
            continue;
        /* A value nobody reads (an unused extra output) dies with its producer. */
        int32_t at = end[t];
        if (at < 0)
            continue;
        next_free[t] = free_head[at];
        free_head[at] = (int32_t)t;
    }
    plan->unshared_bytes = 0;
    /* Pinned tensors get bytes no other tensor ever had: a worker that writes one (a transfer
     * worker, another device) may run ahead of the arena's own device, so it must not reuse
     * what that device frees later in plan order. */
    for (uint32_t t = 0; t < nt; t++) {
        plan_tensor *pt = &plan->tensors[t];
        if (pt->kind != PLAN_T_INTERMEDIATE || !pinned[t])
            continue;
        arena_alloc(&arenas[plan->dev_slot[pt->device]], pt->bytes, &pt->offset);
        plan->unshared_bytes += align_up(pt->bytes ? pt->bytes : 1);
    }
    for (uint32_t p = 0; p < nn; p++) {
        plan_node *n = &plan->nodes[p];
        arena *a = &arenas[plan->dev_slot[n->device]];
        for (uint32_t k = 0; k < n->n_out; k++) {
            int32_t ti = plan->io[n->io_first + n->n_in + k];
            plan_tensor *t = &plan->tensors[ti];
            if (t->kind != PLAN_T_INTERMEDIATE || pinned[ti])
                continue;
            if (root[ti] != ti) {
                t->offset = plan->tensors[root[ti]].offset;
                continue;
            }
            arena_alloc(&arenas[plan->dev_slot[t->device]], t->bytes, &t->offset);
            plan->unshared_bytes += align_up(t->bytes ? t->bytes : 1);
        }
        /* The fallback kernel runs in the same scratch: size it for both (a device the host
         * cannot address stages its fallback through host memory instead). */
        if (n->fb_kernel && n->fb_scratch_bytes > n->scratch_bytes &&
            plan->rt->devices[n->device].info.host_visible)
            n->scratch_bytes = n->fb_scratch_bytes;
        if (n->scratch_bytes) {
            arena_alloc(a, n->scratch_bytes, &n->scratch_offset);
            plan->unshared_bytes += align_up(n->scratch_bytes);
            if (!arena_free(a, n->scratch_offset, n->scratch_bytes)) {
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning memory");
                goto done;
            }
        }
        for (int32_t t = free_head[p]; t >= 0; t = next_free[t]) {
            plan_tensor *pt = &plan->tensors[t];
            if (!arena_free(&arenas[plan->dev_slot[pt->device]], pt->offset, pt->bytes)) {
                st = loom_set_error(LOOM_ERR_OUT_OF_MEMORY, "out of memory planning memory");
                goto done;
            }
        }
    }
    plan->peak_bytes = 0;
    for (uint32_t s = 0; s < plan->n_devs; s++) {
        plan->devs[s].arena_bytes = arenas[s].top;
        plan->peak_bytes += arenas[s].top;
    }
done:
    if (arenas)
        for (uint32_t s = 0; s < plan->n_devs; s++)
            free(arenas[s].free);
    free(arenas);
    free(free_head);
    free(next_free);
    free(pinned);
    free(root);
    free(end);
    return st;
}
