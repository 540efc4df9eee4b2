/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_victim: a small client's latency while another streams
 * large batches, through a real moed; see bench_daemon_victim.h.
 */
#include "bench_daemon_victim.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "moe.h"

#define STREAM_DEPTH 3            /* the stream's batches in flight (2-4 asked) */
#define VICTIM_PAUSE_NS 1000000L  /* between two victim batches */
#define VICTIM_WARMUP 20          /* untimed T = 1 batches after connecting */
#define BIG_SETTLE 2              /* untimed big batches: moed's scratch grows, then is faulted */
#define WAIT_LIMIT_NS (120ull * 1000000000ull)

/* A connection with one input and n_out outputs of T rows each. */
struct vclient {
	struct moe_client *c;
	float *x, *y[STREAM_DEPTH];
	struct moe_request rq;
};

static void vclient_close(struct vclient *v)
{
	moe_close(v->c);
	*v = (struct vclient){ 0 };
}

/* Connect, allocate, fill the input (seeded by @seed), prepare a request of @flags. */
static int vclient_open(const char *socket_path, uint32_t d_model, uint32_t T, uint32_t n_out,
			uint32_t flags, uint64_t seed, struct vclient *ret_v)
{
	const size_t bytes = sizeof(float) * (size_t)T * d_model;
	struct moe_client_opts o;
	struct vclient v = { 0 };
	int r;

	moe_client_opts_init(&o);
	o.socket_path = socket_path;
	o.name = "bench_daemon_victim";
	if (o.arena_size < (n_out + 2) * bytes)
		o.arena_size = (n_out + 2) * bytes;
	r = moe_connect(&o, &v.c);
	if (r < 0) {
		fprintf(stderr, "moe_connect %s: %s\n", socket_path, moe_strerror(r));
		return r;
	}
	r = moe_buf_alloc(v.c, bytes, (void **)&v.x);
	for (uint32_t i = 0; r >= 0 && i < n_out; i++)
		r = moe_buf_alloc(v.c, bytes, (void **)&v.y[i]);
	if (r < 0) {
		fprintf(stderr, "moe_buf_alloc: %s\n", moe_strerror(r));
		moe_close(v.c);
		return r;
	}
	bench_fill_normal(v.x, (size_t)T * d_model, seed);
	moe_request_init(&v.rq);
	v.rq.layer = 0;
	v.rq.n_tokens = T;
	v.rq.flags = flags;
	v.rq.input = v.x;
	v.rq.output = v.y[0];
	*ret_v = v;
	return 0;
}

/* moe_forward() with the batch's own status folded in; elapsed ns, or -errno. */
static int64_t vclient_forward_timed(struct vclient *v)
{
	struct moe_completion done;
	uint64_t t0 = bench_now_ns();
	int r = moe_forward(v->c, &v->rq, &done);

	if (r == 0 && done.status < 0)
		r = done.status;
	if (r < 0) {
		fprintf(stderr, "moe_forward: %s\n", moe_strerror(r));
		return r;
	}
	return (int64_t)(bench_now_ns() - t0);
}

/* @warmup untimed then @n timed batches, each after @pause_ns (0: none), into @samples_ns. */
static int vclient_block(struct vclient *v, long pause_ns, uint32_t warmup, uint32_t n,
			 double *samples_ns)
{
	const struct timespec pause = { .tv_nsec = pause_ns };

	for (uint32_t i = 0; i < warmup + n; i++) {
		int64_t t;

		if (pause_ns)
			nanosleep(&pause, NULL);
		t = vclient_forward_timed(v);
		if (t < 0)
			return (int)t;
		if (i >= warmup)
			samples_ns[i - warmup] = (double)t;
	}
	return 0;
}

/* ---- the streaming client process ---- */

/* One page shared with the streaming child. */
struct stream_page {
	uint32_t ready;  /* the child's first batch completed: it streams */
	uint32_t stop;   /* set by the parent: complete what is in flight, then exit */
	uint64_t batches; /* completed between ready and stop */
	int32_t error;
};

