/* SPDX-License-Identifier: MIT */
/*
 * run: one engine run handed from the reactor to the executor: the batches
 * of one layer (one batch, or several clients' batches merged), their input
 * rows copied out of the clients' arenas into private staging, and, once
 * the run is done, each batch's result and status.
 *
 * Ownership: the scheduler owns a fixed set of runs (runs_in_flight); each
 * keeps its staging and scratch at the high-water mark, so a steady stream
 * of batches allocates nothing. Between run_submit and the executor handing
 * it back, a run belongs to its runner thread: the reactor reads nothing of
 * it, and the run touches no client memory (the reactor copies in before
 * and out after).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "exec/executor.h"
#include "moe_abi.h"
#include "router/router_config.h"
#include "util/diag.h"
#include "util/scratch.h"

struct expert_map;
struct peers_batch;

#define RUN_MAX_MEMBERS 256 /* batches per merged run */

struct run_member {
	uint32_t slot, gen;  /* the client (its table slot and the slot's generation) */
	struct moe_sqe sqe;  /* the validated copy */
	uint32_t row0;       /* first row of this batch in the staging buffers */
	uint64_t t_consumed_ns; /* when the reactor took it off the ring (its latency's start) */
	/* results, filled by the runner */
	int status;
	uint32_t n_dropped, n_sanitized;
	double aux_loss, z_loss;
	bool has_z_loss;
	bool merged;         /* computed as part of a merged engine batch */
	char why[160];       /* the engine's message when status < 0 */
};

struct run {
	struct exec_item item; /* the executor's link; first */
	struct engine *engine;
	const struct moe_layer *layer;
	struct expert_map *map;          /* the store's map the run started with (a reference) */
	const struct expert_home *homes; /* from it: where the layer's experts compute, or NULL */
	struct peers_batch *peers_batch; /* this run's calls to other hosts (NULL: one host) */
	struct engine_remote remote;     /* the layer's experts on other hosts, if has_remote */
	bool has_remote;
	const struct router_config *host_cfg; /* peers' host-limited routing, or NULL */
	uint32_t layer_index;
	uint32_t k;              /* routing slots per token of this run */
	bool given;              /* routing supplied by the (single) member */
	struct router_config given_cfg;
	bool want_route;         /* some member asked for its routing back */

	struct run_member members[RUN_MAX_MEMBERS];
	uint32_t n_members;
	/*
	 * A merged call's segments (one per member whose input passed the
	 * check: members[live[j]] is segment j) and their statistics.
	 */
	uint32_t live[RUN_MAX_MEMBERS];
	uint32_t n_live;
	uint32_t segment_rows[RUN_MAX_MEMBERS];
	struct engine_segment_stats segment_stats[RUN_MAX_MEMBERS];
	uint32_t rows;

	/* private staging: [rows][d_model] in and out, [rows][k] routing */
	float *x, *y;
	int32_t *expert;
	float *weight;
	int32_t *counts;          /* [n_experts]: the last engine call's */
	uint64_t *counts_total;   /* [n_experts]: every successful call of this run */
	size_t cap_rows, cap_route, cap_experts;
	struct scratch scratch;

	/* results, filled by the runner */
	uint32_t engine_calls;
	bool merged_ok;           /* a merged engine call succeeded */
};

/*
 * Make room for @rows rows of @d floats, @route routing entries and
 * @experts counters. 0 or -ENOMEM (the run keeps what it had).
 */
int run_reserve(struct run *run, size_t rows, size_t d, size_t route, size_t experts);

/* Free the buffers; the struct itself is the caller's. */
void run_done(struct run *run);

/*
 * The executor's entry point (item.run): compute every member. Before a
 * merged call each member's rows are checked on their own (engine_check_input):
 * a batch with non-finite or oversized activations fails alone and leaves
 * the run, whose other rows close up. Each member of a merged call is a
 * segment of the engine batch and gets the statistics of its own tokens, as
 * if it had run alone. A merged engine call that still fails (an overflow
 * inside an expert) is repeated member by member, so one client's bad rows
 * fail only its own batch.
 */
void run_execute(struct exec_item *item);
