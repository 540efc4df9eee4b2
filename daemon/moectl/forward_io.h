/* SPDX-License-Identifier: MIT */
/* forward_io: moectl forward's input and result files (both modes). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "model/safetensors.h"

/*
 * The [rows][cols] tensor @name of @set (rows 0: any count in
 * 1..ENGINE_MAX_TOKENS) converted to float32, or int32 with @ints, malloc'd
 * into *@ret. Returns the row count, or -errno (logged).
 */
int forward_read_matrix(const struct st_set *set, const char *path, const char *name, bool ints,
			uint64_t rows, uint64_t cols, void **ret);

/*
 * Write output, expert_index, expert_weight, tokens_per_expert, aux_loss (and
 * z_loss) of @b to @path. 0 or -errno (logged).
 */
int forward_write_result(const char *path, uint32_t d_model, uint32_t n_experts, uint32_t k,
			 const char *router_name, const struct engine_batch *b);
