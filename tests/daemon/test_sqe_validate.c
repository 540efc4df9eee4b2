/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of sqe_validate(), the gate every SQE a client wrote passes
 * before moed acts on it. Each rejection branch is reached by changing one
 * field of an otherwise valid SQE, and the refusal must be -EINVAL with a
 * reason naming that field (so a test cannot pass because an earlier check
 * tripped by accident). Arena ranges are probed at the exact end of the
 * arena, one byte past it, and with offsets near UINT64_MAX where a naive
 * off + len check wraps around. The validator is pure: there is nothing to
 * tear down, and ASan/UBSan builds check the arithmetic itself.
 */
#include "test_assert.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "session/sqe_validate.h"

/* ---------------------------------------------------------------- helpers */

/*
 * The model under test: 3 layers, layer 1 dense (no MoE block). A token row
 * of layers 0 and 1 is 16 floats = 64 bytes, so n_tokens rows stay aligned; a
 * counts buffer is 16 int32 = 64 bytes. Layer 2 is four times as wide
 * (t_width): moed refuses such a model at load, but the validator must still
 * bound each SQE by its own layer's width (test_rows_bounded_by_own_layer).
 */
#define T_ARENA	     (1ull << 20)
#define T_D_MODEL    16u
#define T_ROW_BYTES  (T_D_MODEL * sizeof(float))
#define T_MAX_TOKENS 64u
#define T_MAX_EXP    16u
#define T_TOKENS     4u
#define T_IO_BYTES   (T_TOKENS * T_ROW_BYTES) /* 256 */

static const uint32_t t_slots[] = { 2, 0, 4 };
static const uint32_t t_experts[] = { 8, 0, 4 };
static const uint32_t t_width[] = { T_D_MODEL, T_D_MODEL, 4 * T_D_MODEL };

static struct sqe_limits limits(void)
{
	return (struct sqe_limits){
		.arena_size = T_ARENA,
		.n_layers = 3,
		.max_tokens = T_MAX_TOKENS,
		.max_experts = T_MAX_EXP,
		.layer_slots = t_slots,
		.layer_experts = t_experts,
		.layer_d_model = t_width,
	};
}

/* A valid FORWARD of T_TOKENS rows on layer 0, no routing buffers. */
static struct moe_sqe forward_sqe(void)
{
	return (struct moe_sqe){
		.user_data = 0x1234,
		.opcode = MOE_OP_FORWARD,
		.layer = 0,
		.n_tokens = T_TOKENS,
		.in_off = 0,
		.out_off = 4096,
	};
}

/* The same with ROUTE_* @flag and route_k @k, buffers at 8 KiB and 16 KiB. */
static struct moe_sqe routed_sqe(uint16_t flag, uint32_t layer, uint32_t k)
{
	struct moe_sqe s = forward_sqe();

	s.flags = flag;
	s.layer = layer;
	s.route_k = k;
	s.route_off = 8192;
	s.weight_off = 16384;
	return s;
}

static void expect_accept_at(const struct moe_sqe *sqe, const struct sqe_limits *lim, int line)
{
	const char *why = NULL;
	int r = sqe_validate(sqe, lim, &why);

	if (r != 0)
		fail_msg("line %d: sqe_validate returned %d (%s), expected 0; why: %s", line, r,
			 r < 0 ? strerror(-r) : "?", why ? why : "(null)");
}

/* -EINVAL with a reason that contains @what. */
static void expect_reject_at(const struct moe_sqe *sqe, const struct sqe_limits *lim,
			     const char *what, int line)
{
	const char *why = NULL;
	int r = sqe_validate(sqe, lim, &why);

	if (r != -EINVAL)
		fail_msg("line %d: sqe_validate returned %d (%s), expected -EINVAL (%s)", line, r,
			 r < 0 ? strerror(-r) : "accepted", what);
	if (!why || !*why)
		fail_msg("line %d: rejected without a reason", line);
	if (!strstr(why, what))
		fail_msg("line %d: rejected for \"%s\", expected a reason containing \"%s\"", line,
			 why, what);
}

#define EXPECT_ACCEPT(_sqe, _lim)	  expect_accept_at(_sqe, _lim, __LINE__)
#define EXPECT_REJECT(_sqe, _lim, _what) expect_reject_at(_sqe, _lim, _what, __LINE__)

/* ------------------------------------------------------- accepted shapes */

