/*
 * Broadcast plans shared by the CPU kernel families (see cpu_bcast.h).
 */
#include "cpu_bcast.h"

#include <string.h>

void cpu_bcast_build(cpu_bcast_plan *p, const loom_tensor_desc *out, uint32_t n,
                     const loom_tensor_desc *const *ops)
{
    int64_t st[CPU_BCAST_MAX_OPS][LOOM_MAX_RANK];
    const uint32_t rank = out->rank;
    for (uint32_t k = 0; k < n; k++) {
        const loom_tensor_desc *in = ops[k];
        const uint32_t lead = rank - in->rank;
        int64_t s = (int64_t)loom_dtype_size(in->dtype);
        for (uint32_t d = rank; d-- > 0;) {
            if (d < lead) {
                st[k][d] = 0;
                continue;
            }
            const int64_t dim = in->dims[d - lead];
            st[k][d] = dim == 1 ? 0 : s;
            s *= dim;
        }
    }
    memset(p, 0, sizeof *p);
    p->n_ops = n;
    uint32_t r = 0;
    /* Merge a dim into the previous kept one when every operand steps through both as one. */
    for (uint32_t d = 0; d < rank; d++) {
        if (out->dims[d] == 1)
            continue;
        int merge = r > 0;
        for (uint32_t k = 0; k < n && merge; k++)
            merge = p->strides[k][r - 1] == st[k][d] * out->dims[d];
        if (merge) {
            p->dims[r - 1] *= out->dims[d];
            for (uint32_t k = 0; k < n; k++)
                p->strides[k][r - 1] = st[k][d];
        } else {
            p->dims[r] = out->dims[d];
            for (uint32_t k = 0; k < n; k++)
                p->strides[k][r] = st[k][d];
            r++;
        }
    }
    if (r == 0) { /* a single element: every operand repeats its one element */
        p->dims[0] = 1;
        r = 1;
    }
    p->rank = r;
    for (uint32_t k = 0; k < n; k++)
        if (p->strides[k][r - 1] != 0)
            p->inner_mask |= 1u << k;
}
