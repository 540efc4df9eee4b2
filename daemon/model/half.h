/* SPDX-License-Identifier: MIT */
/*
 * half: bfloat16 and IEEE binary16 to and from float32, one value at a
 * time. Widening is exact (every half value is a float value); narrowing
 * rounds to nearest even. The vector kernels widen in registers
 * (compute/matmul_small_m.c); these are the reference they must equal and
 * what the loader, the generator and the tests use.
 */
#pragma once

#include <stdint.h>
#include <string.h>

static inline float half_f32_from_bits(uint32_t bits)
{
	float f;

	memcpy(&f, &bits, sizeof(f));
	return f;
}

/* bfloat16 is the upper half of a float32. */
static inline float bf16_to_f32(uint16_t h)
{
	return half_f32_from_bits((uint32_t)h << 16);
}

/*
 * IEEE binary16 to binary32, exactly. Normal numbers rebias the exponent
 * (15 -> 127); subnormals are mant * 2^-24, which is exact in float; inf and
 * NaN keep their payload in the top mantissa bits (a quiet NaN stays quiet).
 */
static inline float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;
	float v;

	if (exp == 0x1f)
		return half_f32_from_bits(sign | 0x7f800000u | (mant << 13));
	if (exp == 0) {
		v = (float)mant * 0x1p-24f;
		return sign ? -v : v;
	}
	return half_f32_from_bits(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

static inline uint16_t f32_to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	if ((u & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((u >> 16) | 0x40); /* keep NaN a NaN */
	u += 0x7fff + ((u >> 16) & 1); /* round to nearest even */
	return (uint16_t)(u >> 16);
}

static inline uint16_t f32_to_f16(float f)
{
	uint32_t u, sign, mant;
	int32_t exp;

	memcpy(&u, &f, 4);
	sign = (u >> 16) & 0x8000;
	exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
	mant = u & 0x7fffff;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00);
	if (exp <= 0) {
		if (exp < -10)
			return (uint16_t)sign;
		mant |= 0x800000;
		/* subnormal: shift with round to nearest even */
		uint32_t shift = (uint32_t)(14 - exp);
		uint32_t half = 1u << (shift - 1), rest = mant & ((1u << shift) - 1);
		uint32_t v = mant >> shift;

		if (rest > half || (rest == half && (v & 1)))
			v++;
		return (uint16_t)(sign | v);
	}
	{
		uint32_t v = ((uint32_t)exp << 10) | (mant >> 13), rest = mant & 0x1fff;

		if (rest > 0x1000 || (rest == 0x1000 && (v & 1)))
			v++; /* may carry into the exponent: still correct */
		return (uint16_t)(sign | v);
	}
}
