/* SPDX-License-Identifier: MIT */
/*
 * bench_activations: activation_apply()'s vector instantiations (avx512,
 * avx2: libmvec) against its scalar one (generic) in the same run, on the
 * hidden layer of bench_engine's experts at T = 1024 rows: d_ff 3584
 * (shape A) and 1408 (shape B), for SiLU-gated (what bench_engine runs),
 * GELU, GELU-gated and GELU-tanh. One thread. Each figure is the median
 * over ABBA rounds (generic, vector, vector, generic) of the round's
 * generic time over its vector time: a speedup, >1 when the vector path
 * is faster. Every timed call starts from the same inputs (N(0, 1) rows,
 * copied in before the clock starts), so no call sees the previous one's
 * outputs.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_common.h"
#include "compute/activations.h"
#include "util/cpu_load.h"

#define T_ROWS 1024
#define N_ROUNDS 7

#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif

static const size_t d_ffs[] = { 3584, 1408 };
#define N_FF (sizeof(d_ffs) / sizeof(d_ffs[0]))

static const struct {
	enum activation a;
	const char *name;
} acts[] = {
	{ ACT_SILU_GATED, "silu_gated" },
	{ ACT_GELU, "gelu" },
	{ ACT_GELU_GATED, "gelu_gated" },
	{ ACT_GELU_TANH, "gelu_tanh" },
};
#define N_ACTS (sizeof(acts) / sizeof(acts[0]))

static const char *const vector_variants[] = { "avx512", "avx2" };
#define N_VEC (sizeof(vector_variants) / sizeof(vector_variants[0]))

static bool arg_json;

struct bufs {
	float *src; /* the inputs every call starts from */
	float *h1;  /* overwritten by each call */
	float *h3;  /* the gate */
	size_t n;
};

/* Seconds of one activation_apply() with @variant on fresh inputs. */
static double time_one(const char *variant, enum activation a, struct bufs *b, size_t ff)
{
	double t0;

	if (activation_variant_force(variant) < 0)
		abort(); /* checked supported before */
	memcpy(b->h1, b->src, sizeof(float) * b->n);
	t0 = bench_now_s();
	activation_apply(a, b->h1, ff, activation_is_gated(a) ? b->h3 : NULL, ff, T_ROWS, ff);
	return bench_now_s() - t0;
}

/* Median over ABBA rounds of generic time / @variant time. */
static double speedup(const char *variant, enum activation a, struct bufs *b, size_t ff)
{
	double ratio[N_ROUNDS];

	/* one untimed call each: page faults of h1, libmvec's ifunc resolution */
	time_one("generic", a, b, ff);
	time_one(variant, a, b, ff);
	for (int r = 0; r < N_ROUNDS; r++) {
		double g = time_one("generic", a, b, ff);
		double v = time_one(variant, a, b, ff);

		v += time_one(variant, a, b, ff);
		g += time_one("generic", a, b, ff);
		ratio[r] = g / v;
	}
	return bench_median(ratio, N_ROUNDS);
}

static void usage(FILE *out)
{
	fprintf(out, "usage: bench_activations [--json]\n"
		     "  --json    one JSON object instead of the table\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *original = activation_variant();
	double s[N_FF][N_ACTS][N_VEC];
	bool have[N_VEC];
	struct bufs b;
	double busy0, self0;
	int c;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			arg_json = true;
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

	b.n = (size_t)T_ROWS * d_ffs[0];
	b.src = malloc(sizeof(float) * b.n);
	b.h1 = malloc(sizeof(float) * b.n);
	b.h3 = malloc(sizeof(float) * b.n);
	if (!b.src || !b.h1 || !b.h3) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	bench_fill_normal(b.src, b.n, 1);
	bench_fill_normal(b.h3, b.n, 2);
	for (size_t v = 0; v < N_VEC; v++)
		have[v] = activation_variant_force(vector_variants[v]) == 0;

	if (!arg_json)
		printf("activation_apply, T=%d rows, one thread, %s build (default variant: %s);\n"
		       "speedup of each vector variant over generic (scalar libm), median of %d "
		       "ABBA rounds (>1: faster)\n",
		       T_ROWS, MOE_BUILD_TYPE, original, N_ROUNDS);
	busy0 = cpu_machine_busy_s();
	self0 = cpu_rusage_s(RUSAGE_SELF);
	for (size_t f = 0; f < N_FF; f++) {
		if (!arg_json) {
			printf("\nd_ff=%zu\n%-12s", d_ffs[f], "");
			for (size_t v = 0; v < N_VEC; v++)
				printf(" %10s", vector_variants[v]);
			printf("\n");
		}
		for (size_t a = 0; a < N_ACTS; a++) {
			if (!arg_json)
				printf("%-12s", acts[a].name);
			for (size_t v = 0; v < N_VEC; v++) {
				s[f][a][v] = have[v] ? speedup(vector_variants[v], acts[a].a, &b,
							       d_ffs[f])
						     : 0;
				if (!arg_json && have[v])
					printf(" %9.2fx", s[f][a][v]);
				else if (!arg_json)
					printf(" %10s", "n/a");
				fflush(stdout);
			}
			if (!arg_json)
				printf("\n");
		}
	}
	/* what other processes took meanwhile: a busy machine blurs the ratios */
	{
		double busy = cpu_machine_busy_s() - busy0;
		double self = cpu_rusage_s(RUSAGE_SELF) - self0;

		if (arg_json) {
			printf("{\"benchmark\":\"activations\",\"build_type\":\"%s\",\"rows\":%d,"
			       "\"default_variant\":\"%s\",\"speedup_vs_generic\":[",
			       MOE_BUILD_TYPE, T_ROWS, original);
			for (size_t f = 0, first = 1; f < N_FF; f++)
				for (size_t a = 0; a < N_ACTS; a++)
					for (size_t v = 0; v < N_VEC; v++) {
						if (!have[v])
							continue;
						printf("%s{\"d_ff\":%zu,\"activation\":\"%s\","
						       "\"variant\":\"%s\",\"speedup\":%.3f}",
						       first ? "" : ",", d_ffs[f], acts[a].name,
						       vector_variants[v], s[f][a][v]);
						first = 0;
					}
			printf("],\"other_cpu_s_per_own_s\":%.3f}\n",
			       busy >= 0 && self > 0 ? (busy - self) / self : -1.0);
		} else if (busy >= 0 && self > 0) {
			printf("\nother processes used %.2f CPU-s per CPU-s of this benchmark\n",
			       (busy - self) / self);
		}
	}
	activation_variant_force(original);
	free(b.src);
	free(b.h1);
	free(b.h3);
	return 0;
}
