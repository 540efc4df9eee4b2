/* SPDX-License-Identifier: MIT */
/*
 * Tests of the peers' state machine (daemon/peers/) on the fake transport:
 * two daemons' peers objects in one process, A sending experts 4-7 of every
 * layer to B, a pump thread playing both reactors. Real engines compute on
 * both sides, so results are checked bitwise against A computing alone.
 *
 *   - remote experts give bitwise the local output, and B counts what it served;
 *   - the Nth send fails: that batch's remote slots are dropped (drop) and
 *     the peer goes down, reconnects, and serves bitwise again;
 *   - a reply that arrives twice is counted late and changes nothing;
 *   - replies held past the deadline: the batch fails with -EHOSTUNREACH
 *     (error) or drops the slots (drop), the miss is counted, the peer
 *     reconnects; the replies released later touch nothing (ASan watches);
 *   - a crashed peer fails its calls at once (no deadline wait);
 *   - B refuses A when the model differs (the store's identity, or only the
 *     values: same names and shapes, another seed) or when it does not
 *     compute what A would ask, and A's status says why.
 *
 * With sends in flight (the fake's defer_send_done: transport_send returns
 * 1 and on_send_done comes later, as with UCX), each test says what it
 * catches:
 *   - the bitwise and the send-failure cases again with every send deferred;
 *   - replies that come before their requests' sends completed;
 *   - a deadline that passes under a pending request send, whose failure
 *     comes after the peer is up again on a new connection;
 *   - a peer that crashes with sends pending on both sides;
 *   - a served reply still in flight when its requester gives the call up.
 * Each ends by checking that every deferred send completed or was dropped
 * by transport_free exactly once and that its data was untouched until then
 * (the fake reads it again: rows buffers go back to a buf_cache, so a
 * buffer reused too early shows as changed; one freed, under ASan, which
 * the sanitizer build runs this under). Each was seen to fail with the
 * path it guards broken (a call or job let go under its send, a failed
 * send ignored, a send taken for failed when it returns 1).
 */
#include "test_assert.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_transport.h"

#include "config/config.h"
#include "engine/engine.h"
#include "model/model.h"
#include "model/synth_model.h"
#include "peers/peer_proto.h"
#include "peers/peers.h"

#define N_EXPERTS 8
#define N_LAYERS 2
#define D_MODEL 32
#define NT 96
#define K 2
#define DEADLINE_MS 300

static char tmp_dir[] = "/tmp/test_peer_calls.XXXXXX";
static char model_path[300], model2_path[300];
static struct moe_model *model;
static struct moe_model *model_reseeded; /* the same shapes and names, other values */
static struct moe_model *model_b;        /* what B serves (model unless a test says) */
static struct engine *engine_a, *engine_b;
static float *x;
static float *local[N_LAYERS];
static int32_t *local_route[N_LAYERS];

static const char *const ID_A = "00112233445566778899aabbccddeeff";
static const char *const ID_OTHER = "ffeeddccbbaa99887766554433221100";

/* ---- a pair of daemons and the pump that plays their reactors ---- */

struct pair {
	struct fake_net net;
	struct moed_config cfg_a, cfg_b;
	struct peers *a, *b;
	pthread_t pump;
	pthread_mutex_t mu; /* held while the pump polls: status reads take it too */
	atomic_bool stop;
	atomic_bool no_tick; /* no peers_tick(): only replies and transfers move calls */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *pump_main(void *arg)
{
	struct pair *p = arg;
	uint64_t last_tick = 0;

	while (!atomic_load(&p->stop)) {
		uint64_t now = now_ns();

		pthread_mutex_lock(&p->mu);
		peers_poll(p->a, now);
		peers_poll(p->b, now);
		if (!atomic_load(&p->no_tick) && now - last_tick > 10000000ull) {
			peers_tick(p->a, now);
			peers_tick(p->b, now);
			last_tick = now;
		}
		pthread_mutex_unlock(&p->mu);
		usleep(200);
	}
	return NULL;
}

static void cfg_set(struct moed_config *c, const char *k, const char *v)
{
	struct diag d = { { 0 } };

	if (moed_config_set(c, k, v, &d) < 0)
		fail_msg("%s = %s: %s", k, v, d.msg);
}

/* A pair with no fault set; knobs set before pair_open() apply from the first send. */
static void pair_init(struct pair *p)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
}

