/* SPDX-License-Identifier: MIT */
/*
 * blas_setup: OpenBLAS runs single-threaded inside moed's workers. The pools,
 * not OpenBLAS, own the parallelism (one BLAS thread per worker): OpenBLAS's
 * own threads would oversubscribe the cores and ignore NUMA placement.
 *
 * moed links Debian's serial build, and finds it through its RUNPATH
 * (cmake/MoedOpenBLAS.cmake says why): a threaded build also starts its
 * threads when it loads, before main(), with every signal unblocked, where
 * they can take the SIGTERM meant for the reactor's drain. moed checks at
 * start which build it got (blas_serial_check()) and refuses a threaded one.
 * Debian's serial build leaves its table of work buffers unguarded, which
 * workers calling it at once would share: blas_buffer_lock.c locks it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct blas_info {
	int threads;        /* openblas_get_num_threads(): 1 after setup */
	int parallel;       /* openblas_get_parallel(): 0 serial, 1 pthreads, 2 OpenMP */
	const char *config; /* openblas_get_config() */
	const char *core;   /* openblas_get_corename(): the kernel picked for this CPU */
	char library[256];  /* the file OpenBLAS was loaded from, links resolved; "?" unknown */
	bool buffers_locked; /* OpenBLAS's buffer calls reach blas_buffer_lock.c's lock */
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
 * What OpenBLAS reports about itself and the file it came from, into
 * *ret_info; runs one 128x128 sgemm to see its buffer calls reach the lock,
 * and changes nothing.
 */
void blas_info_get(struct blas_info *ret_info);

/*
 * Set OpenBLAS to one thread and verify it took, and that its buffer calls
 * are locked. Fills *ret_info either way (for the log); -EOPNOTSUPP when the
 * library still reports more than one thread, -ENOLCK when its buffer calls
 * bypass the lock (workers calling it at once would corrupt each other's
 * results). A threaded build set to one thread passes (bench_engine's); moed
 * also requires the serial build (blas_serial_check()).
 */
int blas_setup_single_thread(struct blas_info *ret_info);

/* How many buffers OpenBLAS has taken through blas_buffer_lock.c's lock. Thread-safe. */
unsigned long blas_buffer_lock_count(void);

/* openblas_get_parallel()'s value by name: "serial", "pthreads", "OpenMP" or "unknown". */
const char *blas_parallel_name(int parallel);

/*
 * 0 when @info is of OpenBLAS's serial build with its buffer calls locked;
 * otherwise why moed refuses it (the file, its threads) in @buf and
 * -EOPNOTSUPP for a threaded build, -ENOLCK for unlocked buffers. Pure, for
 * tests.
 */
int blas_serial_check(const struct blas_info *info, char *buf, size_t size);

/* For bench_engine, whose baseline measures OpenBLAS's own threads (pthread build). */
void blas_set_threads(int n);
