/* SPDX-License-Identifier: MIT */
/*
 * gate: the pieces every router family shares: the gate GEMM, softmax and
 * sigmoid in double, the router z-loss, argmax with the reference's tie rule.
 */
#include "router.h"

#include <cblas.h>
#include <math.h>

void gate_logits(const float *x, uint32_t n_tokens, uint32_t d_model, const float *w,
		 const float *b, uint32_t n_rows, float *logits)
{
	/*
	 * logits[t][E] = w[E][d] · x[t], one sgemv per token rather than one
	 * sgemm for the batch: a token's logits must not depend on the batch
	 * around it (merged runs promise each client the bits of its batch run
	 * alone, statistics included), and OpenBLAS's sgemm does not promise
	 * that (its AVX-512 build sums small products in another order than
	 * large ones). The gate is a small share of a layer's work (E rows of d
	 * against the experts' k x 3 x d_ff rows per token), and its E x d
	 * weights stay in cache from one token to the next.
	 */
	for (uint32_t t = 0; t < n_tokens; t++)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n_rows, (int)d_model, 1.0f, w,
			    (int)d_model, x + (size_t)t * d_model, 1, 0.0f,
			    logits + (size_t)t * n_rows, 1);
	if (!b)
		return;
	for (uint32_t t = 0; t < n_tokens; t++)
		for (uint32_t e = 0; e < n_rows; e++)
			logits[(size_t)t * n_rows + e] += b[e];
}

void gate_softmax(const float *logits, uint32_t n_tokens, uint32_t n_experts, double *probs)
{
	for (uint32_t t = 0; t < n_tokens; t++) {
		const float *l = logits + (size_t)t * n_experts;
		double *p = probs + (size_t)t * n_experts;
		double max = l[0], sum = 0;

		for (uint32_t e = 1; e < n_experts; e++)
			max = fmax(max, l[e]);
		for (uint32_t e = 0; e < n_experts; e++) {
			p[e] = exp((double)l[e] - max);
			sum += p[e];
		}
		for (uint32_t e = 0; e < n_experts; e++)
			p[e] /= sum;
	}
}

void gate_sigmoid(const float *logits, uint32_t n_tokens, uint32_t n_experts, double *probs)
{
	for (size_t i = 0; i < (size_t)n_tokens * n_experts; i++)
		probs[i] = 1.0 / (1.0 + exp(-(double)logits[i]));
}

double gate_z_loss(const float *logits, uint32_t n_tokens, uint32_t n_experts)
{
	double total = 0;

	for (uint32_t t = 0; t < n_tokens; t++) {
		const float *l = logits + (size_t)t * n_experts;
		double max = l[0], sum = 0, lse;

		for (uint32_t e = 1; e < n_experts; e++)
			max = fmax(max, l[e]);
		for (uint32_t e = 0; e < n_experts; e++)
			sum += exp((double)l[e] - max);
		lse = max + log(sum);
		total += lse * lse;
	}
	return total / n_tokens;
}

uint32_t gate_argmax(const double *v, uint32_t n, int64_t skip)
{
	uint32_t best = UINT32_MAX;

	/* Strictly greater: the first index wins a tie, as torch.argmax does. */
	for (uint32_t i = 0; i < n; i++) {
		if ((int64_t)i == skip)
			continue;
		if (best == UINT32_MAX || v[i] > v[best])
			best = i;
	}
	return best;
}