/* B, then A (which connects at once), then the pump. */
static void pair_open(struct pair *p, const char *policy, const char *id_b, const char *hosts_b,
		      const char *peers_b)
{
	struct peers_opts o = { .model = model, .transport_new = fake_transport_new };
	struct diag d = { { 0 } };
	char deadline[16];

	snprintf(deadline, sizeof(deadline), "%d", DEADLINE_MS);
	moed_config_init(&p->cfg_a);
	cfg_set(&p->cfg_a, "peers", "b=10.0.0.2:7300");
	cfg_set(&p->cfg_a, "expert_hosts", "4-7@b");
	cfg_set(&p->cfg_a, "peer_deadline_ms", deadline);
	cfg_set(&p->cfg_a, "peer_failure", policy);
	moed_config_init(&p->cfg_b);
	cfg_set(&p->cfg_b, "listen", "10.0.0.2:7300");
	cfg_set(&p->cfg_b, "peers", peers_b);
	cfg_set(&p->cfg_b, "expert_hosts", hosts_b);
	fake_net_current = &p->net;
	/* B first: A connects at once */
	o.cfg = &p->cfg_b;
	o.model = model_b;
	o.model_path = model_b == model_reseeded ? model2_path : model_path;
	o.identity_hex = id_b;
	o.engine = engine_b;
	o.name = "B";
	if (peers_new(&o, &p->b, &d) < 0)
		fail_msg("peers_new B: %s", d.msg);
	o.cfg = &p->cfg_a;
	o.model = model;
	o.model_path = model_path;
	o.identity_hex = ID_A;
	o.engine = engine_a;
	o.name = "A";
	if (peers_new(&o, &p->a, &d) < 0)
		fail_msg("peers_new A: %s", d.msg);
	assert_non_null(p->a);
	assert_non_null(p->b);
	assert_int_equal(pthread_create(&p->pump, NULL, pump_main, p), 0);
}

static void pair_start(struct pair *p, const char *policy, const char *id_b,
		       const char *hosts_b, const char *peers_b)
{
	pair_init(p);
	pair_open(p, policy, id_b, hosts_b, peers_b);
}

/* ---- sends in flight ---- */

/* The transports' places in the net (fake_net.send[]): B is made first. */
enum { NET_B = 0, NET_A = 1 };

/*
 * Once both are freed: each deferred send completed once or was dropped by
 * transport_free, and its data was untouched until then (or read after
 * free, which ASan reports).
 */
static void expect_sends_settled(struct pair *p)
{
	for (unsigned i = 0; i < p->net.n; i++) {
		struct fake_send_stats *st = &p->net.send[i];

		ASSERT_EQ(atomic_load(&st->deferred),
			  atomic_load(&st->done_ok) + atomic_load(&st->done_canceled) +
				  atomic_load(&st->done_reset) + atomic_load(&st->dropped));
		ASSERT_EQ(atomic_load(&st->buf_changed), 0);
	}
}

/* Defer the sends of kind @id (0: all), their completions held while @hold. */
static void defer_sends(struct pair *p, unsigned id, bool hold)
{
	atomic_store(&p->net.defer_send_id, id);
	atomic_store(&p->net.hold_send_done, hold);
	atomic_store(&p->net.defer_send_done, true);
}

/* A's calls that its reactor still holds (peers_busy), or B's served requests (peers_in_flight). */
static bool in_flight(struct pair *p, bool of_a)
{
	bool busy;

	pthread_mutex_lock(&p->mu);
	busy = of_a ? peers_busy(p->a) : peers_in_flight(p->b);
	pthread_mutex_unlock(&p->mu);
	return busy;
}

static void wait_idle(struct pair *p, bool of_a)
{
	for (int i = 0; i < 500 && in_flight(p, of_a); i++)
		usleep(10000);
	if (in_flight(p, of_a))
		fail_msg("%s still holds calls or requests", of_a ? "A" : "B");
}

