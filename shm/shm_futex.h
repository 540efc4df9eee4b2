/* SPDX-License-Identifier: MIT */
/*
 * shm_futex: futex wait/wake on words of a shared (MAP_SHARED memfd) region.
 * Shared futexes, never FUTEX_PRIVATE_FLAG: the waiter and the waker are
 * different processes. moed's own waits go through io_uring instead
 * (daemon/reactor); these are for libmoe and for the tests.
 */
#pragma once

#include <stdint.h>

/*
 * Sleep while *@word == @expected, for at most @timeout_ns (< 0: no limit).
 * 0 when woken (or spuriously), -EAGAIN when the word had already changed,
 * -ETIMEDOUT, -EINTR.
 */
int shm_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

/* Wake up to @n waiters on @word; returns how many woke, or -errno. */
int shm_futex_wake(uint32_t *word, int n);
