/* SPDX-License-Identifier: MIT */
/*
 * The expert store across moed restarts, through a real moed and libmoe.
 *
 * moed starts with store_keep=yes on a fixed store name in the harness's
 * private /dev/shm folder, loads the weights (status: store.source
 * "loaded"), and a client runs a forward of fixed inputs on every layer,
 * checked against the embedded engine. Then:
 *
 *   - SIGTERM and start again on the same store: status says "attached",
 *     nothing read, no reload reason, the same identity; the same forward
 *     gives bitwise the same output as the first run.
 *   - SIGKILL (a crash) and start again: the store moed left is complete,
 *     so it is attached again, same output.
 *   - A byte of the home object's header flipped while moed is down: the
 *     next moed loads again (a reload reason in the status), same output,
 *     and the one after it attaches the healed store.
 *
 * Catches: a store that is not re-attached by a real restart (a key or
 * fingerprint that differs between runs of the same configuration), one
 * that is but serves other weights, and a damaged store served anyway.
 *
 * usage: it_store_restart MOED [MOECTL]
 */
#include "test_assert.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <moe.h>

#include "test_daemon.h"
#include "test_fds.h"

#define T_TOKENS   64
#define ATOL       1e-4
#define RTOL       1e-4
#define TIE_MARGIN 1e-3
#define STORE_NAME "it-store"
#define MAX_LAYERS 8

static const char *arg_moed;
static struct test_daemon daemon_;
/*
 * kernel_calibration=no: outputs bitwise equal across starts need the same
 * kernel bounds, and a start on a busy machine measures without caching
 * (kernel_calibrate.h), so two starts could pick different kernels.
 */
static const char *const extra[] = {"--set", "store_keep=yes", "--set",
                                    "store_name=" STORE_NAME, "--set",
                                    "kernel_calibration=no", NULL};

/* The outputs of every layer for the fixed inputs, as one run of moed gave them. */
struct run {
	uint32_t n_layers, d_model;
	float *y[MAX_LAYERS]; /* [T_TOKENS][d_model], malloc'd; NULL for a layer without MoE */
	char identity[64];
};

static void run_free(struct run *r)
{
	for (uint32_t l = 0; l < MAX_LAYERS; l++)
		free(r->y[l]);
	memset(r, 0, sizeof(*r));
}

/* The store object of the store's node @node in the harness's store folder. */
static void object_path(uint32_t node, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.node%u", daemon_.store_dir, STORE_NAME, node);

	assert_true(n > 0 && (size_t)n < len);
}

/* The status's store object says @source; a reload reason exactly when loaded again. */
static void expect_store_status(const char *source, bool reason, struct run *out)
{
	json_t *st = test_status_get(daemon_.socket);
	const char *got, *why, *id;

	assert_non_null(st);
	got = test_json_str(st, "store.source");
	why = test_json_str(st, "store.reload_reason");
	id = test_json_str(st, "store.identity");
	assert_non_null(got);
	assert_non_null(why);
	assert_non_null(id);
	fprintf(stderr, "test: start %u: store %s, reload reason '%s'\n", daemon_.starts, got,
	        why);
	if (strcmp(got, source) != 0)
		fail_msg("status store.source '%s', expected '%s' (reload reason '%s')", got,
		         source, why);
	if (reason != (why[0] != '\0'))
		fail_msg("reload reason '%s': expected %s", why, reason ? "one" : "none");
	if (strcmp(source, "attached") == 0)
		ASSERT_EQ(test_json_int(st, "store.read_bytes"), 0);
	else
		assert_true(test_json_int(st, "store.read_bytes") > 0);
	snprintf(out->identity, sizeof(out->identity), "%s", id);
	json_decref(st);
}