static void wait_count_at(atomic_uint *v, unsigned want, const char *what)
{
	for (int i = 0; i < 500 && atomic_load(v) < want; i++)
		usleep(10000);
	if (atomic_load(v) != want)
		fail_msg("%s is %u, expected %u", what, atomic_load(v), want);
}
#define WAIT_COUNT(_v, _want) wait_count_at(&(_v), (_want), #_v)

static void pair_stop(struct pair *p)
{
	atomic_store(&p->stop, true);
	pthread_join(p->pump, NULL);
	/* A first: its connections' ends in B then fail, as they would */
	p->a = peers_free(p->a);
	p->b = peers_free(p->b);
	pthread_mutex_destroy(&p->mu);
	expect_sends_settled(p);
}

/* A's view of peer b, or B's own "served_by_us" (a new reference). */
static json_t *status_of(struct pair *p, bool of_a)
{
	json_t *root, *ret;

	pthread_mutex_lock(&p->mu);
	root = peers_status_json(of_a ? p->a : p->b, now_ns());
	pthread_mutex_unlock(&p->mu);
	assert_non_null(root);
	ret = of_a ? json_array_get(json_object_get(root, "peers"), 0)
		   : json_object_get(root, "served_by_us");
	json_incref(ret);
	json_decref(root);
	return ret;
}

static long long peer_counter(struct pair *p, const char *key)
{
	json_t *pe = status_of(p, true);
	long long v = (long long)json_integer_value(json_object_get(pe, key));

	json_decref(pe);
	return v;
}

static bool peer_state_is(struct pair *p, const char *state)
{
	json_t *pe = status_of(p, true);
	bool is = strcmp(json_string_value(json_object_get(pe, "state")), state) == 0;

	json_decref(pe);
	return is;
}

static void wait_state(struct pair *p, const char *state)
{
	for (int i = 0; i < 1000; i++) {
		if (peer_state_is(p, state))
			return;
		usleep(10000);
	}
	fail_msg("peer b never reached state %s", state);
}

/* ---- batches ---- */

struct out {
	float y[NT * D_MODEL];
	int32_t route[NT * K];
	uint32_t n_dropped;
};

static int forward_remote(struct pair *p, uint32_t layer, struct out *o)
{
	struct peers_batch *b;
	struct engine_remote rem;
	struct engine_batch batch = { .x = x, .n_tokens = NT, .output = o->y,
				      .expert_index = o->route };
	struct diag d = { { 0 } };
	int r;

	assert_int_equal(peers_batch_new(p->a, &b), 0);
	assert_true(peers_batch_remote(b, layer, &rem));
	batch.remote = &rem;
	r = engine_forward(engine_a, moe_model_layer(model, layer), NULL, &batch, &d);
	o->n_dropped = batch.n_dropped;
	peers_batch_free(b);
	return r;
}

static uint32_t remote_slots(uint32_t layer)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < NT * K; i++)
		n += local_route[layer][i] >= 4;
	return n;
}

static void expect_bitwise(struct pair *p)
{
	static struct out o;

	for (uint32_t l = 0; l < N_LAYERS; l++) {
		assert_int_equal(forward_remote(p, l, &o), 0);
		assert_memory_equal(o.y, local[l], sizeof(o.y));
		assert_int_equal(o.n_dropped, 0);
	}
}

static void expect_dropped(const struct out *o, uint32_t layer)
{
	assert_int_equal(o->n_dropped, remote_slots(layer));
	for (uint32_t i = 0; i < NT * K; i++)
		assert_int_equal(o->route[i], local_route[layer][i] >= 4 ? -1 : local_route[layer][i]);
}

/* ---- fixture ---- */

