/*
 * The CUDA backend's index arithmetic (backends/cuda/cuda_index.h), run on the host against
 * naive loops: the same functions the kernels run on the GPU, so broadcasting, Transpose,
 * Expand, the reductions' walks and MatMul's batch loop are checked on every machine, GPU or
 * not. Each case enumerates every output element and compares the walk's offsets, after
 * collapsing, with offsets computed from explicit coordinates.
 */
#include "test_support.h"

#include "backends/cuda/cuda_index.h"

#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A small deterministic generator (the cases must be the same on every run). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static int64_t numel_of(int32_t rank, const int64_t *dims)
{
    int64_t n = 1;
    for (int32_t d = 0; d < rank; d++)
        n *= dims[d];
    return n;
}

/* Coordinates of linear index I in a dense C-order shape. */
static void coords_of(int64_t i, int32_t rank, const int64_t *dims, int64_t *coord)
{
    for (int32_t d = rank - 1; d >= 0; d--) {
        coord[d] = i % dims[d];
        i /= dims[d];
    }
}

/* Naive numpy broadcasting: the offset in IN (right-aligned, extent-1 axes repeated) of the
 * output coordinate COORD. */
static int64_t naive_bcast_offset(int32_t in_rank, const int64_t *in_dims, int32_t out_rank,
                                  const int64_t *coord)
{
    int64_t off = 0;
    for (int32_t e = 0; e < in_rank; e++) {
        int32_t d = e + (out_rank - in_rank);
        int64_t c = in_dims[e] == 1 ? 0 : coord[d];
        off = off * in_dims[e] + c;
    }
    return off;
}

/* Random output shape and an operand shape that broadcasts to it (leading axes dropped, some
 * axes set to 1). */
static void random_shapes(int32_t *out_rank, int64_t *out, int32_t *in_rank, int64_t *in)
{
    *out_rank = (int32_t)rnd(6); /* 0..5 */
    for (int32_t d = 0; d < *out_rank; d++)
        out[d] = 1 + rnd(4);
    *in_rank = *out_rank ? (int32_t)rnd((uint32_t)*out_rank + 1) : 0;
    for (int32_t e = 0; e < *in_rank; e++) {
        int32_t d = e + (*out_rank - *in_rank);
        in[e] = rnd(3) == 0 ? 1 : out[d];
    }
}

static void test_broadcast_walk_matches_numpy(void)
{
    int failures = 0;
    for (int t = 0; t < 3000 && failures < 5; t++) {
        int32_t orank, arank, brank;
        int64_t out[CUDA_MAX_RANK], a[CUDA_MAX_RANK], b[CUDA_MAX_RANK];
        random_shapes(&orank, out, &arank, a);
        /* B: its own random broadcast of the same output */
        brank = orank ? (int32_t)rnd((uint32_t)orank + 1) : 0;
        for (int32_t e = 0; e < brank; e++)
            b[e] = rnd(2) ? 1 : out[e + (orank - brank)];
        cuda_walk w = {0};
        w.rank = orank;
        w.n_operands = 2;
        for (int32_t d = 0; d < orank; d++)
            w.dims[d] = out[d];
        CU_ASSERT_FATAL(cuda_bcast_strides(arank, a, orank, out, w.strides[0]));
        CU_ASSERT_FATAL(cuda_bcast_strides(brank, b, orank, out, w.strides[1]));
        cuda_walk_collapse(&w);
        CU_ASSERT_FATAL(w.rank <= orank);
        const int64_t n = numel_of(orank, out);
        CU_ASSERT_EQUAL(cuda_walk_numel(&w), n);
        for (int64_t i = 0; i < n; i++) {
            int64_t coord[CUDA_MAX_RANK], off[CUDA_MAX_OPERANDS];
            coords_of(i, orank, out, coord);
            cuda_walk_offsets(&w, i, off);
            if (off[0] != naive_bcast_offset(arank, a, orank, coord) ||
                off[1] != naive_bcast_offset(brank, b, orank, coord)) {
                CU_FAIL("broadcast offset differs from numpy's");
                failures++;
                break;
            }
        }
    }
}