/* Submit slot @i's batch; the slot travels in user_data. */
static int stream_submit(struct vclient *v, uint32_t i)
{
	v->rq.user_data = i;
	v->rq.output = v->y[i];
	return moe_submit(v->c, &v->rq);
}

static void __attribute__((noreturn)) stream_child(struct stream_page *pg,
						   const struct victim_params *p,
						   const char *socket_path, pid_t parent)
{
	struct vclient v = { 0 };
	uint32_t in_flight = 0;
	uint64_t done_n = 0;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	r = vclient_open(socket_path, p->d_model, p->big_tokens, STREAM_DEPTH, MOE_REQ_NO_MERGE,
			 4099, &v);
	for (uint32_t i = 0; r >= 0 && i < STREAM_DEPTH; i++) {
		r = stream_submit(&v, i);
		in_flight += r >= 0;
	}
	while (r >= 0 && in_flight) {
		struct moe_completion done;
		/* pairs with the parent's release store */
		bool stop = __atomic_load_n(&pg->stop, __ATOMIC_ACQUIRE);

		r = moe_wait(v.c, &done, 1, (int64_t)WAIT_LIMIT_NS);
		if (r < 0)
			break;
		in_flight--;
		if (done.status < 0) {
			r = done.status;
			break;
		}
		if (done_n++ == 0)
			__atomic_store_n(&pg->ready, 1, __ATOMIC_RELEASE);
		else if (!stop)
			pg->batches++;
		if (!stop) {
			r = stream_submit(&v, (uint32_t)done.user_data);
			in_flight += r >= 0;
		}
	}
	if (r < 0)
		pg->error = r;
	__atomic_store_n(&pg->ready, 1, __ATOMIC_RELEASE); /* never leave the parent waiting */
	vclient_close(&v);
	_exit(r < 0 ? 1 : 0);
}

/* ---- the phases ---- */

/* runs_in_flight from moed's status, 0 when unknown. */
static uint32_t daemon_runs_in_flight(const char *socket_path)
{
	char *json = NULL;
	json_t *root;
	uint32_t v;

	if (moe_daemon_status(socket_path, &json) < 0)
		return 0;
	root = json_loads(json, 0, NULL);
	v = (uint32_t)json_integer_value(
		json_object_get(json_object_get(root, "daemon"), "runs_in_flight"));
	json_decref(root);
	free(json);
	return v;
}

/* The yardstick: @n timed big batches, alone, after @settle untimed ones. */
static int big_alone_block(const struct victim_params *p, const char *socket_path,
			   uint32_t settle, uint32_t n, double *samples_ns)
{
	struct vclient v = { 0 };
	int r;

	r = vclient_open(socket_path, p->d_model, p->big_tokens, 1, MOE_REQ_NO_MERGE, 4099, &v);
	if (r < 0)
		return r;
	r = vclient_block(&v, 0, settle, n, samples_ns);
	vclient_close(&v);
	return r;
}

/*
 * Fork the stream, wait until it streams, sample the victim @v for
 * p->seconds into @samples_ns (*@ret_n of them, at most @max), stop the
 * stream and reap it.
 */
