/* SPDX-License-Identifier: MIT */
/*
 * test_threads: what the stress tests of the pool and the executor share.
 * Their worker threads must not call CMocka's asserts (those longjmp into
 * the runner on the wrong thread), so they record failures here and the
 * test's own thread asserts at the end; and a stateless 64-bit hash for
 * per-task values that both the task and the checker can compute.
 *
 * One recorder per test executable (static state: each includes this once).
 */
#pragma once

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "test_assert.h"

static atomic_uint test_thread_n_errors;
static pthread_mutex_t test_thread_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char test_thread_first_error[256];

static void record_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));

/* Count a failure and keep the first message; any thread. */
static void record_error(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&test_thread_n_errors, 1) == 0) {
		pthread_mutex_lock(&test_thread_error_lock);
		va_start(ap, fmt);
		vsnprintf(test_thread_first_error, sizeof(test_thread_first_error), fmt, ap);
		va_end(ap);
		pthread_mutex_unlock(&test_thread_error_lock);
	}
}

/* How many failures were recorded since the last reset; any thread. */
static inline unsigned recorded_errors(void)
{
	return atomic_load(&test_thread_n_errors);
}

/* On the test's thread: fail with the count and the first message, if any. */
static inline void assert_no_errors(void)
{
	unsigned n = recorded_errors();

	if (n) {
		pthread_mutex_lock(&test_thread_error_lock);
		fail_msg("%u failed checks; the first: %s", n, test_thread_first_error);
		pthread_mutex_unlock(&test_thread_error_lock);
	}
}

/* Forget earlier failures (a test's setup). */
static inline void reset_errors(void)
{
	atomic_store(&test_thread_n_errors, 0);
	test_thread_first_error[0] = '\0';
}

/* A stateless 64-bit mix (murmur3's finaliser): distinct inputs, scattered outputs. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}
