/* SPDX-License-Identifier: MIT */
/*
 * Many real clients on one real moed (the embedded default model).
 *
 * Six client processes connect, wait at a barrier so that they start
 * together, each forwards one plain batch of layer 0 (the opening), then
 * each submits a deterministic (per-client seed) mix of requests:
 * synchronous moe_forward() and pipelined bursts of several moe_submit()s
 * reaped with moe_wait() or by polling moe_reap(), on both layers, with
 * 1..64 tokens, and with every request flag: routing returned (route_k = the
 * layer's slots or one more), routing given (random experts, empty slots
 * included), counts returned, no-merge. Each child checks every completion
 * (its user_data exactly once, status 0, no drops, MERGED only where merging
 * is allowed) and every result against the embedded engine computing the
 * same batch on the same model file in the child: outputs within atol =
 * rtol = 1e-4 (a merged run may use other GEMM kernels), returned routing
 * and counts exactly, except for tokens whose top-k choice is within 1e-3
 * of a tie (counted and reported, not compared). The parent then checks the
 * daemon's status: totals.batches and tokens are exactly what the clients
 * submitted, no errors, no corrupt client, every client gone once it
 * exited, merged_batches equal to the completions flagged MERGED (0 with
 * merge_window_us = 0; with a 200 ms window, in which the first opening
 * batch waits for the others, at least two opening batches ran merged and
 * there were fewer engine runs than batches), and moed exits 0 on SIGTERM.
 *
 * That runs four times: futex (auto) and eventfd doorbells, each without
 * and with a merge window. A fifth case is backpressure: sq 8 / cq 8,
 * submitting without reaping until moe_submit() says -EAGAIN, which must be
 * at exactly sq + cq requests (8 consumed and completed into the full CQ, 8
 * waiting in the SQ), then reaping: every user_data completes exactly once,
 * three rounds in a row (moed resumes through MOE_RING_PRODUCER_WAITING).
 * A sixth: with max_clients = 2 a third client is refused with -EUSERS,
 * and served once one of the two has gone.
 *
 * usage: it_many_clients MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"
#include "test_fds.h"
#include "util/rng.h"

#define N_CLIENTS        6
#define MAX_T            64
#define DEPTH            8  /* requests in flight per client at most */
#define MAX_SLOTS        17 /* backpressure: sq 8 + cq 8, and one more to be refused */
#define MAX_ROUTE_K      4
#define MAX_EXPERTS      64
#define TIE_MARGIN       1e-3 /* logit gap under which a token's routing is not compared */
#define ATOL             1e-4
#define RTOL             1e-4
#define CHILD_TIMEOUT_MS 120000
/*
 * The merge cases' window: long enough that the opening batches, submitted
 * together right after the barrier, always find each other.
 */
#define MERGE_WINDOW_US 200000

static const char *arg_moed;
static struct test_daemon daemon_;

/* What each child reports, in memory shared with the parent. */
struct child_report {
	uint64_t batches, tokens, merged;
	uint64_t route_checked, counts_checked, given;
	uint64_t tie_tokens;     /* tokens not compared: near-tie routing */
	uint64_t opening_merged; /* 1 when the batch right after the barrier ran merged */
	int finished;            /* 1 once every check passed */
};

static struct child_report *reports; /* [N_CLIENTS + 1], MAP_SHARED */

/* One request's buffers in the arena, and its reference results. */
struct slot {
	float *x, *y, *rw;
	int32_t *re, *counts;
	struct moe_request rq;
	bool in_flight;
};

struct child {
	unsigned index;
	struct moe_client *c;
	struct moe_model_info mi;
	struct test_ref ref;
	bool merge_enabled;
	struct slot slots[MAX_SLOTS];
	/* reference outputs, private memory */
	float ry[MAX_T * 1024];
	int32_t rexpert[MAX_T * MAX_ROUTE_K];
	float rweight[MAX_T * MAX_ROUTE_K];
	int32_t rcounts[MAX_EXPERTS];
	struct child_report *rep;
};

/* ---------------------------------------------------------------- the client side */