static void test_nop_with_zeroed_fields_accepted(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = { .user_data = 7, .opcode = MOE_OP_NOP };

	(void)state;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_forward_plain_accepted(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	EXPECT_ACCEPT(&s, &lim);
	s.flags = MOE_SQE_F_NO_MERGE;
	EXPECT_ACCEPT(&s, &lim);
	/* input and output may be the same rows (in-place) and on the last layer */
	s.out_off = s.in_off;
	s.layer = 2;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_forward_with_every_buffer_accepted(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN, 0, 8);

	(void)state;
	s.flags |= MOE_SQE_F_COUNTS_RETURN | MOE_SQE_F_NO_MERGE;
	s.counts_off = 32768;
	EXPECT_ACCEPT(&s, &lim);

	s = routed_sqe(MOE_SQE_F_ROUTE_RETURN, 2, 4);
	s.flags |= MOE_SQE_F_COUNTS_RETURN;
	s.counts_off = 32768;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_token_count_bounds_accepted(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.n_tokens = 1;
	EXPECT_ACCEPT(&s, &lim);
	s.n_tokens = T_MAX_TOKENS;
	s.out_off = T_MAX_TOKENS * T_ROW_BYTES;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_null_why_allowed(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	ASSERT_OK(sqe_validate(&s, &lim, NULL));
	s.n_tokens = 0;
	ASSERT_ERRNO(sqe_validate(&s, &lim, NULL), EINVAL);
}

/* ------------------------------------------------------- header fields */

static void test_reserved0_nonzero_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.reserved0 = 1;
	EXPECT_REJECT(&s, &lim, "reserved");
	s.reserved0 = 0x80;
	EXPECT_REJECT(&s, &lim, "reserved");
	/* a NOP is no excuse */
	s = (struct moe_sqe){ .opcode = MOE_OP_NOP, .reserved0 = 1 };
	EXPECT_REJECT(&s, &lim, "reserved");
}

static void test_unknown_flag_bits_rejected(void **state)
{
	struct sqe_limits lim = limits();

	(void)state;
	for (unsigned bit = 0; bit < 16; bit++) {
		struct moe_sqe s = forward_sqe();

		if (MOE_SQE_F_ALL & (1u << bit))
			continue;
		s.flags = (uint16_t)(1u << bit);
		EXPECT_REJECT(&s, &lim, "flags");
		s.opcode = MOE_OP_NOP;
		EXPECT_REJECT(&s, &lim, "flags");
	}
}

static void test_unknown_opcode_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();
	static const uint8_t ops[] = { 2, 3, 0x7f, 0x80, 0xff };

	(void)state;
	for (size_t i = 0; i < sizeof(ops); i++) {
		s.opcode = ops[i];
		EXPECT_REJECT(&s, &lim, "opcode");
	}
}

static void test_layer_out_of_range_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.layer = lim.n_layers;
	EXPECT_REJECT(&s, &lim, "layer");
	s.layer = UINT16_MAX;
	EXPECT_REJECT(&s, &lim, "layer");
	s.layer = lim.n_layers - 1;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_layer_without_moe_block_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.layer = 1; /* t_slots[1] == 0: dense layer */
	EXPECT_REJECT(&s, &lim, "layer");
}

static void test_token_count_zero_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.n_tokens = 0;
	EXPECT_REJECT(&s, &lim, "token");
}

static void test_token_count_above_max_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.out_off = 65536;
	s.n_tokens = T_MAX_TOKENS + 1;
	EXPECT_REJECT(&s, &lim, "token");
	s.n_tokens = UINT32_MAX;
	EXPECT_REJECT(&s, &lim, "token");
}

/* ---------------------------------------------------------- arena ranges */

static void test_in_off_misaligned_rejected(void **state)
{
	struct sqe_limits lim = limits();
	static const uint64_t offs[] = { 1, 4, 32, 63, 65, 4096 + 8 };

	(void)state;
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		struct moe_sqe s = forward_sqe();

		s.in_off = offs[i];
		EXPECT_REJECT(&s, &lim, "in_off");
	}
}

static void test_out_off_misaligned_rejected(void **state)
{
	struct sqe_limits lim = limits();
	static const uint64_t offs[] = { 1, 4, 32, 63, 65, 4096 + 8 };

	(void)state;
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		struct moe_sqe s = forward_sqe();

		s.out_off = offs[i];
		EXPECT_REJECT(&s, &lim, "out_off");
	}
}

