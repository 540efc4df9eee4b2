/* SPDX-License-Identifier: MIT */
/*
 * rng: splitmix64, a small seedable generator for the places that need
 * reproducible randomness: the random second-expert policy, synthetic models,
 * tests and benchmarks. Not for anything secret.
 */
#pragma once

#include <stdint.h>

static inline uint64_t rng_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double rng_uniform01(uint64_t *state)
{
	return (double)(rng_splitmix64(state) >> 11) * 0x1.0p-53;
}
