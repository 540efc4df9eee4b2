/* SPDX-License-Identifier: MIT */
/*
 * Changes to the expert map of a running moed (a simulated two-node
 * topology, a replica budget), made with the real moectl and libmoe:
 *
 * - `moectl experts replicate|move|drop ... --wait` changes the map; the
 *   status shows the new epoch, nodes and replica space; a client's batches
 *   through every layer give bitwise the outputs they gave before;
 * - refusals reach the caller with their errno and moed's reason (the last
 *   copy, a node or layer moed lacks, a copy already there), and a user
 *   other than root or moed's gets -EPERM: the map stays as it was;
 * - `moectl experts --json` shows every expert with its nodes, bytes and
 *   the tokens it received;
 * - with rebalance_interval_ms, a hot expert gets a replica by itself, and
 *   loses it when the traffic goes elsewhere, outputs unchanged;
 * - `moectl store drop` is refused while moed holds the store, removes it
 *   once moed stopped (store_keep=yes left it), and then finds none.
 */
#include "test_assert.h"
#include "test_daemon.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moe.h>

#define T 64
#define NOBODY 65534

static const char *moed_bin, *moectl_bin;
static struct test_daemon daemon_;

/* Run moectl with @args (a shell word list) on the daemon's socket; its exit code. */
static int moectl(const char *args, char *out, size_t out_len)
{
	char cmd[1024];
	size_t n = 0;
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "%s --socket %s %s", moectl_bin, daemon_.socket, args);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (out) {
		n = fread(out, 1, out_len - 1, p);
		out[n] = '\0';
	} else {
		char sink[4096];

		while (fread(sink, 1, sizeof(sink), p) > 0)
			;
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct client {
	struct moe_client *c;
	struct moe_model_info mi;
	float *x, *y;
};

static void client_open(struct client *cl)
{
	struct moe_client_opts o;
	uint64_t seed = 11;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "expert-changes";
	o.arena_size = 4u << 20;
	ASSERT_OK(moe_connect(&o, &cl->c));
	cl->mi.size = sizeof(cl->mi);
	ASSERT_OK(moe_model_info_get(cl->c, &cl->mi));
	ASSERT_OK(moe_buf_alloc(cl->c, (size_t)T * cl->mi.d_model * sizeof(float), (void **)&cl->x));
	ASSERT_OK(moe_buf_alloc(cl->c, (size_t)T * cl->mi.d_model * sizeof(float), (void **)&cl->y));
	test_fill_normal(cl->x, (size_t)T * cl->mi.d_model, &seed);
}

/* Every layer's output for the client's batch, into @out ([n_layers][T][d_model]). */
static void forward_all(struct client *cl, float *out)
{
	size_t per_layer = (size_t)T * cl->mi.d_model;

	for (uint32_t l = 0; l < cl->mi.n_layers; l++) {
		struct moe_request rq;
		struct moe_completion done;

		moe_request_init(&rq);
		rq.layer = l;
		rq.n_tokens = T;
		rq.input = cl->x;
		rq.output = cl->y;
		rq.flags = MOE_REQ_NO_MERGE;
		ASSERT_OK(moe_forward(cl->c, &rq, &done));
		assert_int_equal(done.status, 0);
		memcpy(out + l * per_layer, cl->y, per_layer * sizeof(float));
	}
}

/* The kernel node ids of (@layer, @expert)'s copies in the status, as "0,1". */
static void nodes_of(json_t *st, uint32_t layer, uint32_t expert, char *buf, size_t len)
{
	json_t *ex = json_array_get(
		json_object_get(json_array_get(json_object_get(json_object_get(
							      json_object_get(st, "store"), "map"),
							      "layers"),
					       layer),
				"experts"),
		expert);
	json_t *id;
	size_t i, at = 0;

	buf[0] = '\0';
	json_array_foreach(json_object_get(ex, "nodes"), i, id)
		at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "," : "",
				       (long long)json_integer_value(id));
}

static int64_t status_epoch(void)
{
	json_t *st = test_status_get(daemon_.socket);
	int64_t epoch;

	assert_non_null(st);
	epoch = test_json_int(st, "store.epoch");
	json_decref(st);
	return epoch;
}

/* As uid 65534: an expert change must be refused with -EPERM. */
static void unprivileged_change_refused(void)
{
	pid_t pid = test_fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		uint64_t epoch;
		char why[128];
		int r;

		CHILD_CHECK(setgroups(0, NULL) == 0 && setgid(NOBODY) == 0 && setuid(NOBODY) == 0,
			    "dropping to uid %d: %s", NOBODY, strerror(errno));
		r = moe_daemon_expert_change(daemon_.socket, MOE_EXPERT_CHANGE_REPLICATE, 0, 0, 1,
					     &epoch, why, sizeof(why));
		CHILD_CHECK(r == -EPERM, "uid %d's change gave %d (%s), not -EPERM", NOBODY, r, why);
		CHILD_CHECK(strstr(why, "only root"), "reason: '%s'", why);
		_exit(0);
	}
	ASSERT_OK(test_child_wait(pid, 30000, &st));
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Start moed on a simulated two-node topology (node i: CPU i) with a replica budget. */
static void start_on_two_nodes(const char *more_key_value)
{
	char topo[160], set_topo[200];
	const char *extra[] = { "--set", set_topo, "--set", "replica_budget=32M",
				"--set", "socket_mode=0666", "--set", more_key_value, NULL };
	FILE *f;

	snprintf(topo, sizeof(topo), "%s/topology", daemon_.dir);
	f = fopen(topo, "w");
	assert_non_null(f);
	fputs("node 0 cpus 0\nnode 1 cpus 1\n", f);
	fclose(f);
	snprintf(set_topo, sizeof(set_topo), "topology_file=%s", topo);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
}

