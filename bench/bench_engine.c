/* SPDX-License-Identifier: MIT */
/*
 * bench_engine: how close one MoE layer's forward pass comes to its two
 * bounds, measured in the same run on the same weights and routing. For large
 * batches the bound is compute: the "grouped GEMMs" baseline runs the same
 * expert GEMMs (W1, W3, W2 of every active expert) on rows that are already
 * grouped by expert, with OpenBLAS's own threading and no routing, gather,
 * activation or combine; efficiency = baseline time / layer time (the two
 * alternate in ABBA blocks; the median of the rounds' ratios: see
 * measure_abba). For decode
 * batches (T <= 16) the bound is memory: reading the active experts' weights
 * once with plain vector loads on the same number of threads; vs_weight_read =
 * layer time / read time. The layer is built in memory (Mixtral-like and
 * DeepSeek/Qwen-like shapes, seeded uniform weights as nn.Linear initialises
 * them, normal inputs), so the benchmark needs no checkpoint. Not a test: it
 * prints figures and never fails on them.
 *
 * Every case runs with the experts' weights in float32 and in BF16 (the
 * same values rounded; --dtype picks one): a BF16 layer reads half the bytes,
 * so its weight-read floor is the read of the BF16 bytes, and for decode
 * batches bf16_speedup = BF16 tokens/s over F32 tokens/s of the same shape
 * and T (target >= 1.8). The grouped-GEMM baseline is OpenBLAS's sgemm on
 * the float32 values in both cases: there is no BF16 sgemm to compare with,
 * and float32 is what a BF16 layer must not be slower than for large T.
 *
 * Scaling (not with --quick): the layer at T = 16 and 1024 on engines of 1
 * up to --threads workers (at most 4), measured interleaved; scaling =
 * tokens/s at N threads over N x tokens/s at 1 thread (1: perfect). Decode
 * is bound by memory bandwidth, which threads share, so it scales less.
 *
 * OpenBLAS's own threading needs its pthread build, while moed links the
 * serial one (cmake/MoedOpenBLAS.cmake): so this benchmark alone links the
 * pthread build (bench/CMakeLists.txt), which the engine sets to one thread
 * as moed did before it linked the serial build. Both builds pick the same
 * kernels for the CPU (the header names the core and the file); to time the
 * layer on the serial build itself, run `LD_LIBRARY_PATH=<its
 * openblas-serial folder> bench_engine --threads 1` (LD_LIBRARY_PATH comes
 * before the RUNPATH). Without the pthread build the baseline can only have
 * one thread, and --threads above 1 is refused.
 */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "compute/blas_setup.h"
#include "engine/engine.h"
#include "model/half.h"
#include "model/model.h"
#include "router/router_config.h"
#include "util/cpu_load.h"
#include "util/parse.h"

/* The sum kernel's v8f never crosses a call (static, inlined into the clones). */
#pragma GCC diagnostic ignored "-Wpsabi"

#define MAX_THREADS 256

#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif

struct shape {
	const char *name; /* --shape */
	const char *tag;  /* in the output: E<experts>k<top_k>d<d_model>f<d_ff> */
	uint32_t n_experts, top_k, d_model, d_ff;
	bool normalize; /* renormalise the top-k probabilities (Mixtral) or not (Qwen2, DeepSeek) */
};

static const struct shape shapes[] = {
	{ "A", "E8k2d1024f3584", 8, 2, 1024, 3584, true },
	{ "B", "E64k6d2048f1408", 64, 6, 2048, 1408, false },
};

static const uint32_t default_tokens[] = { 1, 16, 128, 1024 };

/* Batches up to this size are bound by reading weights, not by arithmetic. */
#define DECODE_MAX_TOKENS 16

static bool arg_json;
static bool arg_quick;
static uint32_t arg_threads = 2;
static const char *arg_shape; /* NULL: all */
static uint32_t arg_tokens;   /* 0: the default list */
static int arg_dtype = -1;    /* enum weight_dtype; -1: F32 and BF16 */

/* ---- time and statistics ---- */

/* ---- reading memory ---- */

typedef float v8f __attribute__((vector_size(32)));

/* Adds 8 floats (unaligned) to @acc. Passing the vector by pointer, not by
 * value, keeps the default clone free of AVX arguments (clang refuses those). */
static inline void add8(v8f *acc, const float *p)
{
	v8f v;

	memcpy(&v, p, sizeof(v));
	*acc += v;
}

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define SUM_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SUM_CLONES
#endif

/*
 * Sum of @n floats. Four independent vector accumulators keep the loop bound
 * by loads rather than by the latency of one add chain, and they read four
 * streams (the quarters of the range) because one sequential stream per core
 * leaves DRAM bandwidth unused: 4 streams read 10-20% faster here, about as
 * OpenBLAS's sgemv walks several weight rows at once. Cloned like the small-m
 * kernel so it uses the vector width the engine can.
 */
SUM_CLONES
static float sum_floats(const float *p, size_t n)
{
	const size_t q = n / 32 * 8; /* a quarter, in whole vectors */
	const float *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
	v8f a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
	size_t i;
	float s;

	for (i = 0; i < q; i += 8) {
		add8(&a0, p0 + i);
		add8(&a1, p1 + i);
		add8(&a2, p2 + i);
		add8(&a3, p3 + i);
	}
	a0 = (a0 + a1) + (a2 + a3);
	s = ((a0[0] + a0[4]) + (a0[1] + a0[5])) + ((a0[2] + a0[6]) + (a0[3] + a0[7]));
	for (i = 4 * q; i < n; i++)
		s += p[i];
	return s;
}

