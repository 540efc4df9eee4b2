/* SPDX-License-Identifier: MIT */
/*
 * engine: the forward pass of one MoE layer on a batch of tokens.
 *
 *   route (router/) -> plan (counting sort by expert) -> gather rows ->
 *   expert up phase -> expert down phase -> fixed-order weighted combine
 *
 * Every phase after routing runs on the engine's pool. The result of a batch
 * does not depend on the number of workers: each output element is computed
 * by exactly one task, in an order fixed by the plan.
 *
 * Non-finite input fails the batch with -EDOM (or is sanitised, per the
 * router config's `nonfinite` option); a finite input above 2^64 in
 * magnitude fails it with -ERANGE before routing; a non-finite result
 * (weights that overflow) fails it with -ERANGE. Either way the engine stays
 * usable.
 *
 * Thread-safety: one engine_forward() at a time per engine (it uses the
 * engine's own scratch); engine_forward_scratch() may run on several
 * threads at once, each with a scratch of its own (the pool takes their
 * jobs side by side). An engine can serve any layer of any model.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "compute/blas_setup.h"
#include "compute/matmul.h"
#include "model/model.h"
#include "numa/topology.h"
#include "placement/placement.h"
#include "pool/pool.h"
#include "router/router.h"
#include "util/diag.h"
#include "util/scratch.h"

/*
 * Upper bound on the tokens of one batch. With the model's own bounds
 * (MODEL_MAX_WIDTH, MODEL_MAX_EXPERTS, top_k <= 1024) it keeps every row
 * count within 32 bits and every byte count within size_t.
 */
#define ENGINE_MAX_TOKENS (1u << 20)

/*
 * The largest magnitude of an input activation: 2^64, about sqrt(FLT_MAX),
 * so that no product of two inputs overflows float32. Larger finite values
 * fail the batch with -ERANGE before routing.
 */
#define ENGINE_INPUT_MAX_ABS 0x1p64f

struct engine_opts {
	uint32_t n_workers;         /* 0: one per allowed CPU (per node with @topo) */
	enum matmul_kernel kernel;  /* MATMUL_AUTO unless a benchmark forces one */
	/*
	 * NULL: one plain pool. Else one pool of workers per node of @topo,
	 * pinned to the node's CPUs (n_workers 0: one per CPU; else n_workers
	 * spread over the nodes by their CPU counts, at least one each), and
	 * experts compute on the node that holds them (engine_batch.homes).
	 * The topology must outlive the engine.
	 */
	const struct topology *topo;
	bool steal;                 /* idle node workers may take other nodes' tiles */
};

/*
 * Where an expert computes: on each node that holds a copy of its weights.
 * Tiles of an expert with several copies are split over them (tile i on copy
 * i mod n_copies), so a hot expert keeps several nodes busy; every copy holds
 * the same bytes, so the result does not depend on which one computes.
 */
struct expert_copy {
	uint32_t node;                   /* index into the topology's nodes[] */
	const struct ffn_weights *ffn;   /* the weights on that node */
};

struct expert_home {
	uint32_t n_copies;               /* >= 1 */
	struct expert_copy copy[PLACEMENT_MAX_COPIES];
};

/*
 * Experts that compute on another host (daemon/peers/). The engine gathers a
 * remote expert's rows like any expert's, hands them to dispatch() before the
 * local experts compute and takes their results with collect() after, so the
 * transfers overlap the local work. The combine then runs as always: the
 * output is bitwise what one host holding every expert gives, as long as the
 * remote host computes each expert's rows with engine_experts_scratch()
 * (the same tiles, hence the same sums) on the same kernels (a CPU of the
 * same kind and OpenBLAS core: kernels sum in their own orders). BASE
 * layers ignore it.
 */
struct engine_remote_job {
	uint32_t layer;             /* the layer's index in its model */
	uint32_t d_model;
	enum activation activation;
	uint32_t n_experts;
	const uint16_t *host;       /* engine_remote.host */
	const uint32_t *bin_start;  /* [n_experts + 1]: expert e's rows are [bin_start[e], [e+1]) */
	const float *xs;            /* [rows][d_model]: the gathered (and scaled) rows */
	float *ys;                  /* [rows][d_model]: collect() writes the remote experts' rows */
};

struct engine_remote {
	const uint16_t *host; /* [n_experts]: 0 computes here, else the remote host (1-based) */
	void *ctx;
	/*
	 * Send the rows of every remote expert with rows (called only when
	 * there are some). 0, or -errno to fail the batch; collect() is called
	 * after a 0 only.
	 */
	int (*dispatch)(void *ctx, const struct engine_remote_job *job);
	/*
	 * Wait for what dispatch() sent, within the peers' deadline. 0 with
	 * failed[e] = 1 for each expert whose host failed or missed its deadline
	 * (its rows are not written: the engine drops those slots, as capacity
	 * drops are), or -errno to fail the batch (the policy is the caller's).
	 * @failed has n_experts entries, zeroed by the engine.
	 */
	int (*collect)(void *ctx, const struct engine_remote_job *job, uint8_t *failed);
};

struct engine;

