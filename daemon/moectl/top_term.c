/* SPDX-License-Identifier: MIT */
/*
 * moectl top's terminal: raw input, the alternate screen, the size, and the
 * signals that end or reshape the view. One terminal per process, so the
 * saved state is a file-level static that the exit() hook can reach too.
 *
 * Signals are blocked except inside ppoll(): a handler only raises a flag,
 * and the flags are read right after ppoll() returns, so a signal that
 * arrives while a frame is drawn waits for the next ppoll() instead of
 * slipping between a flag check and the sleep.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "top.h"

/* Enter: alternate screen, cursor home, hidden. Leave: cursor shown, main screen. */
#define SEQ_ENTER "\033[?1049h\033[H\033[?25l"
#define SEQ_LEAVE "\033[?25h\033[?1049l"

static struct {
	bool active;    /* the alternate screen is up */
	bool raw_input; /* saved holds stdin's mode, to put back */
	bool at_exit;   /* the exit() hook is registered */
	struct termios saved;
} term;

static volatile sig_atomic_t got_quit, got_winch, got_tstp, got_cont;
static sigset_t wait_mask; /* the mask inside ppoll(): ours unblocked */

static void on_signal(int sig)
{
	switch (sig) {
	case SIGWINCH:
		got_winch = 1;
		break;
	case SIGTSTP:
		got_tstp = 1;
		break;
	case SIGCONT:
		got_cont = 1;
		break;
	default:
		got_quit = 1;
		break;
	}
}

int top_signals_setup(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH, SIGTSTP, SIGCONT };
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block;

	sigemptyset(&block);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&block, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &block, &wait_mask) < 0)
		return -errno;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		sigdelset(&wait_mask, sigs[i]);
		if (sigaction(sigs[i], &sa, NULL) < 0)
			return -errno;
	}
	return 0;
}

/* All of @len bytes to stdout, unbuffered: these must not wait in stdio. */
static void write_all(const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDOUT_FILENO, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the terminal is gone: nothing left to restore on it */
		s += n;
		len -= (size_t)n;
	}
}

static void term_leave_at_exit(void)
{
	top_term_leave();
}

/* Non-canonical, no echo, one byte at a time; Ctrl-C still raises SIGINT. */
static int term_raw_input(void)
{
	struct termios raw = term.saved;

	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	return tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0 ? -errno : 0;
}

int top_term_enter(void)
{
	int r;

	if (term.active)
		return 0;
	if (!term.at_exit && atexit(term_leave_at_exit) == 0)
		term.at_exit = true;
	/* stdin may be a file or /dev/null: then there are no keys, only signals */
	term.raw_input = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &term.saved) == 0;
	if (term.raw_input) {
		r = term_raw_input();
		if (r < 0) {
			term.raw_input = false;
			return r;
		}
	}
	fflush(stdout);
	write_all(SEQ_ENTER, strlen(SEQ_ENTER));
	term.active = true;
	return 0;
}

void top_term_leave(void)
{
	if (!term.active)
		return;
	term.active = false;
	fflush(stdout);
	write_all(SEQ_LEAVE, strlen(SEQ_LEAVE));
	/* TCSADRAIN: the sequences above reach the terminal before echo returns */
	if (term.raw_input)
		(void)tcsetattr(STDIN_FILENO, TCSADRAIN, &term.saved);
}

void top_term_size(unsigned *ret_rows, unsigned *ret_cols)
{
	struct winsize ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
		*ret_rows = ws.ws_row;
		*ret_cols = ws.ws_col;
	} else {
		*ret_rows = 24;
		*ret_cols = 80;
	}
}

/* Ctrl-Z: give the shell a sane terminal, stop, and take it back on fg. */
static void term_suspend(void)
{
	bool was_active = term.active;

	top_term_leave();
	kill(getpid(), SIGSTOP);
	/* here again after SIGCONT */
	if (was_active)
		(void)top_term_enter();
}

/* Read what was typed: true when it holds a q. */
static bool keys_read_quit(bool *ret_eof)
{
	char buf[64];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

	if (n <= 0) {
		/* EOF or error: stop watching stdin, or ppoll() returns at once forever */
		*ret_eof = n == 0 || (errno != EINTR && errno != EAGAIN);
		return false;
	}
	return memchr(buf, 'q', (size_t)n) || memchr(buf, 'Q', (size_t)n);
}

enum top_event top_wait(int timeout_ms, bool keys)
{
	static bool stdin_gone;
	struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
	struct timespec ts = { .tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L };
	bool watch = keys && term.raw_input && !stdin_gone;
	int n = ppoll(&pfd, watch ? 1 : 0, timeout_ms < 0 ? NULL : &ts, &wait_mask);

	if (got_quit)
		return TOP_EV_QUIT;
	if (got_tstp) {
		got_tstp = 0;
		term_suspend();
		got_cont = 0;
		got_winch = 0;
		return TOP_EV_REDRAW;
	}
	if (got_cont) {
		got_cont = 0;
		/* stopped by someone else (SIGSTOP): the shell may have reset the mode */
		if (term.raw_input)
			(void)term_raw_input();
		if (term.active)
			write_all(SEQ_ENTER, strlen(SEQ_ENTER));
		return TOP_EV_REDRAW;
	}
	if (got_winch) {
		got_winch = 0;
		return TOP_EV_REDRAW;
	}
	if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)) &&
	    keys_read_quit(&stdin_gone))
		return TOP_EV_QUIT;
	/* another key redraws at once; a failed ppoll() waits for the next refresh */
	return n > 0 ? TOP_EV_REDRAW : TOP_EV_TIMEOUT;
}