/*
 * Read the active experts' weights once: the memory floor of a decode step.
 * The weights of active expert a are one contiguous run (w1, w3, w2), and
 * the runs are split between the threads by float count, so each thread
 * streams the same number of bytes whatever the experts.
 */
struct read_run {
	const float **runs;
	size_t run_floats;
	uint32_t n_runs;
	uint32_t n_threads;
};

struct read_part {
	const struct read_run *rr;
	pthread_barrier_t *start;
	size_t begin, end; /* in the concatenation of the runs, floats */
	float sum;
};

static volatile float read_sink;

static void *read_thread(void *arg)
{
	struct read_part *p = arg;
	const struct read_run *rr = p->rr;
	size_t pos = p->begin;
	float s = 0.0f;

	if (p->start)
		pthread_barrier_wait(p->start);
	while (pos < p->end) {
		size_t run = pos / rr->run_floats, off = pos % rr->run_floats;
		size_t n = rr->run_floats - off;

		if (n > p->end - pos)
			n = p->end - pos;
		s += sum_floats(rr->runs[run] + off, n);
		pos += n;
	}
	p->sum = s;
	return NULL;
}

/*
 * Seconds from the moment every thread is ready to the last one's end:
 * starting threads is not part of reading memory, and the floor must not
 * be padded with it (the engine's workers exist already).
 */
static double run_read(void *arg)
{
	const struct read_run *rr = arg;
	const size_t total = rr->run_floats * rr->n_runs;
	struct read_part parts[MAX_THREADS];
	pthread_t threads[MAX_THREADS];
	pthread_barrier_t start;
	double t0, t;
	float s = 0.0f;

	if (pthread_barrier_init(&start, NULL, rr->n_threads) != 0) {
		fprintf(stderr, "pthread_barrier_init failed\n");
		exit(EXIT_FAILURE);
	}
	for (uint32_t i = 0; i < rr->n_threads; i++)
		parts[i] = (struct read_part){ .rr = rr, .start = &start,
					       .begin = total * i / rr->n_threads,
					       .end = total * (i + 1) / rr->n_threads };
	/* the caller reads part 0 itself, as the engine's caller is one of its workers */
	for (uint32_t i = 1; i < rr->n_threads; i++)
		if (pthread_create(&threads[i], NULL, read_thread, &parts[i]) != 0) {
			fprintf(stderr, "pthread_create failed\n");
			exit(EXIT_FAILURE);
		}
	pthread_barrier_wait(&start);
	t0 = bench_now_s();
	parts[0].start = NULL;
	read_thread(&parts[0]);
	for (uint32_t i = 1; i < rr->n_threads; i++)
		pthread_join(threads[i], NULL);
	t = bench_now_s() - t0;
	pthread_barrier_destroy(&start);
	for (uint32_t i = 0; i < rr->n_threads; i++)
		s += parts[i].sum;
	read_sink = s; /* a result the compiler must produce */
	return t;
}

/*
 * Each timed run starts with the weights out of the caches, as a layer does
 * in a model whose other layers ran since its last step: the last-level
 * cache (32 MiB here) holds a third of shape A's decode working set, and a
 * benchmark that re-runs one layer would otherwise measure partly from it.
 * One streaming pass over a large buffer is not enough: the cache keeps
 * lines that were hit (the weights, re-read every run) over lines seen once.
 * So every thread reads a buffer 1.5x the cache size several times, which
 * makes the buffer's own lines hit and displace the weights. Measured on
 * shape A's 88 MB: the read after this is as slow as after streaming 512 MiB.
 */
#define EVICT_BYTES  ((size_t)48 << 20)
#define EVICT_PASSES 3

/* run_read() over EVICT_PASSES copies of the buffer per thread. */
static struct read_run evict_run;

static void caches_evict(void)
{
	(void)run_read(&evict_run);
}

/* One function under measurement (it returns the seconds it took) and its figures. */
struct timed {
	double (*fn)(void *);
	void *ctx;
	double median_s, min_s;
	uint32_t reps;
};

/*
 * Median seconds of each of @n functions over a number of repetitions chosen
 * from one warm-up run each, so that the timed runs take about @target_s per
 * function: at least 5 (the median of 5 survives two disturbed runs on a
 * shared machine), at most 400 (decode steps of a few ms). The functions
 * run interleaved, one repetition of each in turn, so that all of them see
 * the same memory bandwidth: on a shared host it drifts by half within a
 * minute, which would otherwise show up as a ratio between them. The warm-up
 * also lets the engine's scratch grow to the batch's high-water mark, so the
 * timed runs allocate nothing, as in steady serving.
 */
static void measure(struct timed *f, uint32_t n, double target_s)
{
	double warm = 0, times[4][400];
	uint32_t reps;

	for (uint32_t j = 0; j < n; j++) {
		caches_evict();
		warm = fmax(warm, f[j].fn(f[j].ctx));
	}
	reps = warm > 0 ? (uint32_t)fmin(400.0, ceil(target_s / warm)) : 400;
	if (reps < 5)
		reps = 5;
	for (uint32_t i = 0; i < reps; i++)
		for (uint32_t j = 0; j < n; j++) {
			caches_evict();
			times[j][i] = f[j].fn(f[j].ctx);
		}
	for (uint32_t j = 0; j < n; j++) {
		double *t = times[j];

		qsort(t, reps, sizeof(t[0]), bench_cmp_double);
		f[j].median_s = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
		f[j].min_s = t[0];
		f[j].reps = reps;
	}
}

/*
 * U(-scale, scale), as torch.nn.Linear initialises weights (scale =
 * 1/sqrt(fan_in)). xorshift64 gives two floats per step: shape B's 2.2 GB
 * must fill in about a second, and its statistics do not matter here beyond
 * keeping activations finite and the routing spread over the experts.
 */
