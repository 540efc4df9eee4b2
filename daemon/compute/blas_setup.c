/* SPDX-License-Identifier: MIT */
/* blas_setup: pin OpenBLAS to one thread and report what it is; see blas_setup.h. */
#include "blas_setup.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
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

int blas_setup_single_thread(struct blas_info *ret_info)
{
	openblas_set_num_threads(1);
	ret_info->threads = openblas_get_num_threads();
	ret_info->parallel = openblas_get_parallel();
	ret_info->config = openblas_get_config();
	ret_info->core = openblas_get_corename();
	__builtin_cpu_init();
	blas_core_advice(ret_info->core, __builtin_cpu_supports("avx2"),
			 __builtin_cpu_supports("avx512f"), ret_info->advice,
			 sizeof(ret_info->advice));
	return ret_info->threads == 1 ? 0 : -EOPNOTSUPP;
}

void blas_set_threads(int n)
{
	openblas_set_num_threads(n);
}
