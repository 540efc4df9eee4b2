/* SPDX-License-Identifier: MIT */
/*
 * test_cpu: what the CPU has, read from the kernel's /proc/cpuinfo, for the
 * tests that run every instantiation of a kernel the CPU supports.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "test_assert.h"

/*
 * Whether the "flags" line of /proc/cpuinfo lists @flag: what the kernel says
 * the CPU has, independent of the __builtin_cpu_supports() that the kernels'
 * run-time choice asks (matmul_small_m.c, activations.c). Fails the test
 * when the line cannot be read.
 */
static inline bool cpuinfo_has_flag(const char *flag)
{
	char line[8192];
	size_t len = strlen(flag);
	bool found = false, seen = false;
	FILE *f = fopen("/proc/cpuinfo", "re");

	if (!f)
		fail_msg("/proc/cpuinfo: %s", strerror(errno));
	while (!seen && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		seen = true;
		for (const char *p = strchr(line, ':'); p && *p; p += strcspn(p, " \n")) {
			p += strspn(p, ": \n");
			if (strncmp(p, flag, len) == 0 && (p[len] == ' ' || p[len] == '\n'))
				found = true;
		}
	}
	fclose(f);
	if (!seen)
		fail_msg("/proc/cpuinfo has no flags line");
	return found;
}

/*
 * Running every variant of a kernel chosen through cpu_variant.h
 * (matmul_small_m.c, activations.c): their names widest first, whether
 * /proc/cpuinfo says the CPU runs each, and what a test ran and skipped:
 *
 *	test_variants_init(&tv, "activation");
 *	for (size_t v = 0; v < tv.n; v++)
 *		if (test_variant_forced(&tv, v, activation_variant_force(tv.names[v])))
 *			... check variant v ...
 *	test_variants_done(&tv, original);
 */
struct test_variants {
	const char *what;      /* the kernel, for messages */
	const char *names[3];
	bool cpu_has[3];       /* what cpu_variant.h's checks need, per /proc/cpuinfo */
	size_t n;
	char ran[64], skipped[64];
	unsigned tested;
};

static inline void test_variants_init(struct test_variants *tv, const char *what)
{
	*tv = (struct test_variants){ .what = what };
#if defined(__x86_64__)
	tv->names[tv->n] = "avx512";
	tv->cpu_has[tv->n++] = cpuinfo_has_flag("avx512f") && cpuinfo_has_flag("fma");
	tv->names[tv->n] = "avx2";
	tv->cpu_has[tv->n++] = cpuinfo_has_flag("avx2") && cpuinfo_has_flag("fma");
#endif
	tv->names[tv->n] = "generic";
	tv->cpu_has[tv->n++] = true;
}

/*
 * Variant @v was forced, with result @r: a variant the CPU has must run
 * (never skipped for want of support) and one it lacks must not. True when
 * it runs (then the test checks it), false when skipped.
 */
static inline bool test_variant_forced(struct test_variants *tv, size_t v, int r)
{
	const char *name = tv->names[v];

	if (r == -EOPNOTSUPP && tv->cpu_has[v])
		fail_msg("%s variant %s: -EOPNOTSUPP, but /proc/cpuinfo lists its features",
			 tv->what, name);
	if (r == -EOPNOTSUPP) {
		snprintf(tv->skipped + strlen(tv->skipped), sizeof(tv->skipped) - strlen(tv->skipped),
			 " %s", name);
		return false;
	}
	ASSERT_OK(r);
	if (!tv->cpu_has[v])
		fail_msg("%s variant %s runs, but /proc/cpuinfo lacks its features", tv->what,
			 name);
	snprintf(tv->ran + strlen(tv->ran), sizeof(tv->ran) - strlen(tv->ran), " %s", name);
	tv->tested++;
	return true;
}

/*
 * The variant picked at run time (@original) is the first, widest, the CPU
 * has; print what ran on stdout, so that ctest -V and the CI log say what
 * this machine checked; generic runs everywhere.
 */
static inline void test_variants_done(struct test_variants *tv, const char *original)
{
	for (size_t v = 0; v < tv->n; v++)
		if (tv->cpu_has[v]) {
			assert_string_equal(original, tv->names[v]);
			break;
		}
	printf("%s variants tested:%s; skipped, no CPU support:%s (default: %s)\n", tv->what,
	       tv->ran, *tv->skipped ? tv->skipped : " none", original);
	assert_true(tv->tested >= 1);
}
