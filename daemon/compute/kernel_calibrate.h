/* SPDX-License-Identifier: MIT */
/*
 * kernel_calibrate: the bounds between sgemv, the small-m kernel and sgemm
 * (matmul.h), measured on this machine at the model's shapes when moed
 * starts, not fixed per instruction set. Which kernel is faster at a given m
 * depends on the CPU and on the core OpenBLAS picked for it: on a 16-core
 * Xeon with OpenBLAS's own AVX-512 kernels the fixed AVX-512 bound (32 rows,
 * measured on a Zen 5) sent 32-row tiles to the small-m kernel where sgemm
 * was far faster, and the layer ran at 0.62-0.67 of the grouped sgemm.
 *
 * For each weight dtype the model uses and each expert tile shape, both
 * kernels multiply m = 1, 2, 4 ... 64 rows with weights that come from
 * memory (copies filling 64 MiB, used in turn), timed in alternating
 * batches of calls; the bound is the largest m up to which the small-m
 * kernel is at least as fast (within 3%) at every measured m (the least
 * over the shapes). A few hundred milliseconds on one thread;
 * the result is kept in a cache file keyed by the CPU model, OpenBLAS's
 * core, the small-m variant, the shapes and the dtypes, so a restart on the
 * same machine measures nothing. With bf16_dot on (matmul_bf16_dot.h) the
 * BF16 bound is the dot-product kernel's, and the key says so.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "compute/matmul.h"
#include "model/model.h"
#include "util/diag.h"

#define CALIBRATE_MAX_SHAPES 8

/* One expert weight tile: [n][k]. */
struct calibrate_shape {
	uint32_t k, n;
};

struct calibrate_request {
	struct calibrate_shape shapes[CALIBRATE_MAX_SHAPES];
	unsigned n_shapes;
	bool dtypes[WEIGHT_DTYPE_COUNT]; /* the weight dtypes the model's experts use */
	const char *cache_path;          /* NULL: measure, keep nothing */
	/*
	 * Cache measured bounds only when other processes used at most this
	 * many cores meanwhile (0: CALIBRATE_OTHERS_MAX; INFINITY: always).
	 */
	double others_max;
};

enum calibrate_source {
	CALIBRATE_BUILTIN,  /* not measured: the variant's bounds */
	CALIBRATE_MEASURED, /* measured now */
	CALIBRATE_CACHED,   /* read from the cache file */
};

struct calibrate_result {
	enum calibrate_source source;
	struct matmul_bounds bounds;
	bool measured[WEIGHT_DTYPE_COUNT]; /* which dtypes' bounds are the machine's */
	double seconds;                    /* the measurement's (or the cache read's) */
	/*
	 * Measured: the cores other processes used meanwhile (< 0: unknown).
	 * Above the request's others_max the bounds are used but not cached:
	 * a busy machine's bounds would outlive the load that shaped them.
	 */
	double others_cores;
	bool cached_now; /* measured and written to the cache */
};

#define CALIBRATE_OTHERS_MAX 0.5

/*
 * Add @m's expert tile shapes (the up and down projections of its routed and
 * shared FFN experts, at most the engine's column tile of rows) and weight
 * dtypes to @req.
 */
void calibrate_add_model(struct calibrate_request *req, const struct moe_model *m);

/*
 * Measure the bounds (or read them from the cache), set them for every
 * matmul from now on (matmul_bounds_set) and record them for
 * kernel_calibration(). A cache that cannot be written is logged, not an
 * error; bounds measured while other processes took more than
 * others_max cores are not written (the next start measures again).
 * 0, or -ENOMEM with @d.
 */
int kernel_calibrate(const struct calibrate_request *req, struct diag *d);

/* What the last kernel_calibrate() did (CALIBRATE_BUILTIN before any). */
const struct calibrate_result *kernel_calibration(void);

/* "built-in", "measured", "cached". */
const char *calibrate_source_name(enum calibrate_source s);
