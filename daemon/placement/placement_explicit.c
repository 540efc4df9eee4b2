/* SPDX-License-Identifier: MIT */
/*
 * placement_explicit: the `expert_nodes` setting, `EXPERTS@NODE` entries for
 * every layer and `L:EXPERTS@NODE` entries for layer L, separated by ';'
 * (spaces around an entry are allowed, none inside).
 *
 * Two walks over the entries, so that nothing is allocated per entry: the
 * first checks every entry's shape, layer and node and fills the map shared
 * by all layers; then, per layer, the walk applies that layer's entries over
 * the shared map. Entries for every layer are checked against the largest
 * layer (a layer with fewer experts ignores indices it lacks); a layer's own
 * entries against that layer. An expert may be named once among the shared
 * entries and once among its layer's: the second is the override.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement/placement_internal.h"
#include "util/parse.h"

struct explicit_entry {
	const char *text; /* the whole entry, for messages */
	int len;
	bool has_layer;
	uint32_t layer;
	const char *experts;
	size_t experts_len;
	uint32_t node; /* index into topology.nodes[] */
};

/* Where an expert goes, and the entry that said so (NULL: none yet). */
struct explicit_slot {
	uint32_t node;
	const char *by_text; /* points into the setting */
	int by_len;
};

#define ENTRY_FMT "expert_nodes entry '%.*s': "
#define EMPTY_ENTRY_MSG "expert_nodes: empty entry (two ';' in a row, or one at an end)"

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

/* Split one trimmed entry into layer, experts and node, and look the node up. */
static int entry_parse(const struct placement_input *in, struct explicit_entry *en, struct diag *d)
{
	const char *end = en->text + en->len, *at = memchr(en->text, '@', (size_t)en->len);
	const char *colon = memchr(en->text, ':', (size_t)en->len);
	uint32_t node_id;
	int idx;

	if (!at || memchr(at + 1, '@', (size_t)(end - at - 1)) || (colon && colon > at) ||
	    (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1))))
		return diag_set(d, -EINVAL, ENTRY_FMT "expected [LAYER:]EXPERTS@NODE", en->len,
				en->text);
	en->has_layer = colon != NULL;
	en->experts = colon ? colon + 1 : en->text;
	en->experts_len = (size_t)(at - en->experts);
	if (colon && span_u32(en->text, (size_t)(colon - en->text), &en->layer) < 0)
		return diag_set(d, -EINVAL, ENTRY_FMT "LAYER is not a number", en->len, en->text);
	if (en->has_layer && en->layer >= in->n_layers)
		return diag_set(d, -EINVAL, ENTRY_FMT "layer %u beyond the model's %u layers",
				en->len, en->text, en->layer, in->n_layers);
	if (span_u32(at + 1, (size_t)(end - at - 1), &node_id) < 0)
		return diag_set(d, -EINVAL, ENTRY_FMT "NODE is not a number", en->len, en->text);
	idx = topology_node_index(in->topo, node_id);
	if (idx < 0)
		return diag_set(d, -EINVAL, ENTRY_FMT "no node %u in the topology (%s)", en->len,
				en->text, node_id, in->topo->source);
	en->node = (uint32_t)idx;
	return 0;
}

/*
 * The next entry at *pos: 1 with @ret filled, 0 at the end of the setting,
 * -EINVAL for a malformed one.
 */
static int entry_next(const struct placement_input *in, const char **pos,
		      struct explicit_entry *ret, struct diag *d)
{
	const char *p = *pos, *end;

	if (!*p)
		return 0;
	end = p + strcspn(p, ";");
	*pos = *end ? end + 1 : end;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (p == end)
		return diag_set(d, -EINVAL, EMPTY_ENTRY_MSG);
	if (end - p > 200)
		return diag_set(d, -EINVAL, "expert_nodes: entry '%.40s...' too long", p);
	*ret = (struct explicit_entry){ .text = p, .len = (int)(end - p) };
	return entry_parse(in, ret, d) < 0 ? -EINVAL : 1;
}

struct slot_apply {
	const struct explicit_entry *en;
	struct explicit_slot *slots;
	uint32_t n_slots;
	const char *what; /* "the model" or "layer L" */
	struct diag *d;
};