static int victim_under_stream(const struct victim_params *p, const char *socket_path,
			       struct vclient *v, double *samples_ns, uint32_t max,
			       uint32_t *ret_n, struct victim_result *res)
{
	const struct timespec pause = { .tv_nsec = VICTIM_PAUSE_NS };
	struct stream_page *pg;
	pid_t pid, parent = getpid();
	uint64_t t0, t_end;
	uint32_t n = 0;
	int r = 0, status;

	pg = mmap(NULL, sizeof(*pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED)
		return -errno;
	memset(pg, 0, sizeof(*pg));
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto out_page;
	}
	if (pid == 0)
		stream_child(pg, p, socket_path, parent);
	t0 = bench_now_ns();
	/* pairs with the child's release stores of ready */
	while (!__atomic_load_n(&pg->ready, __ATOMIC_ACQUIRE)) {
		if (bench_now_ns() - t0 > WAIT_LIMIT_NS) {
			r = -ETIMEDOUT;
			goto out_stop;
		}
		usleep(1000);
	}
	t0 = bench_now_ns();
	t_end = t0 + (uint64_t)(p->seconds * 1e9);
	while (n < max && bench_now_ns() < t_end &&
	       !__atomic_load_n(&pg->error, __ATOMIC_RELAXED)) {
		int64_t t;

		nanosleep(&pause, NULL);
		t = vclient_forward_timed(v);
		if (t < 0) {
			r = (int)t;
			break;
		}
		samples_ns[n++] = (double)t;
	}
	t_end = bench_now_ns();
out_stop:
	/* pairs with the child's acquire load of stop */
	__atomic_store_n(&pg->stop, 1, __ATOMIC_RELEASE);
	if (r == -ETIMEDOUT)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r >= 0 && (pg->error < 0 || !(WIFEXITED(status) && WEXITSTATUS(status) == 0))) {
		fprintf(stderr, "the streaming client failed: %s\n",
			pg->error < 0 ? moe_strerror(pg->error) : "it did not exit 0");
		r = pg->error < 0 ? pg->error : -ECHILD;
	}
	if (r >= 0 && n == 0)
		r = -ENODATA;
	if (r >= 0) {
		res->stream_batches = pg->batches;
		res->stream_batch_ms = pg->batches ? 1e-6 * (double)(t_end - t0) / pg->batches : 0;
		*ret_n = n;
	}
out_page:
	munmap(pg, sizeof(*pg));
	return r;
}

int victim_bench_run(const struct victim_params *p, struct victim_result *ret)
{
	static const char *const sets[] = { "workers=2" };
	const uint32_t half = p->alone_reps / 2;
	const uint32_t max = (uint32_t)(p->seconds * 1e9 / VICTIM_PAUSE_NS) + 16;
	struct victim_result res = { .stream_depth = STREAM_DEPTH };
	struct daemon_proc dp = { 0 };
	struct vclient victim = { 0 };
	double *big = NULL, *small = NULL;
	uint32_t n = 0;
	int r = -ENOMEM;

	big = calloc(p->alone_reps, sizeof(double));
	small = calloc(max > p->victim_alone_n ? max : p->victim_alone_n, sizeof(double));
	if (!big || !small)
		goto out_free;
	r = daemon_proc_start(p->moed_path, p->dir, p->model_path, sets, 1, -1, &dp);
	if (r < 0)
		goto out_free;
	res.runs_in_flight = daemon_runs_in_flight(dp.socket);

	r = big_alone_block(p, dp.socket, BIG_SETTLE, half, big);
	if (r < 0)
		goto out_daemon;
	r = vclient_open(dp.socket, p->d_model, 1, 1, 0, 17, &victim);
	if (r < 0)
		goto out_daemon;
	r = vclient_block(&victim, VICTIM_PAUSE_NS, VICTIM_WARMUP, p->victim_alone_n, small);
	if (r < 0)
		goto out_victim;
	samples_summarize(small, p->victim_alone_n, &res.victim_alone);
	r = victim_under_stream(p, dp.socket, &victim, small, max, &n, &res);
	if (r < 0)
		goto out_victim;
	samples_summarize(small, n, &res.victim);
	vclient_close(&victim);
	/* moed is warm: one untimed batch re-warms what the stream's evicted */
	r = big_alone_block(p, dp.socket, 1, p->alone_reps - half, big + half);
	if (r < 0)
		goto out_daemon;
	samples_summarize(big, p->alone_reps, &res.big_alone);
	res.ratio = res.victim.p99_us / res.big_alone.median_us;
	*ret = res;
out_victim:
	vclient_close(&victim);
out_daemon:
	daemon_proc_stop(&dp);
out_free:
	free(big);
	free(small);
	return r;
}
