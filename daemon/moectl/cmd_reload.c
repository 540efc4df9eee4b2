/* SPDX-License-Identifier: MIT */
/*
 * moectl reload: make a running moed read its configuration again.
 *
 *   moectl [--socket PATH] reload [--timeout SECONDS]
 *
 * Sends SIGHUP to the moed that answers on the socket (its pid from the
 * status) and waits until its status counts one more reload, then prints
 * the outcome: what changed, what waits for a restart, or why the new
 * configuration was refused (the old one then stays). Sending the signal
 * needs what kill(1) needs: root, or moed's own user; that is also who may
 * reload. moed at the socket must run in this pid namespace.
 * Exit status: 0 when the reload was applied, 1 when it was refused or
 * could not be asked for, 2 for a bad command line.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "moectl.h"
#include "util/log.h"
#include "util/parse.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: moectl [--socket PATH] reload [--timeout SECONDS]\n");
}

/* The daemon's pid and reload count from its status; 0, or -1 after a log line. */
static int reload_state(const char *socket_path, long long *ret_pid, long long *ret_count,
			long long *ret_refused, char *msg, size_t msg_size)
{
	json_t *root = moectl_status_get(socket_path), *dm, *rl;
	int r = -1;

	if (!root)
		return -1;
	dm = json_object_get(root, "daemon");
	rl = json_object_get(dm, "reload");
	if (!json_is_integer(json_object_get(dm, "pid")) || !json_is_object(rl)) {
		log_error("moed at %s does not report reloads (a moed older than moectl, or "
			  "still loading its experts)",
			  socket_path ? socket_path : "the default socket");
	} else {
		const char *m = json_string_value(json_object_get(rl, "message"));

		*ret_pid = json_integer_value(json_object_get(dm, "pid"));
		*ret_count = json_integer_value(json_object_get(rl, "count"));
		*ret_refused = json_integer_value(json_object_get(rl, "refused"));
		moectl_term_safe(m ? m : "", msg, msg_size);
		r = 0;
	}
	json_decref(root);
	return r;
}

int cmd_reload(int argc, char **argv, const char *socket_path)
{
	long long pid, count, refused, count_now, refused_now;
	uint32_t timeout_s = 30;
	char msg[1024];
	double deadline;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc &&
			   parse_u32(argv[i + 1], 1, 3600, &timeout_s) == 0) {
			i++;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (reload_state(socket_path, &pid, &count, &refused, msg, sizeof(msg)) < 0)
		return 1;
	if (pid <= 1 || kill((pid_t)pid, SIGHUP) < 0) {
		log_error("cannot signal moed (pid %lld): %s%s", pid, strerror(errno),
			  errno == EPERM ? " (reloading needs root or moed's own user)" : "");
		return 1;
	}
	deadline = moectl_now_s() + timeout_s;
	for (;;) {
		struct timespec tick = { .tv_nsec = 50 * 1000 * 1000 };

		if (reload_state(socket_path, &pid, &count_now, &refused_now, msg, sizeof(msg)) < 0)
			return 1;
		if (count_now > count)
			break;
		if (moectl_now_s() > deadline) {
			log_error("moed (pid %lld) did not report the reload within %u s", pid,
				  timeout_s);
			return 1;
		}
		nanosleep(&tick, NULL);
	}
	if (refused_now > refused) {
		log_error("reload %s", msg);
		return 1;
	}
	printf("reloaded: %s\n", msg);
	return 0;
}