static void child_alloc(struct child *ch, unsigned n_slots)
{
	const size_t rows = (size_t)MAX_T * ch->mi.d_model * sizeof(float);
	const size_t route = (size_t)MAX_T * MAX_ROUTE_K * sizeof(float);

	CHILD_CHECK(ch->mi.d_model <= 1024 && ch->mi.max_experts <= MAX_EXPERTS &&
	                ch->mi.max_slots < MAX_ROUTE_K,
	            "model shape d %u, E %u, slots %u beyond this test's arrays", ch->mi.d_model,
	            ch->mi.max_experts, ch->mi.max_slots);
	CHILD_CHECK(n_slots <= MAX_SLOTS, "%u slots", n_slots);
	for (unsigned i = 0; i < n_slots; i++) {
		struct slot *s = &ch->slots[i];

		CHILD_OK(moe_buf_alloc(ch->c, rows, (void **)&s->x));
		CHILD_OK(moe_buf_alloc(ch->c, rows, (void **)&s->y));
		CHILD_OK(moe_buf_alloc(ch->c, route, (void **)&s->re));
		CHILD_OK(moe_buf_alloc(ch->c, route, (void **)&s->rw));
		CHILD_OK(moe_buf_alloc(ch->c, ch->mi.max_experts * sizeof(int32_t),
		                       (void **)&s->counts));
	}
}

static void child_free(struct child *ch, unsigned n_slots)
{
	for (unsigned i = 0; i < n_slots; i++) {
		moe_buf_free(ch->c, ch->slots[i].x);
		moe_buf_free(ch->c, ch->slots[i].y);
		moe_buf_free(ch->c, ch->slots[i].re);
		moe_buf_free(ch->c, ch->slots[i].rw);
		moe_buf_free(ch->c, ch->slots[i].counts);
	}
}

/* Fill slot @s with a random request (layer, T, flags), its input and poisoned outputs. */
static void request_make(struct child *ch, struct slot *s, uint64_t *seed, uint64_t user_data,
                         uint32_t max_t)
{
	const uint32_t d = ch->mi.d_model;
	struct moe_request *rq = &s->rq;
	uint32_t kind = (uint32_t)(rng_splitmix64(seed) % 8);

	moe_request_init(rq);
	rq->user_data = user_data;
	rq->layer = (uint32_t)(rng_splitmix64(seed) % ch->mi.n_layers);
	rq->n_tokens = 1 + (uint32_t)(rng_splitmix64(seed) % max_t);
	rq->input = s->x;
	rq->output = s->y;
	test_fill_normal(s->x, (size_t)rq->n_tokens * d, seed);
	/* NaN: an output row moed never wrote fails the comparison */
	memset(s->y, 0xff, (size_t)rq->n_tokens * d * sizeof(float));
	memset(s->re, 0x7f, (size_t)MAX_T * MAX_ROUTE_K * sizeof(int32_t));
	memset(s->rw, 0x7f, (size_t)MAX_T * MAX_ROUTE_K * sizeof(float));
	memset(s->counts, 0x7f, ch->mi.max_experts * sizeof(int32_t));

	if (kind <= 1) {
		rq->flags = MOE_REQ_ROUTE_RETURN;
		rq->route_k = test_ref_slots(&ch->ref, rq->layer) + kind; /* exact, or one spare */
		rq->route_expert = s->re;
		rq->route_weight = s->rw;
	} else if (kind == 2) {
		uint32_t E = test_ref_experts(&ch->ref, rq->layer);

		rq->flags = MOE_REQ_ROUTE_GIVEN;
		rq->route_k = 1 + (uint32_t)(rng_splitmix64(seed) % 3);
		rq->route_expert = s->re;
		rq->route_weight = s->rw;
		for (uint32_t i = 0; i < rq->n_tokens * rq->route_k; i++) {
			/* -1 is an empty slot */
			s->re[i] = (int32_t)(rng_splitmix64(seed) % (E + 1)) - 1;
			s->rw[i] = (float)rng_uniform01(seed);
		}
	} else if (kind == 3) {
		rq->flags = MOE_REQ_COUNTS_RETURN;
		rq->expert_counts = s->counts;
	} else if (kind == 4) {
		rq->flags = MOE_REQ_NO_MERGE;
	}
}