static void test_changes_through_moectl(void **state)
{
	char out[1 << 16], nodes[32], why[128];
	struct client cl;
	float *before, *after;
	uint64_t epoch;
	size_t n_out;
	json_t *st, *js;

	(void)state;
	start_on_two_nodes("rebalance_interval_ms=0");

	client_open(&cl);
	n_out = (size_t)cl.mi.n_layers * T * cl.mi.d_model;
	before = calloc(n_out, sizeof(float));
	after = calloc(n_out, sizeof(float));
	assert_non_null(before);
	assert_non_null(after);
	forward_all(&cl, before);
	assert_int_equal(status_epoch(), 1);

	/* interleave over 2 nodes: expert e on node e % 2 */
	assert_int_equal(moectl("experts replicate 0 3 0 --wait", NULL, 0), 0);
	assert_int_equal(moectl("experts move 1 0 1 --wait", NULL, 0), 0);
	assert_int_equal(moectl("experts drop 0 3 1 --wait", NULL, 0), 0);
	assert_int_equal(status_epoch(), 4);
	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	nodes_of(st, 0, 3, nodes, sizeof(nodes));
	assert_string_equal(nodes, "0");
	nodes_of(st, 1, 0, nodes, sizeof(nodes));
	assert_string_equal(nodes, "1");
	nodes_of(st, 0, 2, nodes, sizeof(nodes));
	assert_string_equal(nodes, "0");
	/* both nodes hold one copy beyond the load's: expert 3 on 0, expert 0 of layer 1 on 1 */
	assert_true(test_json_int(st, "store.nodes.0.replica_used") > 0);
	assert_true(test_json_int(st, "store.nodes.1.replica_used") > 0);
	/* each node's pinned workers, and the tokens its experts received */
	assert_true(test_json_int(st, "store.nodes.0.workers") >= 1);
	assert_true(test_json_int(st, "store.nodes.1.workers") >= 1);
	assert_true(test_json_int(st, "store.nodes.0.expert_tokens") > 0);
	assert_true(test_json_int(st, "store.nodes.1.expert_tokens") > 0);
	json_decref(st);

	forward_all(&cl, after);
	assert_int_equal(memcmp(before, after, n_out * sizeof(float)), 0);

	/* refusals: errno and moed's reason, and the map stays */
	assert_int_equal(moe_daemon_expert_change(daemon_.socket, MOE_EXPERT_CHANGE_DROP, 0, 3, 0,
						  &epoch, why, sizeof(why)),
			 -EPERM);
	assert_non_null(strstr(why, "last copy"));
	assert_int_equal(moe_daemon_expert_change(daemon_.socket, MOE_EXPERT_CHANGE_REPLICATE, 0,
						  3, 9, &epoch, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "node 9"));
	assert_int_equal(moe_daemon_expert_change(daemon_.socket, MOE_EXPERT_CHANGE_REPLICATE, 99,
						  0, 0, &epoch, why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(moe_daemon_expert_change(daemon_.socket, MOE_EXPERT_CHANGE_REPLICATE, 0,
						  3, 0, &epoch, why, sizeof(why)),
			 -EEXIST);
	assert_int_not_equal(moectl("experts drop 0 3 0", NULL, 0), 0);
	ASSERT_OK(chmod(daemon_.dir, 0755)); /* nobody must reach the socket (mode 0666) */
	unprivileged_change_refused();
	assert_int_equal(status_epoch(), 4);

	/* the table as JSON: every expert with nodes, bytes and its tokens */
	assert_int_equal(moectl("experts --json", out, sizeof(out)), 0);
	js = json_loads(out, 0, NULL);
	assert_non_null(js);
	assert_int_equal(test_json_int(js, "epoch"), 4);
	assert_int_equal(json_array_size(json_object_get(js, "layers")), cl.mi.n_layers);
	assert_true(test_json_int(js, "layers.0.experts.3.bytes") > 0);
	{
		int64_t tokens = 0;

		for (uint32_t e = 0; e < cl.mi.max_experts; e++) {
			char path[64];

			snprintf(path, sizeof(path), "layers.0.experts.%u.tokens", e);
			tokens += test_json_int(js, path);
		}
		/* two batches of T tokens through layer 0, two slots each */
		assert_int_equal(tokens, 2 * T * 2);
	}
	json_decref(js);
	assert_int_equal(moectl("experts", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "map epoch 4"));

	moe_close(cl.c);
	free(before);
	free(after);

	/* the store: held while moed runs, left at stop (store_keep=yes), then dropped */
	snprintf(why, sizeof(why), "store drop --dir %s", daemon_.store_dir);
	assert_int_equal(moectl(why, NULL, 0), 1);
	assert_int_equal(test_daemon_stop(&daemon_), 0);
	assert_int_equal(moectl(why, NULL, 0), 0);
	{
		DIR *dir = opendir(daemon_.store_dir);
		struct dirent *de;
		unsigned n = 0;

		assert_non_null(dir);
		while ((de = readdir(dir)))
			n += de->d_name[0] != '.';
		closedir(dir);
		assert_int_equal(n, 0);
	}
	assert_int_equal(moectl(why, NULL, 0), 1);
}

/*
 * Layer 0's batch with its routing given, one slot of weight 1 per token:
 * 5 of every 8 tokens to expert @hot and the rest round-robin, or with
 * @avoid round-robin over every expert but @hot. The output lands in cl->y.
 */
static void forward_given(struct client *cl, int32_t *route, float *weight, uint32_t hot,
			  bool avoid)
{
	struct moe_request rq;
	struct moe_completion done;

	for (uint32_t t = 0; t < T; t++) {
		uint32_t e = t % cl->mi.max_experts;

		if (avoid)
			e = e == hot ? (hot + 1) % cl->mi.max_experts : e;
		else if (t % 8 < 5)
			e = hot;
		route[t] = (int32_t)e;
		weight[t] = 1.0f;
	}
	moe_request_init(&rq);
	rq.layer = 0;
	rq.n_tokens = T;
	rq.flags = MOE_REQ_ROUTE_GIVEN | MOE_REQ_NO_MERGE;
	rq.route_k = 1;
	rq.route_expert = route;
	rq.route_weight = weight;
	rq.input = cl->x;
	rq.output = cl->y;
	ASSERT_OK(moe_forward(cl->c, &rq, &done));
	assert_int_equal(done.status, 0);
}

/*
 * Send layer-0 batches (hot: most tokens to expert @hot; avoid: none to it)
 * until the status shows @hot's copies on @want_nodes ("1,0"), 20 s at
 * most; with @first, each output must be bitwise @first.
 */
static void traffic_until(struct client *cl, int32_t *route, float *weight, uint32_t hot,
			  bool avoid, const char *want_nodes, const float *first)
{
	int64_t deadline = test_now_ns() + 20 * 1000000000ll;
	char nodes[32];

	for (;;) {
		json_t *st;

		forward_given(cl, route, weight, hot, avoid);
		if (first)
			assert_int_equal(memcmp(first, cl->y,
						(size_t)T * cl->mi.d_model * sizeof(float)),
					 0);
		st = test_status_get(daemon_.socket);
		assert_non_null(st);
		nodes_of(st, 0, hot, nodes, sizeof(nodes));
		json_decref(st);
		if (strcmp(nodes, want_nodes) == 0)
			return;
		if (test_now_ns() > deadline)
			fail_msg("expert %u's copies on %s after 20 s of traffic, not %s", hot,
				 nodes, want_nodes);
		test_sleep_ms(20);
	}
}

/*
 * rebalance_interval_ms on: a layer-0 expert that gets most tokens is
 * replicated onto the other node within a few rounds, while batches keep
 * their bitwise output; once traffic avoids it, its replica goes again.
 */
static void test_rebalancer_follows_the_load(void **state)
{
	const uint32_t hot = 5; /* interleave: on node 1 */
	struct client cl;
	int32_t *route;
	float *weight, *first;

	(void)state;
	start_on_two_nodes("rebalance_interval_ms=100");
	client_open(&cl);
	ASSERT_OK(moe_buf_alloc(cl.c, T * sizeof(int32_t), (void **)&route));
	ASSERT_OK(moe_buf_alloc(cl.c, T * sizeof(float), (void **)&weight));
	first = calloc((size_t)T * cl.mi.d_model, sizeof(float));
	assert_non_null(first);
	forward_given(&cl, route, weight, hot, false);
	memcpy(first, cl.y, (size_t)T * cl.mi.d_model * sizeof(float));

	traffic_until(&cl, route, weight, hot, false, "1,0", first);
	forward_given(&cl, route, weight, hot, false);
	assert_int_equal(memcmp(first, cl.y, (size_t)T * cl.mi.d_model * sizeof(float)), 0);
	traffic_until(&cl, route, weight, hot, true, "1", NULL);
	moe_close(cl.c);
	free(first);
	assert_int_equal(test_daemon_stop(&daemon_), 0);
}

static int setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, moed_bin);
}

static int teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_changes_through_moectl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebalancer_follows_the_load, setup, teardown),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	moed_bin = argv[1];
	moectl_bin = argv[2];
	if (geteuid() != 0) {
		fprintf(stderr, "it_expert_changes: needs root (to act as another user), skipping\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
