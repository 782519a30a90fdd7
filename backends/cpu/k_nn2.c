/* Placeholder: CPU kernels of the ABI 0.2 neural-network operators land here. */
#include "cpu_kernels.h"

void cpu_register_nn2(cpu_op_entry *table)
{
    (void)table;
}