static int group_setup(void **state)
{
	struct synth_opts so;
	struct engine_opts eo;
	struct diag d = { { 0 } };

	(void)state;
	assert_non_null(mkdtemp(tmp_dir));
	snprintf(model_path, sizeof(model_path), "%s/m.safetensors", tmp_dir);
	synth_opts_init(&so);
	so.output = model_path;
	so.d_model = D_MODEL;
	so.d_ff = 48;
	so.n_experts = N_EXPERTS;
	so.n_layers = N_LAYERS;
	so.tokens = 4;
	so.seed = 5;
	so.settings[so.n_settings++] = "router=topk";
	so.settings[so.n_settings++] = "top_k=2";
	so.settings[so.n_settings++] = "activation=silu_gated";
	if (synth_model_write(&so, &d) < 0 || moe_model_open(model_path, NULL, 0, &model, &d) < 0)
		fail_msg("model: %s", d.msg);
	so.seed = 6;
	snprintf(model2_path, sizeof(model2_path), "%s/m2.safetensors", tmp_dir);
	so.output = model2_path;
	if (synth_model_write(&so, &d) < 0 ||
	    moe_model_open(model2_path, NULL, 0, &model_reseeded, &d) < 0)
		fail_msg("model: %s", d.msg);
	model_b = model;
	engine_opts_init(&eo);
	eo.n_workers = 1;
	assert_int_equal(engine_new(&eo, &engine_a, &d), 0);
	assert_int_equal(engine_new(&eo, &engine_b, &d), 0);
	x = malloc(sizeof(float) * NT * D_MODEL);
	assert_non_null(x);
	srand(3);
	for (uint32_t i = 0; i < NT * D_MODEL; i++)
		x[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
	for (uint32_t l = 0; l < N_LAYERS; l++) {
		struct engine_batch b = { .x = x, .n_tokens = NT };

		local[l] = malloc(sizeof(float) * NT * D_MODEL);
		local_route[l] = malloc(sizeof(int32_t) * NT * K);
		b.output = local[l];
		b.expert_index = local_route[l];
		assert_int_equal(engine_forward(engine_a, moe_model_layer(model, l), NULL, &b, &d),
				 0);
		assert_true(remote_slots(l) > 0);
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	for (uint32_t l = 0; l < N_LAYERS; l++) {
		free(local[l]);
		free(local_route[l]);
	}
	free(x);
	engine_free(engine_a);
	engine_free(engine_b);
	moe_model_free(model);
	moe_model_free(model_reseeded);
	unlink(model_path);
	unlink(model2_path);
	rmdir(tmp_dir);
	return 0;
}

/* ---- tests ---- */

static void bitwise_case(bool deferred)
{
	struct pair p;
	json_t *served;

	pair_init(&p);
	if (deferred)
		defer_sends(&p, 0, false);
	pair_open(&p, "error", ID_A, "", "");
	wait_state(&p, "up");
	expect_bitwise(&p);
	served = status_of(&p, false);
	assert_int_equal(json_integer_value(json_object_get(served, "requests")), N_LAYERS);
	assert_int_equal(json_integer_value(json_object_get(served, "tokens")),
			 remote_slots(0) + remote_slots(1));
	json_decref(served);
	assert_int_equal(peer_counter(&p, "tokens_out"), remote_slots(0) + remote_slots(1));
	assert_int_equal(peer_counter(&p, "calls_failed"), 0);
	pair_stop(&p);
	if (!deferred)
		return;
	/* HELLO and a request per layer, HELLO_REPLY and a reply per layer: in flight, then done */
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].deferred), 1 + N_LAYERS);
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].done_ok), 1 + N_LAYERS);
	ASSERT_EQ(atomic_load(&p.net.send[NET_B].deferred), 1 + N_LAYERS);
	ASSERT_EQ(atomic_load(&p.net.send[NET_B].done_ok), 1 + N_LAYERS);
}

static void remote_experts_are_bitwise(void **state)
{
	(void)state;
	bitwise_case(false);
}

/* Catches a path that gives other results, or loses a call, when sends return 1 (UCX's case). */
static void remote_experts_are_bitwise_deferred(void **state)
{
	(void)state;
	bitwise_case(true);
}

