/* SPDX-License-Identifier: MIT */
/*
 * bench_common: what every benchmark program needs: the clock, sorting samples, the
 * CPU time the machine and this process spent (so a figure can say how much
 * other processes took meanwhile), and seeded inputs.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* qsort comparator for doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

/* The median of @v[0..n) (n >= 1; @v is left as it was); NAN when out of memory. */
double bench_median(const double *v, size_t n);

/* Seconds on the monotonic clock. */
double bench_now_s(void);

/* splitmix64's output function of @x (stateless: call it with seed, seed + 1, ...). */
uint64_t bench_splitmix64(uint64_t x);

/* N(0, 1) by Box-Muller from @seed: hidden states of a batch. */
void bench_fill_normal(float *p, size_t n, uint64_t seed);
