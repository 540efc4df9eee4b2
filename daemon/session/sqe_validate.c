/* SPDX-License-Identifier: MIT */
/* sqe_validate: bounds, alignment and overflow checks of one SQE copy. */
#include "session/sqe_validate.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

static int reject(const char **ret_why, const char *why)
{
	if (ret_why)
		*ret_why = why;
	return -EINVAL;
}

/*
 * [off, off + len) inside [0, size), aligned: written as two comparisons that
 * cannot overflow whatever off and len hold.
 */
static bool arena_range_ok(uint64_t off, uint64_t len, uint64_t size)
{
	return off % MOE_ARENA_ALIGN == 0 && off <= size && len <= size - off;
}

static int sqe_validate_routing(const struct moe_sqe *sqe, const struct sqe_limits *lim,
				const char **ret_why)
{
	bool given = sqe->flags & MOE_SQE_F_ROUTE_GIVEN;
	bool want = sqe->flags & MOE_SQE_F_ROUTE_RETURN;
	uint32_t slots = lim->layer_slots[sqe->layer];
	uint64_t bytes;

	if (!given && !want) {
		if (sqe->route_k || sqe->route_off || sqe->weight_off)
			return reject(ret_why, "routing fields set without a ROUTE flag");
		return 0;
	}
	if (given && want)
		return reject(ret_why, "ROUTE_GIVEN and ROUTE_RETURN together");
	if (sqe->route_k == 0 || sqe->route_k > SQE_MAX_ROUTE_K)
		return reject(ret_why, "route_k out of range");
	if (given && sqe->route_k > lim->layer_experts[sqe->layer])
		return reject(ret_why, "route_k above the layer's expert count");
	if (want && sqe->route_k < slots)
		return reject(ret_why, "route_k below the layer's slots per token");
	bytes = (uint64_t)sqe->n_tokens * sqe->route_k * sizeof(int32_t);
	if (!arena_range_ok(sqe->route_off, bytes, lim->arena_size))
		return reject(ret_why, "route_off outside the arena or misaligned");
	if (!arena_range_ok(sqe->weight_off, bytes, lim->arena_size))
		return reject(ret_why, "weight_off outside the arena or misaligned");
	return 0;
}

int sqe_validate(const struct moe_sqe *sqe, const struct sqe_limits *lim, const char **ret_why)
{
	uint64_t bytes;

	if (sqe->reserved0)
		return reject(ret_why, "reserved field not zero");
	if (sqe->flags & ~MOE_SQE_F_ALL)
		return reject(ret_why, "unknown flags");
	if (sqe->opcode == MOE_OP_NOP)
		return 0;
	if (sqe->opcode != MOE_OP_FORWARD)
		return reject(ret_why, "unknown opcode");
	if (sqe->layer >= lim->n_layers || lim->layer_slots[sqe->layer] == 0)
		return reject(ret_why, "no such MoE layer");
	if (sqe->n_tokens == 0 || sqe->n_tokens > lim->max_tokens)
		return reject(ret_why, "token count out of range");
	/* at most 2^20 tokens x 2^24 floats x 4 bytes: no overflow in 64 bits */
	bytes = (uint64_t)sqe->n_tokens * lim->layer_d_model[sqe->layer] * sizeof(float);
	if (!arena_range_ok(sqe->in_off, bytes, lim->arena_size))
		return reject(ret_why, "in_off outside the arena or misaligned");
	if (!arena_range_ok(sqe->out_off, bytes, lim->arena_size))
		return reject(ret_why, "out_off outside the arena or misaligned");
	if (sqe->flags & MOE_SQE_F_COUNTS_RETURN) {
		if (!arena_range_ok(sqe->counts_off, (uint64_t)lim->max_experts * sizeof(int32_t),
				    lim->arena_size))
			return reject(ret_why, "counts_off outside the arena or misaligned");
	} else if (sqe->counts_off) {
		return reject(ret_why, "counts_off set without COUNTS_RETURN");
	}
	return sqe_validate_routing(sqe, lim, ret_why);
}