/* Check one completion of slot @s against the reference engine. */
static void request_verify(struct child *ch, struct slot *s, const struct moe_completion *done)
{
	const struct moe_request *rq = &s->rq;
	const uint32_t d = ch->mi.d_model, T = rq->n_tokens;
	const uint32_t k = test_ref_slots(&ch->ref, rq->layer);
	const uint32_t E = test_ref_experts(&ch->ref, rq->layer);
	const bool given = rq->flags & MOE_REQ_ROUTE_GIVEN;
	const bool may_merge =
	    ch->merge_enabled &&
	    !(rq->flags & (MOE_REQ_NO_MERGE | MOE_REQ_ROUTE_GIVEN | MOE_REQ_COUNTS_RETURN));
	uint32_t ties = 0;
	char what[96];
	int r;

	CHILD_CHECK(done->status == 0, "request %#llx (layer %u, T %u, flags %#x): status %d (%s)",
	            (unsigned long long)rq->user_data, rq->layer, T, rq->flags, done->status,
	            strerror(-done->status));
	CHILD_CHECK(done->n_dropped == 0, "dropless model dropped %u slots", done->n_dropped);
	CHILD_CHECK(may_merge || !(done->flags & MOE_COMPLETION_MERGED),
	            "request %#llx (flags %#x) ran merged", (unsigned long long)rq->user_data,
	            rq->flags);

	r = test_ref_forward(&ch->ref, rq->layer, s->x, T, given ? s->re : NULL,
	                     given ? s->rw : NULL, rq->route_k, ch->ry, ch->rexpert, ch->rweight,
	                     ch->rcounts);
	CHILD_OK(r);

	for (uint32_t t = 0; t < T; t++) {
		const float *xt = s->x + (size_t)t * d;
		bool tie = !given && test_ref_route_margin(&ch->ref, rq->layer, xt) < TIE_MARGIN;

		if (tie) {
			ties++;
			continue;
		}
		snprintf(what, sizeof(what),
		         "client %u request %#llx layer %u T %u token %u output", ch->index,
		         (unsigned long long)rq->user_data, rq->layer, T, t);
		CHILD_CHECK(test_count_mismatches(what, s->y + (size_t)t * d,
		                                  ch->ry + (size_t)t * d, d, ATOL, RTOL) == 0,
		            "%s differs from the reference engine", what);

		if (!(rq->flags & MOE_REQ_ROUTE_RETURN))
			continue;
		/* the same experts with the same weights; the slot order may differ on ties */
		for (uint32_t j = 0; j < k; j++) {
			int32_t e = ch->rexpert[t * k + j];
			uint32_t m = 0;

			while (m < k && s->re[t * rq->route_k + m] != e)
				m++;
			CHILD_CHECK(m < k,
			            "client %u request %#llx token %u: expert %d missing from "
			            "the returned routing",
			            ch->index, (unsigned long long)rq->user_data, t, e);
			CHILD_CHECK(fabsf(s->rw[t * rq->route_k + m] - ch->rweight[t * k + j]) <=
			                1e-4f,
			            "token %u expert %d: weight %g, reference %g", t, e,
			            s->rw[t * rq->route_k + m], ch->rweight[t * k + j]);
		}
		for (uint32_t j = k; j < rq->route_k; j++)
			CHILD_CHECK(
			    s->re[t * rq->route_k + j] == -1 && s->rw[t * rq->route_k + j] == 0.0f,
			    "token %u spare slot %u: expert %d weight %g, expected -1 and 0", t, j,
			    s->re[t * rq->route_k + j], s->rw[t * rq->route_k + j]);
	}
	ch->rep->tie_tokens += ties;

	if (rq->flags & MOE_REQ_ROUTE_RETURN) {
		CHILD_CHECK(done->route_k == k, "completion route_k %u, the layer has %u slots",
		            done->route_k, k);
		ch->rep->route_checked++;
	}
	if (rq->flags & MOE_REQ_COUNTS_RETURN) {
		int64_t sum = 0, ref_sum = 0;

		for (uint32_t e = 0; e < ch->mi.max_experts; e++) {
			if (e >= E) {
				CHILD_CHECK(s->counts[e] == 0,
				            "count of expert %u beyond the layer: %d", e,
				            s->counts[e]);
				continue;
			}
			sum += s->counts[e];
			ref_sum += ch->rcounts[e];
			/* a near-tie token may have gone to the other expert */
			CHILD_CHECK(
			    ties > 0 || s->counts[e] == ch->rcounts[e],
			    "client %u request %#llx: expert %u got %d tokens, reference %d",
			    ch->index, (unsigned long long)rq->user_data, e, s->counts[e],
			    ch->rcounts[e]);
		}
		CHILD_CHECK(sum == ref_sum, "counts sum %lld, reference %lld", (long long)sum,
		            (long long)ref_sum);
		ch->rep->counts_checked++;
	}
	if (given)
		ch->rep->given++;
	ch->rep->batches++;
	ch->rep->tokens += T;
	if (done->flags & MOE_COMPLETION_MERGED)
		ch->rep->merged++;
}

