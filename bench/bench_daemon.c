/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon: what serving a layer through moed costs over running it in
 * the caller's process, each figure against a baseline measured in the same
 * run. The benchmark starts its own moed (--moed, default the one built
 * beside it) on a socket in a temporary folder, with models it generates
 * there (synth_model) and deletes at the end:
 *
 *  1. Round trip, sleeping waits. One client, T = 1 batches of a tiny model
 *     (E4 k2 d64 ff128), moe_forward with spin_ns = 0 and moed at
 *     poll_us = 0, so both sides sleep on futexes. overhead = round trip -
 *     the same batch's engine_forward() in this process (2 workers, as moed);
 *     baseline: a raw futex ping-pong between two processes.
 *     overhead_vs_futex = overhead / ping-pong (target <= 1.3). The same with
 *     moed's default poll_us is printed for information, and so is the
 *     round trip with the placement fixed (moed with 1 worker pinned to one
 *     CPU, the client on that CPU, then on another, each against the
 *     ping-pong placed alike): unpinned, both moed and the ping-pong switch
 *     between a same-CPU and a cross-CPU mode of very different cost.
 *  2. Round trip, busy polling: spin_ns = 1 s, moed at poll_us = 1 ms, in
 *     blocks that alternate with the baselines' (moed asleep between them).
 *     With 2 CPUs a spinning client and a spinning reactor take both, so
 *     moed runs 1 worker and the in-process engine too; a run of this tiny
 *     model computes on the reactor thread (inline_run_bytes), as handing it
 *     to a runner would cost two context switches that two CPUs cannot
 *     hide. Baseline: a spinning ping-pong between two processes (no
 *     system call). overhead_vs_spin (target <= 2). With it, for
 *     information, the ring alone (bench_daemon_ring.c: shm_ring as libmoe
 *     and moed drive it, between two spinning processes, no reactor, runner
 *     or engine) against the same ping-pong: ring_vs_spin.
 *  3. Throughput at T = 512 on bench_engine's shapes (E8 k2 d1024 ff3584 and
 *     E64 k6 d2048 ff1408; --quick: the first): tokens/s through moed (one
 *     client, sleeping waits, 2 workers) over tokens/s of engine_forward()
 *     in this process with 2 workers, in short blocks in ABBA order: the
 *     embedded engine runs while moed sleeps, moed runs while this process's
 *     engine is freed. throughput_vs_embedded (target >= 0.95; the lowest
 *     shape's).
 *  4. Cross-client merging: 4 client processes, each moe_forward() of T = 16
 *     batches of layer 0 of the first shape in a closed loop for a fixed
 *     time, total tokens/s with merge_window_us = 2000 over
 *     merge_window_us = 0 (moed restarted between them), in ABBA rounds.
 *     merge_speedup, the median of the rounds' ratios (expected >= 1.5).
 *  5. Head-of-line blocking: one client process streams T = 1024 batches of
 *     the first shape (3 in flight, MOE_REQ_NO_MERGE) while this process
 *     submits T = 1 batches one at a time, 1 ms apart, and times each
 *     (bench_daemon_victim.c). victim_latency_ratio = p99 of those over the
 *     median time of one T = 1024 batch through the same moed alone
 *     (target <= 1.5).
 *
 * With section 1 goes a harness that times the reactor's hand-off of a run
 * to moed's executor on the executor itself, in this process, with a run
 * that computes nothing (bench_daemon_handoff.c): handoff_us, a part of
 * section 1's overhead isolated, not a figure measured through moed. It is
 * the figure with the runner asleep: a runner spins 50 us after a run
 * (executor.c), and between two runs of a sleeping round trip lie three
 * wake-ups (reactor, client, reactor), more than that on most machines; the
 * figure with the runner still spinning is printed too.
 *
 * Figures are medians of per-batch times (the T = 512 throughput too; the
 * merge runs count the tokens completed in a fixed time), so a few disturbed
 * batches on a shared machine move them little; each phase also reports how
 * many cores other processes used meanwhile, the first thing to look at
 * when a figure is off. Not a test: it
 * prints figures and never fails on them (exit status 1 only when something
 * could not run).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "bench_daemon_handoff.h"
#include "bench_daemon_proc.h"
#include "bench_daemon_ring.h"
#include "bench_daemon_victim.h"
#include "engine/engine.h"
#include "model/model.h"
#include "model/synth_model.h"
#include "util/cpu_load.h"
#include "moe.h"

#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif
#ifndef MOED_BINARY_PATH
#define MOED_BINARY_PATH "moed"
#endif

#define TARGET_VS_FUTEX 1.3
#define TARGET_VS_SPIN 2.0
#define TARGET_VS_EMBEDDED 0.95
#define TARGET_MERGE 1.5
#define TARGET_VICTIM 1.5

#define THROUGHPUT_TOKENS 512
/*
 * Untimed batches a new engine needs before its batches cost what they will
 * in steady serving: the first overflows the scratch into mallocs, the
 * second runs in the freshly grown (untouched, so page-faulting) main block,
 * the third allocates and faults nothing (util/scratch.h). At T = 512 of
 * shape B the second batch's faults cost ~10%: timed, they would flatter moed.
 */
#define ENGINE_SETTLE_BATCHES 2
#define MERGE_CLIENTS 4
#define MERGE_TOKENS 16
#define MERGE_WINDOW_ON "merge_window_us=2000"
#define MERGE_WINDOW_OFF "merge_window_us=0"
#define SPIN_NS_BUSY 1000000000ull /* client spin in busy-poll mode: 1 s */
#define VICTIM_BIG_TOKENS 1024

struct shape {
	const char *name; /* --shape */
	const char *tag;  /* E<experts>k<top_k>d<d_model>f<d_ff>, as bench_engine prints */
	uint32_t n_experts, top_k, d_model, d_ff;
	bool normalize;
};

static const struct shape shape_tiny = { "tiny", "E4k2d64f128", 4, 2, 64, 128, true };

/* bench_engine.c's shapes */
static const struct shape shapes[] = {
	{ "A", "E8k2d1024f3584", 8, 2, 1024, 3584, true },
	{ "B", "E64k6d2048f1408", 64, 6, 2048, 1408, false },
};
#define N_SHAPES (sizeof(shapes) / sizeof(shapes[0]))

static bool arg_json;
static bool arg_quick;
static bool arg_spin_only; /* section 2 alone, at full size */
static const char *arg_moed = MOED_BINARY_PATH;
static const char *arg_shape; /* NULL: all (--quick: A) */

/* Sizes of the measurements; --quick shrinks them. */
static uint32_t lat_rounds = 5, lat_iters = 4000, lat_warmup = 1000;
static uint32_t tp_rounds = 6;
static double tp_seconds = 3.0; /* per side and shape */
static double merge_seconds = 3.0;
static double victim_seconds = 10.0;
static uint32_t victim_alone_reps = 8, victim_alone_n = 500;
static uint32_t handoff_n = 20000, handoff_asleep_n = 2000;

/* ---- the temporary folder, removed on every way out ---- */

#define MAX_TMP_FILES 16
static char tmp_dir[PATH_MAX / 2]; /* room for file names under it */
static char tmp_files[MAX_TMP_FILES][PATH_MAX];
static volatile sig_atomic_t n_tmp_files;

/* The path of @name in tmp_dir, remembered for removal on a stop signal. */
static const char *tmp_file_register(const char *name)
{
	unsigned i = (unsigned)n_tmp_files;

	if (i >= MAX_TMP_FILES)
		abort(); /* a programming error: raise MAX_TMP_FILES */
	snprintf(tmp_files[i], sizeof(tmp_files[i]), "%s/%s", tmp_dir, name);
	n_tmp_files = (sig_atomic_t)(i + 1);
	return tmp_files[i];
}

static int tmp_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0 && errno != ENOENT)
		fprintf(stderr, "cannot remove %s: %s, ignoring\n", path, strerror(errno));
	return 0;
}

static void tmp_dir_remove(void)
{
	if (!tmp_dir[0])
		return;
	(void)nftw(tmp_dir, tmp_remove_one, 16, FTW_DEPTH | FTW_PHYS);
	tmp_dir[0] = '\0';
}

/*
 * SIGINT/SIGTERM/SIGHUP: stop moed and delete the (multi-GB) models and the
 * folder. Async-signal-safe calls only: every name was registered before.
 */
