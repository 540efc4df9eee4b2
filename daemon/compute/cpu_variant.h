/* SPDX-License-Identifier: MIT */
/*
 * cpu_variant: one kernel compiled for several instruction sets, and the
 * widest the CPU runs chosen at run time (the build targets baseline
 * x86-64; the machines it runs on differ). A module keeps a table of its
 * variants, widest first, each a struct whose FIRST member is a struct
 * cpu_variant, and asks here which to use (matmul_small_m.c,
 * activations.c).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct cpu_variant {
	const char *name;         /* "avx512", "avx2", "generic" */
	bool (*supported)(void);  /* does this CPU run it? */
};

/* What the variants' target attributes ask for: avx512f+fma, avx2+fma+f16c, nothing. */
bool cpu_variant_avx512(void);
bool cpu_variant_avx2(void);
bool cpu_variant_baseline(void);
/*
 * AVX512_BF16's dot product (vdpbf16ps) and conversions, with the AVX-512F
 * and BW that its code needs: an opt-in kernel, not a variant of a table
 * (matmul_bf16_dot.h).
 */
bool cpu_variant_avx512_bf16(void);

/*
 * The first entry of @table (@n entries of @stride bytes, each starting
 * with a struct cpu_variant) that the CPU supports. The last entry must be
 * a baseline one, so there always is one.
 */
const void *cpu_variant_first(const void *table, size_t n, size_t stride);

/*
 * The entry named @name into *@ret: 0, -EINVAL for a name the table lacks,
 * -EOPNOTSUPP for one this CPU cannot run.
 */
int cpu_variant_find(const void *table, size_t n, size_t stride, const char *name,
		     const void **ret);
