/* SPDX-License-Identifier: MIT */
/* blas_setup: pin OpenBLAS to one thread and report what it is; see blas_setup.h. */
#include "blas_setup.h"

#include <cblas.h>
#include <errno.h>

int blas_setup_single_thread(struct blas_info *ret_info)
{
	openblas_set_num_threads(1);
	ret_info->threads = openblas_get_num_threads();
	ret_info->parallel = openblas_get_parallel();
	ret_info->config = openblas_get_config();
	ret_info->core = openblas_get_corename();
	return ret_info->threads == 1 ? 0 : -EOPNOTSUPP;
}

void blas_set_threads(int n)
{
	openblas_set_num_threads(n);
}
