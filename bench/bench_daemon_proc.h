/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_proc: the process plumbing of bench_daemon. Starting and
 * stopping a real moed on a socket in a temporary folder, the two raw
 * ping-pong baselines between a pair of processes (futex sleeps, spinning
 * loads), and the statistics of a set of timed samples. Nothing here knows
 * about MoE layers.
 */
#pragma once

#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

/* CLOCK_MONOTONIC in nanoseconds (the vDSO clock: no system call). */
uint64_t bench_now_ns(void);

/* A pause hint for spin loops. */
static inline void bench_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* The figures of a set of samples, in microseconds. */
struct sample_stats {
	double median_us, p99_us, min_us;
	uint32_t n;
};

/* Sort @samples_ns (@n of them, n >= 1) in place and summarise them into @ret_stats. */
void samples_summarize(double *samples_ns, uint32_t n, struct sample_stats *ret_stats);

/*
 * Pin the calling thread to @cpu (-1: leave it alone), saving its previous
 * affinity in @ret_old for cpu_pin_restore(). 0 or -errno.
 */
int cpu_pin(int cpu, cpu_set_t *ret_old);
void cpu_pin_restore(const cpu_set_t *old);

/*
 * The first two CPUs this process may run on, for placement-controlled
 * measurements; -ENODEV when it may run on one only.
 */
int cpu_pick_two(int *ret_a, int *ret_b);

/*
 * The round trip between two processes that share one page (fork, an
 * anonymous MAP_SHARED mapping) and hand a token back and forth, @warmup
 * untimed round trips then @n timed ones written to @samples_ns; the timing
 * side runs on @cpu_self, the answering one on @cpu_peer (-1: unpinned).
 * The futex flavour sleeps in FUTEX_WAIT and wakes the peer with FUTEX_WAKE
 * every time (shared, not private, futexes: moed's doorbells are of that
 * kind); the spin flavour only stores and loads an atomic word, with a pause
 * hint, and makes no system call. 0 or -errno (fork, mmap, a child that did
 * not exit 0).
 */
int pingpong_futex_run(int cpu_self, int cpu_peer, uint32_t warmup, uint32_t n,
		       double *samples_ns);
int pingpong_spin_run(int cpu_self, int cpu_peer, uint32_t warmup, uint32_t n,
		      double *samples_ns);

/* A moed child process. */
struct daemon_proc {
	pid_t pid; /* 0: not running */
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char log[PATH_MAX];
};

/*
 * Start `@moed_path --foreground --socket DIR/moed.sock --model @model_path
 * --set state_dir=DIR/state --set KEY=VALUE...` (@sets: @n_sets "KEY=VALUE"
 * strings) with its output in DIR/moed.log, all its threads on @cpu (-1:
 * unpinned), and wait until its control socket answers a status request.
 * The child gets SIGTERM if the benchmark dies. 0, or -errno after printing
 * the reason (and the log's tail) to stderr; *@ret_proc is filled only on
 * success.
 */
int daemon_proc_start(const char *moed_path, const char *dir, const char *model_path,
		      const char *const *sets, unsigned n_sets, int cpu,
		      struct daemon_proc *ret_proc);

/* SIGTERM, wait up to 10 s (then SIGKILL), remove the log. NULL-safe, idempotent. */
void daemon_proc_stop(struct daemon_proc *p);

/* The pid of the daemon currently running (0: none), for a signal handler. */
extern volatile pid_t daemon_proc_current;
