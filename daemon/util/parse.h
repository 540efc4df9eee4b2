/* SPDX-License-Identifier: MIT */
/* parse: strict parsing of numbers and names from strings (options, metadata). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whole string must be a decimal integer in [min, max]: 0, or -EINVAL / -ERANGE. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value);
int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret_value);
/* Whole string must be a finite number in [min, max]. */
int parse_double(const char *s, double min, double max, double *ret_value);
/* "true"/"false"/"1"/"0"/"yes"/"no" (case-insensitive). */
int parse_bool(const char *s, bool *ret_value);
/*
 * Index of @s in the NULL-terminated list @names (case-sensitive), or -EINVAL.
 */
int parse_name(const char *s, const char *const *names);

/*
 * A byte count: decimal digits with an optional suffix K, M, G or T (powers
 * of 1024), nothing else. 0, -EINVAL (syntax) or -ERANGE (beyond 2^64 - 1).
 */
int parse_size(const char *s, uint64_t *ret_value);

/*
 * A list of ids such as "0-3,6" in the @len bytes at @s (not necessarily
 * NUL-terminated): items "N" or "N-M" (N <= M) separated by single commas,
 * no spaces, at least one item. @each is called once per item, in order,
 * with its range; a negative return stops the walk and is returned. The
 * callback checks the bounds: this function only keeps each id within
 * 32 bits. 0, -EINVAL (syntax, N > M), -ERANGE or @each's error.
 */
int parse_id_list(const char *s, size_t len, int (*each)(uint32_t lo, uint32_t hi, void *ctx),
		  void *ctx);
