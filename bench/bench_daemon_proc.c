/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_proc: moed as a child process, the raw ping-pong baselines and
 * sample statistics; see bench_daemon_proc.h.
 */
#include "bench_daemon_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "moe.h"

#define MAX_SETS 16
/* A generous bound: moed maps the model and checks it before it listens. */
#define START_TIMEOUT_NS (300ull * 1000000000ull)
#define STOP_TIMEOUT_NS (10ull * 1000000000ull)
/* A ping-pong peer silent for this long is presumed dead. */
#define PEER_TIMEOUT_NS (2ull * 1000000000ull)

volatile pid_t daemon_proc_current;

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void samples_summarize(double *samples_ns, uint32_t n, struct sample_stats *ret_stats)
{
	uint32_t i99;

	qsort(samples_ns, n, sizeof(samples_ns[0]), bench_cmp_double);
	i99 = (uint32_t)((uint64_t)n * 99 / 100);
	if (i99 >= n)
		i99 = n - 1;
	*ret_stats = (struct sample_stats){
		.median_us = 1e-3 * (n % 2 ? samples_ns[n / 2]
					   : 0.5 * (samples_ns[n / 2 - 1] + samples_ns[n / 2])),
		.p99_us = 1e-3 * samples_ns[i99],
		.min_us = 1e-3 * samples_ns[0],
		.n = n,
	};
}

/* ---- placement ---- */

int cpu_pin(int cpu, cpu_set_t *ret_old)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(*ret_old), ret_old) < 0)
		return -errno;
	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}

void cpu_pin_restore(const cpu_set_t *old)
{
	if (sched_setaffinity(0, sizeof(*old), old) < 0)
		fprintf(stderr, "cannot restore the CPU affinity: %s, ignoring\n", strerror(errno));
}

int cpu_pick_two(int *ret_a, int *ret_b)
{
	cpu_set_t set;
	int found[2], n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
		if (CPU_ISSET(c, &set))
			found[n++] = c;
	if (n < 2)
		return -ENODEV;
	*ret_a = found[0];
	*ret_b = found[1];
	return 0;
}

/* ---- ping-pong ---- */

/*
 * The two words on separate cache lines, as a ring's head and tail are: each
 * side writes one and reads the other, so one round trip moves each line
 * once in each direction.
 */
struct pingpong_page {
	_Alignas(64) uint32_t ping; /* parent -> child: the round number */
	_Alignas(64) uint32_t pong; /* child -> parent: the round it answered */
};

static long futex_op(uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
	/* shared futexes (no FUTEX_PRIVATE_FLAG), as moed's doorbells */
	return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

/*
 * Wait until *@word == @want. The futex flavour sleeps whenever the word is
 * not there yet; either flavour gives up with -ETIMEDOUT after
 * PEER_TIMEOUT_NS without the value (a dead peer never answers).
 */
static int pingpong_await(uint32_t *word, uint32_t want, bool spin)
{
	const struct timespec slice = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
	uint64_t t0 = 0;
	uint32_t v;

	for (unsigned k = 1;; k++) {
		/* pairs with the peer's release store of the word */
		v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
		if (v == want)
			return 0;
		if (spin) {
			bench_cpu_relax();
			if (k % 65536)
				continue;
		} else {
			/* EAGAIN (moved meanwhile), EINTR, ETIMEDOUT: look again */
			futex_op(word, FUTEX_WAIT, v, &slice);
			if (__atomic_load_n(word, __ATOMIC_ACQUIRE) == want)
				return 0;
		}
		if (!t0)
			t0 = bench_now_ns();
		else if (bench_now_ns() - t0 > PEER_TIMEOUT_NS)
			return -ETIMEDOUT;
	}
}

static int pingpong_run(bool spin, int cpu_self, int cpu_peer, uint32_t warmup, uint32_t n,
			double *samples_ns)
{
	const uint32_t total = warmup + n;
	struct pingpong_page *pg;
	pid_t parent = getpid(), pid;
	cpu_set_t old;
	int status, r = 0;

	pg = mmap(NULL, sizeof(*pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED)
		return -errno;
	memset(pg, 0, sizeof(*pg));
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto unmap;
	}
	if (pid == 0) {
		cpu_set_t ignored;

		/* the answering side: no timing, nothing but the protocol */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || cpu_pin(cpu_peer, &ignored) < 0)
			_exit(1);
		for (uint32_t i = 1; i <= total; i++) {
			if (pingpong_await(&pg->ping, i, spin) < 0)
				_exit(1);
			__atomic_store_n(&pg->pong, i, __ATOMIC_RELEASE);
			if (!spin)
				futex_op(&pg->pong, FUTEX_WAKE, 1, NULL);
		}
		_exit(0);
	}
	r = cpu_pin(cpu_self, &old);
	if (r < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		goto unmap;
	}
	for (uint32_t i = 1; i <= total; i++) {
		uint64_t t0 = bench_now_ns();

		__atomic_store_n(&pg->ping, i, __ATOMIC_RELEASE);
		if (!spin)
			futex_op(&pg->ping, FUTEX_WAKE, 1, NULL);
		r = pingpong_await(&pg->pong, i, spin);
		if (r < 0)
			break;
		if (i > warmup)
			samples_ns[i - warmup - 1] = (double)(bench_now_ns() - t0);
	}
	if (cpu_self >= 0)
		cpu_pin_restore(&old);
	if (r < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		r = -ECHILD;
unmap:
	munmap(pg, sizeof(*pg));
	return r;
}

int pingpong_futex_run(int cpu_self, int cpu_peer, uint32_t warmup, uint32_t n,
		       double *samples_ns)
{
	return pingpong_run(false, cpu_self, cpu_peer, warmup, n, samples_ns);
}

int pingpong_spin_run(int cpu_self, int cpu_peer, uint32_t warmup, uint32_t n,
		      double *samples_ns)
{
	return pingpong_run(true, cpu_self, cpu_peer, warmup, n, samples_ns);
}

/* ---- moed ---- */

/* The last @max bytes of the log at @path, to stderr: why moed failed. */
static void log_tail_print(const char *path, size_t max)
{
	char buf[4096];
	struct stat st;
	ssize_t n;
	int fd;

	if (max > sizeof(buf) - 1)
		max = sizeof(buf) - 1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && (size_t)st.st_size > max)
		(void)lseek(fd, st.st_size - (off_t)max, SEEK_SET);
	n = read(fd, buf, max);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	fprintf(stderr, "--- %s (tail) ---\n%s--- end ---\n", path, buf);
}