/*
 * A range ending exactly at the arena's end is inside; the same SQE against
 * an arena one byte shorter ends one byte past it (the offset stays aligned,
 * so only the range check can refuse it).
 */
static void test_io_range_ending_at_arena_end_accepted(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.in_off = T_ARENA - T_IO_BYTES;
	EXPECT_ACCEPT(&s, &lim);
	s = forward_sqe();
	s.out_off = T_ARENA - T_IO_BYTES;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_io_range_one_byte_past_arena_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	lim.arena_size = T_ARENA - 1;
	s.in_off = T_ARENA - T_IO_BYTES;
	EXPECT_REJECT(&s, &lim, "in_off");
	s = forward_sqe();
	s.out_off = T_ARENA - T_IO_BYTES;
	EXPECT_REJECT(&s, &lim, "out_off");

	/* and one aligned step further, and an offset exactly at / past the end */
	lim = limits();
	s = forward_sqe();
	s.in_off = T_ARENA - T_IO_BYTES + MOE_ARENA_ALIGN;
	EXPECT_REJECT(&s, &lim, "in_off");
	s.in_off = T_ARENA;
	EXPECT_REJECT(&s, &lim, "in_off");
	s.in_off = 2 * T_ARENA;
	EXPECT_REJECT(&s, &lim, "in_off");
}

/*
 * Layer 2's rows are 4 x T_ROW_BYTES: the range that ends exactly at the
 * arena's end for layer 0 leaves it by three quarters for layer 2, and the
 * one that ends there for layer 2 is accepted. With one model-wide width the
 * narrow layer's bound would let a wide layer write past the arena.
 */
static void test_rows_bounded_by_own_layer(void **state)
{
	const uint64_t wide_bytes = T_TOKENS * 4 * T_ROW_BYTES;
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.layer = 2;
	s.in_off = T_ARENA - T_IO_BYTES;
	EXPECT_REJECT(&s, &lim, "in_off");
	s.in_off = T_ARENA - wide_bytes;
	EXPECT_ACCEPT(&s, &lim);
	s.out_off = T_ARENA - T_IO_BYTES;
	EXPECT_REJECT(&s, &lim, "out_off");
	s.out_off = T_ARENA - wide_bytes;
	EXPECT_ACCEPT(&s, &lim);

	/* the narrow layer keeps its own, smaller bound */
	s.layer = 0;
	s.in_off = T_ARENA - T_IO_BYTES;
	s.out_off = 0;
	EXPECT_ACCEPT(&s, &lim);
	s.in_off = T_ARENA - T_IO_BYTES + MOE_ARENA_ALIGN;
	EXPECT_REJECT(&s, &lim, "in_off");
}

/*
 * Aligned offsets whose naive off + len wraps around 2^64 to a small number
 * that would pass `off + len <= arena_size`.
 */
static const uint64_t wrapping_offs[] = {
	UINT64_MAX - (MOE_ARENA_ALIGN - 1),	  /* 2^64 - 64: + 256 wraps to 192 */
	(uint64_t)0 - T_IO_BYTES,		  /* + 256 wraps to exactly 0 */
	(uint64_t)0 - T_IO_BYTES + MOE_ARENA_ALIGN, /* wraps to 64 */
	UINT64_MAX / 2 + 1,			  /* 2^63 */
};

#define N_WRAPPING (sizeof(wrapping_offs) / sizeof(wrapping_offs[0]))

static void test_io_offsets_near_uint64_max_rejected(void **state)
{
	struct sqe_limits lim = limits();

	(void)state;
	for (size_t i = 0; i < N_WRAPPING; i++) {
		struct moe_sqe s = forward_sqe();

		s.in_off = wrapping_offs[i];
		EXPECT_REJECT(&s, &lim, "in_off");
		s = forward_sqe();
		s.out_off = wrapping_offs[i];
		EXPECT_REJECT(&s, &lim, "out_off");
	}
}

static void test_buffer_offsets_near_uint64_max_rejected(void **state)
{
	struct sqe_limits lim = limits();

	(void)state;
	for (size_t i = 0; i < N_WRAPPING; i++) {
		/* route_k 8: 128-byte buffers, so 2^64 - 64 wraps to 64 */
		struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_RETURN, 0, 8);

		s.route_off = wrapping_offs[i];
		EXPECT_REJECT(&s, &lim, "route_off");
		s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN, 0, 8);
		s.weight_off = wrapping_offs[i];
		EXPECT_REJECT(&s, &lim, "weight_off");
		s = forward_sqe();
		s.flags = MOE_SQE_F_COUNTS_RETURN;
		s.counts_off = wrapping_offs[i]; /* 64 bytes: 2^64 - 64 wraps to 0 */
		EXPECT_REJECT(&s, &lim, "counts_off");
	}
}

