/* SPDX-License-Identifier: MIT */
/* latency_hist: a log-linear latency histogram; see latency_hist.h. */
#include "sched/latency_hist.h"

/*
 * Values below 8 have a bucket each (0..7). From 8 on, a value with its
 * highest bit at p (p >= 3) lands in power-of-two group p - 2 (buckets
 * 8 * (p - 2) ..), at the sub-bucket its next three bits give.
 */
static unsigned bucket_of(uint64_t us)
{
	unsigned p;

	if (us < LATENCY_SUB)
		return (unsigned)us;
	if (us >= 1ull << LATENCY_MAX_LOG)
		return LATENCY_BUCKETS - 1;
	p = 63u - (unsigned)__builtin_clzll(us);
	return (p - 2u) * LATENCY_SUB + (unsigned)((us >> (p - 3u)) - LATENCY_SUB);
}

/* The first value past bucket @b. */
static uint64_t bucket_end(unsigned b)
{
	unsigned p, sub;

	if (b < LATENCY_SUB)
		return b + 1u;
	p = b / LATENCY_SUB + 2u;
	sub = b % LATENCY_SUB;
	return (uint64_t)(LATENCY_SUB + sub + 1u) << (p - 3u);
}

void latency_hist_add(struct latency_hist *h, uint64_t us)
{
	h->count++;
	h->sum_us += us;
	h->bucket[bucket_of(us)]++;
}

uint64_t latency_hist_quantile(const struct latency_hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return 0;
	rank = (uint64_t)(q * (double)h->count);
	if ((double)rank < q * (double)h->count)
		rank++; /* ceil */
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < LATENCY_BUCKETS; b++) {
		seen += h->bucket[b];
		if (seen >= rank)
			return bucket_end(b) - 1u; /* whole microseconds: the bucket's last value */
	}
	return bucket_end(LATENCY_BUCKETS - 1) - 1u;
}

uint64_t latency_hist_count_below_pow2(const struct latency_hist *h, unsigned log2_us)
{
	/* 2^log2_us starts bucket (log2_us - 2) * SUB: every bucket before it lies below */
	unsigned end = log2_us < 3u ? 0 : (log2_us - 2u) * LATENCY_SUB;
	uint64_t n = 0;

	if (end > LATENCY_BUCKETS)
		end = LATENCY_BUCKETS;
	for (unsigned b = 0; b < end; b++)
		n += h->bucket[b];
	return n;
}