static int slots_apply_range(uint32_t lo, uint32_t hi, void *ctx)
{
	struct slot_apply *a = ctx;
	const struct explicit_entry *en = a->en;

	if (hi >= a->n_slots)
		return diag_set(a->d, -EINVAL, ENTRY_FMT "expert %u beyond %s's %u experts",
				en->len, en->text, hi, a->what, a->n_slots);
	for (uint32_t e = lo; e <= hi; e++) {
		struct explicit_slot *s = &a->slots[e];

		if (s->by_text)
			return diag_set(a->d, -EINVAL,
					ENTRY_FMT "expert %u already placed by entry '%.*s'",
					en->len, en->text, e, s->by_len, s->by_text);
		*s = (struct explicit_slot){
		    .node = en->node, .by_text = en->text, .by_len = en->len };
	}
	return 0;
}

static int entry_apply(const struct explicit_entry *en, struct explicit_slot *slots,
		       uint32_t n_slots, const char *what, struct diag *d)
{
	struct slot_apply a = { .en = en, .slots = slots, .n_slots = n_slots, .what = what, .d = d };
	int r = parse_id_list(en->experts, en->experts_len, slots_apply_range, &a);

	if (r < 0)
		return diag_set(d, -EINVAL, ENTRY_FMT "EXPERTS is not a list such as 0-3,6",
				en->len, en->text);
	return 0;
}

/* Every entry checked; the shared ones applied to @shared. */
static int shared_fill(const struct placement_input *in, struct explicit_slot *shared,
		       uint32_t n_shared, struct diag *d)
{
	const char *pos = in->expert_nodes;
	struct explicit_entry en;
	int r;

	while ((r = entry_next(in, &pos, &en, d)) > 0) {
		if (en.has_layer)
			continue;
		r = entry_apply(&en, shared, n_shared, "the model", d);
		if (r < 0)
			return r;
	}
	return r;
}

static int layer_fill(const struct placement_input *in, uint32_t l,
		      const struct explicit_slot *shared, struct explicit_slot *own,
		      struct placement *p, struct diag *d)
{
	const char *pos = in->expert_nodes;
	uint32_t n = in->n_experts[l];
	struct explicit_entry en;
	char what[32];
	int r;

	snprintf(what, sizeof(what), "layer %u", l);
	memset(own, 0, (n ? n : 1) * sizeof(*own));
	while ((r = entry_next(in, &pos, &en, d)) > 0) {
		if (!en.has_layer || en.layer != l)
			continue;
		r = entry_apply(&en, own, n, what, d);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	for (uint32_t e = 0; e < n; e++) {
		const struct explicit_slot *s = own[e].by_text ? &own[e] : &shared[e];

		expert_place_set(&p->layers[l].experts[e], s->by_text ? s->node : e % p->n_nodes);
	}
	return 0;
}

int placement_explicit_fill(const struct placement_input *in, struct placement *p, struct diag *d)
{
	const char *spec = in->expert_nodes;
	size_t len = spec ? strlen(spec) : 0;
	struct explicit_slot *shared, *own;
	uint32_t max_experts = 0;
	int r;

	while (len && (spec[len - 1] == ' ' || spec[len - 1] == '\t'))
		len--;
	if (!spec || !spec[strspn(spec, " \t")])
		return diag_set(d, -EINVAL, "explicit placement: expert_nodes is empty");
	/* entry_next() sees empty entries at the start and inside, not at the end */
	if (spec[len - 1] == ';')
		return diag_set(d, -EINVAL, EMPTY_ENTRY_MSG);
	for (uint32_t l = 0; l < in->n_layers; l++)
		if (in->n_experts[l] > max_experts)
			max_experts = in->n_experts[l];
	shared = calloc(max_experts ? max_experts : 1, sizeof(*shared));
	own = calloc(max_experts ? max_experts : 1, sizeof(*own));
	if (!shared || !own) {
		r = diag_set(d, -ENOMEM, "explicit placement: out of memory");
		goto out_free;
	}
	r = shared_fill(in, shared, max_experts, d);
	for (uint32_t l = 0; l < in->n_layers && r == 0; l++)
		r = layer_fill(in, l, shared, own, p, d);
out_free:
	free(own);
	free(shared);
	return r;
}