/* The statistics of one segment of a batch (see engine_batch.segment_rows). */
struct engine_segment_stats {
	uint32_t n_dropped;
	uint32_t n_sanitized; /* the segment's non-finite inputs replaced */
	double aux_loss;
	double z_loss;
	bool has_z_loss;
};

struct engine_batch {
	/* in */
	const float *x; /* [T][d_model] */
	uint32_t n_tokens;
	const struct route_given *given; /* ROUTER_GIVEN only */
	/*
	 * Optional: [n_experts] homes of the layer's experts (FFN experts only;
	 * ignored with the BASE router, whose experts run as a plain job on
	 * every worker). Each expert's tiles run on its copies' nodes (tile i
	 * on copy i mod n_copies, with that copy's weights; a node the pool
	 * does not have means node 0); copies must hold the expert's shape
	 * (-EINVAL otherwise, before routing). NULL: the layer's own weights,
	 * tiles on any worker. Shared-expert tiles go round-robin over the
	 * nodes; gather and combine run on every worker. The output is bitwise
	 * the same with or without homes.
	 */
	const struct expert_home *homes;
	/* Optional: experts on other hosts (NULL: every expert computes here). */
	const struct engine_remote *remote;
	/*
	 * Optional segments: the batch is n_segments runs of consecutive tokens
	 * (several clients' batches merged into one run), segment_rows[i] tokens
	 * each, in order, every one > 0, summing to n_tokens. segment_stats[i]
	 * then receives the statistics of segment i's tokens alone, bitwise those
	 * of running that segment as a batch of its own. Only for per-token
	 * routing (router_config_per_token()): -EINVAL otherwise. n_segments 0:
	 * no segments; the batch's own statistics below are filled either way.
	 */
	const uint32_t *segment_rows;               /* [n_segments] */
	uint32_t n_segments;
	struct engine_segment_stats *segment_stats; /* [n_segments], out */
	/* out: output is required, the rest may be NULL */
	float *output;              /* [T][d_model] */
	int32_t *expert_index;      /* [T][k], k = router_config_slots() */
	float *expert_weight;       /* [T][k] */
	int32_t *tokens_per_expert; /* [E] */
	/* statistics, filled on success */
	uint32_t n_dropped;
	uint32_t n_sanitized; /* non-finite inputs replaced (nonfinite=sanitize) */
	double aux_loss;
	double z_loss;
	bool has_z_loss;
};

void engine_opts_init(struct engine_opts *o);
int engine_new(const struct engine_opts *opts, struct engine **ret_engine, struct diag *d);
struct engine *engine_free(struct engine *e);

/* What OpenBLAS reported at setup (for the log) and the worker count. */
const struct blas_info *engine_blas_info(const struct engine *e);
uint32_t engine_n_workers(const struct engine *e);
/* Nodes of the engine's pool (1 without a topology) and what each node's workers did. */
uint32_t engine_n_nodes(const struct engine *e);
void engine_node_stats(const struct engine *e, uint32_t node, struct pool_node_stats *ret);

/*
 * The input checks of engine_forward() on their own, so that the daemon can
 * check each client's batch before merging several into one run (a batch
 * that fails after the computation forces every member of the run to be
 * re-run). @x is [@n_tokens][@d_model]; @cfg is the router config the
 * forward pass will use (only `nonfinite` matters). Returns 0, -EDOM
 * (non-finite value with nonfinite=fail) or -ERANGE (a finite value above
 * ENGINE_INPUT_MAX_ABS in magnitude; with nonfinite=sanitize only this), with
 * token and column in @d; exactly what engine_forward() would return for the
 * same input. Pure: reads @x, writes only @d; callable from any thread.
 */
int engine_check_input(const struct router_config *cfg, const float *x, uint32_t n_tokens,
		       uint32_t d_model, struct diag *d);

/*
 * Run @layer on @b with the router settings @cfg (NULL: the layer's own).
 * 0 on success; -EINVAL (bad sizes or settings, segments that do not add
 * up to the batch or with a router that is not per token, homes whose
 * copies are missing or shaped unlike the expert; diag says which),
 * -EDOM (non-finite input), -ERANGE (an input above ENGINE_INPUT_MAX_ABS,
 * before routing, or a non-finite output), -ENOMEM.
 */
int engine_forward(struct engine *e, const struct moe_layer *layer,
		   const struct router_config *cfg, struct engine_batch *b, struct diag *d);

/*
 * Compute @layer's experts for rows another host gathered and sent
 * (engine_remote_job: @bin_start over n_experts bins, @xs in, @ys out), with
 * the tiles engine_forward() uses, so each row's result is bitwise what the
 * sending host would have computed. @homes as engine_batch.homes (NULL: the
 * layer's own weights). 0, -EINVAL (a BASE layer, bins past the layer's
 * experts, homes that do not fit) or -ENOMEM; the temporaries are in @s.
 */
int engine_experts_scratch(struct engine *e, struct scratch *s, const struct moe_layer *layer,
			   enum activation activation, const uint32_t *bin_start, const float *xs,
			   float *ys, const struct expert_home *homes, struct diag *d);

/* The same with the temporaries in @s (owned by the caller, one per thread). */
int engine_forward_scratch(struct engine *e, struct scratch *s, const struct moe_layer *layer,
			   const struct router_config *cfg, struct engine_batch *b, struct diag *d);
