/* SPDX-License-Identifier: MIT */
/*
 * Tests of rebalance_plan(): which replicas a round of measured load asks
 * for (the hottest experts first, each onto the node with the least load
 * of its layer, that load updated as copies are planned) and which it
 * drops (replicas of experts below the mean), on hand-made placements.
 */
#include "test_assert.h"

#include <string.h>

#include "store/rebalance.h"

#define E 8

static struct expert_place places[E];
static struct layer_place layer = { .n_experts = E, .experts = places };

/* One layer of E experts over @n_nodes, expert e on node e % n_nodes. */
static struct placement interleaved(uint32_t n_nodes)
{
	struct placement p = { .epoch = 1, .n_nodes = n_nodes, .n_layers = 1, .layers = &layer };

	for (uint32_t e = 0; e < E; e++)
		places[e] = (struct expert_place){ .n_copies = 1, .node = { (uint8_t)(e % n_nodes) } };
	return p;
}

static const struct rebalance_opts twice_mean = { .hot_percent = 200 };

static void test_no_or_even_load_changes_nothing(void **state)
{
	struct placement p = interleaved(2);
	uint64_t none[E] = { 0 }, even[E] = { 10, 10, 10, 10, 10, 10, 10, 10 };
	struct expert_change out[8];

	(void)state;
	assert_int_equal(rebalance_plan(&p, 0, none, NULL, &twice_mean, out, 8), 0);
	assert_int_equal(rebalance_plan(&p, 0, even, NULL, &twice_mean, out, 8), 0);
	assert_int_equal(rebalance_plan(&p, 1, even, NULL, &twice_mean, out, 8), 0); /* no such layer */
}

/* Expert 2 (node 0) gets 4x the mean: a copy on node 1. */
static void test_hot_expert_gets_a_copy_elsewhere(void **state)
{
	struct placement p = interleaved(2);
	uint64_t tokens[E] = { 4, 4, 32, 4, 4, 4, 4, 8 }; /* mean 8 */
	struct expert_change out[8];

	(void)state;
	assert_int_equal(rebalance_plan(&p, 0, tokens, NULL, &twice_mean, out, 8), 1);
	assert_int_equal(out[0].op, EXPERT_REPLICATE);
	assert_int_equal(out[0].layer, 0);
	assert_int_equal(out[0].expert, 2);
	assert_int_equal(out[0].node, 1);
	/* exactly at the threshold is not hot: mean 7, 300% of it 21 */
	{
		uint64_t at[E] = { 5, 5, 21, 5, 5, 5, 5, 5 };
		const struct rebalance_opts thrice = { .hot_percent = 300 };

		assert_int_equal(rebalance_plan(&p, 0, at, NULL, &thrice, out, 8), 0);
		at[2] = 22;
		assert_int_equal(rebalance_plan(&p, 0, at, NULL, &thrice, out, 8), 1);
	}
}

/*
 * Four nodes, two hot experts both on node 0: the hottest goes to the
 * coolest node, and the next to another one, as the first copy's share
 * now counts on its node.
 */
static void test_copies_spread_by_planned_load(void **state)
{
	struct placement p = interleaved(4);
	/* node loads: 0: 100+60+0, 1: 1+1, 2: 1+1, 3: 0+0 (experts 0,4 | 1,5 | 2,6 | 3,7) */
	uint64_t tokens[E] = { 100, 1, 1, 0, 60, 1, 1, 0 };
	struct expert_change out[8];
	size_t n = rebalance_plan(&p, 0, tokens, NULL, &twice_mean, out, 8);

	(void)state;
	assert_int_equal(n, 2);
	assert_int_equal(out[0].expert, 0);
	assert_int_equal(out[0].node, 3);
	assert_int_equal(out[1].expert, 4);
	assert_int_not_equal(out[1].node, 3); /* 3 carries 50 now */
	assert_int_not_equal(out[1].node, 0);
	/* at most max_out */
	assert_int_equal(rebalance_plan(&p, 0, tokens, NULL, &twice_mean, out, 1), 1);
	assert_int_equal(out[0].expert, 0);
}

/* A hot expert already on every node, or at the copy limit, gets nothing. */
static void test_hot_expert_everywhere_gets_nothing(void **state)
{
	struct placement p = interleaved(2);
	uint64_t tokens[E] = { 64, 1, 1, 1, 1, 1, 1, 1 };
	struct expert_change out[8];

	(void)state;
	places[0] = (struct expert_place){ .n_copies = 2, .node = { 0, 1 } };
	assert_int_equal(rebalance_plan(&p, 0, tokens, NULL, &twice_mean, out, 8), 0);
}

/* A replica of an expert below the mean goes: its last copy that the load did not make. */
static void test_cold_replica_dropped(void **state)
{
	struct placement p = interleaved(4);
	uint64_t tokens[E] = { 10, 10, 10, 2, 10, 10, 10, 10 };
	struct expert_change out[8];

	(void)state;
	places[3] = (struct expert_place){ .n_copies = 3, .node = { 3, 0, 2 } };
	assert_int_equal(rebalance_plan(&p, 0, tokens, NULL, &twice_mean, out, 8), 1);
	assert_int_equal(out[0].op, EXPERT_DROP);
	assert_int_equal(out[0].expert, 3);
	assert_int_equal(out[0].node, 2);
	/* the load's own copy (on node 2 here) frees nothing: the replica before it goes */
	{
		uint32_t loaded[E] = { 0, 1, 2, 2, 0, 1, 2, 3 };

		assert_int_equal(rebalance_plan(&p, 0, tokens, loaded, &twice_mean, out, 8), 1);
		assert_int_equal(out[0].node, 0);
	}
	/* at the mean or above, replicas stay */
	tokens[3] = 10;
	assert_int_equal(rebalance_plan(&p, 0, tokens, NULL, &twice_mean, out, 8), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_or_even_load_changes_nothing),
		cmocka_unit_test(test_hot_expert_gets_a_copy_elsewhere),
		cmocka_unit_test(test_copies_spread_by_planned_load),
		cmocka_unit_test(test_hot_expert_everywhere_gets_nothing),
		cmocka_unit_test(test_cold_replica_dropped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
