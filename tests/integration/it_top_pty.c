/* SPDX-License-Identifier: MIT */
/*
 * moectl top on a terminal: a pseudo-terminal whose slave side is moectl's
 * controlling terminal (stdin, stdout, stderr), the test on the master side
 * typing keys and reading the screen. The test keeps a descriptor of the
 * slave to read its termios: before, while top runs (non-canonical, no
 * echo) and after it exited (exactly as before), for each way out:
 *   - q;
 *   - Ctrl-C (the line discipline sends SIGINT);
 *   - moed stops: exit 1, and the message comes after the main screen is
 *     back (after the last ESC [?1049l);
 * and a resize: started on 10 rows of 40 columns with a refresh an hour
 * away, so that the only redraw is SIGWINCH's: the first frame stays within
 * 10 x 40, and the one after TIOCSWINSZ uses the new 40 x 100.
 *
 * Nothing is timed: the test waits for what the screen shows; every frame
 * ends by parking the cursor (ESC [H), which tells where it ends. The
 * waits give up after a minute so that a broken top fails rather than hangs.
 * Exits 77 when no pseudo-terminal can be opened.
 *
 * usage: it_top_pty MOED MOECTL
 */
#include "test_assert.h"
#include "test_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define GIVE_UP_MS 60000
#define PARK       "\033[H" /* the end of a frame (and of the enter sequence) */
#define LEAVE      "\033[?1049l"

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;

struct pty_top {
	pid_t pid;
	int master, slave;
	struct termios before;
	char out[1 << 18];
	size_t len;
};

static struct pty_top run;

/* moectl --socket SOCKET top @args on a new terminal of @rows x @cols. */
static void pty_top_start(struct pty_top *t, const char *const *args, unsigned short rows,
			  unsigned short cols)
{
	struct winsize ws = { .ws_row = rows, .ws_col = cols };
	const char *argv[16] = { arg_moectl, "--socket", daemon_.socket, "top" };
	size_t n = 4;

	for (; *args && n + 1 < sizeof(argv) / sizeof(argv[0]); args++)
		argv[n++] = *args;
	argv[n] = NULL;
	t->len = 0;
	t->out[0] = '\0';
	assert_int_equal(openpty(&t->master, &t->slave, NULL, NULL, &ws), 0);
	assert_int_equal(tcgetattr(t->slave, &t->before), 0);
	/* a cooked terminal to begin with, whatever the pty's defaults */
	assert_true((t->before.c_lflag & ICANON) && (t->before.c_lflag & ECHO));
	t->pid = test_fork();
	assert_true(t->pid >= 0);
	if (t->pid == 0) {
		/* a session of its own with the slave as controlling terminal */
		setsid();
		ioctl(t->slave, TIOCSCTTY, 0);
		dup2(t->slave, STDIN_FILENO);
		dup2(t->slave, STDOUT_FILENO);
		dup2(t->slave, STDERR_FILENO);
		close(t->master);
		close(t->slave);
		/* execv's prototype predates const; it does not write the strings */
		union {
			const char **c;
			char *const *v;
		} av = { .c = argv };

		execv(arg_moectl, av.v);
		_exit(127);
	}
}

/* Read what the screen got within @ms (or until EIO: no writer left). */
static void pty_read(struct pty_top *t, int ms)
{
	struct pollfd p = { .fd = t->master, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, ms) <= 0)
		return;
	n = read(t->master, t->out + t->len, sizeof(t->out) - 1 - t->len);
	if (n > 0) {
		t->len += (size_t)n;
		t->out[t->len] = '\0';
	}
}

