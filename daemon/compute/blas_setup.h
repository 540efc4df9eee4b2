/* SPDX-License-Identifier: MIT */
/*
 * blas_setup: OpenBLAS runs single-threaded inside moed's workers. The pools,
 * not OpenBLAS, own the parallelism (one BLAS thread per worker): OpenBLAS's
 * own threads would oversubscribe the cores and ignore NUMA placement.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct blas_info {
	int threads;        /* openblas_get_num_threads() after setup: must be 1 */
	int parallel;       /* openblas_get_parallel(): 0 serial, 1 pthreads, 2 OpenMP */
	const char *config; /* openblas_get_config() */
	const char *core;   /* openblas_get_corename(): the kernel picked for this CPU */
	/*
	 * Non-empty when OpenBLAS runs a generic core on a CPU with AVX2 or
	 * AVX-512 (an OpenBLAS older than the CPU: Debian 12's 0.3.21 does not
	 * know Sapphire Rapids and falls back to Prescott, 3-4x slower sgemm):
	 * what is wrong and the setting that fixes it.
	 */
	char advice[200];
};

/*
 * The advice for OpenBLAS core @core on a CPU with the given features into
 * @buf (empty: nothing to say). Pure, for tests.
 */
void blas_core_advice(const char *core, bool avx2, bool avx512, char *buf, size_t size);

/*
 * Set OpenBLAS to one thread and verify it took. Fills *ret_info either way
 * (for the log); -EOPNOTSUPP when the library still reports more than one
 * thread.
 */
int blas_setup_single_thread(struct blas_info *ret_info);

/* For benchmarks that measure OpenBLAS's own threading as a baseline. */
void blas_set_threads(int n);