static void fill_uniform(float *p, size_t n, float scale, uint64_t seed)
{
	const float mul = scale * 0x1p-31f;
	uint64_t s = bench_splitmix64(seed) | 1;
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

/* ---- the layer ---- */

struct bench_layer {
	struct moe_layer L, L_bf16; /* the same layer with F32 and with BF16 experts */
	float *weights; /* per expert, contiguous: w1 [ff][d], w3 [ff][d], w2 [d][ff] */
	size_t weight_bytes;
	uint16_t *weights_bf16; /* the same values in BF16, same layout; NULL: not wanted */
	float *router_w;
	struct moe_expert *experts, *experts_bf16;
};

static size_t expert_floats(const struct shape *s)
{
	return (size_t)3 * s->d_ff * s->d_model;
}

struct fill_job {
	const struct shape *s;
	float *weights;
	uint16_t *weights_bf16; /* NULL: none */
	uint32_t first, step;
};

static void *fill_thread(void *arg)
{
	const struct fill_job *j = arg;
	const struct shape *s = j->s;
	const size_t mat = (size_t)s->d_ff * s->d_model;

	for (uint32_t e = j->first; e < s->n_experts; e += j->step) {
		float *w = j->weights + e * expert_floats(s);

		fill_uniform(w, mat, 1.0f / sqrtf((float)s->d_model), 3 * e + 1);        /* w1 */
		fill_uniform(w + mat, mat, 1.0f / sqrtf((float)s->d_model), 3 * e + 2);  /* w3 */
		fill_uniform(w + 2 * mat, mat, 1.0f / sqrtf((float)s->d_ff), 3 * e + 3); /* w2 */
		if (!j->weights_bf16)
			continue;
		/* the BF16 layer holds these values rounded, the F32 one the same rounded values */
		for (size_t i = 0; i < expert_floats(s); i++) {
			j->weights_bf16[e * expert_floats(s) + i] = f32_to_bf16(w[i]);
			w[i] = bf16_to_f32(j->weights_bf16[e * expert_floats(s) + i]);
		}
	}
	return NULL;
}

static struct bench_layer *bench_layer_free(struct bench_layer *b)
{
	if (!b)
		return NULL;
	if (b->weights)
		munmap(b->weights, b->weight_bytes);
	if (b->weights_bf16)
		munmap(b->weights_bf16, b->weight_bytes / 2);
	free(b->router_w);
	free(b->experts);
	free(b->experts_bf16);
	free(b);
	return NULL;
}

static void *map_weights(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/*
	 * Huge pages as a resident weight store would use: the engine and both
	 * baselines read this same memory, so the choice is fair to all three
	 * and only takes TLB misses out of the streaming figures.
	 */
	(void)madvise(p, bytes, MADV_HUGEPAGE);
	return p;
}

static int bench_layer_new(const struct shape *s, bool with_bf16, struct bench_layer **ret_layer)
{
	const size_t mat = (size_t)s->d_ff * s->d_model;
	struct fill_job jobs[MAX_THREADS];
	pthread_t threads[MAX_THREADS];
	struct bench_layer *b;
	struct diag d = { { 0 } };
	uint32_t n_fill = arg_threads;
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->weight_bytes = sizeof(float) * expert_floats(s) * s->n_experts;
	b->weights = map_weights(b->weight_bytes);
	if (with_bf16)
		b->weights_bf16 = map_weights(b->weight_bytes / 2);
	b->router_w = malloc(sizeof(float) * s->n_experts * s->d_model);
	b->experts = calloc(s->n_experts, sizeof(*b->experts));
	b->experts_bf16 = calloc(s->n_experts, sizeof(*b->experts_bf16));
	if (!b->weights || (with_bf16 && !b->weights_bf16) || !b->router_w || !b->experts ||
	    !b->experts_bf16) {
		r = -ENOMEM;
		goto fail;
	}
	fill_uniform(b->router_w, (size_t)s->n_experts * s->d_model,
		     1.0f / sqrtf((float)s->d_model), 0);

	/* First touch spread over the threads too: page faults are half the fill time. */
	if (n_fill > s->n_experts)
		n_fill = s->n_experts;
	for (uint32_t i = 0; i < n_fill; i++) {
		jobs[i] = (struct fill_job){ .s = s, .weights = b->weights,
					     .weights_bf16 = b->weights_bf16, .first = i,
					     .step = n_fill };
		r = -pthread_create(&threads[i], NULL, fill_thread, &jobs[i]);
		if (r < 0) {
			for (uint32_t j = 0; j < i; j++)
				pthread_join(threads[j], NULL);
			goto fail;
		}
	}
	for (uint32_t i = 0; i < n_fill; i++)
		pthread_join(threads[i], NULL);

	for (uint32_t e = 0; e < s->n_experts; e++) {
		float *w = b->weights + e * expert_floats(s);

		b->experts[e].ffn = (struct ffn_weights){ .w1 = w, .w3 = w + mat, .w2 = w + 2 * mat,
							  .d_ff = s->d_ff };
		if (b->weights_bf16) {
			const uint16_t *h = b->weights_bf16 + e * expert_floats(s);

			b->experts_bf16[e].ffn = (struct ffn_weights){
				.w1 = h, .w3 = h + mat, .w2 = h + 2 * mat, .dtype = WEIGHT_BF16,
				.d_ff = s->d_ff
			};
		}
	}
	b->L = (struct moe_layer){ .index = 0, .d_model = s->d_model, .d_ff = s->d_ff,
				   .n_experts = s->n_experts, .router_w = b->router_w,
				   .experts = b->experts };
	router_config_init(&b->L.router);
	b->L.router.kind = ROUTER_TOPK;
	b->L.router.top_k = s->top_k;
	b->L.router.score = SCORE_SOFTMAX;
	b->L.router.normalize = s->normalize;
	b->L.router.capacity_factor = 0.0; /* dropless, as these models serve */
	b->L.router.activation = ACT_SILU_GATED;
	r = router_config_validate(&b->L.router, s->n_experts, &d);
	if (r < 0) {
		fprintf(stderr, "shape %s: %s\n", s->name, d.msg);
		goto fail;
	}
	b->L_bf16 = b->L;
	b->L_bf16.experts = b->experts_bf16;
	*ret_layer = b;
	return 0;
fail:
	bench_layer_free(b);
	return r;
}

/* ---- the three measurements ---- */

struct layer_run {
	struct engine *engine;
	const struct moe_layer *L;
	struct engine_batch batch;
};

static double run_layer(void *arg)
{
	struct layer_run *lr = arg;
	struct diag d = { { 0 } };
	double t0 = bench_now_s(), t;
	int r;

	r = engine_forward(lr->engine, lr->L, NULL, &lr->batch, &d);
	t = bench_now_s() - t0;
	if (r < 0) {
		fprintf(stderr, "engine_forward: %s: %s\n", strerror(-r), d.msg);
		exit(EXIT_FAILURE);
	}
	return t;
}

/* The active experts' rows, grouped and contiguous, as a grouped-GEMM kernel wants them. */
struct grouped_run {
	const struct moe_layer *L; /* its float32 experts */
	uint32_t n_active;
	uint32_t *active;   /* expert ids with >= 1 row */
	uint32_t *row0;     /* [n_active + 1] row offsets */
	float *xg, *h1, *h3, *yg;
};

static double run_grouped(void *arg)
{
	const struct grouped_run *g = arg;
	const uint32_t d = g->L->d_model, ff = g->L->d_ff;
	const double t0 = bench_now_s();

	for (uint32_t a = 0; a < g->n_active; a++) {
		const struct ffn_weights *f = &g->L->experts[g->active[a]].ffn;
		const size_t r0 = g->row0[a];
		const int m = (int)(g->row0[a + 1] - g->row0[a]);

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)ff, (int)d, 1.0f,
			    g->xg + r0 * d, (int)d, f->w1, (int)d, 0.0f, g->h1 + r0 * ff, (int)ff);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)ff, (int)d, 1.0f,
			    g->xg + r0 * d, (int)d, f->w3, (int)d, 0.0f, g->h3 + r0 * ff, (int)ff);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)d, (int)ff, 1.0f,
			    g->h1 + r0 * ff, (int)ff, f->w2, (int)ff, 0.0f, g->yg + r0 * d,
			    (int)d);
	}
	return bench_now_s() - t0;
}

