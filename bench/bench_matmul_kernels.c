/* SPDX-License-Identifier: MIT */
/*
 * bench_matmul_kernels: the measurement behind matmul_small_m_builtin_max() in
 * compute/matmul_small_m.c (per vector width: --variant). For the two expert shapes of bench_engine (d 1024 / ff
 * 3584 and d 2048 / ff 1408) and m = 1..64 token rows it times y = x·Wᵀ, W
 * [ff][d], with each kernel matmul_xwt() can pick (one sgemv per row, the
 * small-m kernel, sgemm) on one thread with OpenBLAS single-threaded, as
 * the engine's workers run them. It prints the weight bandwidth each reaches
 * (bytes of W / time) and its speed relative to sgemm, and the largest m for
 * which the small-m kernel still beats sgemm at every measured m up to it.
 * W is not allowed to stay in cache between calls: each call uses the next
 * of enough copies to fill 512 MiB, because an expert's weights come from
 * memory in a real decode step.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench_common.h"
#include "compute/blas_setup.h"
#include "compute/matmul.h"

/* Larger than any last-level cache a 2-socket server gives one thread. */
#define POOL_BYTES ((size_t)512 << 20)
/* Target time of one timed repetition, and how many repetitions give the median. */
#define REP_S 0.05
#define N_REPS 5

struct kshape {
	uint32_t d, ff;
};

static const struct kshape kshapes[] = { { 1024, 3584 }, { 2048, 1408 } };
static const uint32_t ms[] = { 1, 2, 4, 8, 16, 24, 32, 48, 64 };
#define N_M (sizeof(ms) / sizeof(ms[0]))
#define M_MAX 64

static const struct {
	enum matmul_kernel k;
	const char *name;
} kernels[] = {
	{ MATMUL_SGEMV, "sgemv" },
	{ MATMUL_SMALLM, "smallm" },
	{ MATMUL_SGEMM, "sgemm" },
};
#define N_K (sizeof(kernels) / sizeof(kernels[0]))
#define K_SGEMM 2

#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif

static bool arg_json;
static uint32_t arg_cols; /* 0: all ff rows of W; else a column tile of the engine */

/* U(-scale, scale) from xorshift64, two floats a step: 512 MiB fills in well under a second. */
static void fill_uniform(float *p, size_t n, float scale, uint64_t seed)
{
	const float mul = scale * 0x1p-31f;
	uint64_t s = seed * 0x9e3779b97f4a7c15ull | 1;
	size_t i = 0;

	for (; i + 2 <= n; i += 2) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		p[i] = (float)(int32_t)(uint32_t)s * mul;
		p[i + 1] = (float)(int32_t)(uint32_t)(s >> 32) * mul;
	}
	if (i < n)
		p[i] = 0.0f;
}

struct kbench {
	const float *pool; /* n_copies copies of W, each w_floats */
	size_t w_floats;
	uint32_t n_copies, next;
	uint32_t d, n; /* W [n][d] */
	const float *x;
	float *y;
};

/* One call on the next copy of W, so that W comes from memory every time. */
static void call_once(struct kbench *kb, enum matmul_kernel k, uint32_t m)
{
	const float *w = kb->pool + (size_t)kb->next * kb->w_floats;

	kb->next = (kb->next + 1) % kb->n_copies;
	matmul_xwt(k, kb->x, kb->d, m, kb->d, w, WEIGHT_F32, kb->d, kb->n, kb->y, kb->n);
}

/* Median seconds per call over N_REPS repetitions of about REP_S each. */
static double time_kernel(struct kbench *kb, enum matmul_kernel k, uint32_t m)
{
	double t0, one, times[N_REPS];
	uint32_t calls;

	t0 = bench_now_s();
	call_once(kb, k, m);
	one = bench_now_s() - t0;
	calls = one > 0 ? (uint32_t)fmin(1e5, ceil(REP_S / one)) : 1;
	if (calls < 1)
		calls = 1;
	for (int r = 0; r < N_REPS; r++) {
		t0 = bench_now_s();
		for (uint32_t c = 0; c < calls; c++)
			call_once(kb, k, m);
		times[r] = (bench_now_s() - t0) / calls;
	}
	qsort(times, N_REPS, sizeof(times[0]), bench_cmp_double);
	return times[N_REPS / 2];
}

