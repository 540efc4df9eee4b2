/* SPDX-License-Identifier: MIT */
/*
 * bench_replicas: what a replica of a hot expert buys under skewed routing,
 * as a ratio measured in the same run (absolute times drift on a shared
 * machine):
 *
 * - replica_speedup = tokens/s with a replica / tokens/s without, on an
 *   engine whose node workers do not steal (engine_opts.steal = false), so a
 *   hot expert's tiles stay on its node's workers;
 * - replica_speedup_steal = the same with stealing on, the other remedy.
 *
 * One MoE layer (d_model 1024, d_ff 2048, 8 experts, top-2, SiLU-gated) is
 * generated with synth_model_write into a private mkdtemp folder and opened
 * through the expert store (private mkdtemp folder under /dev/shm, keep = no,
 * replica_budget one expert) over a simulated topology of 2 nodes, node i
 * holding the i-th CPU this process may use. The routing is given
 * (ROUTER_GIVEN): every token's first slot is expert 0, its second one of
 * experts 1..7 in turn, so expert 0 receives half of the slots, 4x the mean;
 * the measured share comes from tokens_per_expert.
 *
 * A forward uses the homes of the epoch 1 map (A: no replica) or of the
 * map after expert_store_change(REPLICATE expert 0 to the node without it)
 * and expert_store_changes_wait (B). Both maps stay referenced, so each
 * round runs A B B A on each engine (ABBA cancels a linear drift); a round's
 * ratio is the sum of the A times over the sum of the B times, the figure
 * the median over rounds; the median of the rounds during which other
 * processes used at most QUIET_MAX cores is printed beside it (on 2 CPUs a
 * busy neighbour slows one simulated node, which is exactly the imbalance
 * measured here). Every run's output must be bitwise the first
 * one's (both engines, both maps): otherwise the program exits 1. The
 * caller of engine_forward() is pinned to node 0's CPU, so that the tasks
 * it claims run where their node is. Both folders are removed at exit, also
 * on a fatal signal (not on SIGKILL). Not a test: it prints figures.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "bench_scratch.h"
#include "engine/engine.h"
#include "model/synth_model.h"
#include "numa/topology.h"
#include "store/expert_store.h"
#include "util/cpu_load.h"
#include "util/log.h"
#include "util/parse.h"

#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif

#define MAX_ROUNDS 50
#define D_MODEL 1024
#define D_FF 2048
#define N_EXPERTS 8
#define TOP_K 2
#define HOT 0         /* the hot expert */
#define RUN_S 0.25    /* the length of one timed run (A or B) */
#define QUIET_MAX 0.1 /* a quiet round: other processes used at most this many cores */

static uint32_t arg_rounds = 7;
static uint32_t arg_tokens = 256;
static const char *arg_model_dir = "/var/tmp";
static const char *arg_shm_dir = "/dev/shm";

/* ---- the private folders (bench_scratch.h) ---- */

static char model_dir[PATH_MAX];
static char shm_dir[PATH_MAX];

/* ---- time and statistics ---- */

/* ---- the set-up ---- */

/* The first two CPUs this process may use, as a 2-node topology file's text. */
static int topology_two_nodes(struct topology *t, int *ret_cpu0, struct diag *d)
{
	int cpus[2], n = 0;
	char text[128];
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return diag_set(d, -errno, "sched_getaffinity: %m");
	for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	if (n < 2)
		return diag_set(d, -ENODEV, "2 simulated nodes need 2 CPUs, this process has 1");
	snprintf(text, sizeof(text), "node 0 cpus %d\nnode 1 cpus %d\n", cpus[0], cpus[1]);
	*ret_cpu0 = cpus[0];
	return topology_parse(text, "bench_replicas", t, d);
}