static void test_bcast_strides_refuses_mismatch(void)
{
    const int64_t out[3] = {2, 3, 4};
    int64_t s[CUDA_MAX_RANK];
    const int64_t bad[2] = {2, 4}; /* 2 against 3 */
    CU_ASSERT_FALSE(cuda_bcast_strides(2, bad, 3, out, s));
    const int64_t longer[4] = {1, 2, 3, 4};
    CU_ASSERT_FALSE(cuda_bcast_strides(4, longer, 3, out, s));
    const int64_t ok[2] = {3, 1};
    CU_ASSERT_TRUE(cuda_bcast_strides(2, ok, 3, out, s));
    CU_ASSERT_EQUAL(s[0], 0);
    CU_ASSERT_EQUAL(s[1], 1);
    CU_ASSERT_EQUAL(s[2], 0);
}

/* Same shapes collapse to one contiguous axis; a bias [n] on [rows, n] to two. */
static void test_collapse_shapes(void)
{
    cuda_walk w = {0};
    const int64_t out[4] = {2, 3, 4, 5};
    w.rank = 4;
    w.n_operands = 2;
    for (int d = 0; d < 4; d++)
        w.dims[d] = out[d];
    CU_ASSERT_FATAL(cuda_bcast_strides(4, out, 4, out, w.strides[0]));
    CU_ASSERT_FATAL(cuda_bcast_strides(4, out, 4, out, w.strides[1]));
    cuda_walk_collapse(&w);
    CU_ASSERT_EQUAL(w.rank, 1);
    CU_ASSERT_EQUAL(w.dims[0], 120);
    CU_ASSERT_EQUAL(w.strides[0][0], 1);
    const int64_t bias[1] = {5};
    cuda_walk v = {0};
    v.rank = 4;
    v.n_operands = 2;
    for (int d = 0; d < 4; d++)
        v.dims[d] = out[d];
    CU_ASSERT_FATAL(cuda_bcast_strides(4, out, 4, out, v.strides[0]));
    CU_ASSERT_FATAL(cuda_bcast_strides(1, bias, 4, out, v.strides[1]));
    cuda_walk_collapse(&v);
    CU_ASSERT_EQUAL(v.rank, 2);
    CU_ASSERT_EQUAL(v.dims[0], 24);
    CU_ASSERT_EQUAL(v.dims[1], 5);
    CU_ASSERT_EQUAL(v.strides[1][0], 0);
    CU_ASSERT_EQUAL(v.strides[1][1], 1);
}

static void test_transpose_walk_matches_naive(void)
{
    for (int t = 0; t < 2000; t++) {
        int32_t rank = 1 + (int32_t)rnd(5);
        int64_t dims[CUDA_MAX_RANK], perm[CUDA_MAX_RANK], odims[CUDA_MAX_RANK];
        for (int32_t d = 0; d < rank; d++) {
            dims[d] = 1 + rnd(4);
            perm[d] = d;
        }
        for (int32_t d = rank - 1; d > 0; d--) { /* Fisher-Yates */
            int32_t j = (int32_t)rnd((uint32_t)d + 1);
            int64_t x = perm[d];
            perm[d] = perm[j];
            perm[j] = x;
        }
        for (int32_t d = 0; d < rank; d++)
            odims[d] = dims[perm[d]];
        cuda_walk w;
        cuda_transpose_walk(rank, dims, perm, &w);
        const int64_t n = numel_of(rank, dims);
        for (int64_t i = 0; i < n; i++) {
            int64_t oc[CUDA_MAX_RANK], ic[CUDA_MAX_RANK], off[CUDA_MAX_OPERANDS];
            coords_of(i, rank, odims, oc);
            for (int32_t d = 0; d < rank; d++)
                ic[perm[d]] = oc[d];
            int64_t want = 0;
            for (int32_t d = 0; d < rank; d++)
                want = want * dims[d] + ic[d];
            cuda_walk_offsets(&w, i, off);
            if (off[0] != want) {
                CU_FAIL("transpose offset differs from the naive one");
                return;
            }
        }
    }
}

