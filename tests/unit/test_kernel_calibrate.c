/* SPDX-License-Identifier: MIT */
/*
 * Tests of kernel_calibrate: the bounds measured on this machine, kept in
 * a cache file and read back, and what a cache that does not fit (another
 * key, a corrupt file, an out-of-range bound, a path that cannot be
 * written) does: measure again, never trust it, never fail. The bounds'
 * values are this machine's; the tests check their range and where they
 * came from, and that matmul_xwt's choice follows matmul_bounds_set().
 */
#include "test_assert.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compute/blas_setup.h"
#include "compute/kernel_calibrate.h"
#include "compute/matmul_bf16_dot.h"

static char dir[64];
static char cache[128];

static int setup(void **state)
{
	struct blas_info bi;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/moed-calib.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(cache, sizeof(cache), "%s/kernel-bounds.json", dir);
	return blas_setup_single_thread(&bi) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(cache);
	rmdir(dir);
	return 0;
}

/*
 * Two small tile shapes, F32 and BF16 weights; cached however busy the
 * machine is (ctest runs other tests beside this one).
 */
static void small_request(struct calibrate_request *req, const char *path)
{
	*req = (struct calibrate_request){
		.shapes = { { 256, 128 }, { 128, 256 } },
		.n_shapes = 2,
		.cache_path = path,
		.others_max = INFINITY,
	};
	req->dtypes[WEIGHT_F32] = true;
	req->dtypes[WEIGHT_BF16] = true;
}

static void expect_sane(const struct calibrate_result *res, enum calibrate_source source)
{
	assert_int_equal(res->source, source);
	assert_true(res->measured[WEIGHT_F32] && res->measured[WEIGHT_BF16]);
	assert_false(res->measured[WEIGHT_F16]); /* not asked for */
	for (int dt = WEIGHT_F32; dt <= WEIGHT_BF16; dt++) {
		assert_true(res->bounds.small_m_max[dt] >= 1 && res->bounds.small_m_max[dt] <= 64);
		ASSERT_EQ(matmul_small_m_max((enum weight_dtype)dt), res->bounds.small_m_max[dt]);
	}
	/* a dtype not measured keeps the built-in bound */
	ASSERT_EQ(matmul_small_m_max(WEIGHT_F16), matmul_small_m_builtin_max());
	assert_true(res->seconds >= 0 && res->seconds < 30);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Measured, then cached: the same bounds, nothing measured the second time. */
static void test_measured_then_cached(void **state)
{
	struct calibrate_request req;
	struct calibrate_result first;
	struct diag d = { { 0 } };

	(void)state;
	unlink(cache);
	assert_int_equal(kernel_calibration()->source, CALIBRATE_BUILTIN);
	small_request(&req, cache);
	ASSERT_OK(kernel_calibrate(&req, &d));
	first = *kernel_calibration();
	expect_sane(&first, CALIBRATE_MEASURED);
	assert_true(first.cached_now);
	assert_int_equal(access(cache, R_OK), 0);

	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_CACHED);
	assert_memory_equal(&kernel_calibration()->bounds, &first.bounds, sizeof(first.bounds));
}

/*
 * With bf16_dot on, BF16's bound is the dot-product kernel's: bounds cached
 * with it off are measured over, and the other way round (the cache key
 * says which). Where the CPU lacks AVX512_BF16 there is nothing to switch.
 */
static void test_bf16_dot_measured_apart(void **state)
{
	struct calibrate_request req;
	struct diag d = { { 0 } };

	(void)state;
	if (!matmul_bf16_dot_supported()) {
		printf("no AVX512_BF16: bf16_dot cannot be on here\n");
		return;
	}
	unlink(cache);
	small_request(&req, cache);
	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_MEASURED);
	ASSERT_OK(matmul_bf16_dot_enable(true));
	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_MEASURED);
	assert_true(kernel_calibration()->cached_now);
	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_CACHED);
	ASSERT_OK(matmul_bf16_dot_enable(false));
	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_MEASURED);
}

