/* SPDX-License-Identifier: MIT */
/*
 * load_record: the tokens each expert received, kept across restarts so
 * that the `balanced` placement weighs experts by their measured load.
 *
 * moed writes the record when it stops (STATE_DIR/STORE_NAME.load.json),
 * and the next load that places experts afresh reads it:
 *
 *   { "version": 1, "layers": [ [tokens of expert 0, 1, ...], null, ... ] }
 *
 * (null for a layer without an MoE block). A record that does not match
 * the model's layers and experts, or cannot be read, is ignored with a log
 * line: placement then weighs every expert alike, as without a record. A
 * re-attached store keeps the placement it was made with; the record
 * counts at the next load (moectl store drop, or a changed model).
 */
#pragma once

#include <stdint.h>

#include "sched/layer_stats.h"
#include "util/diag.h"

/* Write @stats ([n_layers]) to @path (a temporary file renamed over it). 0 or -errno. */
int load_record_write(const char *path, const struct layer_stats *stats, uint32_t n_layers,
		      struct diag *d);

/*
 * Read @path for a model of @n_layers layers with @n_experts[l] experts:
 * *@ret_load [n_layers][n_experts[l]] (NULL rows where n_experts[l] is 0), freed
 * with load_record_free(). -ENOENT when there is none, -EINVAL (why in @d)
 * when it does not match, -errno.
 */
int load_record_read(const char *path, uint32_t n_layers, const uint32_t *n_experts,
		     double ***ret_load, struct diag *d);

/* NULL-safe; returns NULL. */
double **load_record_free(double **load, uint32_t n_layers);