static void grouped_run_done(struct grouped_run *g)
{
	free(g->active);
	free(g->row0);
	free(g->xg);
	free(g->h1);
	free(g->h3);
	free(g->yg);
}

/* Group the rows of @x by the experts in @expert_index ([T][k], -1 for a dropped slot). */
static int grouped_run_init(struct grouped_run *g, const struct moe_layer *L, const float *x,
			    uint32_t T, uint32_t k, const int32_t *expert_index)
{
	const uint32_t E = L->n_experts, d = L->d_model;
	uint32_t *count, *slot_of, n_rows = 0;
	uint32_t *fill;

	*g = (struct grouped_run){ .L = L };
	count = calloc(E, sizeof(*count));
	slot_of = calloc(E, sizeof(*slot_of));
	fill = calloc(E + 1, sizeof(*fill));
	g->active = calloc(E, sizeof(*g->active));
	g->row0 = calloc(E + 1, sizeof(*g->row0));
	if (!count || !slot_of || !fill || !g->active || !g->row0)
		goto oom;
	for (size_t i = 0; i < (size_t)T * k; i++)
		if (expert_index[i] >= 0 && (uint32_t)expert_index[i] < E)
			count[expert_index[i]]++;
	for (uint32_t e = 0; e < E; e++) {
		if (!count[e])
			continue;
		slot_of[e] = g->n_active;
		g->active[g->n_active] = e;
		g->row0[g->n_active] = n_rows;
		g->n_active++;
		n_rows += count[e];
	}
	g->row0[g->n_active] = n_rows;
	g->xg = malloc(sizeof(float) * ((size_t)n_rows * d + 1));
	g->yg = malloc(sizeof(float) * ((size_t)n_rows * d + 1));
	g->h1 = malloc(sizeof(float) * ((size_t)n_rows * L->d_ff + 1));
	g->h3 = malloc(sizeof(float) * ((size_t)n_rows * L->d_ff + 1));
	if (!g->xg || !g->yg || !g->h1 || !g->h3)
		goto oom;
	for (uint32_t t = 0; t < T; t++)
		for (uint32_t j = 0; j < k; j++) {
			int32_t e = expert_index[(size_t)t * k + j];
			uint32_t a, row;

			if (e < 0 || (uint32_t)e >= E)
				continue;
			a = slot_of[e];
			row = g->row0[a] + fill[a]++;
			memcpy(g->xg + (size_t)row * d, x + (size_t)t * d, sizeof(float) * d);
		}
	free(count);
	free(slot_of);
	free(fill);
	return 0;
oom:
	free(count);
	free(slot_of);
	free(fill);
	grouped_run_done(g);
	return -ENOMEM;
}

/* ---- one case ---- */