static int model_generate(char *path, size_t len, struct diag *d)
{
	struct synth_opts o;

	if ((size_t)snprintf(path, len, "%s/model.safetensors", model_dir) >= len)
		return diag_set(d, -ENAMETOOLONG, "%s: path too long", model_dir);
	synth_opts_default_model(&o); /* top-2 renormalised, SiLU-gated, 8 experts */
	o.output = path;
	o.d_model = D_MODEL;
	o.d_ff = D_FF;
	o.n_experts = N_EXPERTS;
	o.n_layers = 1;
	o.tokens = 0;
	return synth_model_write(&o, d);
}

/*
 * Token t: slot 0 is the hot expert, slot 1 expert 1 + t % 7; weights that
 * vary per token and sum to 1. The hot expert gets T of 2T slots: 4x the
 * mean of 2T / 8.
 */
static void routing_skewed(uint32_t T, int32_t *ex, float *w)
{
	for (uint32_t t = 0; t < T; t++) {
		float a = 0.5f + 0.4f * (float)(bench_splitmix64(t) >> 40) / (float)(1u << 24);

		ex[2 * t] = HOT;
		ex[2 * t + 1] = 1 + (int32_t)(t % (N_EXPERTS - 1));
		w[2 * t] = a;
		w[2 * t + 1] = 1.0f - a;
	}
}

/* The most tokens a node computes with @m (an expert's split evenly over its copies). */
static double node_load_max(struct expert_map *m, const int32_t *tpe, double *ret_node)
{
	const struct expert_home *h = expert_map_homes(m, 0);
	double worst = 0;

	ret_node[0] = ret_node[1] = 0;
	for (uint32_t e = 0; e < N_EXPERTS; e++)
		for (uint32_t c = 0; c < h[e].n_copies; c++)
			ret_node[h[e].copy[c].node] += (double)tpe[e] / h[e].n_copies;
	for (uint32_t n = 0; n < 2; n++)
		worst = fmax(worst, ret_node[n]);
	return worst;
}

/* ---- the measurement ---- */

struct bench {
	const struct moe_layer *layer;
	struct router_config cfg;   /* the layer's, with ROUTER_GIVEN */
	struct route_given given;
	float *x, *out, *reference; /* [T][d_model] */
	int32_t tpe[N_EXPERTS];
	uint32_t reps;              /* forwards per timed run */
	bool have_reference;
	uint32_t n_runs, n_mismatch;
	struct diag d;
};

/* @n forwards with @m's homes; their seconds to *ret_s; the output checked. */
static int run(struct bench *b, struct engine *e, struct expert_map *m, uint32_t n, double *ret_s)
{
	struct engine_batch eb = { .x = b->x, .n_tokens = arg_tokens, .given = &b->given,
				   .homes = expert_map_homes(m, 0), .output = b->out,
				   .tokens_per_expert = b->tpe };
	const size_t bytes = sizeof(float) * arg_tokens * D_MODEL;
	double t0 = bench_now_s();
	int r;

	for (uint32_t i = 0; i < n; i++) {
		r = engine_forward(e, b->layer, &b->cfg, &eb, &b->d);
		if (r < 0)
			return r;
	}
	*ret_s = bench_now_s() - t0;
	b->n_runs++;
	if (!b->have_reference) {
		memcpy(b->reference, b->out, bytes);
		b->have_reference = true;
	} else if (memcmp(b->reference, b->out, bytes) != 0) {
		b->n_mismatch++;
	}
	return 0;
}

struct figure {
	const char *name;
	bool steal;
	double tps_a, tps_b;        /* medians over runs, tokens/s */
	double ratio, lo, hi;       /* median, min and max over rounds */
	double round_ratio[MAX_ROUNDS];
	double quiet_ratio[MAX_ROUNDS], quiet;  /* of the quiet rounds, and their median */
	uint32_t n_quiet;
	double a_s[2 * MAX_ROUNDS], b_s[2 * MAX_ROUNDS];
};

static int measure_round(struct bench *b, struct engine *e, struct expert_map *ma,
			 struct expert_map *mb, uint32_t round, struct figure *f)
{
	double *a = &f->a_s[2 * round], *bb = &f->b_s[2 * round];
	struct cpu_load_mark load;
	double bg;
	int r;

