/* Placeholder: the ABI 0.2 neural-network operators land here. */
#include "ops_defs.h"

const loom_op_set loom_ops_nn2 = {NULL, 0};
