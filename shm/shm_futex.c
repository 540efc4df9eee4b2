/* SPDX-License-Identifier: MIT */
/*
 * shm_futex: FUTEX_WAIT and FUTEX_WAKE on a word of a shared region. The
 * futexes are shared (no FUTEX_PRIVATE_FLAG) because the waiter and the waker
 * are different processes mapping the same memfd; the kernel keys them by
 * the memfd's page, not by the address each process mapped it at. glibc has
 * no wrapper, hence syscall(2).
 */
#include "shm_futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int shm_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
	struct timespec ts, *tsp = NULL;
	long r;

	/* FUTEX_WAIT takes a relative timeout (FUTEX_WAIT_BITSET an absolute one). */
	if (timeout_ns >= 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000);
		ts.tv_nsec = (long)(timeout_ns % 1000000000);
		tsp = &ts;
	}
	r = syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, NULL, 0);
	if (r < 0)
		return -errno; /* EAGAIN (word != expected), ETIMEDOUT, EINTR */
	return 0;
}

int shm_futex_wake(uint32_t *word, int n)
{
	long r;

	if (n < 0)
		return -EINVAL;
	/* Some kernels wake one waiter when asked for none: do not ask. */
	if (n == 0)
		return 0;
	r = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
	if (r < 0)
		return -errno;
	return (int)r;
}
