/* SPDX-License-Identifier: MIT */
/*
 * Tests of latency_hist, the per-layer latency histogram behind `moectl
 * status` (p50, p99, p999) and the Prometheus buckets:
 * - values below 8 us are exact; above, a quantile is never below the true
 *   value and at most 12.5% above it, over every value up to 2^20 us;
 * - quantiles of a known mix (ranks, not averages);
 * - the counts below powers of two are exact, since powers of two are
 *   bucket edges; values past the top count in the last bucket.
 */
#include "test_assert.h"

#include <stdint.h>
#include <string.h>

#include "sched/latency_hist.h"

static struct latency_hist h;

static void reset(void)
{
	memset(&h, 0, sizeof(h));
}

static void test_empty_is_zero(void **state)
{
	(void)state;
	reset();
	ASSERT_EQ(latency_hist_quantile(&h, 0.5), 0);
	ASSERT_EQ(latency_hist_count_below_pow2(&h, 10), 0);
}

static void test_single_value_bounds(void **state)
{
	(void)state;
	for (uint64_t v = 0; v < (1u << 20); v = v < 64 ? v + 1 : v + v / 7 + 1) {
		uint64_t q;

		reset();
		latency_hist_add(&h, v);
		q = latency_hist_quantile(&h, 0.5);
		if (v < 8)
			ASSERT_EQ(q, v);
		if (q < v || (double)q > (double)v * 1.125 + 1e-9)
			fail_msg("value %llu reads back as %llu", (unsigned long long)v,
				 (unsigned long long)q);
		ASSERT_EQ(h.count, 1);
		ASSERT_EQ(h.sum_us, v);
	}
}

static void test_quantiles_by_rank(void **state)
{
	(void)state;
	reset();
	/* 990 fast batches at 100 us, 9 at 5000 us, 1 at 200000 us */
	for (int i = 0; i < 990; i++)
		latency_hist_add(&h, 100);
	for (int i = 0; i < 9; i++)
		latency_hist_add(&h, 5000);
	latency_hist_add(&h, 200000);
	ASSERT_EQ(h.count, 1000);
	assert_true(latency_hist_quantile(&h, 0.5) >= 100 && latency_hist_quantile(&h, 0.5) < 113);
	assert_true(latency_hist_quantile(&h, 0.99) >= 100 &&
		    latency_hist_quantile(&h, 0.99) < 113); /* rank 990 is still fast */
	assert_true(latency_hist_quantile(&h, 0.995) >= 5000 &&
		    latency_hist_quantile(&h, 0.995) < 5625);
	assert_true(latency_hist_quantile(&h, 1.0) >= 200000 &&
		    latency_hist_quantile(&h, 1.0) < 225000);
}

static void test_counts_below_powers_of_two(void **state)
{
	(void)state;
	reset();
	latency_hist_add(&h, 7);    /* below 8 */
	latency_hist_add(&h, 8);    /* not below 8 */
	latency_hist_add(&h, 1023); /* below 1024 */
	latency_hist_add(&h, 1024); /* not below 1024 */
	ASSERT_EQ(latency_hist_count_below_pow2(&h, 3), 1);
	ASSERT_EQ(latency_hist_count_below_pow2(&h, 4), 2);
	ASSERT_EQ(latency_hist_count_below_pow2(&h, 10), 3);
	ASSERT_EQ(latency_hist_count_below_pow2(&h, 11), 4);
	ASSERT_EQ(latency_hist_count_below_pow2(&h, LATENCY_MAX_LOG), 4);
}

static void test_overflow_counts_in_the_last_bucket(void **state)
{
	(void)state;
	reset();
	latency_hist_add(&h, UINT64_MAX / 2);
	ASSERT_EQ(h.count, 1);
	ASSERT_EQ(latency_hist_count_below_pow2(&h, LATENCY_MAX_LOG - 1), 0);
	ASSERT_EQ(latency_hist_quantile(&h, 1.0), (1ull << LATENCY_MAX_LOG) - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_is_zero),
		cmocka_unit_test(test_single_value_bounds),
		cmocka_unit_test(test_quantiles_by_rank),
		cmocka_unit_test(test_counts_below_powers_of_two),
		cmocka_unit_test(test_overflow_counts_in_the_last_bucket),
	};

	return cmocka_run_group_tests_name("latency_hist", tests, NULL, NULL);
}
