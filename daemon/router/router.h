/* SPDX-License-Identifier: MIT */
/*
 * router: from a batch of hidden states to the experts of every token.
 *
 * Every family of ../shared/golden/README.md fills the same result: per token
 * k slots of (expert, weight) with expert -1 for a slot dropped by capacity,
 * the tokens routed to each expert (after a second-expert policy, before
 * capacity), and the statistics of the family (aux loss, router z-loss).
 *
 * Statistics over a run of tokens. A family does not compute its losses
 * itself: it keeps the per-token values they are made of (logits,
 * probabilities, choices, drops) and router_stats() computes them over any
 * range [t0, t1) of tokens, the whole batch included. A merged run of
 * several clients' batches thus gives each client the statistics of its own
 * tokens from the same code, in the same summation order, on the same values
 * as its batch alone: bitwise equal whenever the routing is per token
 * (router_config_per_token()).
 *
 * Numerics: the gate GEMM runs in float32 (OpenBLAS); softmax, normalisation
 * and the losses run in double, so the golden cases' 1e-5 weight tolerance
 * holds with room to spare.
 *
 * Thread-safety: router_route() uses only its arguments; call it from one
 * thread per scratch.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"
#include "util/diag.h"
#include "util/scratch.h"

struct route_result {
	uint32_t n_tokens;
	uint32_t k; /* slots per token */
	uint32_t n_experts;
	int32_t *expert;            /* [T][k]; -1: dropped (or never chosen) */
	float *weight;              /* [T][k]; 0 where expert is -1 */
	int32_t *tokens_per_expert; /* [E] */
	float *passthrough_scale;   /* [T]: factor on x for a token that lost every slot */
	float *base_mix;            /* [T], BASE only: σ(x·c_e) of the token's expert */
	uint32_t n_dropped;         /* slots dropped by capacity */
	double aux_loss;
	double z_loss;
	bool has_z_loss;
	/* What router_stats() reads; pointers are NULL where the family has none. */
	uint32_t *token_dropped;      /* [T]: the token's slots dropped by capacity */
	const float *logits;          /* [T][E]: gate logits, for the z-loss */
	const double *prob;           /* [T][n_prob]: softmax probabilities or sigmoid scores */
	const uint32_t *choice;       /* [T][n_choice]: chosen experts, before capacity */
	uint32_t n_prob, n_choice;    /* gshard, hierarchical's outer gate: first choice only */
	const double *inner_prob;     /* hierarchical: [T][Y], inner gate of the first group */
	const uint32_t *inner_choice; /* hierarchical: [T], that gate's top expert */
};

/* A batch's statistics, or those of a run of its tokens. */
struct route_stats {
	uint32_t n_dropped;
	double aux_loss;
	double z_loss;
	bool has_z_loss;
};

/* Client-supplied routing for ROUTER_GIVEN: [T][k] each. */
struct route_given {
	const int32_t *expert;
	const float *weight;
};

/*
 * Route @n_tokens rows of @x ([T][d_model], finite) with @layer's weights and
 * the settings in @cfg. Buffers of @ret come from @s. -EINVAL with a diag for
 * settings the layer cannot serve or a bad given routing, -ENOMEM.
 */
int router_route(const struct moe_layer *layer, const struct router_config *cfg, const float *x,
		 uint32_t n_tokens, const struct route_given *given, struct scratch *s,
		 struct route_result *ret, struct diag *d);

/*
 * The statistics of tokens [@t0, @t1) of @r, routed with @cfg, computed as
 * for a batch of exactly those tokens: router_route() fills the batch's own
 * with this function over [0, T). For a per-token router
 * (router_config_per_token()) the result is bitwise that of routing the
 * range alone; for others it describes the range's share of the batch's
 * routing (capacity and balanced assignment depend on the whole batch).
 * Temporaries come from @s. 0; -EINVAL for an empty or out-of-bounds range;
 * -ENOMEM. @ret is untouched on failure.
 */
int router_stats(const struct router_config *cfg, const struct route_result *r, uint32_t t0,
		 uint32_t t1, struct scratch *s, struct route_stats *ret);

/* ---- pieces shared by the families (router_internal) ---- */

/* logits[T][E] = x·Wᵀ (+ b), float32 GEMM. */
void gate_logits(const float *x, uint32_t n_tokens, uint32_t d_model, const float *w,
		 const float *b, uint32_t n_rows, float *logits);
/* Row-wise softmax of logits[T][E] into probs (double). */
void gate_softmax(const float *logits, uint32_t n_tokens, uint32_t n_experts, double *probs);
/* Row-wise sigmoid. */
void gate_sigmoid(const float *logits, uint32_t n_tokens, uint32_t n_experts, double *probs);
/* mean_t(logsumexp(logits[t])²) */
double gate_z_loss(const float *logits, uint32_t n_tokens, uint32_t n_experts);
/* Index of the largest value of v[n] (the first on a tie), optionally skipping @skip. */
uint32_t gate_argmax(const double *v, uint32_t n, int64_t skip);

/*
 * capacity = max(int(cf·k·T/E), min_capacity, 1), evaluated in double in the
 * reference's order; UINT32_MAX when cf is 0 (dropless).
 */
uint32_t capacity_of(double capacity_factor, uint32_t k, uint32_t n_tokens, uint32_t n_experts,
		     uint32_t min_capacity);
/*
 * The order in which tokens claim capacity: token order, or by descending
 * @top_score (stable) for PRIORITY_SCORE. Fills order[T]; -ENOMEM.
 */
int capacity_priority_order(enum priority_mode mode, const double *top_score,
			    uint32_t n_tokens, struct scratch *s, uint32_t *order);

int route_switch(const struct router_config *cfg, const float *logits, uint32_t n_tokens,
		 uint32_t n_experts, struct scratch *s, struct route_result *r);
int route_gshard(const struct router_config *cfg, const float *logits, uint32_t n_tokens,
		 uint32_t n_experts, bool dropless, struct scratch *s, struct route_result *r);
int route_topk(const struct router_config *cfg, const float *logits, const float *selection_bias,
	       uint32_t n_tokens, uint32_t n_experts, struct scratch *s, struct route_result *r);
int route_base(const struct moe_layer *layer, const struct router_config *cfg, const float *x,
	       struct scratch *s, struct route_result *r, struct diag *d);
int route_hierarchical(const struct moe_layer *layer, const struct router_config *cfg,
		       const float *x, struct scratch *s, struct route_result *r);
int route_given(const struct moe_layer *layer, const struct router_config *cfg,
		const struct route_given *given, struct route_result *r, struct diag *d);