struct result {
	const struct shape *shape;
	enum weight_dtype dtype;
	uint32_t T;
	uint32_t n_active;
	struct timed layer, grouped, read; /* read.reps 0: not measured */
	double efficiency; /* median over ABBA rounds of grouped / layer (see measure_abba) */
	double background; /* cores used by other processes during the case; < 0: unknown */
};

/*
 * OpenBLAS's pthread server threads spin for a while (THREAD_TIMEOUT, about
 * 0.1 s) after a threaded call before they sleep; left spinning they would
 * steal a core from the engine's next timed run.
 */
static void blas_back_to_one(void)
{
	blas_set_threads(1);
	if (openblas_get_num_threads() != 1) {
		fprintf(stderr, "OpenBLAS did not return to 1 thread; the engine requires it\n");
		exit(EXIT_FAILURE);
	}
	usleep(300 * 1000);
}

/*
 * The layer and the grouped-GEMM baseline run in blocks of their own: the
 * engine needs OpenBLAS at one thread and the baseline at N, and every
 * switch back costs the wait in blas_back_to_one(). So that both still see
 * the same memory bandwidth (it drifts by half within a minute on a shared
 * host), the blocks alternate A B B A (A: the layer, with the weight read
 * for decode batches, B: the baseline), ABBA_ROUNDS times, each block
 * measure()d for its share of @target_s; a function's figure is the median
 * of its block medians (and the least of its minima). ABBA order costs one
 * thread switch each way per round, and cancels a linear drift within the
 * round: so efficiency is taken per round (the baseline's two block medians
 * over the layer's two), and the figure is the median of the rounds' ratios,
 * not a ratio of medians from blocks minutes apart. An odd number of rounds
 * gives a median that one disturbed round cannot move.
 */
#define ABBA_ROUNDS 3
#define ABBA_BLOCKS (2 * ABBA_ROUNDS) /* per function */

/* @out from the @n blocks of one function: median of medians, least minimum, reps summed. */
static void timed_fold(struct timed *out, const struct timed *blocks, uint32_t n)
{
	double med[ABBA_BLOCKS];

	*out = blocks[0];
	out->reps = 0;
	for (uint32_t i = 0; i < n; i++) {
		med[i] = blocks[i].median_s;
		out->min_s = fmin(out->min_s, blocks[i].min_s);
		out->reps += blocks[i].reps;
	}
	qsort(med, n, sizeof(med[0]), bench_cmp_double);
	out->median_s = n % 2 ? med[n / 2] : 0.5 * (med[n / 2 - 1] + med[n / 2]);
}

static int measure_abba(struct layer_run *lr, struct grouped_run *g, const struct shape *s,
			uint32_t T, double target_s, struct result *res)
{
	/* the floor reads the layer's own weight bytes: half as many floats' worth in BF16 */
	struct read_run rr = { .run_floats = expert_floats(s) * weight_dtype_size(res->dtype) /
					     sizeof(float),
			       .n_runs = g->n_active, .n_threads = arg_threads };
	const uint32_t n_a = T <= DECODE_MAX_TOKENS ? 2 : 1; /* the layer, and the read */
	struct timed blocks[3][ABBA_BLOCKS];
	double ratio[ABBA_ROUNDS];
	const double block_s = target_s / ABBA_BLOCKS;

	if (n_a == 2) {
		rr.runs = calloc(g->n_active, sizeof(*rr.runs));
		if (!rr.runs)
			return -ENOMEM;
		for (uint32_t a = 0; a < g->n_active; a++)
			rr.runs[a] = lr->L->experts[g->active[a]].ffn.w1;
	}
	for (uint32_t round = 0; round < ABBA_ROUNDS; round++) {
		for (uint32_t pos = 0; pos < 4; pos++) {
			/* A0 B0 B1 A1: each function's first, then second block of the round */
			uint32_t i = 2 * round + (pos == 0 || pos == 1 ? 0 : 1);

			if (pos == 1 || pos == 2) {
				struct timed *b = &blocks[2][i];

				if (pos == 1)
					blas_set_threads((int)arg_threads);
				*b = (struct timed){ .fn = run_grouped, .ctx = g };
				measure(b, 1, block_s);
				if (pos == 2)
					blas_back_to_one();
			} else {
				struct timed f[2] = { { .fn = run_layer, .ctx = lr },
						      { .fn = run_read, .ctx = &rr } };

				measure(f, n_a, block_s);
				blocks[0][i] = f[0];
				blocks[1][i] = f[1];
			}
		}
	}
	timed_fold(&res->layer, blocks[0], ABBA_BLOCKS);
	for (uint32_t round = 0; round < ABBA_ROUNDS; round++) {
		const struct timed *a = &blocks[0][2 * round], *b = &blocks[2][2 * round];

		ratio[round] = (b[0].median_s + b[1].median_s) / (a[0].median_s + a[1].median_s);
	}
	qsort(ratio, ABBA_ROUNDS, sizeof(ratio[0]), bench_cmp_double);
	res->efficiency = ABBA_ROUNDS % 2 ? ratio[ABBA_ROUNDS / 2]
					  : 0.5 * (ratio[ABBA_ROUNDS / 2 - 1] + ratio[ABBA_ROUNDS / 2]);
	if (n_a == 2)
		timed_fold(&res->read, blocks[1], ABBA_BLOCKS);
	timed_fold(&res->grouped, blocks[2], ABBA_BLOCKS);
	free(rr.runs);
	return 0;
}