static void nth_send_fails_case(bool deferred)
{
	static struct out o;
	struct pair p;

	pair_init(&p);
	if (deferred)
		defer_sends(&p, 0, false);
	pair_open(&p, "drop", ID_A, "", "");
	wait_state(&p, "up");
	expect_bitwise(&p);
	/* the next send is the request of the batch below */
	atomic_store(&p.net.fail_send_at, atomic_load(&p.net.sends) + 1);
	assert_int_equal(forward_remote(&p, 1, &o), 0);
	expect_dropped(&o, 1);
	atomic_store(&p.net.fail_send_at, 0);
	assert_true(peer_counter(&p, "disconnects") >= 1);
	wait_state(&p, "up");
	assert_true(peer_counter(&p, "connects") >= 2);
	expect_bitwise(&p);
	pair_stop(&p);
}

static void nth_send_fails_then_reconnects(void **state)
{
	(void)state;
	nth_send_fails_case(false);
}

/* The same with the sends that do not fail in flight: the reconnect's HELLO too. */
static void nth_send_fails_then_reconnects_deferred(void **state)
{
	(void)state;
	nth_send_fails_case(true);
}

static void duplicate_reply_changes_nothing(void **state)
{
	struct pair p;

	(void)state;
	pair_start(&p, "error", ID_A, "", "");
	wait_state(&p, "up");
	atomic_store(&p.net.duplicate_id, PEER_MSG_EXPERT_REPLY);
	expect_bitwise(&p);
	/* the copy arrives after the first settled the call */
	for (int i = 0; i < 100 && peer_counter(&p, "late_replies") == 0; i++)
		usleep(10000);
	assert_int_equal(peer_counter(&p, "late_replies"), 1);
	assert_int_equal(peer_counter(&p, "calls_failed"), 0);
	assert_true(peer_state_is(&p, "up"));
	expect_bitwise(&p);
	pair_stop(&p);
}

static void held_replies(const char *policy, int expect)
{
	static struct out o;
	struct pair p;

	pair_start(&p, policy, ID_A, "", "");
	wait_state(&p, "up");
	atomic_store(&p.net.hold_id, PEER_MSG_EXPERT_REPLY);
	assert_int_equal(forward_remote(&p, 0, &o), expect);
	if (expect == 0)
		expect_dropped(&o, 0);
	/* the reactor sees the runner gave up: a miss, the peer is down */
	for (int i = 0; i < 200 && peer_counter(&p, "deadline_misses") == 0; i++)
		usleep(10000);
	assert_int_equal(peer_counter(&p, "deadline_misses"), 1);
	/* the held reply goes now: its call is gone, nothing may touch it */
	atomic_store(&p.net.hold_id, 0);
	wait_state(&p, "up");
	expect_bitwise(&p);
	pair_stop(&p);
}

/*
 * A reply that comes after its runner gave up, before any tick swept the
 * call: still the peer's deadline miss, and the peer goes down, so the
 * next batches do not each wait a deadline.
 */
static void late_reply_before_the_sweep(void **state)
{
	static struct out o;
	struct pair p;

	(void)state;
	pair_start(&p, "drop", ID_A, "", "");
	wait_state(&p, "up");
	atomic_store(&p.no_tick, true);
	atomic_store(&p.net.hold_id, PEER_MSG_EXPERT_REPLY);
	assert_int_equal(forward_remote(&p, 0, &o), 0);
	expect_dropped(&o, 0);
	atomic_store(&p.net.hold_id, 0);
	for (int i = 0; i < 200 && peer_counter(&p, "deadline_misses") == 0; i++)
		usleep(10000);
	assert_int_equal(peer_counter(&p, "deadline_misses"), 1);
	assert_true(peer_state_is(&p, "down"));
	atomic_store(&p.no_tick, false);
	wait_state(&p, "up");
	expect_bitwise(&p);
	pair_stop(&p);
}

static void late_reply_with_error_policy(void **state)
{
	(void)state;
	held_replies("error", -EHOSTUNREACH);
}

static void late_reply_with_drop_policy(void **state)
{
	(void)state;
	held_replies("drop", 0);
}

