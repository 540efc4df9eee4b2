/* SPDX-License-Identifier: MIT */
/*
 * store_fill: reads tensors from safetensors files into the expert store.
 *
 * One fill per node, each on a thread of its own pinned to the node's CPUs,
 * so that the first touch of every page happens there (the object is bound
 * to the node as well; on a simulated topology the pinning is all there
 * is). A fill reads its byte ranges with io_uring, FILL_DEPTH reads of up to
 * FILL_CHUNK bytes in flight: ranges whose dtype the store keeps (F32, and
 * BF16/F16 experts) straight into their place in the store, others into a
 * bounce buffer and converted to float32 from there. Progress is one
 * counter of bytes read shared by every fill, for the log and the status.
 */
#pragma once

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"
#include "util/diag.h"

#define FILL_DEPTH 8
#define FILL_CHUNK (4u << 20)

struct fill_item {
	uint32_t file;          /* index into fill_job.paths */
	uint64_t file_offset;   /* of the tensor's data */
	enum st_dtype dtype;    /* in the file: F32, F16, BF16 or F64 */
	enum st_dtype store_dtype; /* in the store: ST_F32, or @dtype itself */
	uint64_t n_elements;
	void *dst;              /* n_elements of store_dtype in the store */
};

struct fill_job {
	const char *const *paths;
	uint32_t n_paths;
	const struct fill_item *items;
	size_t n_items;
	const cpu_set_t *cpus;          /* the node's; NULL: wherever */
	atomic_uint_fast64_t *bytes_read; /* progress, may be shared */
	/* out */
	int result;
	struct diag diag;
};

/*
 * Run every job, each on its own thread, and wait for all, calling
 * @progress (may be NULL) about once a second meanwhile from the calling
 * thread. 0, or the first failed job's error (its diag says why).
 */
int store_fill_run(struct fill_job *jobs, size_t n_jobs, void (*progress)(void *ctx),
		   void *ctx);
