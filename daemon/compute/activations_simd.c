/* SPDX-License-Identifier: MIT */
/*
 * activations_simd.c: activation_apply() for AVX-512 and AVX2, through
 * glibc's libmvec (the vector expf/erff/tanhf, _ZGVeN16v_expf and kin, which
 * libm.so pulls in as needed). A file of its own so that the declarations
 * below never reach the scalar path in activations.c.
 *
 * Why we declare the vector clones ourselves: glibc's <bits/math-vector.h>
 * announces them only under __FAST_MATH__, and -ffast-math would let GCC
 * assume there is no NaN or inf, which breaks the promise that an overflow
 * inside an expert reaches the output check as NaN. The declaration is the
 * one glibc itself makes (notinbranch, every x86-64 ISA: b/c/d/e clones of
 * these three exist since glibc 2.35; Debian 12 has 2.36). libmvec keeps
 * IEEE special cases (NaN in, NaN out; ±inf; ±0) and documents at most
 * a few ulp of error, the same order as the scalar functions
 * (test_activations measures both against double).
 *
 * Check that the loops still call the clones after a change:
 *   objdump -dr build/.../activations_simd.c.o | grep _ZGV
 * should list _ZGVeN16v_* and _ZGVdN8v_* for expf, erff and tanhf.
 */
#include "activations_simd.h"

#if defined(__x86_64__)

#include <math.h>

#pragma omp declare simd notinbranch
float expf(float x);
#pragma omp declare simd notinbranch
float erff(float x);
#pragma omp declare simd notinbranch
float tanhf(float x);

#include "activations_formulas.h"

#define ACT_NAME activation_apply_avx512
#define ACT_TARGET __attribute__((target("avx512f,fma")))
#include "activations_simd_body.h"

#define ACT_NAME activation_apply_avx2
#define ACT_TARGET __attribute__((target("avx2,fma")))
#include "activations_simd_body.h"

#endif
