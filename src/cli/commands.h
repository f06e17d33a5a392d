/*
 * The subcommands of the `cvisor` command line. Each takes the arguments after its own name
 * (argv[0] is the subcommand) and returns the process exit status.
 */
#ifndef CVISOR_CLI_COMMANDS_H
#define CVISOR_CLI_COMMANDS_H

int cmd_run(int argc, char **argv);
int cmd_emuhost(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_agent(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);

#endif