/* Index of the fastest kernel in one row of timings. */
static size_t fastest(const double *t)
{
	size_t best = 0;

	for (size_t ki = 1; ki < N_K; ki++)
		if (t[ki] < t[best])
			best = ki;
	return best;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: bench_matmul_kernels [--json] [--cols N] [--variant avx512|avx2|generic]\n"
		     "  --json    one JSON object instead of the table\n"
		     "  --cols N  time a tile of N rows of W (the engine's column tile) instead\n"
		     "            of all ff rows\n"
		     "  --variant V  the small-m kernel's instantiation (default: the widest\n"
		     "            this CPU runs)\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "cols", required_argument, NULL, 'c' },
		{ "variant", required_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const size_t n_shapes = sizeof(kshapes) / sizeof(kshapes[0]);
	double t[2][N_M][N_K];
	struct blas_info bi;
	uint32_t best = 1;
	int c, r;

	while ((c = getopt_long(argc, argv, "jc:v:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			arg_json = true;
			break;
		case 'c': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (end == optarg || *end || v < 1 || v > 65536) {
				fprintf(stderr, "--cols: 1..65536, not '%s'\n", optarg);
				return 2;
			}
			arg_cols = (uint32_t)v;
			break;
		}
		case 'v':
			if (matmul_small_m_force(optarg) < 0) {
				fprintf(stderr, "--variant: '%s' is unknown or not supported here\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	r = blas_setup_single_thread(&bi);
	if (r < 0) {
		fprintf(stderr, "OpenBLAS from %s: %s (%d threads after setting 1, buffer calls %s)\n",
			bi.library, strerror(-r), bi.threads,
			bi.buffers_locked ? "locked" : "not locked");
		return 1;
	}

	if (!arg_json)
		printf("y = x·Wᵀ, one thread, %s build, %s (core %s); GB/s of W, and "
		       "speed relative to sgemm (>1: faster)\n",
		       MOE_BUILD_TYPE, bi.config, bi.core);
	for (size_t si = 0; si < n_shapes; si++) {
		const struct kshape *s = &kshapes[si];
		struct kbench kb = { .d = s->d, .n = arg_cols && arg_cols < s->ff ? arg_cols : s->ff };
		size_t pool_floats;
		float *pool, *x, *y;

		kb.w_floats = (size_t)kb.n * kb.d;
		kb.n_copies = (uint32_t)((POOL_BYTES / sizeof(float) + kb.w_floats - 1) /
					 kb.w_floats);
		if (kb.n_copies < 2)
			kb.n_copies = 2;
		pool_floats = kb.w_floats * kb.n_copies;
		pool = mmap(NULL, sizeof(float) * pool_floats, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		x = malloc(sizeof(float) * M_MAX * kb.d);
		y = malloc(sizeof(float) * M_MAX * kb.n);
		if (pool == MAP_FAILED || !x || !y) {
			fprintf(stderr, "out of memory\n");
			return 1;
		}
		/* huge pages, as bench_engine's weights: TLB misses are not what is compared */
		(void)madvise(pool, sizeof(float) * pool_floats, MADV_HUGEPAGE);
		fill_uniform(pool, pool_floats, 1.0f / sqrtf((float)kb.d), 1);
		fill_uniform(x, (size_t)M_MAX * kb.d, 1.0f, 2);
		kb.pool = pool;
		kb.x = x;
		kb.y = y;

		if (!arg_json) {
			printf("\nd=%u ff=%u: W %u x %u (%.1f MB), %u copies\n", s->d, s->ff, kb.n,
			       kb.d, kb.w_floats * 4 / 1e6, kb.n_copies);
			printf("%4s %12s %12s %12s %14s %14s %7s\n", "m", "sgemv GB/s",
			       "smallm GB/s", "sgemm GB/s", "sgemv/sgemm", "smallm/sgemm", "best");
		}
		for (size_t mi = 0; mi < N_M; mi++) {
			for (size_t ki = 0; ki < N_K; ki++)
				t[si][mi][ki] = time_kernel(&kb, kernels[ki].k, ms[mi]);
			if (!arg_json) {
				double gb = kb.w_floats * 4 / 1e9;

				printf("%4u %12.2f %12.2f %12.2f %14.3f %14.3f %7s\n", ms[mi],
				       gb / t[si][mi][0], gb / t[si][mi][1], gb / t[si][mi][2],
				       t[si][mi][K_SGEMM] / t[si][mi][0],
				       t[si][mi][K_SGEMM] / t[si][mi][1],
				       kernels[fastest(t[si][mi])].name);
				fflush(stdout);
			}
		}
		munmap(pool, sizeof(float) * pool_floats);
		free(x);
		free(y);
	}

	/* the largest grid m such that small-m beats sgemm at every m in 2..that, both shapes */
	for (size_t mi = 0; mi < N_M; mi++) {
		bool wins = true;

		if (ms[mi] < 2)
			continue;
		for (size_t si = 0; si < n_shapes; si++)
			wins = wins && t[si][mi][1] < t[si][mi][K_SGEMM];
		if (!wins)
			break;
		best = ms[mi];
	}

	if (arg_json) {
		printf("{\"benchmark\":\"matmul_kernels\",\"build_type\":\"%s\","
		       "\"blas_core\":\"%s\",\"cols\":%u,\"cases\":[",
		       MOE_BUILD_TYPE, bi.core, arg_cols);
		for (size_t si = 0; si < n_shapes; si++) {
			uint32_t n = arg_cols && arg_cols < kshapes[si].ff ? arg_cols
									   : kshapes[si].ff;
			double gb = (double)n * kshapes[si].d * 4 / 1e9;

			for (size_t mi = 0; mi < N_M; mi++) {
				printf("%s{\"d\":%u,\"ff\":%u,\"n\":%u,\"m\":%u", si || mi ? "," : "",
				       kshapes[si].d, kshapes[si].ff, n, ms[mi]);
				for (size_t ki = 0; ki < N_K; ki++)
					printf(",\"%s_gbs\":%.3f,\"%s_vs_sgemm\":%.4f",
					       kernels[ki].name, gb / t[si][mi][ki], kernels[ki].name,
					       t[si][mi][K_SGEMM] / t[si][mi][ki]);
				printf(",\"best\":\"%s\"}", kernels[fastest(t[si][mi])].name);
			}
		}
		printf("],\"small_m_variant\":\"%s\",\"small_m_max\":%u}\n",
		       matmul_small_m_variant(), best);
	} else {
		printf("\nsmall-m kernel beats sgemm for every measured m in 2..%u on both shapes: "
		       "best bound %u for the %s kernel (built in: %u)\n",
		       best, best, matmul_small_m_variant(), matmul_small_m_builtin_max());
	}
	return 0;
}
