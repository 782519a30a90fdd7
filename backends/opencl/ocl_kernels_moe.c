/*
 * The OpenCL backend's MoEExpert (one expert of a MoE split into placement units: graph/ops_moe.c,
 * passes/split_moe_experts.c), so that placement can send experts to a GPU. Two kernels, simple
 * and exact in f32: fc1 (+ the fc3 gate), one work-item per (token, inter column), writes the
 * activated hidden row of every token routed to the expert (routing weight > 0) into scratch;
 * fc2, one work-item per (token, hidden column), writes routing weight * (W2 h + b2) into the
 * token's row of Y, and 0 for the tokens the expert does not take. Work-items of tokens that are
 * not routed return at once, so an expert costs its own tokens' GEMMs. MoERoute and the final Sum
 * stay on the CPU.
 */
#include "ocl_kernels.h"

#include <string.h>

int ocl_moe_expert_supports(const loom_node_desc *node, char *reason, size_t len)
{
    for (uint32_t i = 0; i < node->n_inputs; i++)
        if (ocl_has_in(node, i) && node->inputs[i].dtype != LOOM_DTYPE_F32)
            return ocl_reason(reason, len, "MoEExpert: f32 only");
    if (!ocl_one_output(node) || node->n_inputs < 5)
        return ocl_reason(reason, len, "MoEExpert: input, routing and fc1/fc2 weights needed");
    return 1;
}

/* An absent optional input: any valid buffer (the kernel's flag says not to read it). */
static ocl_buf moe_in(const ocl_run *r, const ocl_kernel *k, uint32_t i)
{
    return i < k->n_in && r->in[i].mem ? r->in[i] : r->in[2];
}

static loom_status run_moe_expert(ocl_run *r, const ocl_kernel *k)
{
    cl_long T = k->v[0], H = k->v[1], I = k->v[2], E = k->v[3], e = k->v[4];
    cl_int act = (cl_int)k->v[5];
    if (T == 0 || H == 0)
        return LOOM_OK;
    cl_int hb1 = k->n_in > 3 && r->in[3].mem, hb2 = k->n_in > 5 && r->in[5].mem;
    cl_int hw3 = k->n_in > 6 && r->in[6].mem, hb3 = k->n_in > 7 && r->in[7].mem;
    ocl_buf b1 = moe_in(r, k, 3), b2 = moe_in(r, k, 5), w3 = moe_in(r, k, 6), b3 = moe_in(r, k, 7);
    cl_ulong xo = ocl_eoff(r->in[0], 4), ro = ocl_eoff(r->in[1], 4);
    cl_ulong w1o = ocl_eoff(r->in[2], 4), w2o = ocl_eoff(r->in[4], 4);
    cl_ulong b1o = ocl_eoff(b1, 4), b2o = ocl_eoff(b2, 4), w3o = ocl_eoff(w3, 4);
    cl_ulong b3o = ocl_eoff(b3, 4), ho = ocl_eoff(r->scratch, 4), yo = ocl_eoff(r->out[0], 4);
    if (I > 0) {
        cl_kernel fc1 = ocl_get_kernel(r, OCL_K_MOE_FC1);
        ARG(fc1, 0, r->in[0].mem);
        ARG(fc1, 1, xo);
        ARG(fc1, 2, r->in[1].mem);
        ARG(fc1, 3, ro);
        ARG(fc1, 4, r->in[2].mem);
        ARG(fc1, 5, w1o);
        ARG(fc1, 6, b1.mem);
        ARG(fc1, 7, b1o);
        ARG(fc1, 8, hb1);
        ARG(fc1, 9, w3.mem);
        ARG(fc1, 10, w3o);
        ARG(fc1, 11, hw3);
        ARG(fc1, 12, b3.mem);
        ARG(fc1, 13, b3o);
        ARG(fc1, 14, hb3);
        ARG(fc1, 15, r->scratch.mem);
        ARG(fc1, 16, ho);
        ARG(fc1, 17, T);
        ARG(fc1, 18, H);
        ARG(fc1, 19, I);
        ARG(fc1, 20, E);
        ARG(fc1, 21, e);
        ARG(fc1, 22, act);
        loom_status st = ocl_launch(r, fc1, (size_t)(T * I), 0);
        if (st != LOOM_OK)
            return st;
    }
    cl_kernel fc2 = ocl_get_kernel(r, OCL_K_MOE_FC2);
    /* With inter 0 the hidden rows are empty and nothing reads scratch: any buffer will do. */
    cl_mem h = I > 0 ? r->scratch.mem : r->in[0].mem;
    ARG(fc2, 0, h);
    ARG(fc2, 1, ho);
    ARG(fc2, 2, r->in[1].mem);
    ARG(fc2, 3, ro);
    ARG(fc2, 4, r->in[4].mem);
    ARG(fc2, 5, w2o);
    ARG(fc2, 6, b2.mem);
    ARG(fc2, 7, b2o);
    ARG(fc2, 8, hb2);
    ARG(fc2, 9, r->out[0].mem);
    ARG(fc2, 10, yo);
    ARG(fc2, 11, T);
    ARG(fc2, 12, H);
    ARG(fc2, 13, I);
    ARG(fc2, 14, E);
    ARG(fc2, 15, e);
    return ocl_launch(r, fc2, (size_t)(T * H), 0);
}

loom_status ocl_moe_expert_prepare(const loom_node_desc *node, ocl_kernel *k)
{
    const loom_tensor_desc *x = &node->inputs[0], *rt = &node->inputs[1], *w1 = &node->inputs[2];
    const char *act = "relu";
    const loom_attr *a = loom_node_attr(node, "activation_type");
    if (a && a->kind == LOOM_ATTR_STRING && a->s)
        act = a->s;
    k->v[0] = rt->dims[0];
    k->v[1] = x->dims[x->rank - 1];
    k->v[2] = w1->dims[0];
    k->v[3] = rt->dims[1];
    k->v[4] = loom_node_attr_int(node, "expert", 0);
    k->v[5] = strcmp(act, "gelu") == 0 ? 1 : strcmp(act, "silu") == 0 ? 2
              : strcmp(act, "identity") == 0 ? 3 : 0;
    /* The hidden rows: tokens x inter floats (only the routed tokens' rows are written). */
    k->scratch_bytes = (size_t)(k->v[0] * k->v[2]) * sizeof(float);
    k->run = run_moe_expert;
    return LOOM_OK;
}
