/* SPDX-License-Identifier: MIT */
/* expert_spec: entries of expert_nodes and expert_hosts; see expert_spec.h. */
#include "util/expert_spec.h"

#include <errno.h>
#include <string.h>

#include "util/parse.h"

/* The digits in [s, s + len) as a u32; -EINVAL for anything else. */
static int span_u32(const char *s, size_t len, uint32_t *ret)
{
	char buf[16];

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return parse_u32(buf, 0, UINT32_MAX, ret);
}

/* Split a trimmed entry into its layer, experts and target. */
static int entry_split(const char *name, const char *target_word, struct expert_spec_entry *en,
		       struct diag *d)
{
	const char *end = en->text + en->len, *at = memchr(en->text, '@', (size_t)en->len);
	const char *colon = memchr(en->text, ':', (size_t)en->len);

	if (!at || memchr(at + 1, '@', (size_t)(end - at - 1)) || (colon && colon > at) ||
	    (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1))))
		return diag_set(d, -EINVAL, "%s entry '%.*s': expected [LAYER:]EXPERTS@%s", name,
				en->len, en->text, target_word);
	en->has_layer = colon != NULL;
	if (colon && span_u32(en->text, (size_t)(colon - en->text), &en->layer) < 0)
		return diag_set(d, -EINVAL, "%s entry '%.*s': LAYER is not a number", name,
				en->len, en->text);
	en->experts = colon ? colon + 1 : en->text;
	en->experts_len = (size_t)(at - en->experts);
	en->target = at + 1;
	en->target_len = (size_t)(end - at - 1);
	return 0;
}

int expert_spec_next(const char *name, const char *target_word, const char **pos,
		     struct expert_spec_entry *ret, struct diag *d)
{
	const char *p = *pos, *end;

	if (!p)
		return 0;
	end = p + strcspn(p, ";");
	*pos = *end ? end + 1 : NULL;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (p == end)
		return diag_set(d, -EINVAL, "%s: empty entry (two ';' in a row, or one at an end)",
				name);
	if (end - p > EXPERT_SPEC_ENTRY_MAX)
		return diag_set(d, -EINVAL, "%s: entry '%.40s...' too long", name, p);
	*ret = (struct expert_spec_entry){ .text = p, .len = (int)(end - p) };
	return entry_split(name, target_word, ret, d) < 0 ? -EINVAL : 1;
}

int expert_spec_target_u32(const struct expert_spec_entry *en, uint32_t *ret)
{
	return span_u32(en->target, en->target_len, ret);
}

int expert_spec_each(const char *name, const struct expert_spec_entry *en,
		     int (*each)(uint32_t lo, uint32_t hi, void *ctx), void *ctx, struct diag *d)
{
	if (parse_id_list(en->experts, en->experts_len, each, ctx) < 0)
		/* a range's own message wins: diag keeps the first */
		return diag_set(d, -EINVAL, "%s entry '%.*s': EXPERTS is not a list such as 0-3,6",
				name, en->len, en->text);
	return 0;
}
