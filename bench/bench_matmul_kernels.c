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
 *
 * --bf16-dot: instead, the opt-in BF16 dot-product kernel (bf16_dot,
 * compute/matmul_bf16_dot.h) against the widening small-m kernel on BF16
 * weights, the same shapes and m in {1, 4, 16, 32, 64}, timed in the same
 * run: the speed ratio, and the error its BF16 activations cost against
 * float32 activations (x ~ N(0, 1), w ~ U(-0.05, 0.05)).
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
#include "compute/matmul_bf16_dot.h"
#include "model/half.h"

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
static bool arg_bf16_dot;

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
	uint8_t *pool; /* n_copies copies of W, each w_floats values of dtype dt */
	size_t w_floats, pool_bytes;
	enum weight_dtype dt;
	uint32_t n_copies, next;
	uint32_t d, n; /* W [n][d] */
	float *x;      /* [M_MAX][d] */
	float *y;      /* [M_MAX][n] */
};

/* One call on the next copy of W, so that W comes from memory every time. */
static void call_once(struct kbench *kb, enum matmul_kernel k, uint32_t m)
{
	const uint8_t *w = kb->pool + (size_t)kb->next * kb->w_floats * weight_dtype_size(kb->dt);

	kb->next = (kb->next + 1) % kb->n_copies;
	matmul_xwt(k, kb->x, kb->d, m, kb->d, w, kb->dt, kb->d, kb->n, kb->y, kb->n);
}

static void kbench_free(struct kbench *kb)
{
	if (kb->pool != MAP_FAILED && kb->pool)
		munmap(kb->pool, kb->pool_bytes);
	free(kb->x);
	free(kb->y);
}

/*
 * W [n][d] of shape @s (a column tile of it with --cols) in dtype @dt: a
 * pool of copies filling POOL_BYTES, x [M_MAX][d] and y [M_MAX][n], their
 * values left to the caller. -ENOMEM, said on stderr.
 */
