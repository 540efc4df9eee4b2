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
#include "util/expert_spec.h"

/* Where an expert goes, and the entry that said so (NULL: none yet). */
struct explicit_slot {
	uint32_t node;
	const char *by_text; /* points into the setting */
	int by_len;
};

#define SETTING "expert_nodes"
#define ENTRY_FMT SETTING " entry '%.*s': "

/* The next entry, its layer checked and its NODE looked up: as expert_spec_next(). */
static int entry_next(const struct placement_input *in, const char **pos,
		      struct expert_spec_entry *en, uint32_t *ret_node, struct diag *d)
{
	uint32_t node_id;
	int r = expert_spec_next(SETTING, "NODE", pos, en, d), idx;

	if (r <= 0)
		return r;
	if (en->has_layer && en->layer >= in->n_layers)
		return diag_set(d, -EINVAL, ENTRY_FMT "layer %u beyond the model's %u layers",
				en->len, en->text, en->layer, in->n_layers);
	if (expert_spec_target_u32(en, &node_id) < 0)
		return diag_set(d, -EINVAL, ENTRY_FMT "NODE is not a number", en->len, en->text);
	idx = topology_node_index(in->topo, node_id);
	if (idx < 0)
		return diag_set(d, -EINVAL, ENTRY_FMT "no node %u in the topology (%s)", en->len,
				en->text, node_id, in->topo->source);
	*ret_node = (uint32_t)idx;
	return 1;
}

struct slot_apply {
	const struct expert_spec_entry *en;
	uint32_t node;
	struct explicit_slot *slots;
	uint32_t n_slots;
	const char *what; /* "the model" or "layer L" */
	struct diag *d;
};

static int slots_apply_range(uint32_t lo, uint32_t hi, void *ctx)
{
	struct slot_apply *a = ctx;
	const struct expert_spec_entry *en = a->en;

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
		    .node = a->node, .by_text = en->text, .by_len = en->len };
	}
	return 0;
}

static int entry_apply(const struct expert_spec_entry *en, uint32_t node,
		       struct explicit_slot *slots, uint32_t n_slots, const char *what,
		       struct diag *d)
{
	struct slot_apply a = { .en = en, .node = node, .slots = slots, .n_slots = n_slots,
				.what = what, .d = d };

	return expert_spec_each(SETTING, en, slots_apply_range, &a, d);
}

/* Every entry checked; the shared ones applied to @shared. */
static int shared_fill(const struct placement_input *in, struct explicit_slot *shared,
		       uint32_t n_shared, struct diag *d)
{
	const char *pos = in->expert_nodes;
	struct expert_spec_entry en;
	uint32_t node;
	int r;

	while ((r = entry_next(in, &pos, &en, &node, d)) > 0) {
		if (en.has_layer)
			continue;
		r = entry_apply(&en, node, shared, n_shared, "the model", d);
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
	uint32_t n = in->n_experts[l], node;
	struct expert_spec_entry en;
	char what[32];
	int r;

	snprintf(what, sizeof(what), "layer %u", l);
	memset(own, 0, (n ? n : 1) * sizeof(*own));
	while ((r = entry_next(in, &pos, &en, &node, d)) > 0) {
		if (!en.has_layer || en.layer != l)
			continue;
		r = entry_apply(&en, node, own, n, what, d);
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
	struct explicit_slot *shared, *own;
	uint32_t max_experts = 0;
	int r;

	if (!spec || !spec[strspn(spec, " \t")])
		return diag_set(d, -EINVAL, "explicit placement: expert_nodes is empty");
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