/* ---------------------------------------------------------------- routing */

static void test_route_given_and_return_together_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_ROUTE_RETURN, 0, 2);

	(void)state;
	EXPECT_REJECT(&s, &lim, "together");
}

static void test_route_k_zero_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN, 0, 0);

	(void)state;
	EXPECT_REJECT(&s, &lim, "route_k");
	s = routed_sqe(MOE_SQE_F_ROUTE_RETURN, 0, 0);
	EXPECT_REJECT(&s, &lim, "route_k");
}

static void test_route_k_above_max_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s;
	uint32_t big_experts[] = { SQE_MAX_ROUTE_K + 8, 0, SQE_MAX_ROUTE_K + 8 };

	(void)state;
	/* SQE_MAX_ROUTE_K itself fits (4 tokens x 1024 x 4 bytes = 16 KiB each) */
	s = routed_sqe(MOE_SQE_F_ROUTE_RETURN, 0, SQE_MAX_ROUTE_K);
	s.weight_off = 65536;
	EXPECT_ACCEPT(&s, &lim);
	s.route_k = SQE_MAX_ROUTE_K + 1;
	EXPECT_REJECT(&s, &lim, "route_k");
	s.route_k = UINT16_MAX;
	EXPECT_REJECT(&s, &lim, "route_k");

	/* a layer with more experts than the bound does not lift it for GIVEN */
	lim.layer_experts = big_experts;
	s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN, 0, SQE_MAX_ROUTE_K + 1);
	s.weight_off = 65536;
	EXPECT_REJECT(&s, &lim, "route_k out of range");
}

static void test_route_given_k_above_layer_experts_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN, 2, 4);

	(void)state;
	EXPECT_ACCEPT(&s, &lim); /* route_k == the layer's 4 experts */
	s.route_k = 5;
	EXPECT_REJECT(&s, &lim, "expert");
	/* fewer than the layer's slots is the client's choice with GIVEN */
	s.route_k = 1;
	EXPECT_ACCEPT(&s, &lim);
}

static void test_route_return_k_below_layer_slots_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_RETURN, 2, 3);

	(void)state;
	EXPECT_REJECT(&s, &lim, "slots");
	s.route_k = 4; /* == slots */
	EXPECT_ACCEPT(&s, &lim);
	s.route_k = 64; /* room to spare, even above the layer's experts */
	EXPECT_ACCEPT(&s, &lim);
}

static void test_route_off_outside_arena_rejected(void **state)
{
	struct sqe_limits lim = limits();
	uint64_t bytes = T_TOKENS * 2 * sizeof(int32_t); /* 32 */
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_RETURN, 0, 2);

	(void)state;
	s.route_off = T_ARENA - MOE_ARENA_ALIGN; /* 32 bytes in the last 64 */
	EXPECT_ACCEPT(&s, &lim);
	lim.arena_size = T_ARENA - MOE_ARENA_ALIGN + bytes; /* exact end */
	s.weight_off = 0;
	EXPECT_ACCEPT(&s, &lim);
	lim.arena_size -= 1; /* one byte past */
	EXPECT_REJECT(&s, &lim, "route_off");

	lim = limits();
	s.route_off = T_ARENA;
	EXPECT_REJECT(&s, &lim, "route_off");
	s.route_off = 8192 + 32; /* misaligned */
	EXPECT_REJECT(&s, &lim, "route_off");
}

static void test_weight_off_outside_arena_rejected(void **state)
{
	struct sqe_limits lim = limits();
	uint64_t bytes = T_TOKENS * 8 * sizeof(float); /* 128 */
	struct moe_sqe s = routed_sqe(MOE_SQE_F_ROUTE_GIVEN, 0, 8);

	(void)state;
	s.weight_off = T_ARENA - bytes;
	EXPECT_ACCEPT(&s, &lim);
	lim.arena_size -= 1;
	s.in_off = s.out_off = s.route_off = 0;
	EXPECT_REJECT(&s, &lim, "weight_off");

	lim = limits();
	s.weight_off = T_ARENA;
	EXPECT_REJECT(&s, &lim, "weight_off");
	s.weight_off = 16384 + 4; /* misaligned */
	EXPECT_REJECT(&s, &lim, "weight_off");
}