/* The slot whose in-flight request has @user_data, or NULL. */
static struct slot *slot_find(struct child *ch, unsigned n_slots, uint64_t user_data)
{
	for (unsigned i = 0; i < n_slots; i++)
		if (ch->slots[i].in_flight && ch->slots[i].rq.user_data == user_data)
			return &ch->slots[i];
	return NULL;
}

/* Collect @n completions of in-flight requests, verifying each exactly once. */
static void collect(struct child *ch, unsigned n_slots, unsigned n, bool poll_reap)
{
	struct moe_completion done[DEPTH * 2 + 2];
	int64_t deadline = test_now_ns() + 60ll * 1000000000;

	while (n > 0) {
		int got;

		if (poll_reap) {
			got = moe_reap(ch->c, done, DEPTH * 2 + 2);
			CHILD_OK(got);
			if (got == 0) {
				CHILD_CHECK(test_now_ns() < deadline, "no completion within 60 s");
				usleep(50);
				continue;
			}
		} else {
			got = moe_wait(ch->c, done, DEPTH * 2 + 2, 60ll * 1000000000);
			CHILD_OK(got);
		}
		CHILD_CHECK((unsigned)got <= n, "%d completions, %u requests in flight", got, n);
		for (int i = 0; i < got; i++) {
			struct slot *s = slot_find(ch, n_slots, done[i].user_data);

			CHILD_CHECK(s,
			            "completion with user_data %#llx: not in flight (a "
			            "duplicate or a stranger)",
			            (unsigned long long)done[i].user_data);
			s->in_flight = false;
			request_verify(ch, s, &done[i]);
		}
		n -= (unsigned)got;
	}
}

static void child_connect(struct child *ch, const char *name, uint32_t sq, uint32_t cq)
{
	struct moe_client_opts o;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = name;
	o.arena_size = 8ull << 20;
	if (sq) {
		o.sq_entries = sq;
		o.cq_entries = cq;
	}
	CHILD_OK(moe_connect(&o, &ch->c));
	ch->mi.size = sizeof(ch->mi);
	CHILD_OK(moe_model_info_get(ch->c, &ch->mi));
	CHILD_OK(test_ref_open(&ch->ref, daemon_.model_path));
	CHILD_CHECK(ch->ref.d_model == ch->mi.d_model && ch->ref.n_layers == ch->mi.n_layers,
	            "moed serves d_model %u, %u layers; the file has %u, %u", ch->mi.d_model,
	            ch->mi.n_layers, ch->ref.d_model, ch->ref.n_layers);
}

static void child_disconnect(struct child *ch, unsigned n_slots)
{
	struct moe_completion extra;

	/* nothing may complete that was not submitted */
	CHILD_CHECK(moe_reap(ch->c, &extra, 1) == 0, "a completion nobody asked for: %#llx",
	            (unsigned long long)extra.user_data);
	child_free(ch, n_slots);
	moe_close(ch->c);
	test_ref_close(&ch->ref);
}