static int kbench_init(struct kbench *kb, const struct kshape *s, enum weight_dtype dt)
{
	*kb = (struct kbench){ .d = s->d, .n = arg_cols && arg_cols < s->ff ? arg_cols : s->ff,
			       .dt = dt };
	kb->w_floats = (size_t)kb->n * kb->d;
	kb->n_copies = (uint32_t)((POOL_BYTES / weight_dtype_size(dt) + kb->w_floats - 1) /
				  kb->w_floats);
	if (kb->n_copies < 2)
		kb->n_copies = 2;
	kb->pool_bytes = kb->w_floats * kb->n_copies * weight_dtype_size(dt);
	kb->pool = mmap(NULL, kb->pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			-1, 0);
	kb->x = malloc(sizeof(float) * M_MAX * kb->d);
	kb->y = malloc(sizeof(float) * M_MAX * kb->n);
	if (kb->pool == MAP_FAILED || !kb->x || !kb->y) {
		fprintf(stderr, "out of memory\n");
		kbench_free(kb);
		return -ENOMEM;
	}
	/* huge pages, as bench_engine's weights: TLB misses are not what is compared */
	(void)madvise(kb->pool, kb->pool_bytes, MADV_HUGEPAGE);
	return 0;
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

/* ---- --bf16-dot: the opt-in dot-product kernel against the widening one ---- */

static const uint32_t dot_ms[] = { 1, 4, 16, 32, 64 };
#define N_DOT_M (sizeof(dot_ms) / sizeof(dot_ms[0]))

/* @n BF16 weights U(-0.05, 0.05) (the unit test's), rounded through a float chunk. */
static void fill_bf16(uint16_t *p, size_t n, uint64_t seed)
{
	float chunk[4096];

	for (size_t i = 0; i < n; i += 4096) {
		size_t len = n - i < 4096 ? n - i : 4096;

		fill_uniform(chunk, len, 0.05f, seed + i);
		for (size_t j = 0; j < len; j++)
			p[i + j] = f32_to_bf16(chunk[j]);
	}
}

/* Seconds per call of the small-m path on BF16 weights, with the dot kernel @on or off. */
static double time_bf16(struct kbench *kb, bool on, uint32_t m)
{
	(void)matmul_bf16_dot_enable(on); /* the caller checked the CPU */
	return time_kernel(kb, MATMUL_SMALLM, m);
}

/*
 * The error of BF16 activations at m = M_MAX on the first copy of W, against
 * the widening kernel (float32 activations, float32 compute on the same
 * weights), relative to the rms of that result: the worst output's and
 * the rms over all outputs. The same quantity as test_bf16_dot's, with the
 * rms of y for each output's own scale.
 */
static void bf16_dot_error(struct kbench *kb, double *ret_worst, double *ret_rms)
{
	const size_t outs = (size_t)M_MAX * kb->n;
	float *want = malloc(sizeof(float) * outs);
	double ss = 0, se = 0, worst = 0;

	if (!want) {
		*ret_worst = *ret_rms = NAN;
		return;
	}
	(void)matmul_bf16_dot_enable(false);
	matmul_xwt(MATMUL_SMALLM, kb->x, kb->d, M_MAX, kb->d, kb->pool, WEIGHT_BF16, kb->d, kb->n,
		   want, kb->n);
	(void)matmul_bf16_dot_enable(true);
	matmul_xwt(MATMUL_SMALLM, kb->x, kb->d, M_MAX, kb->d, kb->pool, WEIGHT_BF16, kb->d, kb->n,
		   kb->y, kb->n);
	for (size_t i = 0; i < outs; i++) {
		double e = fabs((double)kb->y[i] - want[i]);

		ss += (double)want[i] * want[i];
		se += e * e;
		worst = e > worst ? e : worst;
	}
	*ret_worst = worst / sqrt(ss / (double)outs);
	*ret_rms = sqrt(se / ss);
	free(want);
}

/* The figure of --bf16-dot, for every shape; 0, or 1 when out of memory. */
static int bf16_dot_figure(const struct blas_info *bi)
{
	const size_t n_shapes = sizeof(kshapes) / sizeof(kshapes[0]);

	if (!matmul_bf16_dot_supported()) {
		printf("no AVX512_BF16 on this CPU: the BF16 dot-product kernel cannot run here\n");
		return 0;
	}
	if (arg_json)
		printf("{\"benchmark\":\"matmul_bf16_dot\",\"build_type\":\"%s\",\"blas_core\":"
		       "\"%s\",\"small_m_variant\":\"%s\",\"cols\":%u,\"shapes\":[",
		       MOE_BUILD_TYPE, bi->core, matmul_small_m_variant(), arg_cols);
	else
		printf("BF16 weights, one thread, %s build: the vdpbf16ps kernel (activations "
		       "rounded to BF16) against the %s widening small-m kernel; GB/s of W\n",
		       MOE_BUILD_TYPE, matmul_small_m_variant());
	for (size_t si = 0; si < n_shapes; si++) {
		struct kbench kb;
		double worst, rms;

		if (kbench_init(&kb, &kshapes[si], WEIGHT_BF16) < 0)
			return 1;
		fill_bf16((uint16_t *)(void *)kb.pool, kb.w_floats * kb.n_copies, 1);
		bench_fill_normal(kb.x, (size_t)M_MAX * kb.d, 2);
		bf16_dot_error(&kb, &worst, &rms);
		if (arg_json)
			printf("%s{\"d\":%u,\"ff\":%u,\"n\":%u,\"err_worst\":%.3g,"
			       "\"err_rms\":%.3g,\"cases\":[",
			       si ? "," : "", kshapes[si].d, kshapes[si].ff, kb.n, worst, rms);
		else
			printf("\nd=%u ff=%u: W %u x %u BF16 (%.1f MB), %u copies; error vs float32 "
			       "activations, relative to rms(y): rms %.3g, worst %.3g\n"
			       "%4s %12s %12s %14s\n",
			       kshapes[si].d, kshapes[si].ff, kb.n, kb.d, kb.w_floats * 2 / 1e6,
			       kb.n_copies, rms, worst, "m", "widen GB/s", "dot GB/s", "dot speedup");
		for (size_t mi = 0; mi < N_DOT_M; mi++) {
			double gb = kb.w_floats * 2 / 1e9;
			double tw = time_bf16(&kb, false, dot_ms[mi]);
			double td = time_bf16(&kb, true, dot_ms[mi]);

			if (arg_json)
				printf("%s{\"m\":%u,\"widen_gbs\":%.3f,\"dot_gbs\":%.3f,"
				       "\"dot_vs_widen\":%.4f}",
				       mi ? "," : "", dot_ms[mi], gb / tw, gb / td, tw / td);
			else
				printf("%4u %12.2f %12.2f %14.3f\n", dot_ms[mi], gb / tw, gb / td,
				       tw / td);
			fflush(stdout);
		}
		if (arg_json)
			printf("]}");
		kbench_free(&kb);
	}
	if (arg_json)
		printf("]}\n");
	(void)matmul_bf16_dot_enable(false);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: bench_matmul_kernels [--json] [--cols N] [--variant avx512|avx2|generic]\n"
		     "                            [--bf16-dot]\n"
		     "  --json    one JSON object instead of the table\n"
		     "  --cols N  time a tile of N rows of W (the engine's column tile) instead\n"
		     "            of all ff rows\n"
		     "  --variant V  the small-m kernel's instantiation (default: the widest\n"
		     "            this CPU runs)\n"
		     "  --bf16-dot  BF16 weights: the vdpbf16ps kernel (bf16_dot = yes) against\n"
		     "            the widening one, speed and error, instead of the table\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "cols", required_argument, NULL, 'c' },
		{ "variant", required_argument, NULL, 'v' },
		{ "bf16-dot", no_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const size_t n_shapes = sizeof(kshapes) / sizeof(kshapes[0]);
	double t[2][N_M][N_K];
	struct blas_info bi;
	uint32_t best = 1;
	int c, r;

	while ((c = getopt_long(argc, argv, "jc:v:bh", opts, NULL)) != -1) {
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
		case 'b':
			arg_bf16_dot = true;
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
	if (arg_bf16_dot)
		return bf16_dot_figure(&bi);

	if (!arg_json)
		printf("y = x·Wᵀ, one thread, %s build, %s (core %s); GB/s of W, and "
		       "speed relative to sgemm (>1: faster)\n",
		       MOE_BUILD_TYPE, bi.config, bi.core);
	for (size_t si = 0; si < n_shapes; si++) {
		const struct kshape *s = &kshapes[si];
		struct kbench kb;

		if (kbench_init(&kb, s, WEIGHT_F32) < 0)
			return 1;
		fill_uniform((float *)(void *)kb.pool, kb.w_floats * kb.n_copies,
			     1.0f / sqrtf((float)kb.d), 1);
		fill_uniform(kb.x, (size_t)M_MAX * kb.d, 1.0f, 2);
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
		kbench_free(&kb);
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
