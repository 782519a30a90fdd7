/*
 * The `loom` command's subcommands, one file each; main() in loom.c dispatches to them. Each
 * returns the process exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.
 */
#ifndef LOOM_TOOLS_COMMANDS_H
#define LOOM_TOOLS_COMMANDS_H

/* loom run MODEL.onnx [-i NAME=FILE]... [-o DIR] [--device ID] [--precision P] [--repeat N]
 *          [--warmup N] [--json] [--dim NAME=VALUE]... */
int loom_cmd_run(int argc, char **argv);

/* loom backend-test PLUGIN.so|BACKEND [--precision P] [--op OP] */
int loom_cmd_backend_test(int argc, char **argv);

#endif /* LOOM_TOOLS_COMMANDS_H */
