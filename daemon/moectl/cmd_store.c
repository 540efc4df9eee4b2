/* SPDX-License-Identifier: MIT */
/*
 * moectl store drop: remove the expert store a moed left in shared memory
 * (store_keep=yes keeps it for the next start to re-attach).
 *
 *   moectl [--socket PATH] store drop [--dir DIR] [--name NAME]
 *
 * DIR and NAME are moed's store_dir and store_name; by default /dev/shm and
 * the name moed derives from its socket path, so `--socket` alone finds the
 * store of the moed at that socket. A store a running moed holds is refused
 * (-EBUSY): stop moed first, or run it with store_keep=no.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moe.h>

#include "moectl.h"
#include "store/expert_store.h"
#include "util/log.h"

static void store_usage(FILE *out)
{
	fprintf(out, "usage: moectl [--socket PATH] store drop [--dir DIR] [--name NAME]\n");
}

int cmd_store(int argc, char **argv, const char *socket_path)
{
	const char *dir = "/dev/shm", *name = NULL;
	char default_name[128];
	struct diag d = { { 0 } };
	int r;

	if (argc >= 2 && strcmp(argv[1], "--help") == 0)
		return store_usage(stdout), 0;
	if (argc < 2 || strcmp(argv[1], "drop") != 0)
		return store_usage(stderr), 2;
	for (int i = 2; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--dir") == 0) {
			dir = argv[++i];
		} else if (i + 1 < argc && strcmp(argv[i], "--name") == 0) {
			name = argv[++i];
		} else {
			log_error("unknown option %s (moectl store --help)", argv[i]);
			return 2;
		}
	}
	if (!name) {
		const char *env = getenv("MOED_SOCKET");

		if (!socket_path)
			socket_path = env && env[0] ? env : MOE_DEFAULT_SOCKET;
		expert_store_default_name(socket_path, default_name, sizeof(default_name));
		name = default_name;
	}
	r = expert_store_drop(dir, name, &d);
	if (r < 0) {
		log_error("%s", d.msg);
		return 1;
	}
	printf("expert store %s/%s removed\n", dir, name);
	return 0;
}
