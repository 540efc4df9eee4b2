/* SPDX-License-Identifier: MIT */
/*
 * expert: the computation of one expert on a block of its rows, split so that
 * the pool can spread one expert over several workers.
 *
 * FFN experts run in two phases with a barrier between them:
 *   up:   h[rows][c0:c1] = act(xs·W1[c0:c1]ᵀ + b1 [, xs·W3[c0:c1]ᵀ])
 *   down: ys[rows][c0:c1] = h[rows][:]·W2[c0:c1]ᵀ + b2
 * Tiling the columns lets two workers share an expert that got one token (a
 * decode step) and still read every weight exactly once.
 * BASE experts run whole per block of rows: their sublayers are sequential.
 */
#pragma once

#include <stdint.h>

#include "compute/matmul.h"
#include "model/model.h"

/* @tmp holds rows * (c1 - c0) floats (gated activations only). @ldh is h's row stride. */
void expert_ffn_up(const struct ffn_weights *f, enum activation act, enum matmul_kernel kernel,
		   const float *xs, uint32_t rows, uint32_t d_model, uint32_t c0, uint32_t c1,
		   float *h, uint32_t ldh, float *tmp);
void expert_ffn_down(const struct ffn_weights *f, enum matmul_kernel kernel, const float *h,
		     uint32_t ldh, uint32_t rows, uint32_t d_model, uint32_t c0, uint32_t c1,
		     float *ys);

/*
 * BASE: ys = mix·E(xs) + (1 − mix)·xs with E the residual sublayers
 * x + ff2(relu(ff1(LayerNorm(x)))) (eps 1e-5). mix[rows] per row.
 * @ln holds rows * d_model floats, @h rows * d_ff.
 */
void expert_base(const struct moe_expert *e, uint32_t n_sublayers, uint32_t d_model,
		 uint32_t d_ff, const float *xs, const float *mix, uint32_t rows, float *ys,
		 float *ln, float *h);