static void crashed_peer_fails_calls_at_once(void **state)
{
	static struct out o;
	struct pair p;
	long long misses;

	(void)state;
	pair_start(&p, "drop", ID_A, "", "");
	wait_state(&p, "up");
	pthread_mutex_lock(&p.mu);
	/* B's transport is the first of the net */
	fake_transport_crash((struct transport *)p.net.t[0]);
	atomic_store(&p.net.refuse_connect, true);
	pthread_mutex_unlock(&p.mu);
	wait_state(&p, "down");
	misses = peer_counter(&p, "deadline_misses");
	assert_int_equal(forward_remote(&p, 0, &o), 0);
	expect_dropped(&o, 0);
	/* failed at once, not by the deadline */
	assert_int_equal(peer_counter(&p, "deadline_misses"), misses);
	assert_true(peer_counter(&p, "calls_failed") >= 1);
	pair_stop(&p);
}

/*
 * Replies that come before their requests' sends completed (held): the
 * runner has its rows, bitwise, while A's reactor keeps each call, and the
 * rows the send may still read, until on_send_done. Catches a reactor that
 * lets a finished call go with its send in flight (A idle under the hold,
 * and its rows handed to the next call: buf_changed), and one that never
 * lets go of a call whose send completes after its reply (A busy for good).
 */
static void replies_before_their_sends_completed(void **state)
{
	struct pair p;

	(void)state;
	pair_start(&p, "error", ID_A, "", "");
	wait_state(&p, "up");
	defer_sends(&p, PEER_MSG_EXPERT_REQ, true);
	expect_bitwise(&p);
	expect_bitwise(&p);
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].deferred), 2 * N_LAYERS);
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].done_ok), 0);
	assert_true(in_flight(&p, true));
	atomic_store(&p.net.hold_send_done, false);
	WAIT_COUNT(p.net.send[NET_A].done_ok, 2 * N_LAYERS);
	wait_idle(&p, true);
	expect_bitwise(&p);
	pair_stop(&p);
}

static void wait_deadline_miss(struct pair *p)
{
	for (int i = 0; i < 200 && peer_counter(p, "deadline_misses") == 0; i++)
		usleep(10000);
	ASSERT_EQ(peer_counter(p, "deadline_misses"), 1);
}

/*
 * The deadline passes while the request's send is in flight (and its reply
 * held): the batch gets the policy's outcome, B goes down, its connection
 * is closed, and the call stays with the reactor until its send completes.
 * That completion (-ECANCELED) is held until A is up again on a new
 * connection, which the fake gives the old one's number (UCX reuses numbers
 * too, round-robin). Catches a reactor that lets a given-up call go under
 * its pending send (A idle before the completion), one that keeps it after
 * the send failed (A busy for good), and one that takes the old
 * connection's late failure for news of the new one and marks B down again
 * (disconnects grows: peer_calls.c did, before this test).
 */
static void deadline_under_a_pending_send(const char *policy, int expect)
{
	static struct out o;
	struct pair p;
	long long disconnects;

	pair_start(&p, policy, ID_A, "", "");
	wait_state(&p, "up");
	atomic_store(&p.net.hold_id, PEER_MSG_EXPERT_REPLY);
	defer_sends(&p, PEER_MSG_EXPERT_REQ, true);
	assert_int_equal(forward_remote(&p, 0, &o), expect);
	if (expect == 0)
		expect_dropped(&o, 0);
	wait_deadline_miss(&p);
	assert_true(in_flight(&p, true));
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].deferred), 1);
	/* the held reply went with the closed connection; the new HELLO is not deferred */
	atomic_store(&p.net.hold_id, 0);
	wait_state(&p, "up");
	assert_true(in_flight(&p, true));
	disconnects = peer_counter(&p, "disconnects");
	atomic_store(&p.net.hold_send_done, false);
	WAIT_COUNT(p.net.send[NET_A].done_canceled, 1);
	wait_idle(&p, true);
	ASSERT_EQ(peer_counter(&p, "disconnects"), disconnects);
	assert_true(peer_state_is(&p, "up"));
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].done_ok), 0);
	expect_bitwise(&p);
	pair_stop(&p);
}

static void deadline_under_a_pending_send_error_policy(void **state)
{
	(void)state;
	deadline_under_a_pending_send("error", -EHOSTUNREACH);
}

static void deadline_under_a_pending_send_drop_policy(void **state)
{
	(void)state;
	deadline_under_a_pending_send("drop", 0);
}

