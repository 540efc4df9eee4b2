/* SPDX-License-Identifier: MIT */
/*
 * weight_dtype: the element type of an expert's matrices in memory. Float32
 * is zero, so a zeroed struct ffn_weights (tests, generated layers) holds
 * float32 weights.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

enum weight_dtype {
	WEIGHT_F32,
	WEIGHT_BF16,
	WEIGHT_F16,
	WEIGHT_DTYPE_COUNT,
};

static inline size_t weight_dtype_size(enum weight_dtype dt)
{
	return dt == WEIGHT_F32 ? sizeof(float) : sizeof(uint16_t);
}

/* "F32", "BF16" or "F16", as safetensors names them. */
static inline const char *weight_dtype_name(enum weight_dtype dt)
{
	return dt == WEIGHT_BF16 ? "BF16" : dt == WEIGHT_F16 ? "F16" : "F32";
}
