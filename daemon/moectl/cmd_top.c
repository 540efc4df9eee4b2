/* SPDX-License-Identifier: MIT */
/*
 * moectl top: a live view of a running moed, refreshed from its status.
 *
 *   moectl [--socket PATH] top [--interval SECONDS] [--batch] [--iterations N]
 *
 * Every --interval seconds (default 1, at least 0.1) it asks moed for its
 * status and shows: the daemon (pid, uptime, model, workers, clients),
 * throughput since the previous refresh, one row per layer (rates, drops
 * and, when moed reports them, latency percentiles), a heat map with a cell
 * per expert, the tokens each expert received as bars, and the peers when
 * there are any (top_render.c).
 *
 * On a terminal it takes the alternate screen and reads keys without echo:
 * q or Ctrl-C quits, a resize redraws at the new size; the terminal is put
 * back on every way out (top_term.c). With --batch, or when stdout is not a
 * terminal, it prints plain frames of at most 100 columns separated by a
 * blank line, as top -b does, until interrupted or --iterations frames.
 *
 * Exit status: 0 (q, Ctrl-C, or --iterations reached), 1 when moed cannot
 * be asked (at the start, or it went away: the message follows the
 * restored terminal), 2 for a bad command line.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moectl.h"
#include "top.h"
#include "util/log.h"
#include "util/parse.h"

#define TOP_USAGE                                                                                  \
	"moectl [--socket PATH] top [--interval SECONDS] [--batch] [--iterations N]"

/* Batch frames are for files and pipes: a width that reads well in both. */
#define TOP_BATCH_WIDTH 100

struct top_args {
	double interval_s;
	bool batch;
	uint32_t iterations; /* 0: until q or a signal */
};

/* -1 to go on, else the exit status (0 after --help, 2 for a usage error). */
static int top_args_parse(int argc, char **argv, struct top_args *a)
{
	*a = (struct top_args){ .interval_s = 1.0 };
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int r;

		if (strcmp(opt, "--help") == 0) {
			printf("usage: %s\n\n"
			       "--interval SECONDS  time between refreshes (default 1, at least 0.1)\n"
			       "--batch             plain frames, no terminal control (also when\n"
			       "                    stdout is not a terminal)\n"
			       "--iterations N      stop after N frames\n"
			       "\n"
			       "On a terminal: q or Ctrl-C quits.\n",
			       TOP_USAGE);
			return 0;
		}
		if (strcmp(opt, "--batch") == 0) {
			a->batch = true;
			continue;
		}
		if (strcmp(opt, "--interval") == 0 && val)
			r = parse_double(val, 0.1, 86400, &a->interval_s);
		else if (strcmp(opt, "--iterations") == 0 && val)
			r = parse_u32(val, 1, UINT32_MAX, &a->iterations);
		else
			r = -EINVAL;
		if (r < 0) {
			log_error("%s: unknown option, missing or bad value (%s)", opt, TOP_USAGE);
			return 2;
		}
		i++;
	}
	return -1;
}

/* A plain frame: lines cut at the batch width, a blank line before all but the first. */
static void top_print_batch(const struct top_lines *lines, bool first)
{
	if (!first)
		putchar('\n');
	for (size_t i = 0; i < lines->n; i++)
		printf("%.*s\n", TOP_BATCH_WIDTH, lines->line[i]);
	fflush(stdout);
}

/*
 * A frame on the terminal: each row addressed and erased before it is
 * written (no reliance on where the last line's wrap left the cursor),
 * lines cut at the width, rows beyond the height dropped, then the cursor
 * parked at the top left (it_top_pty waits for that to know a frame is
 * complete). The lines hold printable ASCII only, so bytes are columns.
 */
