/*
 * `loom run MODEL.onnx --inputs DIR...`: several input sets through one loom_model
 * (tools/cmd_run_sets.c). Not a public header.
 */
#ifndef LOOM_TOOLS_RUN_SETS_H
#define LOOM_TOOLS_RUN_SETS_H

/* Whether ARGV asks for input sets (an --inputs option). */
int run_sets_wanted(int argc, char **argv);
/* The command in that form (ARGV as loom_cmd_run gets it); returns the exit status. */
int run_sets_main(int argc, char **argv);

#endif /* LOOM_TOOLS_RUN_SETS_H */
