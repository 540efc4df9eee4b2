/* SPDX-License-Identifier: MIT */
/*
 * moectl top: its three pieces. cmd_top.c runs the loop (options, refresh,
 * output); top_render.c turns two status samples into the lines of a frame;
 * top_term.c owns the terminal (raw input, alternate screen, size, signals).
 * Nothing here is thread-safe: moectl top runs on one thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct json_t;

/* ---------------------------------------------------------------- frame */

/* The lines of one frame, each a malloc'd string without a newline. */
struct top_lines {
	char **line;
	size_t n, cap;
	int err; /* -ENOMEM once an append failed; later appends do nothing */
};

/* Append one printf-formatted line (truncated to 4 KiB); on failure sets ->err. */
void top_lines_add(struct top_lines *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Free every line; @l stays usable (empty). */
void top_lines_clear(struct top_lines *l);

/*
 * The frame for the status @cur, with rates from the change since @prev (an
 * older sample of the same daemon, or NULL: the first frame, or moed
 * restarted, shows totals since its start instead). Bars are sized for
 * @width columns. Every string from the daemon goes through
 * moectl_term_safe(): the lines hold printable ASCII only. 0, or -ENOMEM.
 */
int top_render(const struct json_t *cur, const struct json_t *prev, unsigned width,
	       struct top_lines *ret_lines);

/* ---------------------------------------------------------------- terminal */

enum top_event {
	TOP_EV_TIMEOUT, /* time for the next refresh */
	TOP_EV_QUIT,    /* q, SIGINT, SIGTERM or SIGHUP */
	TOP_EV_REDRAW,  /* SIGWINCH, another key, or back from a stop: ask
	                 * top_term_size() again and draw the last sample again */
};

/*
 * Catch SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP and SIGCONT, and block
 * them outside top_wait(), so that one arriving between two waits is not
 * lost (ppoll unblocks them atomically). 0 or -errno.
 */
int top_signals_setup(void);

/*
 * Take over the terminal on stdout: alternate screen, cursor hidden, and,
 * when stdin is a terminal, non-canonical input without echo (ISIG stays:
 * Ctrl-C still sends SIGINT). Whatever happens next, top_term_leave() puts
 * back exactly what was there; it also runs at exit() as a last resort.
 * 0 or -errno (the terminal is then untouched).
 */
int top_term_enter(void);

/* Restore the saved input mode, the cursor and the main screen. Idempotent. */
void top_term_leave(void);

/* The terminal's rows and columns (TIOCGWINSZ on stdout); 24 x 80 when it does not say. */
void top_term_size(unsigned *ret_rows, unsigned *ret_cols);

/*
 * Wait up to @timeout_ms for a key (when @keys and stdin is a terminal) or a
 * caught signal. A Ctrl-Z leaves the terminal, stops the process and, once
 * continued, enters it again (TOP_EV_REDRAW).
 */
enum top_event top_wait(int timeout_ms, bool keys);
