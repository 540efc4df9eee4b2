/* SPDX-License-Identifier: MIT */
/*
 * latency_hist: how long batches took, as a log-linear histogram: whole
 * microseconds, exact below 8 us, then 8 buckets per power of two (each
 * at most 12.5% wide), up to 2^35 us (9.5 hours; longer counts as that).
 * Adding is a few instructions and no allocation; quantiles (p50, p99,
 * p999 for `moectl status`) are read off the buckets, and the counts below
 * powers of two give the Prometheus histogram's buckets.
 *
 * Thread-safety: none; the reactor thread's.
 */
#pragma once

#include <stdint.h>

#define LATENCY_SUB     8u  /* buckets per power of two */
#define LATENCY_MAX_LOG 35u /* values up to 2^35 us */
#define LATENCY_BUCKETS ((LATENCY_MAX_LOG - 2u) * LATENCY_SUB)

struct latency_hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t bucket[LATENCY_BUCKETS];
};

void latency_hist_add(struct latency_hist *h, uint64_t us);

/*
 * The @q-quantile (0 < q <= 1) in microseconds: the upper edge of the
 * bucket holding the value of rank ceil(q * count), so never below the
 * true value and at most 12.5% above it. 0 when nothing was added.
 */
uint64_t latency_hist_quantile(const struct latency_hist *h, double q);

/* How many values were below 2^@log2_us microseconds (3 <= @log2_us <= LATENCY_MAX_LOG). */
uint64_t latency_hist_count_below_pow2(const struct latency_hist *h, unsigned log2_us);