/* One client of the mixed workload; never returns. */
static void __attribute__((noreturn))
child_mixed(unsigned index, unsigned n_requests, bool merge_enabled, int ready_fd, int go_fd)
{
	struct child *ch = calloc(1, sizeof(*ch));
	uint64_t seed = 0x5eed0000u + index * 7919u, seq = 0;
	unsigned done = 0;
	char name[32], byte = 1;

	alarm(CHILD_TIMEOUT_MS / 1000);
	CHILD_CHECK(ch, "out of memory");
	ch->index = index;
	ch->rep = &reports[index];
	ch->merge_enabled = merge_enabled;
	snprintf(name, sizeof(name), "it-many-%u", index);
	child_connect(ch, name, 0, 0);
	child_alloc(ch, DEPTH);

	/* the barrier: everyone connected, then all start at once */
	CHILD_CHECK(write(ready_fd, &byte, 1) == 1, "ready pipe: %m");
	CHILD_CHECK(read(go_fd, &byte, 1) == 0, "go pipe: expected EOF");
	close(ready_fd);
	close(go_fd);

	/*
	 * The opening: right after the barrier every client forwards one
	 * mergeable batch of layer 0. With the long merge window of the merge
	 * cases the first of them waits for the others (until every connected
	 * client has one queued, or the window ends), so they run merged (the
	 * parent requires at least two to have).
	 */
	{
		struct moe_completion c;
		struct slot *s = &ch->slots[0];

		request_make(ch, s, &seed, (uint64_t)index << 48 | seq++, MAX_T);
		s->rq.layer = 0;
		s->rq.flags = 0;
		CHILD_OK(moe_forward(ch->c, &s->rq, &c));
		request_verify(ch, s, &c);
		ch->rep->opening_merged = (c.flags & MOE_COMPLETION_MERGED) != 0;
		done++;
	}

	while (done < n_requests) {
		uint32_t mode = (uint32_t)(rng_splitmix64(&seed) % 4), depth;

		if (mode == 0) {
			struct moe_completion c;
			struct slot *s = &ch->slots[0];

			request_make(ch, s, &seed, (uint64_t)index << 48 | seq++, MAX_T);
			CHILD_OK(moe_forward(ch->c, &s->rq, &c));
			CHILD_CHECK(c.user_data == s->rq.user_data, "moe_forward: user_data %#llx",
			            (unsigned long long)c.user_data);
			request_verify(ch, s, &c);
			done++;
			continue;
		}
		/* a pipelined burst: all submitted, then reaped as they come */
		depth = 2 + (uint32_t)(rng_splitmix64(&seed) % (DEPTH - 1));
		if (depth > n_requests - done)
			depth = n_requests - done;
		for (uint32_t i = 0; i < depth; i++) {
			struct slot *s = &ch->slots[i];

			request_make(ch, s, &seed, (uint64_t)index << 48 | seq++, MAX_T);
			CHILD_OK(moe_submit(ch->c, &s->rq));
			s->in_flight = true;
		}
		collect(ch, DEPTH, depth, mode == 3);
		done += depth;
	}
	child_disconnect(ch, DEPTH);
	ch->rep->finished = 1;
	free(ch);
	exit(0);
}

/* The backpressure client; never returns. */
static void __attribute__((noreturn)) child_backpressure(unsigned index, unsigned rounds)
{
	const uint32_t sq = 8, cq = 8, n_slots = sq + cq + 1;
	_Static_assert(8 + 8 + 1 <= MAX_SLOTS, "backpressure slots");
	struct child *ch = calloc(1, sizeof(*ch));
	uint64_t seed = 0xbac0u, seq = 0;
	struct moe_completion c;

	alarm(CHILD_TIMEOUT_MS / 1000);
	CHILD_CHECK(ch, "out of memory");
	ch->index = index;
	ch->rep = &reports[index];
	child_connect(ch, "it-backpressure", sq, cq);
	child_alloc(ch, n_slots);

	for (unsigned round = 0; round < rounds; round++) {
		unsigned submitted = 0;
		int64_t last_ok = test_now_ns(), quiet_ns = test_scale(1000, 3000) * 1000000ll;

		/* submit, never reap, until the rings are full and stay full */
		for (;;) {
			struct slot *s = &ch->slots[submitted < n_slots ? submitted : n_slots - 1];
			int r;

			request_make(ch, s, &seed, (uint64_t)index << 48 | seq, 16);
			r = moe_submit(ch->c, &s->rq);
			if (r == 0) {
				CHILD_CHECK(
				    submitted < sq + cq,
				    "moe_submit accepted request %u: the SQ (%u) and CQ (%u) "
				    "should be full",
				    submitted + 1, sq, cq);
				s->in_flight = true;
				submitted++;
				seq++;
				last_ok = test_now_ns();
				continue;
			}
			CHILD_CHECK(r == -EAGAIN, "moe_submit: %d (%s), expected 0 or -EAGAIN", r,
			            strerror(-r));
			if (test_now_ns() - last_ok > quiet_ns)
				break;
			usleep(2000);
		}
		CHILD_CHECK(submitted == sq + cq,
		            "round %u: -EAGAIN for good after %u requests, expected sq + cq = %u",
		            round, submitted, sq + cq);
		/* one in flight already: moe_forward refuses */
		CHILD_CHECK(moe_forward(ch->c, &ch->slots[0].rq, &c) == -EBUSY,
		            "moe_forward with requests in flight must be -EBUSY");
		collect(ch, n_slots, submitted, round % 2 == 1);
	}
	child_disconnect(ch, n_slots);
	ch->rep->finished = 1;
	free(ch);
	exit(0);
}

