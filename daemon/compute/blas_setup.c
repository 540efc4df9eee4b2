/* SPDX-License-Identifier: MIT */
/*
 * blas_setup: pin OpenBLAS to one thread, report what it is and from which
 * file, and tell a serial build from a threaded one; see blas_setup.h.
 */
#include "blas_setup.h"

#include <cblas.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* OpenBLAS's x86 cores from before AVX2: what it falls back to on a CPU it does not know */
static const char *const pre_avx2_cores[] = {
	"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai",
	"coppermine", "northwood", "banias", "opteron", "barcelona", "bobcat",
	"sandybridge", "bulldozer", "piledriver", "generic", NULL,
};

void blas_core_advice(const char *core, bool avx2, bool avx512, char *buf, size_t size)
{
	bool old = false;

	buf[0] = '\0';
	if (!core || !avx2)
		return;
	for (size_t i = 0; pre_avx2_cores[i] && !old; i++)
		old = strcasecmp(core, pre_avx2_cores[i]) == 0;
	if (old)
		snprintf(buf, size,
			 "OpenBLAS runs its %s kernels on a CPU with %s (this OpenBLAS does not "
			 "know the CPU): set OPENBLAS_CORETYPE=%s in moed's environment",
			 core, avx512 ? "AVX-512" : "AVX2", avx512 ? "SkylakeX" : "Haswell");
}

/*
 * The file that defines OpenBLAS's functions, links resolved: Debian's
 * libopenblas.so.0 in the loader's folders is an alternatives link, and
 * only its target says which build it is.
 */
static void blas_library_path(char *buf, size_t size)
{
	Dl_info dl;
	char *real;

	if (!dladdr((void *)openblas_get_parallel, &dl) || !dl.dli_fname) {
		snprintf(buf, size, "?");
		return;
	}
	real = realpath(dl.dli_fname, NULL);
	snprintf(buf, size, "%s", real ? real : dl.dli_fname);
	free(real);
}

/*
 * Whether OpenBLAS takes its work buffers through blas_buffer_lock.c: one
 * sgemm above the small-matrix path's bound (M*N*K > 100^3 in 0.3.21),
 * which always takes a buffer. False also when the memory is short.
 */
static bool blas_buffers_locked(void)
{
	enum { DIM = 128 };
	float *m = calloc(3 * DIM * DIM, sizeof(*m));
	unsigned long before = blas_buffer_lock_count();

	if (!m)
		return false;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, DIM, DIM, DIM, 1.0f, m, DIM,
		    m + DIM * DIM, DIM, 0.0f, m + 2 * DIM * DIM, DIM);
	free(m);
	return blas_buffer_lock_count() > before;
}

void blas_info_get(struct blas_info *ret_info)
{
	ret_info->buffers_locked = blas_buffers_locked();
	ret_info->threads = openblas_get_num_threads();
	ret_info->parallel = openblas_get_parallel();
	ret_info->config = openblas_get_config();
	ret_info->core = openblas_get_corename();
	blas_library_path(ret_info->library, sizeof(ret_info->library));
	__builtin_cpu_init();
	blas_core_advice(ret_info->core, __builtin_cpu_supports("avx2"),
			 __builtin_cpu_supports("avx512f"), ret_info->advice,
			 sizeof(ret_info->advice));
}

int blas_setup_single_thread(struct blas_info *ret_info)
{
	openblas_set_num_threads(1);
	blas_info_get(ret_info);
	if (ret_info->threads != 1)
		return -EOPNOTSUPP;
	return ret_info->buffers_locked ? 0 : -ENOLCK;
}

const char *blas_parallel_name(int parallel)
{
	switch (parallel) {
	case 0:
		return "serial";
	case 1:
		return "pthreads";
	case 2:
		return "OpenMP";
	default:
		return "unknown";
	}
}

int blas_serial_check(const struct blas_info *info, char *buf, size_t size)
{
	buf[0] = '\0';
	if (info->parallel == 0 && info->buffers_locked)
		return 0;
	if (info->parallel == 0) {
		snprintf(buf, size,
			 "the OpenBLAS loaded from %s takes its work buffers without moed's lock "
			 "(blas_buffer_lock.c; is it linked with -Bsymbolic?): moed's workers "
			 "calling it at once would corrupt each other's results",
			 info->library);
		return -ENOLCK;
	}
	snprintf(buf, size,
		 "the OpenBLAS loaded from %s is its %s build: moed needs the serial one "
		 "(libopenblas0-serial; moed's RUNPATH names its folder, so LD_LIBRARY_PATH or "
		 "LD_PRELOAD chose this one, or the package is missing). A threaded OpenBLAS "
		 "starts threads before moed can block SIGTERM for the drain, and its threads "
		 "would compete with moed's workers",
		 info->library, blas_parallel_name(info->parallel));
	return -EOPNOTSUPP;
}

void blas_set_threads(int n)
{
	openblas_set_num_threads(n);
}