static int run_case(struct engine *engine, const struct bench_layer *bl, const struct shape *s,
		    enum weight_dtype dtype, uint32_t T, double target_s, struct result *res)
{
	const uint32_t d = s->d_model, k = s->top_k;
	struct layer_run lr = { .engine = engine,
				.L = dtype == WEIGHT_BF16 ? &bl->L_bf16 : &bl->L };
	struct grouped_run g;
	float *x, *y;
	int32_t *idx;
	int r = -ENOMEM;
	/* what other processes took meanwhile: the usual cause of an outlier here */
	struct cpu_load_mark load;

	*res = (struct result){ .shape = s, .dtype = dtype, .T = T, .background = -1 };
	cpu_load_mark_take(&load);
	x = malloc(sizeof(float) * T * d);
	y = malloc(sizeof(float) * T * d);
	idx = malloc(sizeof(int32_t) * T * k);
	if (!x || !y || !idx)
		goto out;
	bench_fill_normal(x, (size_t)T * d, 1000003u * T + s->n_experts);

	lr.batch = (struct engine_batch){ .x = x, .n_tokens = T, .output = y,
					  .expert_index = idx };
	/* one run gives the routing (the same input routes the same way every time) */
	(void)run_layer(&lr);
	r = grouped_run_init(&g, &bl->L, x, T, k, idx);
	if (r < 0)
		goto out;
	res->n_active = g.n_active;

	r = measure_abba(&lr, &g, s, T, target_s, res);
	if (r < 0) {
		grouped_run_done(&g);
		goto out;
	}

	grouped_run_done(&g);
	res->background = cpu_load_others(&load);
	r = 0;
out:
	free(x);
	free(y);
	free(idx);
	return r;
}

/* ---- scaling ---- */

/* measure() interleaves at most 4 functions: engines of 1..4 workers */
#define SCALING_MAX 4
/* The batch sizes scaling is measured at: decode (memory) and prefill (compute). */
static const uint32_t scaling_tokens[] = { 16, 1024 };

struct scaling_result {
	const struct shape *shape;
	enum weight_dtype dtype;
	uint32_t T, threads;
	double tokens_per_s;
	double scaling; /* tokens/s at `threads` over threads x tokens/s at 1 */
};

/*
 * The layer on engines of 1..@n workers (@engines[i] has i + 1), measured
 * together (one repetition of each in turn: they see the same memory
 * bandwidth), into @out[0..n).
 */
static int run_scaling(struct engine *const *engines, uint32_t n, const struct bench_layer *bl,
		       const struct shape *s, enum weight_dtype dtype, uint32_t T,
		       double target_s, struct scaling_result *out)
{
	const uint32_t d = s->d_model;
	float *x = malloc(sizeof(float) * T * d), *y = malloc(sizeof(float) * T * d);
	int32_t *idx = malloc(sizeof(int32_t) * T * s->top_k);
	struct layer_run lr[SCALING_MAX];
	struct timed f[SCALING_MAX];

	if (!x || !y || !idx) {
		free(x);
		free(y);
		free(idx);
		return -ENOMEM;
	}
	bench_fill_normal(x, (size_t)T * d, 1000003u * T + s->n_experts);
	for (uint32_t i = 0; i < n; i++) {
		lr[i] = (struct layer_run){
			.engine = engines[i],
			.L = dtype == WEIGHT_BF16 ? &bl->L_bf16 : &bl->L,
			.batch = { .x = x, .n_tokens = T, .output = y, .expert_index = idx },
		};
		f[i] = (struct timed){ .fn = run_layer, .ctx = &lr[i] };
	}
	measure(f, n, target_s);
	for (uint32_t i = 0; i < n; i++)
		out[i] = (struct scaling_result){
			.shape = s, .dtype = dtype, .T = T, .threads = i + 1,
			.tokens_per_s = T / f[i].median_s,
			.scaling = f[0].median_s / f[i].median_s / (i + 1),
		};
	free(x);
	free(y);
	free(idx);
	return 0;
}

/* ---- output ---- */

static void print_header(const struct engine *e)
{
	const struct blas_info *bi = engine_blas_info(e);

	printf("moed engine benchmark (%s build): %u workers; baseline: %s (core %s, %s build "
	       "from %s), %u threads\n",
	       MOE_BUILD_TYPE, engine_n_workers(e), bi->config, bi->core,
	       blas_parallel_name(bi->parallel), bi->library, arg_threads);
	printf("efficiency = grouped F32 GEMMs / layer, median of %u ABBA rounds' ratios "
	       "(target >= 0.95 for T >= 128); "
	       "vs_read = layer / read of its weight bytes (target <= 1.3 for T <= %u); "
	       "bf16_x = BF16 tokens/s / F32 tokens/s (target >= 1.8 for T <= %u)\n\n",
	       ABBA_ROUNDS, DECODE_MAX_TOKENS, DECODE_MAX_TOKENS);
	printf("%-16s %5s %5s %7s %12s %10s %11s %6s %10s %7s %7s\n", "shape", "dtype", "T",
	       "experts", "tokens/s", "layer_ms", "grouped_ms", "eff", "wread_ms", "vs_read",
	       "bf16_x");
}

/*
 * BF16 tokens/s over F32 tokens/s for a BF16 decode case whose F32 twin
 * (same shape and T, run just before it) is among @res[0..n); 0: none.
 */
static double bf16_speedup(const struct result *res, uint32_t n, const struct result *r)
{
	if (r->dtype != WEIGHT_BF16 || r->T > DECODE_MAX_TOKENS)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		if (res[i].dtype == WEIGHT_F32 && res[i].shape == r->shape && res[i].T == r->T)
			return res[i].layer.median_s / r->layer.median_s;
	return 0;
}