/* ---------------------------------------------------------------- the parent side */

static int test_setup(void **state)
{
	memset(reports, 0, sizeof(*reports) * (N_CLIENTS + 1));
	return fd_check_setup(state);
}

static int test_teardown(void **state)
{
	if (daemon_.pid > 0) /* a failed test left it running */
		test_daemon_kill(&daemon_, SIGKILL);
	return fd_check_teardown(state);
}

static void run_mixed(const char *doorbell, uint32_t window_us)
{
	unsigned n_req = test_scale(100, 40);
	char set_window[48], set_doorbell[48];
	const char *extra[] = {"--set", set_window, "--set", set_doorbell, NULL};
	pid_t pids[N_CLIENTS];
	int ready[2], go[2];
	struct child_report sum = {0};
	json_t *st;
	char byte;

	snprintf(set_window, sizeof(set_window), "merge_window_us=%u", window_us);
	snprintf(set_doorbell, sizeof(set_doorbell), "doorbell=%s", doorbell);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	if (strcmp(doorbell, "auto") != 0)
		assert_string_equal(test_json_str(st, "daemon.doorbell"), doorbell);
	fprintf(stderr, "test: doorbell %s, merge_window_us %u, %u clients x %u requests\n",
	        test_json_str(st, "daemon.doorbell"), window_us, N_CLIENTS, n_req);
	json_decref(st);

	ASSERT_OK(pipe2(ready, O_CLOEXEC));
	ASSERT_OK(pipe2(go, O_CLOEXEC));
	for (unsigned i = 0; i < N_CLIENTS; i++) {
		pids[i] = test_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			child_mixed(i, n_req, window_us > 0, ready[1], go[0]);
		}
	}
	close(ready[1]);
	close(go[0]);
	for (unsigned i = 0; i < N_CLIENTS; i++)
		if (read(ready[0], &byte, 1) != 1)
			break; /* a child died: test_children_wait() says which */
	close(go[1]);          /* go */
	close(ready[0]);
	ASSERT_OK(test_children_wait(pids, N_CLIENTS, CHILD_TIMEOUT_MS + 10000));

	for (unsigned i = 0; i < N_CLIENTS; i++) {
		assert_int_equal(reports[i].finished, 1);
		sum.batches += reports[i].batches;
		sum.tokens += reports[i].tokens;
		sum.merged += reports[i].merged;
		sum.route_checked += reports[i].route_checked;
		sum.counts_checked += reports[i].counts_checked;
		sum.given += reports[i].given;
		sum.tie_tokens += reports[i].tie_tokens;
		sum.opening_merged += reports[i].opening_merged;
	}
	fprintf(stderr,
	        "test: %llu batches, %llu tokens, %llu merged (%llu of the %u opening batches), "
	        "%llu routing and %llu counts returned, %llu given, %llu near-tie tokens not "
	        "compared\n",
	        (unsigned long long)sum.batches, (unsigned long long)sum.tokens,
	        (unsigned long long)sum.merged, (unsigned long long)sum.opening_merged, N_CLIENTS,
	        (unsigned long long)sum.route_checked, (unsigned long long)sum.counts_checked,
	        (unsigned long long)sum.given, (unsigned long long)sum.tie_tokens);
	ASSERT_EQ(sum.batches, (uint64_t)N_CLIENTS * n_req);
	/* the ties are rare: many would mean the margin test is broken */
	assert_true(sum.tie_tokens * 100 < sum.tokens);

	/* every client gone (hang-up or pidfd), then the totals are final */
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients_served"), N_CLIENTS);
	ASSERT_EQ(test_json_int(st, "totals.clients_corrupt"), 0);
	ASSERT_EQ(test_json_int(st, "totals.batches"), sum.batches);
	ASSERT_EQ(test_json_int(st, "totals.tokens"), sum.tokens);
	ASSERT_EQ(test_json_int(st, "totals.errors"), 0);
	ASSERT_EQ(test_json_int(st, "totals.dropped"), 0);
	ASSERT_EQ(test_json_int(st, "totals.merged_batches"), sum.merged);
	ASSERT_EQ(test_json_int(st, "layers.0.tokens") + test_json_int(st, "layers.1.tokens"),
	          sum.tokens);
	if (window_us == 0) {
		ASSERT_EQ(sum.merged, 0);
		/* one engine run per batch */
		ASSERT_EQ(test_json_int(st, "totals.engine_runs"), sum.batches);
	} else {
		/*
		 * Merging happened: the opening batches, queued together
		 * within the long window, ran at least one merged run (of two
		 * or more), so there were fewer engine runs than batches.
		 */
		if (sum.opening_merged < 2)
			fail_msg("merge_window_us %u: %llu of the %u opening batches ran merged, "
			         "expected at least 2",
			         window_us, (unsigned long long)sum.opening_merged, N_CLIENTS);
		assert_true(sum.merged >= sum.opening_merged);
		assert_true(test_json_int(st, "totals.engine_runs") < (int64_t)sum.batches);
	}
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static void test_futex_no_merge(void **state)
{
	(void)state;
	run_mixed("auto", 0);
}