static void top_print_screen(const struct top_lines *lines, double interval_s)
{
	unsigned rows, cols, row = 0;

	top_term_size(&rows, &cols);
	for (; row < lines->n && row < rows; row++)
		printf("\033[%u;1H\033[2K%.*s", row + 1, (int)cols, lines->line[row]);
	if (row < rows) {
		char hint[64];

		/* below the frame: erase what a longer frame left, then the hint on the last row */
		printf("\033[%u;1H\033[J", row + 1);
		snprintf(hint, sizeof(hint), "q quits; a refresh every %.1f s", interval_s);
		printf("\033[%u;1H%.*s", rows, (int)cols, hint);
	}
	/* the cursor is hidden; parked at home it also marks where a frame ends */
	printf("\033[H");
	fflush(stdout);
}

static int top_draw(const json_t *cur, const json_t *prev, bool interactive,
		    const struct top_args *a, unsigned frame, struct top_lines *lines)
{
	unsigned rows, cols = TOP_BATCH_WIDTH;
	int r;

	if (interactive)
		top_term_size(&rows, &cols);
	r = top_render(cur, prev, cols, lines);
	if (r < 0)
		return r;
	if (interactive)
		top_print_screen(lines, a->interval_s);
	else
		top_print_batch(lines, frame == 0);
	return 0;
}

/*
 * Wait until the next refresh is due at @deadline_s, redrawing the last
 * frame when the terminal asks for it. false when it is time to quit.
 */
static bool top_wait_refresh(double deadline_s, bool interactive, const json_t *cur,
			     const json_t *prev, const struct top_args *a, unsigned frame,
			     struct top_lines *lines)
{
	for (;;) {
		double left = deadline_s - moectl_now_s();
		enum top_event ev;

		if (left <= 0)
			return true;
		ev = top_wait((int)(left * 1000) + 1, interactive);
		if (ev == TOP_EV_QUIT)
			return false;
		if (ev == TOP_EV_REDRAW && interactive)
			(void)top_draw(cur, prev, interactive, a, frame, lines);
	}
}

static int top_run(const char *socket_path, const struct top_args *a, bool interactive,
		   json_t *first)
{
	struct top_lines lines = { 0 };
	json_t *cur = first, *prev = NULL;
	char why[1024];
	int r = 0;

	for (unsigned frame = 0;; frame++) {
		double deadline = moectl_now_s() + a->interval_s;
		json_t *next;

		r = top_draw(cur, prev, interactive, a, frame, &lines);
		if (r < 0) {
			top_term_leave();
			log_errno(r, "cannot draw a frame: %m");
			r = 1;
			break;
		}
		if (a->iterations && frame + 1 >= a->iterations)
			break;
		if (!top_wait_refresh(deadline, interactive, cur, prev, a, frame, &lines))
			break;
		next = moectl_status_fetch(socket_path, why, sizeof(why));
		if (!next) {
			/* the message must land on the main screen, after the restore */
			top_term_leave();
			log_error("moed stopped answering: %s", why);
			r = 1;
			break;
		}
		json_decref(prev);
		prev = cur;
		cur = next;
	}
	top_term_leave();
	top_lines_clear(&lines);
	free(lines.line);
	json_decref(prev);
	json_decref(cur);
	return r;
}

int cmd_top(int argc, char **argv, const char *socket_path)
{
	struct top_args a;
	bool interactive;
	char why[1024];
	json_t *first;
	int r = top_args_parse(argc, argv, &a);

	if (r >= 0)
		return r;
	interactive = !a.batch && isatty(STDOUT_FILENO);
	r = top_signals_setup();
	if (r < 0) {
		log_errno(r, "cannot set up signal handling: %m");
		return 1;
	}
	/* ask once before the terminal changes: a wrong socket then leaves it alone */
	first = moectl_status_fetch(socket_path, why, sizeof(why));
	if (!first) {
		log_error("%s", why);
		return 1;
	}
	if (interactive) {
		/* one write per frame, not one per line: no flicker */
		setvbuf(stdout, NULL, _IOFBF, 1 << 16);
		r = top_term_enter();
		if (r < 0) {
			json_decref(first);
			log_errno(r, "cannot set up the terminal: %m");
			return 1;
		}
	}
	return top_run(socket_path, &a, interactive, first);
}
