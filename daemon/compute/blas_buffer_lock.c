/* SPDX-License-Identifier: MIT */
/*
 * blas_buffer_lock: a lock around OpenBLAS's table of work buffers, which
 * Debian 12's serial build leaves unguarded.
 *
 * Each sgemm (and each sgemv too large for the stack) takes a work buffer
 * from a table of slots with blas_memory_alloc() and gives it back with
 * blas_memory_free() (OpenBLAS's driver/others/memory.c). The threaded
 * builds guard the table with a mutex; the serial build does only when
 * built with USE_LOCKING=1, and Debian's libopenblas0-serial 0.3.21 is not:
 * two workers that call sgemm at once can both take the same free slot and
 * pack their panels into one buffer. Measured here with 4 threads of sgemm:
 * 0.2-1% of the results wrong; tests/unit/test_kernels.c repeats it.
 *
 * OpenBLAS calls both functions through its PLT, so a definition in the
 * executable wins: the loader binds OpenBLAS's own calls to the two below,
 * which take a mutex around OpenBLAS's functions (found with RTLD_NEXT).
 * That is all USE_LOCKING adds. A build with its own lock (the threaded
 * ones, a future serial one) takes both, harmlessly; a library bound to
 * itself (-Bsymbolic) would bypass them, so blas_info_get() checks with one
 * real sgemm that the calls arrive here (blas_buffer_lock_count()).
 *
 * The first call may come from OpenBLAS's constructor, before main(): hence
 * the static mutex and the look-up on first use.
 */
#include "blas_setup.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* OpenBLAS's own declarations (common.h), which its installed headers leave out */
__attribute__((visibility("default"))) void *blas_memory_alloc(int procpos);
__attribute__((visibility("default"))) void blas_memory_free(void *buffer);

static pthread_mutex_t blas_buffer_mutex = PTHREAD_MUTEX_INITIALIZER;
static void *(*openblas_memory_alloc)(int procpos);
static void (*openblas_memory_free)(void *buffer);
static unsigned long blas_buffer_calls;

/* Under the mutex. OpenBLAS calls here only if it defines both: a NULL is a broken install. */
static void blas_buffer_resolve(void)
{
	if (openblas_memory_alloc)
		return;
	openblas_memory_alloc = (void *(*)(int))dlsym(RTLD_NEXT, "blas_memory_alloc");
	openblas_memory_free = (void (*)(void *))dlsym(RTLD_NEXT, "blas_memory_free");
	if (!openblas_memory_alloc || !openblas_memory_free) {
		fprintf(stderr, "<2>OpenBLAS calls blas_memory_alloc but does not define it\n");
		abort();
	}
}

void *blas_memory_alloc(int procpos)
{
	void *buffer;

	pthread_mutex_lock(&blas_buffer_mutex);
	blas_buffer_resolve();
	blas_buffer_calls++;
	buffer = openblas_memory_alloc(procpos);
	pthread_mutex_unlock(&blas_buffer_mutex);
	return buffer;
}

void blas_memory_free(void *buffer)
{
	pthread_mutex_lock(&blas_buffer_mutex);
	blas_buffer_resolve();
	openblas_memory_free(buffer);
	pthread_mutex_unlock(&blas_buffer_mutex);
}

unsigned long blas_buffer_lock_count(void)
{
	unsigned long n;

	pthread_mutex_lock(&blas_buffer_mutex);
	n = blas_buffer_calls;
	pthread_mutex_unlock(&blas_buffer_mutex);
	return n;
}