	cpu_load_mark_take(&load);
	r = run(b, e, ma, b->reps, &a[0]);
	if (r == 0)
		r = run(b, e, mb, b->reps, &bb[0]);
	if (r == 0)
		r = run(b, e, mb, b->reps, &bb[1]);
	if (r == 0)
		r = run(b, e, ma, b->reps, &a[1]);
	if (r < 0)
		return r;
	f->round_ratio[round] = (a[0] + a[1]) / (bb[0] + bb[1]);
	bg = cpu_load_others(&load);
	if (bg >= 0 && bg <= QUIET_MAX)
		f->quiet_ratio[f->n_quiet++] = f->round_ratio[round];
	fprintf(stderr, "# round %u steal=%s: A %.1f + %.1f ms, B %.1f + %.1f ms per forward: "
		"%.3f; other processes %.2f cores\n",
		round, f->steal ? "on" : "off", a[0] * 1e3 / b->reps, a[1] * 1e3 / b->reps,
		bb[0] * 1e3 / b->reps, bb[1] * 1e3 / b->reps, f->round_ratio[round], bg);
	return 0;
}

static void figure_finish(struct figure *f, uint32_t reps)
{
	const uint32_t R = arg_rounds;
	const double tok = (double)arg_tokens * reps;

	f->ratio = bench_median(f->round_ratio, R);
	f->lo = f->hi = f->round_ratio[0];
	for (uint32_t i = 1; i < R; i++) {
		f->lo = fmin(f->lo, f->round_ratio[i]);
		f->hi = fmax(f->hi, f->round_ratio[i]);
	}
	f->tps_a = tok / bench_median(f->a_s, 2 * R);
	f->tps_b = tok / bench_median(f->b_s, 2 * R);
	f->quiet = f->n_quiet ? bench_median(f->quiet_ratio, f->n_quiet) : NAN;
}

/* ---- the program ---- */

static void usage(FILE *out)
{
	fprintf(out, "usage: bench_replicas [--rounds N] [--tokens T] [--model-dir DIR] "
		     "[--shm-dir DIR]\n"
		     "  --rounds N      ABBA rounds per figure (default 7, at most %d)\n"
		     "  --tokens T      tokens per forward (default 256)\n"
		     "  --model-dir DIR the generated model's private folder goes here (/var/tmp)\n"
		     "  --shm-dir DIR   the store's private folder goes here (/dev/shm)\n",
		MAX_ROUNDS);
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "rounds", required_argument, NULL, 'r' },
		{ "tokens", required_argument, NULL, 't' },
		{ "model-dir", required_argument, NULL, 'm' },
		{ "shm-dir", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "r:t:m:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
		case 't':
			if (parse_u32(optarg, 1, c == 'r' ? MAX_ROUNDS : 65536,
				      c == 'r' ? &arg_rounds : &arg_tokens) < 0) {
				fprintf(stderr, "--%s: out of range: '%s'\n",
					c == 'r' ? "rounds" : "tokens", optarg);
				return -EINVAL;
			}
			break;
		case 'm':
			arg_model_dir = optarg;
			break;
		case 's':
			arg_shm_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	return optind < argc ? -EINVAL : 0;
}