static void on_stop_signal(int sig)
{
	pid_t pid = daemon_proc_current;

	if (pid > 0)
		kill(pid, SIGKILL);
	for (int i = 0; i < n_tmp_files; i++)
		unlink(tmp_files[i]);
	rmdir(tmp_dir);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- CPU accounting: how much of the machine others took ---- */

struct cpu_mark {
	double busy, ours, wall; /* ours: this process and its reaped children */
};

static void cpu_mark_take(struct cpu_mark *m)
{
	m->busy = cpu_machine_busy_s();
	m->ours = cpu_rusage_s(RUSAGE_SELF) + cpu_rusage_s(RUSAGE_CHILDREN);
	m->wall = 1e-9 * (double)bench_now_ns();
}

/*
 * Cores other processes used on average since @m; < 0 when unknown. Exact
 * only when every moed and helper process started after @m has been reaped
 * (their CPU time then counts as ours).
 */
static double cpu_background(const struct cpu_mark *m)
{
	struct cpu_mark now;

	cpu_mark_take(&now);
	if (m->busy < 0 || now.busy < 0 || now.wall <= m->wall)
		return -1;
	return fmax(0.0, ((now.busy - m->busy) - (now.ours - m->ours)) / (now.wall - m->wall));
}

/* A one-layer model of @s in moed's own layout, F32, as moed and the engine both read it. */
static int model_generate(const struct shape *s, const char *path)
{
	struct synth_opts o;
	struct diag d = { { 0 } };
	char top_k[32];
	double t0 = 1e-9 * (double)bench_now_ns();
	int fd, r;

	synth_opts_init(&o);
	o.output = path;
	o.layout = LAYOUT_MOED;
	o.dtype = ST_F32;
	o.d_model = s->d_model;
	o.d_ff = s->d_ff;
	o.n_experts = s->n_experts;
	o.n_layers = 1;
	o.tokens = 0; /* no input tensor: the benchmark makes its own */
	snprintf(top_k, sizeof(top_k), "top_k=%u", s->top_k);
	o.settings[o.n_settings++] = "router=topk";
	o.settings[o.n_settings++] = top_k;
	o.settings[o.n_settings++] = "activation=silu_gated";
	o.settings[o.n_settings++] = s->normalize ? "normalize=true" : "normalize=false";
	o.settings[o.n_settings++] = "capacity_factor=0"; /* dropless: batches may merge */
	r = synth_model_write(&o, &d);
	if (r < 0) {
		fprintf(stderr, "cannot generate the %s model at %s: %s (%s)\n", s->tag, path, d.msg,
			strerror(-r));
		return r;
	}
	/*
	 * Write it out now: left to the kernel, the writeback of a 2 GB file
	 * runs for seconds in kernel threads, during the measurements.
	 */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		fprintf(stderr, "cannot fsync %s: %s, ignoring\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	fprintf(stderr, "# model %s: %.2f GB of expert weights generated in %.1f s\n", s->tag,
		4.0 * 3 * s->n_experts * s->d_model * s->d_ff / 1e9,
		1e-9 * (double)bench_now_ns() - t0);
	return 0;
}

static int model_open(const char *path, struct moe_model **ret_model)
{
	struct diag d = { { 0 } };
	int r = moe_model_open(path, NULL, 0, ret_model, &d);

	if (r < 0)
		fprintf(stderr, "moe_model_open %s: %s (%s)\n", path, d.msg, strerror(-r));
	return r;
}

/* ---- the two sides under measurement ---- */

/*
 * engine_forward() of @T rows of @x on a new engine of @workers workers:
 * @warmup untimed runs (the scratch grows to its high-water mark, as in
 * steady serving), then @n timed ones into @samples_ns. The engine is freed
 * before returning, so it never competes with moed.
 */
static int engine_block(const struct moe_layer *L, uint32_t workers, const float *x, uint32_t T,
			float *y, uint32_t warmup, uint32_t n, double *samples_ns)
{
	struct engine_opts eo;
	struct engine *e = NULL;
	struct diag d = { { 0 } };
	int r;

	engine_opts_init(&eo);
	eo.n_workers = workers;
	r = engine_new(&eo, &e, &d);
	if (r < 0) {
		fprintf(stderr, "engine_new: %s (%s)\n", d.msg, strerror(-r));
		return r;
	}
	for (uint32_t i = 0; i < warmup + n; i++) {
		struct engine_batch b = { .x = x, .n_tokens = T, .output = y };
		uint64_t t0 = bench_now_ns();

		r = engine_forward(e, L, NULL, &b, &d);
		if (r < 0) {
			fprintf(stderr, "engine_forward: %s (%s)\n", d.msg, strerror(-r));
			break;
		}
		if (i >= warmup)
			samples_ns[i - warmup] = (double)(bench_now_ns() - t0);
	}
	engine_free(e);
	return r < 0 ? r : 0;
}

/* One client of moed with its input and output buffers. */
struct client {
	struct moe_client *c;
	float *x, *y; /* arena: [T][d_model] */
	struct moe_request rq;
};

static void client_close(struct client *cl)
{
	moe_close(cl->c);
	*cl = (struct client){ 0 };
}

/* Connect to @socket_path, allocate T-row buffers and fill the input from @x. */
static int client_open(const char *socket_path, uint64_t spin_ns, uint32_t d_model, uint32_t T,
		       const float *x, struct client *ret_client)
{
	struct moe_client_opts o;
	struct client cl = { 0 };
	const size_t bytes = sizeof(float) * (size_t)T * d_model;
	int r;

	moe_client_opts_init(&o);
	o.socket_path = socket_path;
	o.name = "bench_daemon";
	o.spin_ns = spin_ns;
	if (o.arena_size < 4 * bytes)
		o.arena_size = 4 * bytes;
	r = moe_connect(&o, &cl.c);
	if (r < 0) {
		fprintf(stderr, "moe_connect %s: %s\n", socket_path, moe_strerror(r));
		return r;
	}
	r = moe_buf_alloc(cl.c, bytes, (void **)&cl.x);
	if (r >= 0)
		r = moe_buf_alloc(cl.c, bytes, (void **)&cl.y);
	if (r < 0) {
		fprintf(stderr, "moe_buf_alloc: %s\n", moe_strerror(r));
		moe_close(cl.c);
		return r;
	}
	memcpy(cl.x, x, bytes);
	moe_request_init(&cl.rq);
	cl.rq.layer = 0;
	cl.rq.n_tokens = T;
	cl.rq.input = cl.x;
	cl.rq.output = cl.y;
	*ret_client = cl;
	return 0;
}

static int client_forward(struct client *cl)
{
	struct moe_completion done;
	int r = moe_forward(cl->c, &cl->rq, &done);

	if (r < 0) {
		fprintf(stderr, "moe_forward: %s\n", moe_strerror(r));
		return r;
	}
	if (done.status < 0) {
		fprintf(stderr, "moed failed the batch: %s\n", moe_strerror(done.status));
		return done.status;
	}
	return 0;
}

/* @warmup untimed, then @n timed moe_forward() round trips into @samples_ns. */
static int daemon_block(struct client *cl, uint32_t warmup, uint32_t n, double *samples_ns)
{
	for (uint32_t i = 0; i < warmup + n; i++) {
		uint64_t t0 = bench_now_ns();
		int r = client_forward(cl);

		if (r < 0)
			return r;
		if (i >= warmup)
			samples_ns[i - warmup] = (double)(bench_now_ns() - t0);
	}
	return 0;
}

/* moed's result against the engine's in this process: the same code on the same weights. */
static double max_abs_diff(const float *a, const float *b, size_t n)
{
	double m = 0;

	for (size_t i = 0; i < n; i++)
		m = fmax(m, fabs((double)a[i] - (double)b[i]));
	return m;
}

/* ---- results ---- */

struct tp_result {
	const struct shape *shape;
	uint32_t blocks, batches_per_block;
	struct sample_stats daemon, embedded; /* per batch */
	double daemon_tps, embedded_tps, ratio;
	double max_diff;
	double background;
	unsigned long daemon_rss_kb, daemon_pmd_kb, embedded_rss_kb, embedded_pmd_kb;
};

struct results {
	/* 1. sleeping waits */
	struct sample_stats futex, engine2, rt_sleep, rt_default;
	double overhead_sleep_us, vs_futex, overhead_default_us, default_vs_futex;
	uint32_t default_poll_us;
	double background_sleep;
	double t1_max_diff;
	/* 1, placement-controlled: [0] client and moed on one CPU, [1] on two */
	bool have_placed;
	int cpu_moed, cpu_other;
	struct sample_stats placed_futex[2], placed_engine[2], placed_rt[2];
	double placed_overhead_us[2], placed_vs_futex[2];
	double background_placed;
	/* 2. busy polling */
	struct sample_stats spin, engine1, rt_spin, ring;
	double overhead_spin_us, vs_spin, ring_vs_spin;
	double background_spin;
	/* 3. throughput */
	struct tp_result tp[N_SHAPES];
	uint32_t n_tp;
	double vs_embedded; /* the lowest shape's */
	/* 4. merging */
	double merge_on_tps, merge_off_tps, merge_speedup;
	uint64_t merged_batches, merged_in_window, batches_on, engine_runs_on, engine_runs_off;
	uint64_t batches_off;
	double background_merge;
	bool have_merge;
	/* 5. a small client beside a streaming one */
	struct victim_result victim;
	double background_victim;
	bool have_victim;
	/* the hand-off harness */
	struct handoff_result handoff;
	double background_handoff;
	bool have_handoff;
};

/* ---- 1 and 2: round trips ---- */

/*
 * lat_rounds rounds of: the futex ping-pong, the embedded engine, moed; each
 * lat_iters timed samples after lat_warmup. Interleaved so that a
 * disturbance of the shared machine lands on all three alike. Then moed
 * again with its default poll_us, for information.
 */
static int latency_sleeping(const char *model_path, const struct moe_layer *L, const float *x,
			    float *y_embedded, struct results *res)
{
	static const char *const sets[] = { "workers=2", "poll_us=0" };
	static const char *const sets_default[] = { "workers=2" };
	const uint32_t total = lat_rounds * lat_iters;
	double *futex = NULL, *eng = NULL, *rt = NULL;
	struct daemon_proc dp = { 0 };
	struct client cl = { 0 };
	struct cpu_mark mark;
	char *json = NULL;
	int r = -ENOMEM;

	futex = calloc(total, sizeof(double));
	eng = calloc(total, sizeof(double));
	rt = calloc(total, sizeof(double));
	if (!futex || !eng || !rt)
		goto out;

	cpu_mark_take(&mark);
	fprintf(stderr, "# 1. round trips, sleeping waits: %u rounds of %u\n", lat_rounds,
		lat_iters);
	r = daemon_proc_start(arg_moed, tmp_dir, model_path, sets, 2, -1, &dp);
	if (r < 0)
		goto out;
	r = client_open(dp.socket, 0, L->d_model, 1, x, &cl);
	if (r < 0)
		goto out;
	/* one batch each way first: the figures mean nothing if the results differ */
	r = engine_block(L, 2, x, 1, y_embedded, 1, 0, NULL);
	if (r >= 0)
		r = client_forward(&cl);
	if (r < 0)
		goto out;
	res->t1_max_diff = max_abs_diff(cl.y, y_embedded, L->d_model);
	for (uint32_t i = 0; i < lat_rounds; i++) {
		r = pingpong_futex_run(-1, -1, lat_warmup, lat_iters, futex + (size_t)i * lat_iters);
		if (r < 0) {
			fprintf(stderr, "futex ping-pong: %s\n", strerror(-r));
			goto out;
		}
		r = engine_block(L, 2, x, 1, y_embedded, lat_warmup, lat_iters,
				 eng + (size_t)i * lat_iters);
		if (r < 0)
			goto out;
		r = daemon_block(&cl, lat_warmup, lat_iters, rt + (size_t)i * lat_iters);
		if (r < 0)
			goto out;
	}
	client_close(&cl);
	daemon_proc_stop(&dp);
	samples_summarize(futex, total, &res->futex);
	samples_summarize(eng, total, &res->engine2);
	samples_summarize(rt, total, &res->rt_sleep);

	/* for information: moed's default adaptive polling, a client as before */
	r = daemon_proc_start(arg_moed, tmp_dir, model_path, sets_default, 1, -1, &dp);
	if (r < 0)
		goto out;
	if (moe_daemon_status(dp.socket, &json) == 0) {
		json_t *root = json_loads(json, 0, NULL);

		res->default_poll_us = (uint32_t)json_integer_value(
			json_object_get(json_object_get(root, "daemon"), "poll_us"));
		json_decref(root);
		free(json);
	}
	r = client_open(dp.socket, 0, L->d_model, 1, x, &cl);
	if (r < 0)
		goto out;
	for (uint32_t i = 0; i < lat_rounds; i++) {
		r = daemon_block(&cl, lat_warmup, lat_iters, rt + (size_t)i * lat_iters);
		if (r < 0)
			goto out;
	}
	client_close(&cl);
	daemon_proc_stop(&dp);
	samples_summarize(rt, total, &res->rt_default);
	res->background_sleep = cpu_background(&mark);

	res->overhead_sleep_us = res->rt_sleep.median_us - res->engine2.median_us;
	res->vs_futex = res->overhead_sleep_us / res->futex.median_us;
	res->overhead_default_us = res->rt_default.median_us - res->engine2.median_us;
	res->default_vs_futex = res->overhead_default_us / res->futex.median_us;
	r = 0;
out:
	client_close(&cl);
	daemon_proc_stop(&dp);
	free(futex);
	free(eng);
	free(rt);
	return r;
}

/*
 * The sleeping round trip with the placement fixed. Unpinned, a sleeping
 * round trip runs in one of two modes, and may flip between them: the client
 * and moed's reactor take turns on one CPU (a context switch each way), or
 * each wakes the other on another CPU (an inter-processor wake-up, dearer
 * in a VM), and the ping-pong baseline has the same two modes. Here moed
 * runs 1 worker on CPU a (one thread, so that pinning it cannot starve a
 * worker) and the client and the in-process engine on CPU a, then on CPU b,
 * each against the ping-pong in the same placement.
 */
static int latency_placed(const char *model_path, const struct moe_layer *L, const float *x,
			  float *y_embedded, struct results *res)
{
	static const char *const sets[] = { "workers=1", "poll_us=0" };
	const uint32_t total = lat_rounds * lat_iters;
	double *futex = NULL, *eng = NULL, *rt = NULL;
	struct daemon_proc dp = { 0 };
	struct client cl = { 0 };
	struct cpu_mark mark;
	int r;

	r = cpu_pick_two(&res->cpu_moed, &res->cpu_other);
	if (r < 0) {
		fprintf(stderr, "# 1. placement-controlled round trips skipped: one CPU allowed\n");
		return 0;
	}
	r = -ENOMEM;
	futex = calloc(total, sizeof(double));
	eng = calloc(total, sizeof(double));
	rt = calloc(total, sizeof(double));
	if (!futex || !eng || !rt)
		goto out;
	cpu_mark_take(&mark);
	fprintf(stderr, "# 1. placement-controlled round trips: moed on CPU %d, client on CPU %d "
			"then %d\n", res->cpu_moed, res->cpu_moed, res->cpu_other);
	for (int k = 0; k < 2; k++) {
		const int cpu_client = k ? res->cpu_other : res->cpu_moed;

		r = daemon_proc_start(arg_moed, tmp_dir, model_path, sets, 2, res->cpu_moed, &dp);
		if (r < 0)
			goto out;
		r = client_open(dp.socket, 0, L->d_model, 1, x, &cl);
		if (r < 0)
			goto out;
		for (uint32_t i = 0; i < lat_rounds; i++) {
			const size_t off = (size_t)i * lat_iters;
			cpu_set_t old;

			r = pingpong_futex_run(cpu_client, res->cpu_moed, lat_warmup, lat_iters,
					       futex + off);
			if (r < 0) {
				fprintf(stderr, "futex ping-pong: %s\n", strerror(-r));
				goto out;
			}
			r = cpu_pin(cpu_client, &old);
			if (r < 0)
				goto out;
			r = engine_block(L, 1, x, 1, y_embedded, lat_warmup, lat_iters, eng + off);
			if (r >= 0)
				r = daemon_block(&cl, lat_warmup, lat_iters, rt + off);
			cpu_pin_restore(&old);
			if (r < 0)
				goto out;
		}
		client_close(&cl);
		daemon_proc_stop(&dp);
		samples_summarize(futex, total, &res->placed_futex[k]);
		samples_summarize(eng, total, &res->placed_engine[k]);
		samples_summarize(rt, total, &res->placed_rt[k]);
		res->placed_overhead_us[k] = res->placed_rt[k].median_us -
					     res->placed_engine[k].median_us;
		res->placed_vs_futex[k] = res->placed_overhead_us[k] /
					  res->placed_futex[k].median_us;
	}
	res->background_placed = cpu_background(&mark);
	res->have_placed = true;
	r = 0;
out:
	client_close(&cl);
	daemon_proc_stop(&dp);
	free(futex);
	free(eng);
	free(rt);
	return r;
}

/*
 * Busy polling, in alternating blocks: moed's round trips, then (moed
 * asleep) the baselines and the in-process engine, lat_rounds * 2 times.
 * The overhead is a difference of two medians of similar size (the engine
 * is most of a round trip), so both must see the same machine: measured
 * minutes apart, a drift of a few percent in the engine's time moved the
 * figure by half. moed polls for poll_us = 1 ms after its last batch, always
 * within a block, and sleeps between blocks (BLOCK_GAP_US), so that the
 * baselines have both CPUs; the first round trips of a block, which wake it,
 * are the block's untimed warm-up.
 */
#define SPIN_POLL_SET "poll_us=1000"
#define BLOCK_GAP_US 5000

static int latency_spinning(const char *model_path, const struct moe_layer *L, const float *x,
			    float *y_embedded, struct results *res)
{
	static const char *const sets[] = { "workers=1", SPIN_POLL_SET };
	const uint32_t blocks = lat_rounds * 2, per_block = lat_iters / 2;
	const uint32_t total = blocks * per_block, warmup = lat_warmup / 4;
	double *spin = NULL, *eng = NULL, *rt = NULL, *ring = NULL;
	struct daemon_proc dp = { 0 };
	struct client cl = { 0 };
	struct cpu_mark mark;
	int r = -ENOMEM;

	spin = calloc(total, sizeof(double));
	eng = calloc(total, sizeof(double));
	rt = calloc(total, sizeof(double));
	ring = calloc(total, sizeof(double));
	if (!spin || !eng || !rt || !ring)
		goto out;

	cpu_mark_take(&mark);
	fprintf(stderr, "# 2. round trips, busy polling: %u blocks of %u samples each\n", blocks,
		per_block);
	r = daemon_proc_start(arg_moed, tmp_dir, model_path, sets, 2, -1, &dp);
	if (r < 0)
		goto out;
	r = client_open(dp.socket, SPIN_NS_BUSY, L->d_model, 1, x, &cl);
	if (r < 0)
		goto out;
	for (uint32_t b = 0; b < blocks; b++) {
		const size_t off = (size_t)b * per_block;

		r = daemon_block(&cl, warmup, per_block, rt + off);
		if (r < 0)
			goto out;
		usleep(BLOCK_GAP_US); /* moed's poll_us passes: it sleeps */
		r = pingpong_spin_run(-1, -1, warmup, per_block, spin + off);
		if (r < 0) {
			fprintf(stderr, "spin ping-pong: %s\n", strerror(-r));
			goto out;
		}
		r = engine_block(L, 1, x, 1, y_embedded, warmup, per_block, eng + off);
		if (r < 0)
			goto out;
		r = ring_pingpong_run(warmup, per_block, ring + off);
		if (r < 0) {
			fprintf(stderr, "ring ping-pong: %s\n", strerror(-r));
			goto out;
		}
	}
	samples_summarize(spin, total, &res->spin);
	samples_summarize(ring, total, &res->ring);
	samples_summarize(eng, total, &res->engine1);
	samples_summarize(rt, total, &res->rt_spin);
	res->background_spin = cpu_background(&mark);
	res->overhead_spin_us = res->rt_spin.median_us - res->engine1.median_us;
	res->vs_spin = res->overhead_spin_us / res->spin.median_us;
	res->ring_vs_spin = res->ring.median_us / res->spin.median_us;
	r = 0;
out:
	client_close(&cl);
	daemon_proc_stop(&dp);
	free(ring);
	free(spin);
	free(eng);
	free(rt);
	return r;
}

/* The hand-off harness (bench_daemon_handoff.h): no daemon, no model. */
static int bench_handoff(struct results *res)
{
	struct cpu_mark mark;
	int r;

	cpu_mark_take(&mark);
	fprintf(stderr, "# 1. hand-off to the executor (harness): %u hand-offs, %u after a "
			"pause\n", handoff_n, handoff_asleep_n);
	r = handoff_bench_run(lat_warmup, handoff_n, handoff_asleep_n, &res->handoff);
	res->background_handoff = cpu_background(&mark);
	res->have_handoff = r >= 0;
	return r;
}

static int bench_latency(struct results *res)
{
	const char *path = tmp_file_register("tiny.safetensors");
	const struct moe_layer *L;
	struct moe_model *model = NULL;
	float x[64], y[64];
	int r;

	r = model_generate(&shape_tiny, path);
	if (r < 0)
		return r;
	r = model_open(path, &model);
	if (r < 0)
		return r;
	L = moe_model_layer(model, 0);
	bench_fill_normal(x, shape_tiny.d_model, 11);
	r = arg_spin_only ? 0 : latency_sleeping(path, L, x, y, res);
	if (r >= 0 && !arg_spin_only)
		r = latency_placed(path, L, x, y, res);
	if (r >= 0)
		r = latency_spinning(path, L, x, y, res);
	if (r >= 0 && !arg_spin_only)
		r = bench_handoff(res);
	moe_model_free(model);
	unlink(path);
	return r;
}

/* ---- 3: throughput ---- */

/*
 * How much of @path's mapping in process @pid is resident, and how much of
 * that through 2 MB page-table entries (ext4's large folios let a file
 * mapping use them): kB, from /proc/PID/smaps. The weights are read at
 * memory speed, so a process whose mapping has fewer huge entries computes
 * the same batch measurably slower; printed beside the throughput because
 * it differs between processes and runs, not because moed chooses it.
 */
static void mapping_huge_kb(pid_t pid, const char *path, unsigned long *ret_rss,
			    unsigned long *ret_pmd)
{
	char file[64], line[PATH_MAX + 128];
	bool in = false;
	FILE *f;

	*ret_rss = *ret_pmd = 0;
	snprintf(file, sizeof(file), "/proc/%d/smaps", (int)pid);
	f = fopen(file, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long kb;
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		/* a mapping's header: "start-end perms offset dev inode   path" */
		if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ') &&
		    strspn(line, "0123456789abcdef") == (size_t)(strchr(line, '-') - line)) {
			size_t len = strlen(line), plen = strlen(path);

			in = len >= plen && strcmp(line + len - plen, path) == 0;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Rss: %lu kB", &kb) == 1)
			*ret_rss += kb;
		else if (sscanf(line, "FilePmdMapped: %lu kB", &kb) == 1)
			*ret_pmd += kb;
	}
	fclose(f);
}

/* CPU seconds process @pid has used (utime + stime from /proc/PID/stat); < 0 on error. */
static double proc_cpu_s(pid_t pid)
{
	unsigned long long ut, st;
	char path[64], buf[1024], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the fields after the command name, which may hold spaces: state is field 3 */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double block_mean(const double *v, uint32_t n)
{
	double sum = 0;

	for (uint32_t i = 0; i < n; i++)
		sum += v[i];
	return n ? sum / n : 0;
}

static int bench_throughput_shape(const struct shape *s, const char *path, struct tp_result *res)
{
	static const char *const sets[] = { "workers=2" };
	const uint32_t T = THROUGHPUT_TOKENS;
	const size_t n_floats = (size_t)T * s->d_model;
	const struct moe_layer *L;
	struct moe_model *model = NULL;
	struct daemon_proc dp = { 0 };
	struct client cl = { 0 };
	struct cpu_mark mark;
	double *d_samples = NULL, *e_samples = NULL, warm_e, warm_d;
	float *x = NULL, *y = NULL;
	uint32_t n;
	int r;

	*res = (struct tp_result){ .shape = s };
	cpu_mark_take(&mark);
	r = model_open(path, &model);
	if (r < 0)
		return r;
	L = moe_model_layer(model, 0);
	x = malloc(sizeof(float) * n_floats);
	y = malloc(sizeof(float) * n_floats);
	if (!x || !y) {
		r = -ENOMEM;
		goto out;
	}
	bench_fill_normal(x, n_floats, 1000003u * T + s->n_experts);

	r = daemon_proc_start(arg_moed, tmp_dir, path, sets, 1, -1, &dp);
	if (r < 0)
		goto out;
	r = client_open(dp.socket, 0, s->d_model, T, x, &cl);
	if (r < 0)
		goto out;
	/* one batch each way: the batch time picks the block size, the results must agree */
	r = engine_block(L, 2, x, T, y, ENGINE_SETTLE_BATCHES, 1, &warm_e);
	if (r < 0)
		goto out;
	r = daemon_block(&cl, ENGINE_SETTLE_BATCHES, 1, &warm_d);
	if (r < 0)
		goto out;
	res->max_diff = max_abs_diff(cl.y, y, n_floats);
	n = (uint32_t)ceil(tp_seconds / tp_rounds / (1e-9 * fmax(warm_e, warm_d)));
	n = n < 2 ? 2 : n > 2000 ? 2000 : n;
	res->blocks = tp_rounds;
	res->batches_per_block = n;
	fprintf(stderr, "# 3. %s T=%u: %u blocks of %u batches per side (%.1f ms a batch)\n",
		s->tag, T, tp_rounds, n, 1e-6 * fmax(warm_e, warm_d));
	d_samples = calloc((size_t)tp_rounds * n, sizeof(double));
	e_samples = calloc((size_t)tp_rounds * n, sizeof(double));
	if (!d_samples || !e_samples) {
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < tp_rounds; i++) {
		/*
		 * Short blocks in ABBA order (embedded first in even rounds, moed
		 * first in odd ones), so that both sides see the same drift of a
		 * shared machine and neither always follows the other. moed sleeps
		 * while the embedded engine runs: its poll_us (50 us) and its
		 * pool's spin ended long before. Each block starts with the same
		 * untimed batches on both sides: the fresh engine's settle its
		 * scratch; moed's, after seconds asleep, warm what the other side
		 * evicted (its first batch is 10-25% slower at shape B: the TLB
		 * entries of 2 GB of weights, under a VM's nested paging).
		 */
		double cores[2] = { 0, 0 };

		for (uint32_t side = 0; side < 2; side++) {
			const bool embedded = (side + i) % 2 == 0;
			double c0 = embedded ? cpu_rusage_s(RUSAGE_SELF) : proc_cpu_s(dp.pid);
			double t0 = 1e-9 * (double)bench_now_ns();

			if (embedded)
				r = engine_block(L, 2, x, T, y, ENGINE_SETTLE_BATCHES, n,
						 e_samples + (size_t)i * n);
			else
				r = daemon_block(&cl, ENGINE_SETTLE_BATCHES, n,
						 d_samples + (size_t)i * n);
			if (r < 0)
				goto out;
			/* cores the side kept busy: 2 when both of its workers always ran */
			cores[embedded ? 0 : 1] =
				((embedded ? cpu_rusage_s(RUSAGE_SELF) : proc_cpu_s(dp.pid)) - c0) /
				(1e-9 * (double)bench_now_ns() - t0);
		}
		fprintf(stderr, "#    round %u (%s first): embedded %.2f ms (%.2f cores), moed %.2f ms "
				"(%.2f cores)\n",
			i, i % 2 ? "moed" : "embedded", 1e-6 * block_mean(e_samples + (size_t)i * n, n),
			cores[0], 1e-6 * block_mean(d_samples + (size_t)i * n, n), cores[1]);
	}
	mapping_huge_kb(getpid(), path, &res->embedded_rss_kb, &res->embedded_pmd_kb);
	mapping_huge_kb(dp.pid, path, &res->daemon_rss_kb, &res->daemon_pmd_kb);
	samples_summarize(d_samples, tp_rounds * n, &res->daemon);
	samples_summarize(e_samples, tp_rounds * n, &res->embedded);
	res->daemon_tps = T / (1e-6 * res->daemon.median_us);
	res->embedded_tps = T / (1e-6 * res->embedded.median_us);
	res->ratio = res->daemon_tps / res->embedded_tps;
	r = 0;
out:
	client_close(&cl);
	daemon_proc_stop(&dp);
	moe_model_free(model);
	free(x);
	free(y);
	free(d_samples);
	free(e_samples);
	res->background = cpu_background(&mark);
	return r;
}

/* ---- 4: merging ---- */

struct merge_child_result {
	uint64_t batches, merged;
	int32_t error;
};

/* One page shared by the parent and the client processes. */
struct merge_page {
	uint32_t ready;   /* children connected and warmed up */
	uint32_t go;      /* set by the parent once t_start/t_end are written */
	uint64_t t_start, t_end;
	struct merge_child_result child[MERGE_CLIENTS];
};

/* A client process: connect, warm up, then moe_forward() from t_start to t_end. */
static void __attribute__((noreturn)) merge_child(struct merge_page *pg, uint32_t index,
						  const char *socket_path, uint32_t d_model,
						  pid_t parent)
{
	struct merge_child_result *out = &pg->child[index];
	const uint64_t wait_limit = bench_now_ns() + 120ull * 1000000000ull;
	const size_t n_floats = (size_t)MERGE_TOKENS * d_model;
	struct client cl = { 0 };
	struct timespec ts;
	float *x;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	x = malloc(sizeof(float) * n_floats);
	if (!x)
		_exit(1);
	/* each client its own tokens, as different sequences would be */
	bench_fill_normal(x, n_floats, 7919u * (index + 1));
	r = client_open(socket_path, 0, d_model, MERGE_TOKENS, x, &cl);
	free(x);
	for (int i = 0; r >= 0 && i < 3; i++)
		r = client_forward(&cl);
	if (r < 0) {
		out->error = r;
		__atomic_add_fetch(&pg->ready, 1, __ATOMIC_RELEASE);
		_exit(1);
	}
	__atomic_add_fetch(&pg->ready, 1, __ATOMIC_RELEASE);
	/* pairs with the parent's release store of go, after t_start/t_end */
	while (!__atomic_load_n(&pg->go, __ATOMIC_ACQUIRE)) {
		if (bench_now_ns() > wait_limit)
			_exit(1);
		usleep(1000);
	}
	ts = (struct timespec){ .tv_sec = (time_t)(pg->t_start / 1000000000ull),
				.tv_nsec = (long)(pg->t_start % 1000000000ull) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
	for (;;) {
		struct moe_completion done;

		r = moe_forward(cl.c, &cl.rq, &done);
		if (r == 0 && done.status < 0)
			r = done.status;
		if (r < 0) {
			out->error = r;
			break;
		}
		/* only batches complete within the window count */
		if (bench_now_ns() > pg->t_end)
			break;
		out->batches++;
		if (done.flags & MOE_COMPLETION_MERGED)
			out->merged++;
	}
	client_close(&cl);
	_exit(r < 0 ? 1 : 0);
}

/* Status figures of moed at @socket_path: totals.<key>. */
static uint64_t status_total(const char *json, const char *key)
{
	json_t *root = json_loads(json, 0, NULL);
	uint64_t v = (uint64_t)json_integer_value(json_object_get(json_object_get(root, "totals"),
								  key));

	json_decref(root);
	return v;
}

/*
 * One run of MERGE_CLIENTS client processes against a moed with
 * @merge_setting; total tokens/s of the batches completed in the window.
 */
static int merge_run(const char *path, uint32_t d_model, const char *merge_setting,
		     double *ret_tps, uint64_t *ret_merged_window, char **ret_status)
{
	const char *sets[] = { "workers=2", merge_setting };
	struct merge_page *pg;
	struct daemon_proc dp = { 0 };
	pid_t pids[MERGE_CLIENTS] = { 0 }, parent = getpid();
	uint64_t batches = 0, merged = 0, t_wait;
	int r, failed = 0;

	pg = mmap(NULL, sizeof(*pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED)
		return -errno;
	memset(pg, 0, sizeof(*pg));
	r = daemon_proc_start(arg_moed, tmp_dir, path, sets, 2, -1, &dp);
	if (r < 0)
		goto out;
	fflush(NULL);
	for (uint32_t i = 0; i < MERGE_CLIENTS; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			r = -errno;
			goto reap;
		}
		if (pids[i] == 0)
			merge_child(pg, i, dp.socket, d_model, parent);
	}
	t_wait = bench_now_ns();
	while (__atomic_load_n(&pg->ready, __ATOMIC_ACQUIRE) < MERGE_CLIENTS) {
		if (bench_now_ns() - t_wait > 120ull * 1000000000ull) {
			r = -ETIMEDOUT;
			goto reap;
		}
		usleep(1000);
	}
	pg->t_start = bench_now_ns() + 50ull * 1000000;
	pg->t_end = pg->t_start + (uint64_t)(merge_seconds * 1e9);
	/* pairs with the children's acquire load of go */
	__atomic_store_n(&pg->go, 1, __ATOMIC_RELEASE);
reap:
	if (r < 0)
		for (uint32_t i = 0; i < MERGE_CLIENTS; i++)
			if (pids[i] > 0)
				kill(pids[i], SIGKILL);
	for (uint32_t i = 0; i < MERGE_CLIENTS; i++) {
		int status;

		if (pids[i] <= 0)
			continue;
		while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
			;
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			failed++;
	}
	if (r < 0)
		goto out;
	for (uint32_t i = 0; i < MERGE_CLIENTS; i++) {
		if (pg->child[i].error < 0)
			fprintf(stderr, "merge client %u: %s\n", i, moe_strerror(pg->child[i].error));
		batches += pg->child[i].batches;
		merged += pg->child[i].merged;
	}
	if (failed) {
		fprintf(stderr, "%d of %d merge clients failed\n", failed, MERGE_CLIENTS);
		r = -ECHILD;
		goto out;
	}
	r = moe_daemon_status(dp.socket, ret_status);
	if (r < 0) {
		fprintf(stderr, "moe_daemon_status: %s\n", moe_strerror(r));
		goto out;
	}
	*ret_tps = (double)batches * MERGE_TOKENS / merge_seconds;
	*ret_merged_window = merged;
out:
	daemon_proc_stop(&dp);
	munmap(pg, sizeof(*pg));
	return r;
}

/*
 * merge_speedup from runs in ABBA order (on, off, off, on), MERGE_ABBA_ROUNDS
 * times, so that a drift of the machine's speed during the phase (memory
 * bandwidth moves by half within a minute on a shared host) falls on both
 * settings alike. A round's ratio is its two runs with merging over its two
 * without, which cancels a linear drift within the round; merge_speedup is
 * the median of the rounds' ratios (an odd count: one disturbed round cannot
 * move it). The tokens/s printed per setting are the medians of its runs;
 * moed's counters are the mean per run.
 */
#define MERGE_ABBA_ROUNDS 3
#define MERGE_RUNS        (2 * MERGE_ABBA_ROUNDS) /* per setting */

static double merge_median(double *v, uint32_t n)
{
	qsort(v, n, sizeof(v[0]), bench_cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_merge(const struct shape *s, const char *path, struct results *res)
{
	double tps[2][MERGE_RUNS], ratio[MERGE_ABBA_ROUNDS];
	uint64_t merged_window[2] = { 0 }, totals[2][3] = { { 0 } };
	static const char *const keys[3] = { "batches", "engine_runs", "merged_batches" };
	uint32_t n[2] = { 0 };
	struct cpu_mark mark;
	int r = 0;

	cpu_mark_take(&mark);
	fprintf(stderr, "# 4. merging: %u clients x T=%u of %s, %.1f s per run, %u runs per "
		"setting in ABBA order\n", MERGE_CLIENTS, MERGE_TOKENS, s->tag, merge_seconds,
		MERGE_RUNS);
	for (uint32_t i = 0; i < 4 * MERGE_ABBA_ROUNDS && r >= 0; i++) {
		const uint32_t on = i % 4 == 0 || i % 4 == 3 ? 0 : 1; /* 0: on, 1: off */
		char *json = NULL;
		uint64_t merged;

		r = merge_run(path, s->d_model, on == 0 ? MERGE_WINDOW_ON : MERGE_WINDOW_OFF,
			      &tps[on][n[on]], &merged, &json);
		if (r < 0)
			break;
		merged_window[on] += merged;
		for (uint32_t k = 0; k < 3; k++)
			totals[on][k] += status_total(json, keys[k]);
		n[on]++;
		free(json);
	}
	if (r >= 0) {
		/* before merge_median() sorts them: runs 2i and 2i + 1 are round i's */
		for (uint32_t i = 0; i < MERGE_ABBA_ROUNDS; i++)
			ratio[i] = (tps[0][2 * i] + tps[0][2 * i + 1]) /
				   (tps[1][2 * i] + tps[1][2 * i + 1]);
		res->merge_speedup = merge_median(ratio, MERGE_ABBA_ROUNDS);
		res->merge_on_tps = merge_median(tps[0], n[0]);
		res->merge_off_tps = merge_median(tps[1], n[1]);
		res->merged_in_window = merged_window[0] / n[0];
		res->batches_on = totals[0][0] / n[0];
		res->engine_runs_on = totals[0][1] / n[0];
		res->merged_batches = totals[0][2] / n[0];
		res->batches_off = totals[1][0] / n[1];
		res->engine_runs_off = totals[1][1] / n[1];
		res->have_merge = true;
	}
	res->background_merge = cpu_background(&mark);
	return r;
}

/* ---- 5: a small client beside a streaming one ---- */

static int bench_victim(const struct shape *s, const char *path, struct results *res)
{
	const struct victim_params p = {
		.moed_path = arg_moed,
		.dir = tmp_dir,
		.model_path = path,
		.d_model = s->d_model,
		.big_tokens = VICTIM_BIG_TOKENS,
		.seconds = victim_seconds,
		.alone_reps = victim_alone_reps,
		.victim_alone_n = victim_alone_n,
	};
	struct cpu_mark mark;
	int r;

	cpu_mark_take(&mark);
	fprintf(stderr, "# 5. victim: T=1 batches 1 ms apart for %.1f s beside a stream of "
			"T=%u batches of %s\n", victim_seconds, VICTIM_BIG_TOKENS, s->tag);
	r = victim_bench_run(&p, &res->victim);
	res->background_victim = cpu_background(&mark);
	res->have_victim = r >= 0;
	return r;
}

static bool shape_selected(const struct shape *s)
{
	if (arg_quick && !arg_shape)
		return strcmp(s->name, "A") == 0;
	return !arg_shape || strcmp(s->name, arg_shape) == 0;
}

static int bench_big(struct results *res)
{
	int r = 0;

	for (size_t i = 0; i < N_SHAPES && r >= 0; i++) {
		const struct shape *s = &shapes[i];
		char name[64];
		const char *path;

		/* shape A serves the merge measurement too */
		if (!shape_selected(s) && i != 0)
			continue;
		snprintf(name, sizeof(name), "%s.safetensors", s->tag);
		path = tmp_file_register(name);
		r = model_generate(s, path);
		if (r < 0)
			break;
		if (shape_selected(s)) {
			r = bench_throughput_shape(s, path, &res->tp[res->n_tp]);
			if (r < 0)
				fprintf(stderr, "throughput %s failed\n", s->tag);
			else
				res->n_tp++;
		}
		if (r >= 0 && i == 0)
			r = bench_merge(s, path, res);
		if (r >= 0 && i == 0)
			r = bench_victim(s, path, res);
		unlink(path);
	}
	res->vs_embedded = NAN;
	for (uint32_t i = 0; i < res->n_tp; i++)
		if (isnan(res->vs_embedded) || res->tp[i].ratio < res->vs_embedded)
			res->vs_embedded = res->tp[i].ratio;
	return r;
}

/* ---- output ---- */

static const char *verdict(bool ok)
{
	return ok ? "met" : "MISSED";
}

/* Section 2: the busy-poll round trip. */
static void print_spin(const struct results *res)
{
	printf("2. round trip, busy polling: %s, T=1, client spin_ns=1e9, moed %s, blocks\n"
	       "   alternating with the baselines; moed workers=1 and the in-process engine\n"
	       "   1 worker (2 CPUs: a spinning client and a spinning reactor take both; runs\n"
	       "   this small compute on the reactor thread, inline_run_bytes)\n",
	       shape_tiny.tag, SPIN_POLL_SET);
	printf("   moed round trip       median %8.2f us   p99 %8.2f us\n", res->rt_spin.median_us,
	       res->rt_spin.p99_us);
	printf("   engine in-process     median %8.2f us   p99 %8.2f us   (1 worker)\n",
	       res->engine1.median_us, res->engine1.p99_us);
	printf("   overhead              %8.2f us\n", res->overhead_spin_us);
	printf("   baseline spin ping-pong (2 processes) median %8.3f us   p99 %8.3f us\n",
	       res->spin.median_us, res->spin.p99_us);
	printf("   overhead_vs_spin = %.3f   (target <= %.1f: %s); other processes used %.2f "
	       "cores\n",
	       res->vs_spin, TARGET_VS_SPIN, verdict(res->vs_spin <= TARGET_VS_SPIN),
	       res->background_spin);
	printf("   info: the ring alone (shm_ring both sides, spinning processes; no reactor,\n"
	       "   runner or engine): median %.3f us, p99 %.3f us; ring_vs_spin = %.3f\n\n",
	       res->ring.median_us, res->ring.p99_us, res->ring_vs_spin);
}

static void print_human(const struct results *res)
{
	printf("moed daemon benchmark (%s build, %ld CPUs); moed: %s\n\n", MOE_BUILD_TYPE,
	       sysconf(_SC_NPROCESSORS_ONLN), arg_moed);

	printf("1. round trip, sleeping waits: %s, T=1, one client (spin_ns=0), "
	       "moed workers=2 poll_us=0\n", shape_tiny.tag);
	printf("   moed round trip       median %8.2f us   p99 %8.2f us\n",
	       res->rt_sleep.median_us, res->rt_sleep.p99_us);
	printf("   engine in-process     median %8.2f us   p99 %8.2f us   (2 workers)\n",
	       res->engine2.median_us, res->engine2.p99_us);
	printf("   overhead              %8.2f us\n", res->overhead_sleep_us);
	printf("   baseline futex ping-pong (2 processes) median %8.2f us   p99 %8.2f us\n",
	       res->futex.median_us, res->futex.p99_us);
	printf("   overhead_vs_futex = %.3f   (target <= %.1f: %s)\n", res->vs_futex,
	       TARGET_VS_FUTEX, verdict(res->vs_futex <= TARGET_VS_FUTEX));
	printf("   info: default poll_us=%u: round trip median %.2f us p99 %.2f us, overhead "
	       "%.2f us, vs futex %.3f\n",
	       res->default_poll_us, res->rt_default.median_us, res->rt_default.p99_us,
	       res->overhead_default_us, res->default_vs_futex);
	printf("   moed vs embedded output: max |diff| %g; other processes used %.2f cores\n",
	       res->t1_max_diff, res->background_sleep);
	if (res->have_placed) {
		printf("   placement-controlled, moed workers=1 poll_us=0 on CPU %d (engine 1 worker; "
		       "other processes used %.2f cores):\n",
		       res->cpu_moed, res->background_placed);
		for (int k = 0; k < 2; k++)
			printf("     client on CPU %d (%s): round trip %6.2f us, engine %5.2f us, "
			       "overhead %6.2f us; futex ping-pong %6.2f us; ratio %.3f\n",
			       k ? res->cpu_other : res->cpu_moed, k ? "two CPUs" : "one CPU ",
			       res->placed_rt[k].median_us, res->placed_engine[k].median_us,
			       res->placed_overhead_us[k], res->placed_futex[k].median_us,
			       res->placed_vs_futex[k]);
	}
	if (res->have_handoff) {
		const struct handoff_result *h = &res->handoff;

		printf("   hand-off to the executor, timed in a harness on moed's executor (1 runner,\n"
		       "   a run that computes nothing, the eventfd read through io_uring):\n");
		printf("     runner asleep         median %6.2f us   p99 %6.2f us   (%.0f%% of the "
		       "overhead above)\n",
		       h->asleep.median_us, h->asleep.p99_us,
		       100.0 * h->asleep.median_us / res->overhead_sleep_us);
		printf("     runner still spinning median %6.2f us   p99 %6.2f us   (%.0f%%); other "
		       "processes used %.2f cores\n",
		       h->spinning.median_us, h->spinning.p99_us,
		       100.0 * h->spinning.median_us / res->overhead_sleep_us,
		       res->background_handoff);
		printf("   handoff_us is the asleep figure: a runner spins 50 us after a run, and a "
		       "sleeping\n   round trip leaves three wake-ups (reactor, client, reactor) "
		       "between two runs\n");
	}
	printf("\n");

	print_spin(res);

	printf("3. throughput, T=%u, one client (sleeping waits), moed workers=2 vs engine "
	       "in-process 2 workers\n", THROUGHPUT_TOKENS);
	for (uint32_t i = 0; i < res->n_tp; i++) {
		const struct tp_result *t = &res->tp[i];

		printf("   %-16s moed %10.1f tok/s (%.2f ms)   embedded %10.1f tok/s (%.2f ms)"
		       "   ratio %.3f\n",
		       t->shape->tag, t->daemon_tps, 1e-3 * t->daemon.median_us, t->embedded_tps,
		       1e-3 * t->embedded.median_us, t->ratio);
		printf("   %-16s %u x %u batches per side; max |diff| %g; other processes used "
		       "%.2f cores\n",
		       "", t->blocks, t->batches_per_block, t->max_diff, t->background);
		printf("   %-16s weights mapped through 2 MB entries: moed %.0f%%, embedded %.0f%%\n",
		       "", 100.0 * t->daemon_pmd_kb / fmax(1.0, (double)t->daemon_rss_kb),
		       100.0 * t->embedded_pmd_kb / fmax(1.0, (double)t->embedded_rss_kb));
	}
	if (res->n_tp)
		printf("   throughput_vs_embedded = %.3f (lowest shape)   (target >= %.2f: %s)\n\n",
		       res->vs_embedded, TARGET_VS_EMBEDDED,
		       verdict(res->vs_embedded >= TARGET_VS_EMBEDDED));

	if (res->have_merge) {
		printf("4. merging: %u client processes x T=%u of layer 0 (%s), closed loop, "
		       "%.1f s each, moed workers=2\n",
		       MERGE_CLIENTS, MERGE_TOKENS, shapes[0].tag, merge_seconds);
		printf("   merge_window_us=2000 %10.1f tok/s   (moed: %llu batches, %llu merged, "
		       "%llu engine runs)\n",
		       res->merge_on_tps, (unsigned long long)res->batches_on,
		       (unsigned long long)res->merged_batches,
		       (unsigned long long)res->engine_runs_on);
		printf("   merge_window_us=0    %10.1f tok/s   (moed: %llu batches, %llu engine "
		       "runs)\n",
		       res->merge_off_tps, (unsigned long long)res->batches_off,
		       (unsigned long long)res->engine_runs_off);
		printf("   merge_speedup = %.3f   (expected >= %.1f: %s); other processes used "
		       "%.2f cores\n",
		       res->merge_speedup, TARGET_MERGE, verdict(res->merge_speedup >= TARGET_MERGE),
		       res->background_merge);
	}
	if (res->have_victim) {
		const struct victim_result *v = &res->victim;

		printf("\n5. victim latency: T=1 batches 1 ms apart beside a client streaming T=%u "
		       "(%u in flight,\n   NO_MERGE) of %s, moed workers=2 runs_in_flight=%u\n",
		       VICTIM_BIG_TOKENS, v->stream_depth, shapes[0].tag, v->runs_in_flight);
		printf("   victim under the stream  median %8.2f us   p99 %8.2f us   (%u batches)\n",
		       v->victim.median_us, v->victim.p99_us, v->victim.n);
		printf("   victim alone             median %8.2f us   p99 %8.2f us\n",
		       v->victim_alone.median_us, v->victim_alone.p99_us);
		printf("   T=%u alone through moed  median %8.2f ms   (%u batches); under the "
		       "victim, %.2f ms a batch\n",
		       VICTIM_BIG_TOKENS, 1e-3 * v->big_alone.median_us, v->big_alone.n,
		       v->stream_batch_ms);
		printf("   victim_latency_ratio = %.3f   (target <= %.1f: %s); other processes used "
		       "%.2f cores\n",
		       v->ratio, TARGET_VICTIM, verdict(v->ratio <= TARGET_VICTIM),
		       res->background_victim);
	}
}

static void json_num(const char *key, double v, bool *first)
{
	printf("%s\"%s\":", *first ? "" : ",", key);
	*first = false;
	if (isfinite(v))
		printf("%.6g", v);
	else
		printf("null");
}

/* Section 2's figures behind overhead_vs_spin, in both JSON forms. */
static void json_spin_details(const struct results *res, bool *first)
{
	json_num("spin_pingpong_us", res->spin.median_us, first);
	json_num("roundtrip_spin_us", res->rt_spin.median_us, first);
	json_num("roundtrip_spin_p99_us", res->rt_spin.p99_us, first);
	json_num("engine_1worker_us", res->engine1.median_us, first);
	json_num("overhead_spin_us", res->overhead_spin_us, first);
	json_num("ring_vs_spin", res->ring_vs_spin, first);
	json_num("ring_roundtrip_us", res->ring.median_us, first);
}

/* The keys of section 2 alone (--spin-only). */
static void print_json_spin(const struct results *res)
{
	bool first = true;

	printf("{\"benchmark\":\"daemon\",\"build_type\":\"%s\",\"spin_only\":true,",
	       MOE_BUILD_TYPE);
	json_num("overhead_vs_spin", res->vs_spin, &first);
	json_spin_details(res, &first);
	json_num("background_cores_spinning", res->background_spin, &first);
	printf("}\n");
}

static void print_json(const struct results *res)
{
	bool first = true;

	printf("{\"benchmark\":\"daemon\",\"build_type\":\"%s\",\"quick\":%s,",
	       MOE_BUILD_TYPE, arg_quick ? "true" : "false");
	first = true;
	json_num("overhead_vs_futex", res->vs_futex, &first);
	json_num("overhead_vs_spin", res->vs_spin, &first);
	json_num("throughput_vs_embedded", res->n_tp ? res->vs_embedded : NAN, &first);
	json_num("merge_speedup", res->have_merge ? res->merge_speedup : NAN, &first);
	json_num("victim_latency_ratio", res->have_victim ? res->victim.ratio : NAN, &first);
	json_num("handoff_us", res->have_handoff ? res->handoff.asleep.median_us : NAN, &first);
	json_num("futex_pingpong_us", res->futex.median_us, &first);
	json_num("roundtrip_us", res->rt_sleep.median_us, &first);
	json_num("roundtrip_p99_us", res->rt_sleep.p99_us, &first);
	json_num("engine_us", res->engine2.median_us, &first);
	json_num("overhead_us", res->overhead_sleep_us, &first);
	json_num("default_poll_us", res->default_poll_us, &first);
	json_num("roundtrip_default_poll_us", res->rt_default.median_us, &first);
	json_num("roundtrip_default_poll_p99_us", res->rt_default.p99_us, &first);
	json_num("overhead_default_poll_vs_futex", res->default_vs_futex, &first);
	json_spin_details(res, &first);
	json_num("t1_max_abs_diff", res->t1_max_diff, &first);
	json_num("background_cores_sleeping", res->background_sleep, &first);
	if (res->have_placed) {
		json_num("futex_pingpong_same_cpu_us", res->placed_futex[0].median_us, &first);
		json_num("roundtrip_same_cpu_us", res->placed_rt[0].median_us, &first);
		json_num("engine_same_cpu_us", res->placed_engine[0].median_us, &first);
		json_num("overhead_vs_futex_same_cpu", res->placed_vs_futex[0], &first);
		json_num("futex_pingpong_cross_cpu_us", res->placed_futex[1].median_us, &first);
		json_num("roundtrip_cross_cpu_us", res->placed_rt[1].median_us, &first);
		json_num("engine_cross_cpu_us", res->placed_engine[1].median_us, &first);
		json_num("overhead_vs_futex_cross_cpu", res->placed_vs_futex[1], &first);
		json_num("background_cores_placed", res->background_placed, &first);
	}
	json_num("background_cores_spinning", res->background_spin, &first);
	if (res->have_merge) {
		json_num("merge_on_tokens_per_s", res->merge_on_tps, &first);
		json_num("merge_off_tokens_per_s", res->merge_off_tps, &first);
		json_num("merged_batches", (double)res->merged_batches, &first);
		json_num("merged_batches_in_window", (double)res->merged_in_window, &first);
		json_num("engine_runs_merge_on", (double)res->engine_runs_on, &first);
		json_num("engine_runs_merge_off", (double)res->engine_runs_off, &first);
		json_num("background_cores_merge", res->background_merge, &first);
	}
	if (res->have_victim) {
		const struct victim_result *v = &res->victim;

		json_num("victim_p50_us", v->victim.median_us, &first);
		json_num("victim_p99_us", v->victim.p99_us, &first);
		json_num("victim_samples", v->victim.n, &first);
		json_num("victim_alone_p50_us", v->victim_alone.median_us, &first);
		json_num("victim_alone_p99_us", v->victim_alone.p99_us, &first);
		json_num("big_alone_us", v->big_alone.median_us, &first);
		json_num("stream_batch_us", 1e3 * v->stream_batch_ms, &first);
		json_num("victim_runs_in_flight", v->runs_in_flight, &first);
		json_num("background_cores_victim", res->background_victim, &first);
	}
	if (res->have_handoff) {
		json_num("handoff_p99_us", res->handoff.asleep.p99_us, &first);
		json_num("handoff_runner_spinning_us", res->handoff.spinning.median_us, &first);
		json_num("handoff_runner_spinning_p99_us", res->handoff.spinning.p99_us, &first);
		json_num("background_cores_handoff", res->background_handoff, &first);
	}
	printf(",\"throughput\":[");
	for (uint32_t i = 0; i < res->n_tp; i++) {
		const struct tp_result *t = &res->tp[i];

		printf("%s{\"shape\":\"%s\",\"tokens\":%u,", i ? "," : "", t->shape->tag,
		       THROUGHPUT_TOKENS);
		first = true;
		json_num("daemon_tokens_per_s", t->daemon_tps, &first);
		json_num("embedded_tokens_per_s", t->embedded_tps, &first);
		json_num("ratio", t->ratio, &first);
		json_num("batches_per_side", (double)t->blocks * t->batches_per_block, &first);
		json_num("max_abs_diff", t->max_diff, &first);
		json_num("background_cores", t->background, &first);
		json_num("daemon_weights_pmd_share",
			 (double)t->daemon_pmd_kb / fmax(1.0, (double)t->daemon_rss_kb), &first);
		json_num("embedded_weights_pmd_share",
			 (double)t->embedded_pmd_kb / fmax(1.0, (double)t->embedded_rss_kb), &first);
		printf("}");
	}
	printf("]}\n");
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: bench_daemon [--json] [--quick] [--spin-only] [--moed PATH] [--shape A|B]\n"
		"  --json       one JSON object on stdout instead of the report\n"
		"  --quick      short runs and shape A only (a smoke run)\n"
		"  --spin-only  section 2 alone (the busy-poll round trip, overhead_vs_spin)\n"
		"  --moed PATH  the moed binary (default %s)\n"
		"  --shape S    throughput on A (E8 k2 d1024 ff3584) or B (E64 k6 d2048 ff1408)\n"
		"               only; default both (B writes a 2.2 GB model to $TMPDIR)\n",
		MOED_BINARY_PATH);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },      { "quick", no_argument, NULL, 'q' },
		{ "spin-only", no_argument, NULL, 'S' },
		{ "moed", required_argument, NULL, 'm' }, { "shape", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },      { NULL, 0, NULL, 0 },
	};
	struct results res = { 0 };
	struct sigaction sa = { .sa_handler = on_stop_signal };
	const char *tmp_base = getenv("TMPDIR");
	int c, r;

	while ((c = getopt_long(argc, argv, "jqSm:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			arg_json = true;
			break;
		case 'q':
			arg_quick = true;
			break;
		case 'S':
			arg_spin_only = true;
			break;
		case 'm':
			arg_moed = optarg;
			break;
		case 's':
			if (strcmp(optarg, "A") && strcmp(optarg, "B")) {
				fprintf(stderr, "--shape: A or B, not '%s'\n", optarg);
				return 2;
			}
			arg_shape = optarg;
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
	if (access(arg_moed, X_OK) < 0) {
		fprintf(stderr, "moed binary %s: %s (use --moed PATH)\n", arg_moed, strerror(errno));
		return 1;
	}
	if (arg_quick) {
		lat_rounds = 2;
		lat_iters = 1000;
		lat_warmup = 200;
		tp_rounds = 2;
		tp_seconds = 0.5;
		merge_seconds = 1.0;
		victim_seconds = 2.0;
		victim_alone_reps = 4;
		victim_alone_n = 100;
		handoff_n = 2000;
		handoff_asleep_n = 200;
	}

	snprintf(tmp_dir, sizeof(tmp_dir), "%s/bench_daemon.XXXXXX",
		 tmp_base && *tmp_base ? tmp_base : "/tmp");
	if (!mkdtemp(tmp_dir)) {
		fprintf(stderr, "mkdtemp %s: %s\n", tmp_dir, strerror(errno));
		return 1;
	}
	/* what moed leaves in the folder (daemon_proc_start() names them so) */
	tmp_file_register("moed.sock");
	tmp_file_register("moed.log");
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	fprintf(stderr, "# bench_daemon (%s build): moed %s, folder %s\n", MOE_BUILD_TYPE,
		arg_moed, tmp_dir);

	r = bench_latency(&res);
	if (r >= 0 && !arg_spin_only)
		r = bench_big(&res);
	tmp_dir_remove();
	if (r < 0) {
		fprintf(stderr, "bench_daemon: stopped: %s\n", strerror(-r));
		return 1;
	}
	if (arg_json && arg_spin_only)
		print_json_spin(&res);
	else if (arg_json)
		print_json(&res);
	else if (arg_spin_only)
		print_spin(&res);
	else
		print_human(&res);
	return 0;
}
