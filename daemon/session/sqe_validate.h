/* SPDX-License-Identifier: MIT */
/*
 * sqe_validate: the checks an SQE passes before moed acts on it. The SQE is
 * a private copy (shm_ring_copy_out), so what is checked here is what is
 * used: a client rewriting its ring meanwhile changes nothing.
 *
 * Pure and allocation-free, so the fuzzer (fuzz_sqe_validate) and the unit
 * tests drive it directly.
 */
#pragma once

#include <stdint.h>

#include "moe_abi.h"

struct sqe_limits {
	uint64_t arena_size;
	uint32_t n_layers;
	uint32_t max_tokens;
	uint32_t max_experts;          /* entries of a counts buffer */
	const uint32_t *layer_slots;   /* [n_layers]: route_k a layer writes; 0: no MoE block */
	const uint32_t *layer_experts; /* [n_layers] */
	/*
	 * [n_layers]: the width of a row of that layer. The rows of an SQE are
	 * bounded by its own layer's width, the one the batch copies with, not
	 * by the width the info page publishes: a model whose widths differ is
	 * refused at load, and this keeps the arena bounds right were one to
	 * slip through.
	 */
	const uint32_t *layer_d_model;
};

/* The most slots per token a routing buffer may have (the routers' own top-k bound). */
#define SQE_MAX_ROUTE_K 1024u

/*
 * 0 when @sqe may run under @lim; -EINVAL otherwise (reserved bits set, an
 * unknown opcode or flag, a layer without an MoE block, a token count out
 * of range, an offset that is misaligned or whose range leaves the arena,
 * routing buffers that do not fit the layer), with the reason in @ret_why
 * (a static string) when it is not NULL.
 */
int sqe_validate(const struct moe_sqe *sqe, const struct sqe_limits *lim, const char **ret_why);