int main(int argc, char **argv)
{
	static struct topology topo; /* large; the store and engines keep a pointer */
	static struct bench b;
	struct figure figs[2] = { { .name = "replica_speedup", .steal = false },
				  { .name = "replica_speedup_steal", .steal = true } };
	struct expert_store_opts so = { .name = "bench", .keep = false, .topo = &topo,
					.policy = PLACEMENT_BALANCED };
	struct engine *engines[2] = { NULL, NULL };
	struct expert_map *ma = NULL, *mb = NULL;
	struct expert_store *store = NULL;
	char model_path[PATH_MAX];
	struct cpu_load_mark load_all;
	double load_a[2], load_b[2], t1;
	uint32_t hot_node, other;
	int64_t tpe_sum = 0;
	int cpu0 = 0, r;
	cpu_set_t pin;

	if (parse_args(argc, argv) < 0)
		return 2;
	log_set_program("bench_replicas");
	log_set_max_level(LOG_LEVEL_WARNING);
	r = topology_two_nodes(&topo, &cpu0, &b.d);
	if (r == 0)
		r = bench_scratch_dir(arg_model_dir, "bench_replicas", model_dir, sizeof(model_dir));
	if (r == 0)
		r = bench_scratch_dir(arg_shm_dir, "bench_replicas", shm_dir, sizeof(shm_dir));
	if (r == 0)
		r = model_generate(model_path, sizeof(model_path), &b.d);
	if (r < 0)
		goto fail;

	/* one expert's copy: w1, w2, w3 and the biases, page-rounded, plus a page */
	so.replica_budget = ((3ull * D_FF * D_MODEL + D_FF + D_MODEL) * 4 + 2 * 4096) & ~4095ull;
	so.dir = shm_dir;
	r = expert_store_open(model_path, &so, &store, &b.d);
	if (r < 0)
		goto fail;
	for (uint32_t i = 0; i < 2 && r >= 0; i++) {
		struct engine_opts eo;

		engine_opts_init(&eo);
		eo.topo = &topo;
		eo.steal = figs[i].steal;
		r = engine_new(&eo, &engines[i], &b.d);
	}
	if (r < 0)
		goto fail;
	/* the caller claims its CPU's node's tasks: keep it on node 0's CPU */
	CPU_ZERO(&pin);
	CPU_SET(cpu0, &pin);
	(void)pthread_setaffinity_np(pthread_self(), sizeof(pin), &pin);

	b.layer = moe_model_layer(expert_store_model(store), 0);
	b.cfg = b.layer->router;
	b.cfg.kind = ROUTER_GIVEN;
	b.cfg.capacity_factor = 0; /* dropless */
	b.x = malloc(sizeof(float) * arg_tokens * D_MODEL);
	b.out = malloc(sizeof(float) * arg_tokens * D_MODEL);
	b.reference = malloc(sizeof(float) * arg_tokens * D_MODEL);
	b.given.expert = malloc(sizeof(int32_t) * arg_tokens * TOP_K);
	b.given.weight = malloc(sizeof(float) * arg_tokens * TOP_K);
	if (!b.x || !b.out || !b.reference || !b.given.expert || !b.given.weight) {
		r = diag_set(&b.d, -ENOMEM, "out of memory");
		goto fail;
	}
	bench_fill_normal(b.x, (size_t)arg_tokens * D_MODEL, 42);
	routing_skewed(arg_tokens, (int32_t *)(uintptr_t)b.given.expert,
		       (float *)(uintptr_t)b.given.weight);

	/* A: the loaded map; B: the hot expert replicated to the other node */
	ma = expert_store_map_get(store);
	hot_node = expert_map_placement(ma)->layers[0].experts[HOT].node[0];
	other = 1 - hot_node;
	r = (int)expert_store_change(store,
				     &(struct expert_change){ .op = EXPERT_REPLICATE, .layer = 0,
							      .expert = HOT, .node = other },
				     &b.d);
	if (r < 0)
		goto fail;
	expert_store_changes_wait(store);
	mb = expert_store_map_get(store);
	if (expert_map_epoch(mb) != 2 || expert_map_homes(mb, 0)[HOT].n_copies != 2) {
		r = diag_set(&b.d, -EPROTO, "the replica was not published (epoch %llu)",
			     (unsigned long long)expert_map_epoch(mb));
		goto fail;
	}

	/* warm-up (the replica's first touch), and how many forwards make a run */
	b.reps = 1;
	for (uint32_t i = 0; i < 4 && r >= 0; i++)
		r = run(&b, engines[i / 2], i % 2 ? mb : ma, 2, &t1);
	if (r == 0)
		r = run(&b, engines[0], ma, 2, &t1);
	if (r < 0)
		goto fail;
	b.reps = (uint32_t)fmax(2, ceil(RUN_S / (t1 / 2)));

	for (uint32_t e = 0; e < N_EXPERTS; e++)
		tpe_sum += b.tpe[e];
	node_load_max(ma, b.tpe, load_a);
	node_load_max(mb, b.tpe, load_b);
	printf("moed replica benchmark (%s build): 2 simulated nodes (CPUs %d and next), "
	       "%u tokens x top-%u over %u experts of %ux%u (F32), routing given\n",
	       MOE_BUILD_TYPE, cpu0, arg_tokens, TOP_K, N_EXPERTS, D_MODEL, D_FF);
	printf("hot expert %u on node %u: %d of %lld slots (share %.3f, %.2fx the mean); "
	       "replica on node %u\n",
	       HOT, hot_node, b.tpe[HOT], (long long)tpe_sum, (double)b.tpe[HOT] / tpe_sum,
	       (double)b.tpe[HOT] * N_EXPERTS / tpe_sum, other);
	printf("tokens per node: A %.0f / %.0f, B %.0f / %.0f (copies split an expert's "
	       "tiles): bound %.3f without stealing\n",
	       load_a[0], load_a[1], load_b[0], load_b[1],
	       fmax(load_a[0], load_a[1]) / fmax(load_b[0], load_b[1]));
	printf("ratio = tokens/s(B: replica) / tokens/s(A: none); median over %u ABBA rounds "
	       "of %u forwards per run;\nquiet rounds: how many had other processes at <= %.1f "
	       "cores, and their median\n\n",
	       arg_rounds, b.reps, QUIET_MAX);
	fflush(stdout);

	cpu_load_mark_take(&load_all);
	for (uint32_t round = 0; round < arg_rounds; round++)
		for (uint32_t i = 0; i < 2; i++) {
			r = measure_round(&b, engines[i], ma, mb, round, &figs[i]);
			if (r < 0)
				goto fail;
		}
	printf("%-22s %-6s %12s %12s %8s %15s %14s\n", "figure", "steal", "A tok/s", "B tok/s",
	       "ratio", "min..max", "quiet rounds");
	for (uint32_t i = 0; i < 2; i++) {
		char range[40];

		figure_finish(&figs[i], b.reps);
		snprintf(range, sizeof(range), "%.3f..%.3f", figs[i].lo, figs[i].hi);
		printf("%-22s %-6s %12.0f %12.0f %8.3f %15s %4u: %7.3f\n", figs[i].name,
		       figs[i].steal ? "on" : "off", figs[i].tps_a, figs[i].tps_b, figs[i].ratio,
		       range, figs[i].n_quiet, figs[i].quiet);
	}
	printf("steal_vs_none (A steal on / A steal off, medians of the same rounds): %.3f\n",
	       figs[1].tps_a / figs[0].tps_a);
	printf("outputs bitwise equal (A and B, both engines, %u runs): %s\n",
	       b.n_runs, b.n_mismatch ? "NO" : "yes");
	printf("other processes used %.2f cores meanwhile (of 2: the figures need about 0)\n",
	       cpu_load_others(&load_all));
	r = b.n_mismatch ? diag_set(&b.d, -EPROTO, "%u runs differ from the first output",
				    b.n_mismatch)
			 : 0;
fail:
	if (r < 0)
		fprintf(stderr, "bench_replicas: %s (%s)\n", b.d.msg, strerror(-r));
	expert_map_put(mb);
	expert_map_put(ma);
	for (uint32_t i = 0; i < 2; i++)
		engine_free(engines[i]);
	expert_store_close(store);
	free(b.x);
	free(b.out);
	free(b.reference);
	free((void *)(uintptr_t)b.given.expert);
	free((void *)(uintptr_t)b.given.weight);
	bench_scratch_remove();
	return r < 0 ? 1 : 0;
}