static void describe_exit(int status, char *buf, size_t size)
{
	if (WIFEXITED(status))
		snprintf(buf, size, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "signal %s", strsignal(WTERMSIG(status)));
	else
		snprintf(buf, size, "status 0x%x", (unsigned)status);
}

int daemon_proc_start(const char *moed_path, const char *dir, const char *model_path,
		      const char *const *sets, unsigned n_sets, int cpu,
		      struct daemon_proc *ret_proc)
{
	struct daemon_proc p = { 0 };
	char state[PATH_MAX + 16];
	const char *argv[12 + 2 * MAX_SETS + 1];
	unsigned argc = 0;
	pid_t parent = getpid();
	uint64_t t0;
	int status;

	if (n_sets > MAX_SETS)
		return -E2BIG;
	if ((size_t)snprintf(p.socket, sizeof(p.socket), "%s/moed.sock", dir) >= sizeof(p.socket))
		return -ENAMETOOLONG;
	/* one moed at a time: its log is removed when it stops cleanly */
	snprintf(p.log, sizeof(p.log), "%s/moed.log", dir);
	snprintf(state, sizeof(state), "state_dir=%s/state", dir);
	argv[argc++] = moed_path;
	argv[argc++] = "--foreground";
	argv[argc++] = "--socket";
	argv[argc++] = p.socket;
	argv[argc++] = "--model";
	argv[argc++] = model_path;
	argv[argc++] = "--set";
	argv[argc++] = state;
	/* each run loads afresh and leaves nothing in /dev/shm */
	argv[argc++] = "--set";
	argv[argc++] = "store_keep=no";
	/*
	 * The kernels of the in-process engine each figure compares against:
	 * its built-in bounds (moed's measured ones may pick another kernel
	 * for the same shape, and the difference would count as overhead).
	 */
	argv[argc++] = "--set";
	argv[argc++] = "kernel_calibration=no";
	for (unsigned i = 0; i < n_sets; i++) {
		argv[argc++] = "--set";
		argv[argc++] = sets[i];
	}
	argv[argc] = NULL;
	(void)unlink(p.socket); /* a stale one from a moed that was killed */

	fflush(NULL);
	p.pid = fork();
	if (p.pid < 0)
		return -errno;
	if (p.pid == 0) {
		cpu_set_t ignored;
		int fd;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		/* before exec: every thread moed starts inherits the affinity */
		if (getppid() != parent || cpu_pin(cpu, &ignored) < 0)
			_exit(126);
		fd = open(p.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execv(moed_path, (char *const *)(uintptr_t)argv);
		fprintf(stderr, "execv %s: %s\n", moed_path, strerror(errno));
		_exit(127);
	}
	daemon_proc_current = p.pid;

	t0 = bench_now_ns();
	for (;;) {
		char *json = NULL;
		char why[64];
		pid_t w = waitpid(p.pid, &status, WNOHANG);

		if (w == p.pid) {
			describe_exit(status, why, sizeof(why));
			fprintf(stderr, "moed (%s) ended during start-up: %s\n", moed_path, why);
			log_tail_print(p.log, 2048);
			daemon_proc_current = 0;
			return -ECHILD;
		}
		if (moe_daemon_status(p.socket, &json) == 0) {
			/* it answers while it loads: ready once it serves */
			bool serving = strstr(json, "\"phase\": \"serving\"") != NULL;

			free(json);
			if (serving)
				break;
		}
		if (bench_now_ns() - t0 > START_TIMEOUT_NS) {
			fprintf(stderr, "moed did not answer on %s within %llu s\n", p.socket,
				START_TIMEOUT_NS / 1000000000ull);
			log_tail_print(p.log, 2048);
			daemon_proc_stop(&p);
			return -ETIMEDOUT;
		}
		sleep_ns(10 * 1000 * 1000);
	}
	*ret_proc = p;
	return 0;
}

void daemon_proc_stop(struct daemon_proc *p)
{
	uint64_t t0;
	int status = 0;
	char why[64];

	if (!p || p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	t0 = bench_now_ns();
	for (;;) {
		pid_t w = waitpid(p->pid, &status, WNOHANG);

		if (w == p->pid || (w < 0 && errno != EINTR))
			break;
		if (bench_now_ns() - t0 > STOP_TIMEOUT_NS) {
			fprintf(stderr, "moed (pid %d) ignored SIGTERM for %llu s: killing it\n",
				(int)p->pid, STOP_TIMEOUT_NS / 1000000000ull);
			kill(p->pid, SIGKILL);
			while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		sleep_ns(5 * 1000 * 1000);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		(void)unlink(p->log);
	} else {
		describe_exit(status, why, sizeof(why));
		fprintf(stderr, "moed (pid %d) did not stop cleanly: %s\n", (int)p->pid, why);
		log_tail_print(p->log, 2048);
	}
	daemon_proc_current = 0;
	p->pid = 0;
}