/* Run the fixed inputs through every MoE layer of the running moed into @out. */
static void forward_all(struct run *out, struct test_ref *ref)
{
	struct moe_client_opts o;
	struct moe_client *c;
	struct moe_model_info mi = {.size = sizeof(mi)};
	float *x, *y;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-store";
	o.arena_size = 4ull << 20;
	ASSERT_OK(moe_connect(&o, &c));
	ASSERT_OK(moe_model_info_get(c, &mi));
	ASSERT_EQ(mi.d_model, ref->d_model);
	out->d_model = mi.d_model;
	out->n_layers = ref->n_layers;
	assert_true(out->n_layers <= MAX_LAYERS);
	ASSERT_OK(moe_buf_alloc(c, (size_t)T_TOKENS * mi.d_model * 4, (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, (size_t)T_TOKENS * mi.d_model * 4, (void **)&y));
	for (uint32_t l = 0; l < out->n_layers; l++) {
		struct moe_request rq;
		struct moe_completion done;
		uint64_t seed = 1000 + l;

		if (!test_ref_experts(ref, l))
			continue;
		test_fill_normal(x, (size_t)T_TOKENS * mi.d_model, &seed);
		memset(y, 0xff, (size_t)T_TOKENS * mi.d_model * 4);
		moe_request_init(&rq);
		rq.user_data = l;
		rq.layer = l;
		rq.n_tokens = T_TOKENS;
		rq.input = x;
		rq.output = y;
		ASSERT_OK(moe_forward(c, &rq, &done));
		ASSERT_EQ(done.status, 0);
		/* right, not only the same as before: against the embedded engine */
		ASSERT_EQ(test_ref_check(ref, l, x, T_TOKENS, y, ATOL, RTOL, TIE_MARGIN, "output"),
		          0);
		out->y[l] = malloc((size_t)T_TOKENS * mi.d_model * 4);
		assert_non_null(out->y[l]);
		memcpy(out->y[l], y, (size_t)T_TOKENS * mi.d_model * 4);
	}
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
}

/* Bitwise the same outputs as the first run. */
static void expect_same_run(const struct run *got, const struct run *want, const char *what)
{
	ASSERT_EQ(got->n_layers, want->n_layers);
	ASSERT_EQ(got->d_model, want->d_model);
	assert_string_equal(got->identity, want->identity);
	for (uint32_t l = 0; l < want->n_layers; l++) {
		assert_true(!got->y[l] == !want->y[l]);
		if (want->y[l] &&
		    memcmp(got->y[l], want->y[l], (size_t)T_TOKENS * want->d_model * 4) != 0)
			fail_msg("%s: layer %u's output differs from the first run's", what, l);
	}
}

/* Start moed, check the store's status, run the forwards, compare with @first. */
static void start_and_check(const char *source, bool reason, const struct run *first,
                            struct test_ref *ref, const char *what)
{
	struct run r = {0};

	ASSERT_OK(test_daemon_start(&daemon_, extra));
	expect_store_status(source, reason, &r);
	forward_all(&r, ref);
	expect_same_run(&r, first, what);
	run_free(&r);
}

static void flip_home_header_byte(void)
{
	char path[256];
	uint8_t b;
	int fd;

	object_path(0, path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fail_msg("%s: %s", path, strerror(errno));
	/* a byte of the identity (offset 16): nothing but the checksum notices */
	ASSERT_EQ(pread(fd, &b, 1, 16), 1);
	b ^= 0x5a;
	ASSERT_EQ(pwrite(fd, &b, 1, 16), 1);
	close(fd);
}

static void test_store_restart(void **state)
{
	static struct test_ref ref;
	struct run first = {0};
	struct stat st;
	char path[256];

	(void)state;
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	ASSERT_OK(test_ref_open(&ref, daemon_.model_path));
	expect_store_status("loaded", false, &first);
	forward_all(&first, &ref);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	object_path(0, path, sizeof(path));
	if (stat(path, &st) < 0)
		fail_msg("store_keep=yes, yet %s is gone after moed stopped: %s", path,
		         strerror(errno));

	start_and_check("attached", false, &first, &ref, "after SIGTERM");
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);

	start_and_check("attached", false, &first, &ref, "after a restart");
	ASSERT_EQ(test_daemon_kill(&daemon_, SIGKILL), 128 + SIGKILL);
	start_and_check("attached", false, &first, &ref, "after SIGKILL");
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);

	flip_home_header_byte();
	start_and_check("loaded", true, &first, &ref, "after a damaged header");
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
	start_and_check("attached", false, &first, &ref, "after the reload healed the store");
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);

	run_free(&first);
	test_ref_close(&ref);
}

static int test_setup(void **state)
{
	return fd_check_setup(state);
}

static int test_teardown(void **state)
{
	if (daemon_.pid > 0)
		test_daemon_kill(&daemon_, SIGKILL);
	return fd_check_teardown(state);
}

static int group_setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_store_restart, test_setup, test_teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED [MOECTL]\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
