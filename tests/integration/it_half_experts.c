/* SPDX-License-Identifier: MIT */
/*
 * Experts in their checkpoint's dtype, through a real moed and libmoe.
 *
 *   - A BF16 and an F16 model (Mixtral names, SiLU-gated, two layers) are
 *     served with the default expert_dtype (checkpoint: the store keeps the
 *     half-precision matrices and the kernels widen them in registers) and
 *     with expert_dtype=f32 (widened at load). Batches of 1, 16 and 200
 *     tokens (sgemv's place, the small-m kernel, float32 panels for sgemm)
 *     must give what the embedded engine gives with the experts widened to
 *     float32: the F32 engine on the same values, within float rounding.
 *   - The store's weight bytes (status store.weight_bytes) are the
 *     checkpoint's: half of what expert_dtype=f32 holds, less the router
 *     and biases, which stay float32.
 *   - Memory: a larger BF16 model (8 experts of d 1024 and ff 2048, 100 MB
 *     of expert weights in BF16) keeps moed's anonymous + shared resident
 *     memory (/proc/PID/status) under 1.05 x the expert bytes plus an
 *     allowance for the process itself; with expert_dtype=f32 moed holds
 *     at least 1.9 x the expert bytes more than that allowance would need,
 *     so the bound can tell a float32 copy from none.
 *
 * Catches: a store or a kernel that widens at load anyway (memory), a
 * half-precision kernel that reads the wrong row or mis-widens a value
 * (outputs), and a store that sizes or copies half-precision tensors as
 * float32 (bytes, outputs).
 *
 * usage: it_half_experts MOED
 */
#include "test_assert.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <moe.h>

#include "model/synth_model.h"
#include "test_daemon.h"

#define ATOL       1e-4
#define RTOL       1e-4
#define TIE_MARGIN 1e-3

static const char *arg_moed;
/* Each test's daemon and reference: the teardown stops and removes them even
 * when an assertion ends the test early (no moed or 100 MB store left behind). */
static struct test_daemon daemon_;
static struct test_ref ref_;

static int teardown(void **state)
{
	(void)state;
	test_ref_close(&ref_);
	test_daemon_done(&daemon_);
	return 0;
}

/* Write a synthetic model of @dtype with the given shape to @path. */
static void write_model(const char *path, enum st_dtype dtype, uint32_t d_model, uint32_t d_ff,
                        uint32_t n_layers)
{
	struct synth_opts o;
	struct diag d = {{0}};

	synth_opts_default_model(&o);
	o.output = path;
	o.dtype = dtype;
	o.d_model = d_model;
	o.d_ff = d_ff;
	o.n_layers = n_layers;
	o.tokens = 4;
	if (synth_model_write(&o, &d) < 0)
		fail_msg("synth_model_write %s: %s", path, d.msg);
}

/* Start moed on @model with expert_dtype = @expert_dtype. */
static void start_on(struct test_daemon *dm, const char *model, const char *expert_dtype)
{
	char model_arg[512], dtype_arg[64];
	const char *extra[] = {"--set", model_arg, "--set", dtype_arg, "--set", "store_keep=no",
	                       NULL};

	snprintf(model_arg, sizeof(model_arg), "model=%s", model);
	snprintf(dtype_arg, sizeof(dtype_arg), "expert_dtype=%s", expert_dtype);
	ASSERT_OK(test_daemon_start(dm, extra));
}

/* Batches of 1, 16 and 200 tokens on every MoE layer, against @ref. */
static void expect_outputs(const struct test_daemon *dm, struct test_ref *ref, const char *what)
{
	static const uint32_t batches[] = {1, 16, 200};
	struct moe_client_opts o;
	struct moe_client *c;
	struct moe_model_info mi = {.size = sizeof(mi)};
	const size_t max_floats = (size_t)200 * ref->d_model;
	float *x, *y;

	moe_client_opts_init(&o);
	o.socket_path = dm->socket;
	o.name = "it-half";
	o.arena_size = 8ull << 20;
	ASSERT_OK(moe_connect(&o, &c));
	ASSERT_OK(moe_model_info_get(c, &mi));
	ASSERT_EQ(mi.d_model, ref->d_model);
	ASSERT_OK(moe_buf_alloc(c, max_floats * 4, (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, max_floats * 4, (void **)&y));
	for (uint32_t l = 0; l < ref->n_layers; l++) {
		for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
			const uint32_t T = batches[b];
			struct moe_request rq;
			struct moe_completion done;
			uint64_t seed = 77 + 10 * l + b;
			long bad;

			if (!test_ref_experts(ref, l))
				continue;
			test_fill_normal(x, (size_t)T * mi.d_model, &seed);
			memset(y, 0xff, (size_t)T * mi.d_model * 4);
			moe_request_init(&rq);
			rq.layer = l;
			rq.n_tokens = T;
			rq.input = x;
			rq.output = y;
			ASSERT_OK(moe_forward(c, &rq, &done));
			ASSERT_EQ(done.status, 0);
			bad = test_ref_check(ref, l, x, T, y, ATOL, RTOL, TIE_MARGIN, what);
			if (bad)
				fail_msg("%s: layer %u, %u tokens: %ld outputs differ from the F32 "
				         "engine on the same values",
				         what, l, T, bad);
		}
	}
	moe_buf_free(c, x);
	moe_buf_free(c, y);
	moe_close(c);
}