static void print_row(const struct result *res, uint32_t n, const struct result *r)
{
	double speedup = bf16_speedup(res, n, r);

	printf("%-16s %5s %5u %7u %12.1f %10.3f %11.3f %6.3f", r->shape->tag,
	       weight_dtype_name(r->dtype), r->T, r->n_active, r->T / r->layer.median_s,
	       r->layer.median_s * 1e3, r->grouped.median_s * 1e3, r->efficiency);
	if (r->read.reps)
		printf(" %10.3f %7.3f", r->read.median_s * 1e3, r->layer.median_s / r->read.median_s);
	if (speedup > 0)
		printf(" %7.3f", speedup);
	printf("\n");
	fflush(stdout);
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			putchar('\\');
		if ((unsigned char)*s >= 0x20)
			putchar(*s);
	}
	putchar('"');
}

static void print_json(const struct engine *e, const struct result *res, uint32_t n,
		       const struct scaling_result *sc, uint32_t n_sc)
{
	printf("{\"benchmark\":\"engine\",\"build_type\":\"%s\",\"threads\":%u,\"blas_core\":",
	       MOE_BUILD_TYPE, arg_threads);
	print_json_string(engine_blas_info(e)->core);
	printf(",\"blas_threading\":");
	print_json_string(blas_parallel_name(engine_blas_info(e)->parallel));
	printf(",\"blas_library\":");
	print_json_string(engine_blas_info(e)->library);
	printf(",\"cases\":[");
	for (uint32_t i = 0; i < n; i++) {
		const struct result *r = &res[i];

		double speedup = bf16_speedup(res, n, r);

		printf("%s{\"shape\":\"%s\",\"dtype\":\"%s\",\"T\":%u,\"active_experts\":%u,"
		       "\"tokens_per_s\":%.1f,\"layer_ms\":%.4f,\"grouped_gemm_ms\":%.4f,"
		       "\"efficiency\":%.4f",
		       i ? "," : "", r->shape->tag, weight_dtype_name(r->dtype), r->T, r->n_active,
		       r->T / r->layer.median_s, r->layer.median_s * 1e3, r->grouped.median_s * 1e3,
		       r->efficiency);
		if (speedup > 0)
			printf(",\"bf16_speedup\":%.4f", speedup);
		if (r->read.reps)
			printf(",\"weight_read_ms\":%.4f,\"vs_weight_read\":%.4f", r->read.median_s * 1e3,
			       r->layer.median_s / r->read.median_s);
		if (r->background >= 0)
			printf(",\"background_cores\":%.3f", r->background);
		printf("}");
	}
	printf("],\"scaling\":[");
	for (uint32_t i = 0; i < n_sc; i++)
		printf("%s{\"shape\":\"%s\",\"dtype\":\"%s\",\"T\":%u,\"threads\":%u,"
		       "\"tokens_per_s\":%.1f,\"scaling\":%.4f}",
		       i ? "," : "", sc[i].shape->tag, weight_dtype_name(sc[i].dtype), sc[i].T,
		       sc[i].threads, sc[i].tokens_per_s, sc[i].scaling);
	printf("]}\n");
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: bench_engine [--json] [--threads N] [--quick] [--shape A|B] [--tokens T]\n"
		"                    [--dtype f32|bf16]\n"
		"  --json       one JSON object instead of the table\n"
		"  --threads N  engine workers, OpenBLAS threads of the baseline and weight-read\n"
		"               threads (default 2)\n"
		"  --quick      shape A at T = 1 and 128 only, no scaling (CI smoke)\n"
		"  --shape S    A (E8 k2 d1024 ff3584, Mixtral-like) or B (E64 k6 d2048 ff1408,\n"
		"               DeepSeek/Qwen-like); default both\n"
		"  --tokens T   one batch size instead of 1, 16, 128, 1024\n"
		"  --dtype D    the experts' weights in f32 or bf16 only (default: both, each\n"
		"               case in F32 then BF16)\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },    { "threads", required_argument, NULL, 'n' },
		{ "quick", no_argument, NULL, 'q' },   { "shape", required_argument, NULL, 's' },
		{ "tokens", required_argument, NULL, 't' }, { "help", no_argument, NULL, 'h' },
		{ "dtype", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	struct result res[64];
	struct scaling_result scaling[2 * 2 * 2 * SCALING_MAX];
	struct engine *scaling_engines[SCALING_MAX] = { NULL };
	uint32_t n_scaling = 0, scaling_n = 0;
	uint32_t n_res = 0;
	struct engine_opts eo;
	struct engine *engine = NULL;
	struct diag d = { { 0 } };
	const float *evict_runs[EVICT_PASSES * MAX_THREADS];
	double target_s;
	float *evict_buf;
	int c, r;

	while ((c = getopt_long(argc, argv, "jn:qs:t:hd:", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (strcmp(optarg, "f32") && strcmp(optarg, "bf16")) {
				fprintf(stderr, "--dtype: f32 or bf16, not '%s'\n", optarg);
				return 2;
			}
			arg_dtype = strcmp(optarg, "f32") == 0 ? WEIGHT_F32 : WEIGHT_BF16;
			break;
		case 'j':
			arg_json = true;
			break;
		case 'n':
			if (parse_u32(optarg, 1, MAX_THREADS, &arg_threads) < 0) {
				fprintf(stderr, "--threads: 1..%d, not '%s'\n", MAX_THREADS, optarg);
				return 2;
			}
			break;
		case 'q':
			arg_quick = true;
			break;
		case 's':
			if (strcmp(optarg, "A") && strcmp(optarg, "B")) {
				fprintf(stderr, "--shape: A or B, not '%s'\n", optarg);
				return 2;
			}
			arg_shape = optarg;
			break;
		case 't':
			if (parse_u32(optarg, 1, ENGINE_MAX_TOKENS, &arg_tokens) < 0) {
				fprintf(stderr, "--tokens: 1..%u, not '%s'\n", ENGINE_MAX_TOKENS,
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
	/* a smoke run only checks that everything runs; a real run wants stable medians */
	target_s = arg_quick ? 0.2 : 0.5;
	evict_buf = malloc(EVICT_BYTES);
	if (!evict_buf) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	fill_uniform(evict_buf, EVICT_BYTES / sizeof(float), 1.0f, 7);
	for (uint32_t i = 0; i < EVICT_PASSES * arg_threads; i++)
		evict_runs[i] = evict_buf;
	evict_run = (struct read_run){ .runs = evict_runs,
				       .run_floats = EVICT_BYTES / sizeof(float),
				       .n_runs = EVICT_PASSES * arg_threads,
				       .n_threads = arg_threads };

	engine_opts_init(&eo);
	eo.n_workers = arg_threads;
	r = engine_new(&eo, &engine, &d);
	if (r < 0) {
		fprintf(stderr, "engine_new: %s: %s\n", strerror(-r), d.msg);
		return 1;
	}
	if (arg_threads > 1 && engine_blas_info(engine)->parallel == 0) {
		fprintf(stderr,
			"the baseline at %u threads needs OpenBLAS's own threads, and %s is its "
			"serial build: install libopenblas-pthread-dev and reconfigure, or use "
			"--threads 1\n",
			arg_threads, engine_blas_info(engine)->library);
		r = -EOPNOTSUPP;
		goto out;
	}
	if (!arg_json)
		print_header(engine);
	/* engines of 1..arg_threads workers for the scaling figures (not in a smoke run) */
	if (!arg_quick) {
		scaling_n = arg_threads < SCALING_MAX ? arg_threads : SCALING_MAX;
		for (uint32_t i = 0; i < scaling_n; i++) {
			eo.n_workers = i + 1;
			r = engine_new(&eo, &scaling_engines[i], &d);
			if (r < 0) {
				fprintf(stderr, "engine_new: %s: %s\n", strerror(-r), d.msg);
				goto out;
			}
		}
	}

	for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
		const struct shape *s = &shapes[si];
		struct bench_layer *bl = NULL;
		double t0;

		if (arg_quick ? strcmp(s->name, "A") != 0 : arg_shape && strcmp(s->name, arg_shape))
			continue;
		t0 = bench_now_s();
		r = bench_layer_new(s, arg_dtype != WEIGHT_F32, &bl);
		if (r < 0) {
			fprintf(stderr, "shape %s: cannot build the layer: %s\n", s->name,
				strerror(-r));
			goto out;
		}
		fprintf(stderr, "# shape %s (%s): %.2f GB of expert weights filled in %.2f s\n",
			s->name, s->tag, bl->weight_bytes / 1e9, bench_now_s() - t0);

		for (size_t ti = 0; ti < sizeof(default_tokens) / sizeof(default_tokens[0]); ti++) {
			uint32_t T = arg_tokens ? arg_tokens : default_tokens[ti];

			if (arg_quick && !arg_tokens && T != 1 && T != 128)
				continue;
			for (int dt = WEIGHT_F32; dt <= WEIGHT_BF16; dt++) {
				if (arg_dtype >= 0 && dt != arg_dtype)
					continue;
				r = run_case(engine, bl, s, (enum weight_dtype)dt, T, target_s,
					     &res[n_res]);
				if (r < 0) {
					fprintf(stderr, "shape %s T=%u: %s\n", s->name, T,
						strerror(-r));
					bench_layer_free(bl);
					goto out;
				}
				fprintf(stderr,
					"# %s %s T=%u: reps/min ms: layer %u/%.3f, grouped %u/%.3f, "
					"read %u/%.3f; other processes used %.2f cores\n",
					s->tag, weight_dtype_name((enum weight_dtype)dt), T,
					res[n_res].layer.reps, res[n_res].layer.min_s * 1e3,
					res[n_res].grouped.reps, res[n_res].grouped.min_s * 1e3,
					res[n_res].read.reps, res[n_res].read.min_s * 1e3,
					res[n_res].background);
				if (!arg_json)
					print_row(res, n_res, &res[n_res]);
				n_res++;
			}
			if (arg_tokens)
				break;
		}
		for (size_t ti = 0; scaling_n > 1 && ti < 2; ti++) {
			uint32_t T = arg_tokens ? arg_tokens : scaling_tokens[ti];

			for (int dt = WEIGHT_F32; dt <= WEIGHT_BF16; dt++) {
				if (arg_dtype >= 0 && dt != arg_dtype)
					continue;
				r = run_scaling(scaling_engines, scaling_n, bl, s,
						(enum weight_dtype)dt, T, target_s,
						&scaling[n_scaling]);
				if (r < 0) {
					bench_layer_free(bl);
					goto out;
				}
				for (uint32_t i = 0; !arg_json && i < scaling_n; i++)
					printf("scaling %-16s %5s T=%-5u %u threads: %10.1f tokens/s, "
					       "scaling %.3f\n",
					       s->tag, weight_dtype_name((enum weight_dtype)dt), T,
					       i + 1, scaling[n_scaling + i].tokens_per_s,
					       scaling[n_scaling + i].scaling);
				n_scaling += scaling_n;
			}
			if (arg_tokens)
				break;
		}
		bench_layer_free(bl);
	}
	if (arg_json)
		print_json(engine, res, n_res, scaling, n_scaling);
	r = 0;
out:
	for (uint32_t i = 0; i < scaling_n; i++)
		engine_free(scaling_engines[i]);
	engine_free(engine);
	free(evict_buf);
	return r < 0 ? 1 : 0;
}
