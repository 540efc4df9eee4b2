/* SPDX-License-Identifier: MIT */
/* parse: strict number and name parsing; nothing trailing, nothing out of range. */
#include "parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*ret_value = v;
	return 0;
}

int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret_value)
{
	uint64_t v;
	int r = parse_u64(s, min, max, &v);

	if (r < 0)
		return r;
	*ret_value = (uint32_t)v;
	return 0;
}

int parse_double(const char *s, double min, double max, double *ret_value)
{
	char *end;
	double v;

	if (!s || !*s || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (*end || end == s)
		return -EINVAL;
	if (errno == ERANGE || !isfinite(v) || v < min || v > max)
		return -ERANGE;
	*ret_value = v;
	return 0;
}

int parse_bool(const char *s, bool *ret_value)
{
	static const char *const yes[] = { "true", "1", "yes", "on" };
	static const char *const no[] = { "false", "0", "no", "off" };

	if (!s)
		return -EINVAL;
	for (unsigned i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret_value = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret_value = false;
			return 0;
		}
	}
	return -EINVAL;
}

int parse_name(const char *s, const char *const *names)
{
	if (!s)
		return -EINVAL;
	for (int i = 0; names[i]; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *ret_value)
{
	static const char suffixes[] = "KMGT";
	unsigned shift = 0;
	uint64_t v;
	char digits[32];
	size_t n;
	int r;

	if (!s)
		return -EINVAL;
	n = strspn(s, "0123456789");
	if (n == 0 || n >= sizeof(digits))
		return n == 0 ? -EINVAL : -ERANGE;
	if (s[n]) {
		const char *suffix = strchr(suffixes, s[n]);

		/* one suffix letter and nothing after it ("8GB", "8G5" are errors) */
		if (!suffix || s[n + 1])
			return -EINVAL;
		shift = 10 * (unsigned)(suffix - suffixes + 1);
	}
	memcpy(digits, s, n);
	digits[n] = '\0';
	r = parse_u64(digits, 0, UINT64_MAX, &v);
	if (r < 0)
		return r;
	if (v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret_value = v << shift;
	return 0;
}

/* One decimal number at *pos (before @end), within 32 bits; advances *pos. */
static int parse_id_at(const char **pos, const char *end, uint32_t *ret)
{
	const char *p = *pos;
	uint64_t v = 0;

	if (p == end || *p < '0' || *p > '9')
		return -EINVAL;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return -ERANGE;
	}
	*pos = p;
	*ret = (uint32_t)v;
	return 0;
}

int parse_id_list(const char *s, size_t len, int (*each)(uint32_t lo, uint32_t hi, void *ctx),
		  void *ctx)
{
	const char *p = s, *end = s + len;
	uint32_t lo, hi;
	int r;

	for (;;) {
		r = parse_id_at(&p, end, &lo);
		if (r < 0)
			return r;
		hi = lo;
		if (p < end && *p == '-') {
			p++;
			r = parse_id_at(&p, end, &hi);
			if (r < 0)
				return r;
			if (hi < lo)
				return -EINVAL;
		}
		r = each(lo, hi, ctx);
		if (r < 0)
			return r;
		if (p == end)
			return 0;
		/* a comma must be followed by another item: "0," is an error */
		if (*p != ',')
			return -EINVAL;
		p++;
	}
}