/*
 * B crashes while A's requests and B's replies are in flight (held; the
 * runner has its rows already). A failed connection is announced after its
 * sends, so A sees B up until the completions go; then every send
 * completes once with -ECONNRESET, A marks B down, A's calls and B's jobs
 * are let go, and the next batch fails at once. Catches a reactor that
 * keeps a call or a job whose send failed (A or B busy for good), one that
 * lets them go before their sends completed (idle under the hold), a
 * survivor that does not mark the peer down, and (pair_stop) a completion
 * delivered twice, or lost.
 */
static void crash_with_sends_pending_on_both_sides(void **state)
{
	static struct out o;
	struct pair p;

	(void)state;
	pair_start(&p, "drop", ID_A, "", "");
	wait_state(&p, "up");
	defer_sends(&p, 0, true);
	expect_bitwise(&p);
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].deferred), N_LAYERS);
	ASSERT_EQ(atomic_load(&p.net.send[NET_B].deferred), N_LAYERS);
	assert_true(in_flight(&p, true));
	assert_true(in_flight(&p, false));
	pthread_mutex_lock(&p.mu);
	fake_transport_crash((struct transport *)p.net.t[NET_B]);
	atomic_store(&p.net.refuse_connect, true);
	pthread_mutex_unlock(&p.mu);
	usleep(20000);
	assert_true(peer_state_is(&p, "up")); /* its connection's sends first */
	atomic_store(&p.net.hold_send_done, false);
	wait_state(&p, "down");
	WAIT_COUNT(p.net.send[NET_A].done_reset, N_LAYERS);
	WAIT_COUNT(p.net.send[NET_B].done_reset, N_LAYERS);
	wait_idle(&p, true);
	wait_idle(&p, false);
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].done_ok), 0);
	ASSERT_EQ(atomic_load(&p.net.send[NET_B].done_ok), 0);
	assert_int_equal(forward_remote(&p, 0, &o), 0);
	expect_dropped(&o, 0);
	assert_true(peer_counter(&p, "calls_failed") >= 1);
	pair_stop(&p);
	ASSERT_EQ(atomic_load(&p.net.send[NET_A].deferred), N_LAYERS);
	ASSERT_EQ(atomic_load(&p.net.send[NET_B].deferred), N_LAYERS);
}

/*
 * B's reply is in flight (held, and the reply held on its way) when A gives
 * the call up at its deadline and closes the connection: B's job, whose
 * rows the send may still read, waits for the send, which then fails, and
 * goes. Catches a job let go as soon as its reply send started (B idle
 * under the hold), and a job kept after its send failed (B busy for good).
 */
static void reply_in_flight_when_the_call_is_given_up(void **state)
{
	static struct out o;
	struct fake_send_stats *b;
	struct pair p;

	(void)state;
	pair_start(&p, "error", ID_A, "", "");
	wait_state(&p, "up");
	b = &p.net.send[NET_B];
	atomic_store(&p.net.hold_id, PEER_MSG_EXPERT_REPLY);
	defer_sends(&p, PEER_MSG_EXPERT_REPLY, true);
	assert_int_equal(forward_remote(&p, 0, &o), -EHOSTUNREACH);
	WAIT_COUNT(b->deferred, 1);
	wait_deadline_miss(&p);
	assert_true(in_flight(&p, false));
	atomic_store(&p.net.hold_send_done, false);
	/* -ECONNRESET as A closed; -ECANCELED had B's own stuck-reply timer been first */
	for (int i = 0; i < 500 && atomic_load(&b->done_reset) + atomic_load(&b->done_canceled) == 0;
	     i++)
		usleep(10000);
	ASSERT_EQ(atomic_load(&b->done_reset) + atomic_load(&b->done_canceled), 1);
	ASSERT_EQ(atomic_load(&b->done_ok), 0);
	wait_idle(&p, false);
	atomic_store(&p.net.hold_id, 0);
	wait_state(&p, "up");
	expect_bitwise(&p);
	pair_stop(&p);
}