static int64_t store_weight_bytes(const struct test_daemon *dm)
{
	json_t *st = test_status_get(dm->socket);
	int64_t v;

	assert_non_null(st);
	v = test_json_int(st, "store.weight_bytes");
	json_decref(st);
	assert_true(v > 0);
	return v;
}

/* Served in its dtype and widened: the same outputs as the widened engine; half the bytes. */
static void check_dtype(enum st_dtype dtype, const char *name)
{
	struct test_daemon *dm = &daemon_;
	char path[sizeof(dm->dir) + 64], what[64];
	int64_t kept, widened;

	ASSERT_OK(test_daemon_init(dm, arg_moed));
	assert_true((size_t)snprintf(path, sizeof(path), "%s/%.16s.safetensors", dm->dir, name) <
		    sizeof(path));
	write_model(path, dtype, 256, 512, 2);
	ASSERT_OK(test_ref_open_as(&ref_, path, true));

	start_on(dm, path, "checkpoint");
	kept = store_weight_bytes(dm);
	snprintf(what, sizeof(what), "%s kept", name);
	expect_outputs(dm, &ref_, what);
	ASSERT_EQ(test_daemon_stop(dm), 0);

	start_on(dm, path, "f32");
	widened = store_weight_bytes(dm);
	snprintf(what, sizeof(what), "%s widened", name);
	expect_outputs(dm, &ref_, what);
	ASSERT_EQ(test_daemon_stop(dm), 0);

	/* 2 layers x 8 experts x 3 matrices of 256 x 512: half as many bytes kept */
	ASSERT_EQ(widened - kept, (int64_t)2 * 8 * 3 * 256 * 512 * 2);
}

static void test_bf16_served_as_bf16(void **state)
{
	(void)state;
	check_dtype(ST_BF16, "bf16");
}

static void test_f16_served_as_f16(void **state)
{
	(void)state;
	check_dtype(ST_F16, "f16");
}

/* /proc/@pid/status: RssAnon + RssShmem in bytes. */
static uint64_t resident_bytes(pid_t pid)
{
	char path[64], line[256];
	uint64_t total = 0;
	unsigned found = 0;
	unsigned long kb;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %lu kB", &kb) == 1 ||
		    sscanf(line, "RssShmem: %lu kB", &kb) == 1) {
			total += (uint64_t)kb << 10;
			found++;
		}
	fclose(f);
	ASSERT_EQ(found, 2);
	return total;
}

/* moed's memory after a forward of every batch size, for @expert_dtype. */
static uint64_t served_memory(struct test_daemon *dm, const char *path, struct test_ref *ref,
                              const char *expert_dtype)
{
	uint64_t bytes;

	start_on(dm, path, expert_dtype);
	expect_outputs(dm, ref, expert_dtype);
	bytes = resident_bytes(dm->pid);
	ASSERT_EQ(test_daemon_stop(dm), 0);
	return bytes;
}

static void test_bf16_memory(void **state)
{
	/* 8 experts x 3 matrices of 1024 x 2048 BF16 values */
	const uint64_t expert_bytes = (uint64_t)8 * 3 * 1024 * 2048 * 2;
	/* the process itself: code, OpenBLAS, the engine's scratch, the rings
	 * (a sanitizer build adds its shadow memory and quarantine) */
	const uint64_t allowance = (uint64_t)test_scale(96, 768) << 20;
	char path[sizeof(daemon_.dir) + 64];
	uint64_t kept, widened;

	(void)state;
	ASSERT_OK(test_daemon_init(&daemon_, arg_moed));
	assert_true((size_t)snprintf(path, sizeof(path), "%s/large-bf16.safetensors",
				     daemon_.dir) < sizeof(path));
	write_model(path, ST_BF16, 1024, 2048, 1);
	ASSERT_OK(test_ref_open_as(&ref_, path, true));
	kept = served_memory(&daemon_, path, &ref_, "checkpoint");
	widened = served_memory(&daemon_, path, &ref_, "f32");
	fprintf(stderr,
	        "test: %.1f MB of BF16 expert weights; moed resident + shared: %.1f MB kept, "
	        "%.1f MB widened (ratio to the expert bytes %.3f and %.3f)\n",
	        expert_bytes / 1e6, kept / 1e6, widened / 1e6, (double)kept / expert_bytes,
	        (double)widened / expert_bytes);
	if (kept > expert_bytes + expert_bytes / 20 + allowance)
		fail_msg("moed holds %.1f MB for %.1f MB of BF16 experts (bound %.1f MB)", kept / 1e6,
		         expert_bytes / 1e6, (expert_bytes + expert_bytes / 20 + allowance) / 1e6);
	/* the bound can fail: a float32 copy is past it */
	assert_true(widened >= kept + expert_bytes * 9 / 10);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_bf16_served_as_bf16, teardown),
		cmocka_unit_test_teardown(test_f16_served_as_f16, teardown),
		cmocka_unit_test_teardown(test_bf16_memory, teardown),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOED\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
