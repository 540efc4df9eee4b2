/* SPDX-License-Identifier: MIT */
/*
 * Assertions for the CMocka tests that print the expression and both values
 * (and strerror for a -errno), so that a failure says what went wrong without
 * a debugger.
 */
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <stdlib.h>

/*
 * A CMocka skip() inside a passing executable never reaches ctest's output:
 * the executable exits 0 and the test shows as passed. So under CI=true a
 * skip() fails the test instead; a test whose precondition is missing should
 * rather exit 77 from main() before running its group, saying why (ctest
 * then reports it as skipped, SKIP_RETURN_CODE 77).
 */
static inline void moe_test_skip_at(const char *file, int line)
{
	const char *ci = getenv("CI");

	if (ci && strcmp(ci, "true") == 0)
		fail_msg("%s:%d: a test that cannot run fails under CI=true (skip refused)", file,
			 line);
	_skip(file, line);
}

#undef skip
#define skip() moe_test_skip_at(__FILE__, __LINE__)

/* Assert that an int-returning call succeeded (r >= 0); prints strerror(-r). */
#define ASSERT_OK(_expr)                                                                      \
	do {                                                                                  \
		long _r = (long)(_expr);                                                      \
		if (_r < 0)                                                                   \
			fail_msg("%s failed: %ld (%s)", #_expr, _r, strerror((int)-_r));      \
	} while (0)

/* Assert that an int-returning call failed with exactly -errno _err. */
#define ASSERT_ERRNO(_expr, _err)                                                             \
	do {                                                                                  \
		long _r = (long)(_expr);                                                      \
		if (_r != -(long)(_err))                                                      \
			fail_msg("%s returned %ld (%s), expected -%s", #_expr, _r,            \
				 _r < 0 ? strerror((int)-_r) : "success", #_err);             \
	} while (0)

#define ASSERT_EQ(_a, _b)                                                                     \
	do {                                                                                  \
		long long _va = (long long)(_a), _vb = (long long)(_b);                       \
		if (_va != _vb)                                                               \
			fail_msg("%s == %s failed: %lld != %lld", #_a, #_b, _va, _vb);        \
	} while (0)

/* |a - b| <= atol + rtol * |b| */
#define ASSERT_CLOSE(_a, _b, _atol, _rtol)                                                    \
	do {                                                                                  \
		double _va = (double)(_a), _vb = (double)(_b);                                \
		if (!(fabs(_va - _vb) <= (_atol) + (_rtol) * fabs(_vb)))                      \
			fail_msg("%s ~= %s failed: %.9g vs %.9g (diff %.3g)", #_a, #_b, _va,  \
				 _vb, fabs(_va - _vb));                                       \
	} while (0)
