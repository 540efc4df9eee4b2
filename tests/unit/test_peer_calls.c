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

static void pair_start(struct pair *p, const char *policy, const char *id_b,
		       const char *hosts_b, const char *peers_b)
{
	struct peers_opts o = { .model = model, .transport_new = fake_transport_new };
	struct diag d = { { 0 } };
	char deadline[16];

	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
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

static void pair_stop(struct pair *p)
{
	atomic_store(&p->stop, true);
	pthread_join(p->pump, NULL);
	/* A first: its connections' ends in B then fail, as they would */
	p->a = peers_free(p->a);
	p->b = peers_free(p->b);
	pthread_mutex_destroy(&p->mu);
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

static void remote_experts_are_bitwise(void **state)
{
	struct pair p;
	json_t *served;

	(void)state;
	pair_start(&p, "error", ID_A, "", "");
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
}

static void nth_send_fails_then_reconnects(void **state)
{
	static struct out o;
	struct pair p;

	(void)state;
	pair_start(&p, "drop", ID_A, "", "");
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
		cmocka_unit_test(nth_send_fails_then_reconnects),
		cmocka_unit_test(duplicate_reply_changes_nothing),
		cmocka_unit_test(late_reply_with_error_policy),
		cmocka_unit_test(late_reply_with_drop_policy),
		cmocka_unit_test(late_reply_before_the_sweep),
		cmocka_unit_test(crashed_peer_fails_calls_at_once),
		cmocka_unit_test(other_model_is_refused),
		cmocka_unit_test(same_shapes_other_values_are_refused),
		cmocka_unit_test(experts_b_does_not_compute_are_refused),
		cmocka_unit_test(max_hosts_per_token),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