static void refused(const char *id_b, const char *hosts_b, const char *peers_b,
		    const char *why_part)
{
	static struct out o;
	struct pair p;
	json_t *pe;

	pair_start(&p, "error", id_b, hosts_b, peers_b);
	wait_state(&p, "refused");
	pe = status_of(&p, true);
	if (!strstr(json_string_value(json_object_get(pe, "why")), why_part))
		fail_msg("why '%s' lacks '%s'", json_string_value(json_object_get(pe, "why")),
			 why_part);
	json_decref(pe);
	assert_int_equal(forward_remote(&p, 0, &o), -EHOSTUNREACH);
	pair_stop(&p);
}

static void other_model_is_refused(void **state)
{
	(void)state;
	refused(ID_OTHER, "", "", "another model");
}

/* the store's identity hashes headers only: the values must tell these apart */
static void same_shapes_other_values_are_refused(void **state)
{
	(void)state;
	model_b = model_reseeded;
	refused(ID_A, "", "", "another model");
	model_b = model;
}

static void experts_b_does_not_compute_are_refused(void **state)
{
	(void)state;
	refused(ID_A, "6@x", "x=10.0.0.3:7301", "does not compute");
}

/* max_hosts_per_token: the hosts' blocks become the router's groups, or are refused */
static void host_limit(const char *hosts, int expect, uint32_t groups)
{
	struct moed_config c;
	struct peers_opts o = { .cfg = &c, .model = model, .model_path = model_path,
				.identity_hex = ID_A, .engine = engine_a,
				.transport_new = fake_transport_new };
	struct fake_net net = { 0 };
	struct diag d = { { 0 } };
	struct peers *p = NULL;
	const struct router_config *rc;

	moed_config_init(&c);
	cfg_set(&c, "peers", "b=10.0.0.2:7300,c=10.0.0.3:7300");
	cfg_set(&c, "expert_hosts", hosts);
	cfg_set(&c, "max_hosts_per_token", "1");
	fake_net_current = &net;
	assert_int_equal(peers_new(&o, &p, &d), expect);
	if (expect < 0) {
		assert_null(p);
		assert_non_null(strstr(d.msg, "max_hosts_per_token"));
		return;
	}
	for (uint32_t l = 0; l < N_LAYERS; l++) {
		rc = peers_layer_router(p, l);
		assert_non_null(rc);
		assert_int_equal(rc->expert_groups, groups);
		assert_int_equal(rc->topk_groups, 1);
		assert_int_equal(rc->group_score, GROUP_SCORE_TOP2);
		assert_int_equal(rc->top_k, moe_model_layer(model, l)->router.top_k);
	}
	peers_free(p);
}

static void max_hosts_per_token(void **state)
{
	(void)state;
	host_limit("4-7@b", 0, 2);
	host_limit("2-3@b;4-5@c;6-7@b", -EINVAL, 0); /* b holds two blocks */
	host_limit("5-7@b", -EINVAL, 0);             /* blocks of 5 and 3 */
	host_limit("2-3@b;4-5@c;6-7@self", -EINVAL, 0);
	host_limit("0-3@c", 0, 2);                   /* this host keeps the second block */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(remote_experts_are_bitwise),
		cmocka_unit_test(remote_experts_are_bitwise_deferred),
		cmocka_unit_test(nth_send_fails_then_reconnects),
		cmocka_unit_test(nth_send_fails_then_reconnects_deferred),
		cmocka_unit_test(duplicate_reply_changes_nothing),
		cmocka_unit_test(late_reply_with_error_policy),
		cmocka_unit_test(late_reply_with_drop_policy),
		cmocka_unit_test(late_reply_before_the_sweep),
		cmocka_unit_test(crashed_peer_fails_calls_at_once),
		cmocka_unit_test(replies_before_their_sends_completed),
		cmocka_unit_test(deadline_under_a_pending_send_error_policy),
		cmocka_unit_test(deadline_under_a_pending_send_drop_policy),
		cmocka_unit_test(crash_with_sends_pending_on_both_sides),
		cmocka_unit_test(reply_in_flight_when_the_call_is_given_up),
		cmocka_unit_test(other_model_is_refused),
		cmocka_unit_test(same_shapes_other_values_are_refused),
		cmocka_unit_test(experts_b_does_not_compute_are_refused),
		cmocka_unit_test(max_hosts_per_token),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