static void test_routing_fields_without_route_flag_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s;

	(void)state;
	s = forward_sqe();
	s.route_k = 2;
	EXPECT_REJECT(&s, &lim, "without a ROUTE flag");
	s = forward_sqe();
	s.route_off = 8192;
	EXPECT_REJECT(&s, &lim, "without a ROUTE flag");
	s = forward_sqe();
	s.weight_off = 8192;
	EXPECT_REJECT(&s, &lim, "without a ROUTE flag");
	/* NO_MERGE and COUNTS_RETURN are not ROUTE flags */
	s = routed_sqe(MOE_SQE_F_NO_MERGE, 0, 2);
	EXPECT_REJECT(&s, &lim, "without a ROUTE flag");
}

/* ----------------------------------------------------------------- counts */

static void test_counts_off_outside_arena_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.flags = MOE_SQE_F_COUNTS_RETURN;
	s.counts_off = 0; /* offset 0 is a valid place with the flag */
	EXPECT_ACCEPT(&s, &lim);
	s.counts_off = T_ARENA - T_MAX_EXP * sizeof(int32_t); /* exact end */
	EXPECT_ACCEPT(&s, &lim);
	lim.arena_size -= 1; /* one byte past */
	EXPECT_REJECT(&s, &lim, "counts_off");

	lim = limits();
	s.counts_off = T_ARENA;
	EXPECT_REJECT(&s, &lim, "counts_off");
	s.counts_off = 4096 + 16; /* misaligned */
	EXPECT_REJECT(&s, &lim, "counts_off");
}

static void test_counts_off_without_flag_rejected(void **state)
{
	struct sqe_limits lim = limits();
	struct moe_sqe s = forward_sqe();

	(void)state;
	s.counts_off = 32768;
	EXPECT_REJECT(&s, &lim, "COUNTS_RETURN");
	s.flags = MOE_SQE_F_NO_MERGE;
	EXPECT_REJECT(&s, &lim, "COUNTS_RETURN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nop_with_zeroed_fields_accepted),
		cmocka_unit_test(test_forward_plain_accepted),
		cmocka_unit_test(test_forward_with_every_buffer_accepted),
		cmocka_unit_test(test_token_count_bounds_accepted),
		cmocka_unit_test(test_null_why_allowed),
		cmocka_unit_test(test_reserved0_nonzero_rejected),
		cmocka_unit_test(test_unknown_flag_bits_rejected),
		cmocka_unit_test(test_unknown_opcode_rejected),
		cmocka_unit_test(test_layer_out_of_range_rejected),
		cmocka_unit_test(test_layer_without_moe_block_rejected),
		cmocka_unit_test(test_token_count_zero_rejected),
		cmocka_unit_test(test_token_count_above_max_rejected),
		cmocka_unit_test(test_in_off_misaligned_rejected),
		cmocka_unit_test(test_out_off_misaligned_rejected),
		cmocka_unit_test(test_io_range_ending_at_arena_end_accepted),
		cmocka_unit_test(test_io_range_one_byte_past_arena_rejected),
		cmocka_unit_test(test_rows_bounded_by_own_layer),
		cmocka_unit_test(test_io_offsets_near_uint64_max_rejected),
		cmocka_unit_test(test_buffer_offsets_near_uint64_max_rejected),
		cmocka_unit_test(test_route_given_and_return_together_rejected),
		cmocka_unit_test(test_route_k_zero_rejected),
		cmocka_unit_test(test_route_k_above_max_rejected),
		cmocka_unit_test(test_route_given_k_above_layer_experts_rejected),
		cmocka_unit_test(test_route_return_k_below_layer_slots_rejected),
		cmocka_unit_test(test_route_off_outside_arena_rejected),
		cmocka_unit_test(test_weight_off_outside_arena_rejected),
		cmocka_unit_test(test_routing_fields_without_route_flag_rejected),
		cmocka_unit_test(test_counts_off_outside_arena_rejected),
		cmocka_unit_test(test_counts_off_without_flag_rejected),
	};

	return cmocka_run_group_tests_name("sqe_validate", tests, NULL, NULL);
}
