/* SPDX-License-Identifier: MIT */
/*
 * blas_setup: OpenBLAS runs single-threaded inside moed's workers. The pools,
 * not OpenBLAS, own the parallelism (one BLAS thread per worker): OpenBLAS's
 * own threads would oversubscribe the cores and ignore NUMA placement.
 */
#pragma once

struct blas_info {
	int threads;        /* openblas_get_num_threads() after setup: must be 1 */
	int parallel;       /* openblas_get_parallel(): 0 serial, 1 pthreads, 2 OpenMP */
	const char *config; /* openblas_get_config() */
	const char *core;   /* openblas_get_corename(): the kernel picked for this CPU */
};

/*
 * Set OpenBLAS to one thread and verify it took. Fills *ret_info either way
 * (for the log); -EOPNOTSUPP when the library still reports more than one
 * thread.
 */
int blas_setup_single_thread(struct blas_info *ret_info);

/* For benchmarks that measure OpenBLAS's own threading as a baseline. */
void blas_set_threads(int n);
