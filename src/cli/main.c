/*
 * `cvisor`: the user's command line. Dispatches to one subcommand per file (run.c, emuhost.c...).
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "exitcodes.h"

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "run", cmd_run, "boot a microVM, run a command in it, exit with its status" },
	{ "emuhost", cmd_emuhost, "start/stop the emulated host, or run a command inside it" },
	{ "agent", cmd_agent, "talk to the agent of a running guest (state, freeze, shutdown, exec)" },
	{ "snapshot", cmd_snapshot, "offline work on snapshot files (merge a diff onto its base)" },
	{ "check", cmd_check, "can this host run guests directly? where is the default guest?" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: cvisor <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\n'cvisor <command> --help' describes a command. 'cvisor --version' prints the version.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CV_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("cvisor %s\n", CVISOR_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "cvisor: unknown command '%s' (try 'cvisor --help')\n", argv[1]);
	return CV_EXIT_USAGE;
}
