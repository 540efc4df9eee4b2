/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for sqe_validate(): the first bytes pick the limits (arena
 * size, per-layer widths, layers, slots and experts), the next 64 are the SQE
 * a hostile client wrote. An accepted SQE must name only arena ranges that
 * are inside the arena and aligned, recomputed here in 128-bit arithmetic so
 * the check does not share the validator's overflow reasoning.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "session/sqe_validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LAYERS 4

static int range_inside(uint64_t off, unsigned __int128 len, uint64_t arena)
{
	return off % MOE_ARENA_ALIGN == 0 && (unsigned __int128)off + len <= arena;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t slots[FUZZ_LAYERS], experts[FUZZ_LAYERS], width[FUZZ_LAYERS];
	struct sqe_limits lim;
	struct moe_sqe sqe;
	uint8_t hdr[16];
	const char *why = NULL;

	if (size < sizeof(hdr) + sizeof(sqe))
		return 0;
	memcpy(hdr, data, sizeof(hdr));
	memcpy(&sqe, data + sizeof(hdr), sizeof(sqe));
	for (int l = 0; l < FUZZ_LAYERS; l++) {
		slots[l] = hdr[8 + l] % 9;        /* 0: a layer without an MoE block */
		experts[l] = 1 + hdr[12 + l] % 64;
		width[l] = 1 + (uint32_t)(hdr[6] ^ (l * 0x5b)) * 37u; /* layers may differ */
	}
	lim = (struct sqe_limits){
		.arena_size = ((uint64_t)hdr[0] | (uint64_t)hdr[1] << 8 | (uint64_t)hdr[2] << 16 |
			       (uint64_t)hdr[3] << 24 | (uint64_t)hdr[4] << 32) << (hdr[5] % 24),
		.n_layers = 1 + hdr[7] % FUZZ_LAYERS,
		.max_tokens = 1u << 20,
		.max_experts = 64,
		.layer_slots = slots,
		.layer_experts = experts,
		.layer_d_model = width,
	};
	if (sqe_validate(&sqe, &lim, &why) < 0) {
		if (!why)
			abort(); /* every refusal says why */
		return 0;
	}
	if (sqe.opcode == MOE_OP_NOP)
		return 0;
	if (sqe.opcode != MOE_OP_FORWARD || sqe.layer >= lim.n_layers || !slots[sqe.layer] ||
	    !sqe.n_tokens || sqe.n_tokens > lim.max_tokens)
		abort();
	unsigned __int128 rows = (unsigned __int128)sqe.n_tokens * width[sqe.layer] * sizeof(float);
	if (!range_inside(sqe.in_off, rows, lim.arena_size) ||
	    !range_inside(sqe.out_off, rows, lim.arena_size))
		abort();
	if (sqe.flags & (MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_ROUTE_RETURN)) {
		unsigned __int128 route = (unsigned __int128)sqe.n_tokens * sqe.route_k * 4;

		if (!range_inside(sqe.route_off, route, lim.arena_size) ||
		    !range_inside(sqe.weight_off, route, lim.arena_size))
			abort();
		if ((sqe.flags & MOE_SQE_F_ROUTE_RETURN) && sqe.route_k < slots[sqe.layer])
			abort();
		if ((sqe.flags & MOE_SQE_F_ROUTE_GIVEN) && sqe.route_k > experts[sqe.layer])
			abort();
	}
	if ((sqe.flags & MOE_SQE_F_COUNTS_RETURN) &&
	    !range_inside(sqe.counts_off, (unsigned __int128)lim.max_experts * 4, lim.arena_size))
		abort();
	return 0;
}
