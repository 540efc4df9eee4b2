/* SPDX-License-Identifier: MIT */
/*
 * Balanced assignment for BASE layers (Lewis et al. 2021): give every token one
 * expert so that no expert takes more than @capacity tokens and the total
 * token-expert affinity is maximal.
 *
 * Solved with a forward auction (Bertsekas) on the tokens as bidders and the
 * experts' capacity slots as objects, with epsilon-scaling: fairseq's single
 * epsilon of (max-min)/50 lands measurably off the optimum (2.8e-3 on 128
 * tokens), so epsilon shrinks phase by phase until n_tokens * epsilon is far
 * below the golden tolerance. Deterministic: the same input gives the same
 * assignment on every run and thread count.
 */
#pragma once

#include <stdint.h>

#include "util/scratch.h"

/*
 * @affinity: row-major [n_tokens][n_experts], finite values.
 * @capacity: slots per expert; n_tokens <= capacity * n_experts.
 * @s: where the working set comes from (the batch's scratch; freed with it).
 * On success fills ret_expert[n_tokens] and returns 0. -EINVAL for an
 * infeasible capacity or a non-finite affinity, -ENOMEM, and -EDOM if an
 * auction phase ever exceeded its proven bid bound (a defect, not an input
 * error: see the bound in base_assign.c). ret_expert is left untouched on
 * failure.
 */
int base_assign_balanced(const float *affinity, uint32_t n_tokens, uint32_t n_experts,
			 uint32_t capacity, struct scratch *s, int32_t *ret_expert);
