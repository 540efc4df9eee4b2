/* SPDX-License-Identifier: MIT */
/* cpu_variant: the widest kernel variant the CPU runs; see cpu_variant.h. */
#include "cpu_variant.h"

#include <errno.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <stdint.h>
#include <string.h>

bool cpu_variant_baseline(void)
{
	return true;
}

bool cpu_variant_avx512(void)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#else
	return false;
#endif
}

bool cpu_variant_avx2(void)
{
#if defined(__x86_64__)
	unsigned a, b, c, d;

	/* F16C (half-precision weights) came with every AVX2 CPU, but ask:
	 * GCC 12's __builtin_cpu_supports() does not know it */
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
	       __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
	return false;
#endif
}

/* cpuid leaf 7, subleaf 1, EAX bit 5 (cpuid.h's bit_AVX512BF16) */
#define CPUID_7_1_EAX_AVX512_BF16 (1u << 5)

bool cpu_variant_avx512_bf16(void)
{
#if defined(__x86_64__)
	unsigned a, b, c, d;

	/* the builtins check that the OS saves the AVX-512 registers; the
	 * feature bit itself is read from cpuid, as F16C's above, rather than
	 * trusting each compiler's list of names */
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & CPUID_7_1_EAX_AVX512_BF16);
#else
	return false;
#endif
}

static const struct cpu_variant *entry(const void *table, size_t i, size_t stride)
{
	return (const struct cpu_variant *)(const void *)((const uint8_t *)table + i * stride);
}

const void *cpu_variant_first(const void *table, size_t n, size_t stride)
{
	for (size_t i = 0; i < n; i++)
		if (entry(table, i, stride)->supported())
			return entry(table, i, stride);
	return entry(table, n - 1, stride); /* the baseline one: never reached */
}

int cpu_variant_find(const void *table, size_t n, size_t stride, const char *name,
		     const void **ret)
{
	for (size_t i = 0; i < n; i++) {
		const struct cpu_variant *v = entry(table, i, stride);

		if (strcmp(v->name, name) != 0)
			continue;
		if (!v->supported())
			return -EOPNOTSUPP;
		*ret = v;
		return 0;
	}
	return -EINVAL;
}
