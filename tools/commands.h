/*
 * The `loom` command's subcommands, one file each; main() in loom.c dispatches to them. Each
 * returns the process exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.
 */
#ifndef LOOM_TOOLS_COMMANDS_H
#define LOOM_TOOLS_COMMANDS_H

/* loom run MODEL.onnx [-i NAME=FILE]... [-o DIR] [--device ID] [--precision P] [--repeat N]
 *          [--warmup N] [--json] [--dim NAME=VALUE]... */
int loom_cmd_run(int argc, char **argv);

/* loom profile [MODEL.onnx | --model mlp|attention|towers|moe|bert|bert-tiny]
 *              [--target-latency T] [--policy P] [--device ID]
 *              [--pin OP=DEV | --pin node:NAME=DEV]... [--repeat N] [--warmup N]
 *              [--precision P] [--strict] [--budget S] [--trace OUT.json] [--gantt OUT.svg]
 *              [--dot OUT.dot] [--all] [--json]   (cmd_profile.c; docs/profile.md) */
int cmd_profile(int argc, char **argv);

/* loom calibrate [--quick] [--device ID] [--force] [--json] [--cache DIR]   (cmd_calibrate.c) */
int cmd_calibrate(int argc, char **argv);

/* loom backend-test PLUGIN.so|BACKEND [--precision P] [--op OP] */
int loom_cmd_backend_test(int argc, char **argv);

/* loom sim INSTANCE.json [--policy P] [--budget S] [--target-latency S] [-o SCHEDULE.json]
 *          [--json]   (cmd_sim.c) */
int cmd_sim(int argc, char **argv);

/* loom serve --model NAME=PATH[:OPTIONS]... [--host ADDR] [--port N] [--workers N] ...
 *            (cmd_serve.c; docs/serve.md) */
int cmd_serve(int argc, char **argv);

/* loom loadgen URL|MODEL.onnx --rate QPS | --concurrency N [--duration S] [--requests N]
 *              [--find-max-qps --p99 MS] [--json]   (cmd_loadgen.c; docs/serve.md) */
int cmd_loadgen(int argc, char **argv);

/* loom audit verify DB [--key FILE] | query DB [--model M] [--since T] [--request-id ID]
 *            (cmd_audit.c; docs/serve.md) */
int cmd_audit(int argc, char **argv);

/* loom ops [--markdown]: the operator registry (cmd_ops.c; docs/operators.md is its output) */
int cmd_ops(int argc, char **argv);

#endif /* LOOM_TOOLS_COMMANDS_H */
