/* SPDX-License-Identifier: MIT */
/* parse: strict parsing of numbers and names from strings (options, metadata). */
#pragma once

#include <stdbool.h>
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