/*
 * Bounds measured while another process spins (a whole core, on any
 * machine) are used but not cached: with the default limit of half a core,
 * the result says how busy the machine was and that nothing was written.
 */
static void test_busy_machine_not_cached(void **state)
{
	struct calibrate_request req;
	struct diag d = { { 0 } };
	const struct calibrate_result *res;
	pid_t spinner;
	int status;

	(void)state;
	unlink(cache);
	small_request(&req, cache);
	req.others_max = 0; /* the default, CALIBRATE_OTHERS_MAX */
	spinner = fork();
	assert_true(spinner >= 0);
	if (spinner == 0)
		for (volatile unsigned long i = 0;; i++)
			;
	ASSERT_OK(kernel_calibrate(&req, &d));
	kill(spinner, SIGKILL);
	waitpid(spinner, &status, 0);
	res = kernel_calibration();
	expect_sane(res, CALIBRATE_MEASURED);
	assert_true(res->others_cores > CALIBRATE_OTHERS_MAX);
	assert_false(res->cached_now);
	assert_int_equal(access(cache, F_OK), -1);
}

/* Another machine's, model's or a corrupt cache is measured over, never used. */
static void test_cache_that_does_not_fit(void **state)
{
	static const char *const bad[] = {
		"{\"key\": \"another CPU\", \"small_m_max\": [8, 8, 8], \"small_m_at_1\": false}",
		"{\"key\": ",
		"",
		"[1, 2, 3]",
	};
	struct calibrate_request req;
	struct diag d = { { 0 } };

	(void)state;
	small_request(&req, cache);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(cache, bad[i]);
		ASSERT_OK(kernel_calibrate(&req, &d));
		expect_sane(kernel_calibration(), CALIBRATE_MEASURED);
	}
	/* the right key with a bound the kernels never see measured is refused too */
	{
		char *text, *at;
		FILE *f = fopen(cache, "re");
		long len;

		assert_non_null(f);
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		rewind(f);
		text = calloc(1, (size_t)len + 16);
		assert_non_null(text);
		assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
		fclose(f);
		at = strstr(text, "\"small_m_max\"");
		assert_non_null(at);
		at = strchr(at, '[');
		assert_non_null(at);
		memcpy(at + 1, "999", 3); /* "[999..." : the first bound out of range */
		at[4] = ',';
		write_file(cache, text);
		free(text);
	}
	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_MEASURED);
}

/* A cache that cannot be written costs a warning, not the bounds. */
static void test_unwritable_cache(void **state)
{
	struct calibrate_request req;
	struct diag d = { { 0 } };

	(void)state;
	small_request(&req, "/nonexistent-dir/kernel-bounds.json");
	ASSERT_OK(kernel_calibrate(&req, &d));
	expect_sane(kernel_calibration(), CALIBRATE_MEASURED);
}

/* matmul_bounds_set() is what MATMUL_AUTO follows; NULL brings back the built-in ones. */
static void test_bounds_set(void **state)
{
	struct matmul_bounds b = { .small_m_max = { 5, 7, 0 }, .small_m_at_1 = true }, got;

	(void)state;
	matmul_bounds_set(&b);
	matmul_bounds_get(&got);
	ASSERT_EQ(got.small_m_max[WEIGHT_F32], 5);
	ASSERT_EQ(got.small_m_max[WEIGHT_BF16], 7);
	ASSERT_EQ(got.small_m_max[WEIGHT_F16], matmul_small_m_builtin_max());
	assert_true(got.small_m_at_1);
	matmul_bounds_set(NULL);
	matmul_bounds_get(&got);
	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++)
		ASSERT_EQ(got.small_m_max[dt], matmul_small_m_builtin_max());
	assert_false(got.small_m_at_1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_measured_then_cached),
		cmocka_unit_test(test_bf16_dot_measured_apart),
		cmocka_unit_test(test_cache_that_does_not_fit),
		cmocka_unit_test(test_busy_machine_not_cached),
		cmocka_unit_test(test_unwritable_cache),
		cmocka_unit_test(test_bounds_set),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
