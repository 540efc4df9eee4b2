/* SPDX-License-Identifier: MIT */
/*
 * moectl metrics: moed's figures in Prometheus' text format.
 *
 *   moectl [--socket PATH] metrics
 *
 * The same text moed serves at /metrics when metrics_listen is set (both
 * render the status with metrics_text_write()), for a node exporter's
 * textfile collector or a look without Prometheus.
 * Exit status: 0, 1 when moed cannot be asked, 2 for a bad command line.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "control/metrics_text.h"
#include "moectl.h"
#include "util/log.h"

int cmd_metrics(int argc, char **argv, const char *socket_path)
{
	json_t *status;
	int r;

	if (argc > 1) {
		FILE *f = strcmp(argv[1], "--help") == 0 ? stdout : stderr;

		fprintf(f, "usage: moectl [--socket PATH] metrics\n");
		return f == stdout ? 0 : 2;
	}
	status = moectl_status_get(socket_path);
	if (!status)
		return 1;
	r = metrics_text_write(status, stdout);
	json_decref(status);
	if (r < 0) {
		log_error("what answered on the socket is not moed's status");
		return 1;
	}
	return fflush(stdout) == 0 ? 0 : 1;
}