static unsigned count(const char *text, const char *needle)
{
	unsigned n = 0;

	for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Read until the output holds @needle @times times. */
static void pty_wait_for(struct pty_top *t, const char *needle, unsigned times)
{
	int64_t give_up = test_now_ns() + (int64_t)GIVE_UP_MS * 1000000;

	while (count(t->out, needle) < times) {
		if (test_now_ns() > give_up || t->len + 1 >= sizeof(t->out))
			fail_msg("no %u x '%s' on the screen; it got %zu bytes:\n%s", times,
				 needle + (needle[0] == '\033'), t->len, t->out);
		pty_read(t, 100);
	}
}

/* Wait for moectl to exit, reading the screen meanwhile; its exit code. */
static int pty_top_wait(struct pty_top *t)
{
	int64_t give_up = test_now_ns() + (int64_t)GIVE_UP_MS * 1000000;
	int status;

	for (;;) {
		pid_t r = waitpid(t->pid, &status, WNOHANG);

		if (r == t->pid)
			break;
		if (test_now_ns() > give_up) {
			kill(t->pid, SIGKILL);
			waitpid(t->pid, &status, 0);
			fail_msg("moectl top did not exit; the screen:\n%s", t->out);
		}
		pty_read(t, 50);
	}
	pty_read(t, 0); /* what is left after exit */
	t->pid = 0;
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* The modes a program changes for raw input, compared with the start. */
static void assert_modes_restored(const struct pty_top *t)
{
	struct termios now;

	assert_int_equal(tcgetattr(t->slave, &now), 0);
	ASSERT_EQ(now.c_lflag, t->before.c_lflag);
	ASSERT_EQ(now.c_iflag, t->before.c_iflag);
	ASSERT_EQ(now.c_oflag, t->before.c_oflag);
	ASSERT_EQ(now.c_cflag, t->before.c_cflag);
	ASSERT_EQ(now.c_cc[VMIN], t->before.c_cc[VMIN]);
	ASSERT_EQ(now.c_cc[VTIME], t->before.c_cc[VTIME]);
}

/* While top shows a frame, input is raw: no line editing, no echo, signals kept. */
static void assert_modes_raw(const struct pty_top *t)
{
	struct termios now;

	assert_int_equal(tcgetattr(t->slave, &now), 0);
	assert_false(now.c_lflag & ICANON);
	assert_false(now.c_lflag & ECHO);
	assert_true(now.c_lflag & ISIG);
}

/* The screen was taken and given back: cursor shown and main screen, after the last frame. */
static void assert_screen_given_back(const struct pty_top *t)
{
	const char *leave = strstr(t->out, "\033[?25h" LEAVE);

	assert_non_null(strstr(t->out, "\033[?1049h"));
	if (!leave || count(t->out, LEAVE) != 1)
		fail_msg("the main screen is not back exactly once:\n%s", t->out);
	assert_null(strstr(leave, "\033[2K")); /* nothing drawn after */
}

static void pty_top_close(struct pty_top *t)
{
	if (t->pid > 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
		t->pid = 0;
	}
	if (t->master >= 0)
		close(t->master);
	if (t->slave >= 0)
		close(t->slave);
	t->master = t->slave = -1;
}

/* Started, with its first frame on the screen. */
static void start_and_see_a_frame(const char *interval, unsigned short rows, unsigned short cols)
{
	const char *args[] = { "--interval", interval, NULL };

	pty_top_start(&run, args, rows, cols);
	pty_wait_for(&run, "moed pid ", 1);
	pty_wait_for(&run, PARK, 2);
	assert_modes_raw(&run);
}

static void test_q_quits(void **state)
{
	(void)state;
	start_and_see_a_frame("3600", 40, 100);
	assert_int_equal(write(run.master, "q", 1), 1);
	ASSERT_EQ(pty_top_wait(&run), 0);
	assert_modes_restored(&run);
	assert_screen_given_back(&run);
}

static void test_ctrl_c_quits(void **state)
{
	(void)state;
	start_and_see_a_frame("3600", 40, 100);
	assert_int_equal(write(run.master, "\003", 1), 1);
	ASSERT_EQ(pty_top_wait(&run), 0);
	assert_modes_restored(&run);
	assert_screen_given_back(&run);
}

/*
 * Every row drawn in @frame: its number at most @rows, its text (up to the
 * next escape) at most @cols. The widest text drawn, in columns.
 */
static size_t assert_frame_fits(const char *frame, size_t len, unsigned rows, unsigned cols)
{
	size_t widest = 0;

	for (const char *p = frame; p < frame + len; p++) {
		unsigned row, col;
		int used = 0;
		size_t text;

		if (sscanf(p, "\033[%u;%uH%n", &row, &col, &used) != 2 || used == 0)
			continue;
		if (row > rows)
			fail_msg("row %u drawn on a screen of %u rows", row, rows);
		p += used;
		if (strncmp(p, "\033[2K", 4) == 0)
			p += 4;
		else if (strncmp(p, "\033[J", 3) == 0)
			p += 3;
		text = strcspn(p, "\033");

		if (text > cols)
			fail_msg("row %u has %zu columns on a screen of %u: %.*s", row, text, cols,
				 (int)text, p);
		widest = text > widest ? text : widest;
		p += text ? text - 1 : 0;
	}
	return widest;
}

static void test_resize_redraws(void **state)
{
	struct winsize ws = { .ws_row = 40, .ws_col = 100 };
	size_t first_end;
	const char *second;

	(void)state;
	start_and_see_a_frame("3600", 10, 40);
	first_end = (size_t)(strstr(strstr(run.out, PARK) + 1, PARK) - run.out);
	assert_frame_fits(run.out, first_end, 10, 40);
	/* the refresh is an hour away: only SIGWINCH can draw again */
	assert_int_equal(ioctl(run.master, TIOCSWINSZ, &ws), 0);
	pty_wait_for(&run, PARK, 3);
	second = run.out + first_end + strlen(PARK);
	if (assert_frame_fits(second, (size_t)(strstr(second, PARK) - second), 40, 100) <= 40)
		fail_msg("the frame after the resize is no wider than before:\n%s", second);
	assert_non_null(strstr(second, "\033[20;1H"));
	assert_int_equal(write(run.master, "q", 1), 1);
	ASSERT_EQ(pty_top_wait(&run), 0);
	assert_modes_restored(&run);
}

static void test_moed_goes_away(void **state)
{
	const char *leave;

	(void)state;
	start_and_see_a_frame("0.2", 40, 100);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	ASSERT_EQ(pty_top_wait(&run), 1);
	assert_modes_restored(&run);
	assert_screen_given_back(&run);
	leave = strstr(run.out, LEAVE);
	if (!strstr(leave, "moed stopped answering"))
		fail_msg("no message after the terminal was restored:\n%s", run.out);
}

static int run_close(void **state)
{
	(void)state;
	pty_top_close(&run);
	return 0;
}

static int group_setup(void **state)
{
	(void)state;
	run.master = run.slave = -1;
	if (test_daemon_init(&daemon_, arg_moed) < 0 || test_daemon_start(&daemon_, NULL) < 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	pty_top_close(&run);
	test_daemon_done(&daemon_);
	return 0;
}

/* 0 when this machine hands out pseudo-terminals, else the reason as -errno. */
static int pty_probe(void)
{
	int master, slave;

	if (openpty(&master, &slave, NULL, NULL, NULL) < 0)
		return -errno;
	close(master);
	close(slave);
	return 0;
}

int main(int argc, char **argv)
{
	/* the last one stops moed */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_q_quits, run_close),
		cmocka_unit_test_teardown(test_ctrl_c_quits, run_close),
		cmocka_unit_test_teardown(test_resize_redraws, run_close),
		cmocka_unit_test_teardown(test_moed_goes_away, run_close),
	};
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	r = pty_probe();
	if (r < 0) {
		printf("no pseudo-terminal (openpty: %s): skipped\n", strerror(-r));
		return 77;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