static void test_reduce_walks_match_naive(void)
{
    for (int t = 0; t < 1500; t++) {
        int32_t rank = 1 + (int32_t)rnd(5);
        int64_t dims[CUDA_MAX_RANK];
        uint8_t reduced[CUDA_MAX_RANK] = {0};
        int32_t kept_rank = 0, red_rank = 0;
        int64_t kdims[CUDA_MAX_RANK], rdims[CUDA_MAX_RANK];
        int32_t kaxes[CUDA_MAX_RANK], raxes[CUDA_MAX_RANK];
        for (int32_t d = 0; d < rank; d++) {
            dims[d] = 1 + rnd(4);
            reduced[d] = (uint8_t)rnd(2);
            if (reduced[d]) {
                raxes[red_rank] = d;
                rdims[red_rank++] = dims[d];
            } else {
                kaxes[kept_rank] = d;
                kdims[kept_rank++] = dims[d];
            }
        }
        cuda_walk kept, red;
        cuda_reduce_walks(rank, dims, reduced, &kept, &red);
        const int64_t n_out = numel_of(kept_rank, kdims), n_red = numel_of(red_rank, rdims);
        CU_ASSERT_EQUAL(cuda_walk_numel(&kept), n_out);
        CU_ASSERT_EQUAL(cuda_walk_numel(&red), n_red);
        for (int64_t o = 0; o < n_out; o++)
            for (int64_t r = 0; r < n_red; r++) {
                int64_t kc[CUDA_MAX_RANK], rc[CUDA_MAX_RANK], ic[CUDA_MAX_RANK];
                coords_of(o, kept_rank, kdims, kc);
                coords_of(r, red_rank, rdims, rc);
                for (int32_t d = 0; d < kept_rank; d++)
                    ic[kaxes[d]] = kc[d];
                for (int32_t d = 0; d < red_rank; d++)
                    ic[raxes[d]] = rc[d];
                int64_t want = 0;
                for (int32_t d = 0; d < rank; d++)
                    want = want * dims[d] + ic[d];
                int64_t b[CUDA_MAX_OPERANDS], e[CUDA_MAX_OPERANDS];
                cuda_walk_offsets(&kept, o, b);
                cuda_walk_offsets(&red, r, e);
                if (b[0] + e[0] != want) {
                    CU_FAIL("reduction offset differs from the naive one");
                    return;
                }
            }
    }
}

/* MatMul's batch loop (cuda_ops.c run_matmul) issues one strided-batched call per run of the
 * innermost collapsed axis: it relies on offsets(o * inner + j) == offsets(o * inner) + j *
 * stride_last for every operand. Checked on random broadcast batches, against numpy's offsets. */
static void test_batched_runs_are_strided(void)
{
    for (int t = 0; t < 3000; t++) {
        int32_t orank, arank;
        int64_t out[CUDA_MAX_RANK], a[CUDA_MAX_RANK];
        random_shapes(&orank, out, &arank, a);
        cuda_walk w = {0};
        w.rank = orank;
        w.n_operands = 2;
        for (int32_t d = 0; d < orank; d++)
            w.dims[d] = out[d];
        CU_ASSERT_FATAL(cuda_bcast_strides(arank, a, orank, out, w.strides[0]));
        CU_ASSERT_FATAL(cuda_bcast_strides(orank, out, orank, out, w.strides[1]));
        cuda_walk_collapse(&w);
        const int64_t n = numel_of(orank, out);
        const int64_t inner = w.rank ? w.dims[w.rank - 1] : 1;
        CU_ASSERT_EQUAL_FATAL(n % inner, 0);
        for (int64_t i = 0; i < n; i++) {
            int64_t base[CUDA_MAX_OPERANDS] = {0, 0, 0}, coord[CUDA_MAX_RANK];
            if (w.rank)
                cuda_walk_offsets(&w, i - i % inner, base);
            const int64_t j = i % inner;
            const int64_t sa = w.rank ? w.strides[0][w.rank - 1] : 0;
            const int64_t sb = w.rank ? w.strides[1][w.rank - 1] : 0;
            coords_of(i, orank, out, coord);
            if (base[0] + j * sa != naive_bcast_offset(arank, a, orank, coord) ||
                base[1] + j * sb != i) {
                CU_FAIL("a batch run is not strided as the batched call assumes");
                return;
            }
        }
    }
}

int main(int argc, char **argv)
{
    static const test_entry tests[] = {
        TEST_ENTRY(test_broadcast_walk_matches_numpy),
        TEST_ENTRY(test_bcast_strides_refuses_mismatch),
        TEST_ENTRY(test_collapse_shapes),
        TEST_ENTRY(test_transpose_walk_matches_naive),
        TEST_ENTRY(test_reduce_walks_match_naive),
        TEST_ENTRY(test_batched_runs_are_strided),
        {NULL, NULL},
    };
    static const test_suite suites[] = {
        {"cuda_index", tests, NULL, NULL, NULL, NULL},
    };
    return test_run_suites(suites, sizeof suites / sizeof suites[0], argc, argv);
}