static void test_futex_merge(void **state)
{
	(void)state;
	run_mixed("auto", MERGE_WINDOW_US);
}

static void test_eventfd_no_merge(void **state)
{
	(void)state;
	run_mixed("eventfd", 0);
}

static void test_eventfd_merge(void **state)
{
	(void)state;
	run_mixed("eventfd", MERGE_WINDOW_US);
}

static void test_backpressure(void **state)
{
	const unsigned rounds = 3;
	pid_t pid;
	json_t *st;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, NULL));
	pid = test_fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_backpressure(N_CLIENTS, rounds);
	ASSERT_OK(test_children_wait(&pid, 1, CHILD_TIMEOUT_MS + 10000));
	assert_int_equal(reports[N_CLIENTS].finished, 1);
	ASSERT_EQ(reports[N_CLIENTS].batches, rounds * 16);

	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.batches"), rounds * 16);
	ASSERT_EQ(test_json_int(st, "totals.errors"), 0);
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

/*
 * max_clients: one more is refused with -EUSERS, and served once a slot frees
 * up. All three clients are this process: max_clients_per_process must let
 * it have both slots (derived, it would be 1).
 */
static void test_max_clients(void **state)
{
	const char *extra[] = {"--set", "max_clients=2", "--set", "max_clients_per_process=2",
	                       NULL};
	struct moe_client_opts o;
	struct moe_client *a, *b, *c = NULL;
	json_t *st;

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.arena_size = 1u << 20;
	o.name = "it-max-a";
	ASSERT_OK(moe_connect(&o, &a));
	o.name = "it-max-b";
	ASSERT_OK(moe_connect(&o, &b));
	o.name = "it-max-c";
	ASSERT_ERRNO(moe_connect(&o, &c), EUSERS);
	assert_null(c);
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	ASSERT_EQ(test_json_int(st, "totals.clients"), 2);
	ASSERT_EQ(test_json_int(st, "totals.clients_refused"), 1);
	json_decref(st);

	moe_close(a);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 1, 10000));
	ASSERT_OK(moe_connect(&o, &c));
	moe_close(b);
	moe_close(c);
	ASSERT_OK(test_status_wait_int(daemon_.socket, "totals.clients", 0, 10000));
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int group_setup(void **state)
{
	(void)state;
	reports = mmap(NULL, sizeof(*reports) * (N_CLIENTS + 1), PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (reports == MAP_FAILED)
		return -1;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	munmap(reports, sizeof(*reports) * (N_CLIENTS + 1));
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_futex_no_merge, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_futex_merge, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_eventfd_no_merge, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_eventfd_merge, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_backpressure, test_setup, test_teardown),
	    cmocka_unit_test_setup_teardown(test_max_clients, test_setup, test_teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
