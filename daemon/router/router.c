/* SPDX-License-Identifier: MIT */
/* router: the entry point that allocates the result and picks the family. */
#include "router.h"

#include <errno.h>

static int route_result_init(struct route_result *r, uint32_t n_tokens, uint32_t k,
			     uint32_t n_experts, struct scratch *s)
{
	*r = (struct route_result){ .n_tokens = n_tokens, .k = k, .n_experts = n_experts };
	r->expert = scratch_alloc(s, sizeof(int32_t) * n_tokens * k);
	r->weight = scratch_calloc(s, (size_t)n_tokens * k, sizeof(float));
	r->tokens_per_expert = scratch_calloc(s, n_experts, sizeof(int32_t));
	r->passthrough_scale = scratch_alloc(s, sizeof(float) * n_tokens);
	r->token_dropped = scratch_calloc(s, n_tokens, sizeof(uint32_t));
	if (!r->expert || !r->weight || !r->tokens_per_expert || !r->passthrough_scale ||
	    !r->token_dropped)
		return -ENOMEM;
	for (size_t i = 0; i < (size_t)n_tokens * k; i++)
		r->expert[i] = -1;
	for (uint32_t t = 0; t < n_tokens; t++)
		r->passthrough_scale[t] = 1.0f;
	return 0;
}

int router_route(const struct moe_layer *layer, const struct router_config *cfg, const float *x,
		 uint32_t n_tokens, const struct route_given *given, struct scratch *s,
		 struct route_result *ret, struct diag *d)
{
	const uint32_t E = layer->n_experts;
	struct route_result r;
	struct route_stats st;
	float *logits = NULL;
	int rc;

	rc = router_config_validate(cfg, E, d);
	if (rc < 0)
		return rc;
	rc = route_result_init(&r, n_tokens, router_config_slots(cfg), E, s);
	if (rc < 0)
		return rc;

	switch (cfg->kind) {
	case ROUTER_SWITCH:
	case ROUTER_GSHARD:
	case ROUTER_TOPK:
		if (!layer->router_w)
			return diag_set(d, -EINVAL, "layer %u has no router weight for router %s",
					layer->index, router_kind_name(cfg->kind));
		logits = scratch_alloc(s, sizeof(float) * n_tokens * E);
		if (!logits)
			return -ENOMEM;
		gate_logits(x, n_tokens, layer->d_model, layer->router_w, layer->router_b, E,
			    logits);
		r.logits = logits;
		if (cfg->kind == ROUTER_SWITCH)
			rc = route_switch(cfg, logits, n_tokens, E, s, &r);
		else if (cfg->kind == ROUTER_GSHARD)
			rc = route_gshard(cfg, logits, n_tokens, E, false, s, &r);
		else
			rc = route_topk(cfg, logits, layer->selection_bias, n_tokens, E, s, &r);
		break;
	case ROUTER_BASE:
		if (!layer->centroids)
			return diag_set(d, -EINVAL, "layer %u has no router centroids for router "
						    "base",
					layer->index);
		if (!layer->experts[0].sublayers)
			return diag_set(d, -EINVAL, "layer %u has no BASE expert sublayers",
					layer->index);
		rc = route_base(layer, cfg, x, s, &r, d);
		break;
	case ROUTER_HIERARCHICAL:
		if (!layer->outer_w || !layer->inner_w)
			return diag_set(d, -EINVAL, "layer %u has no outer/inner router weights "
						    "for router hierarchical",
					layer->index);
		rc = route_hierarchical(layer, cfg, x, s, &r);
		break;
	case ROUTER_GIVEN:
		rc = route_given(layer, cfg, given, &r, d);
		break;
	default:
		return diag_set(d, -EINVAL, "unknown router kind %d", (int)cfg->kind);
	}
	if (rc < 0)
		return rc;
	rc = router_stats(cfg, &r, 0, n_tokens, s, &st);
	if (rc < 0)
		return rc;
	r.n_dropped = st.n_dropped;
	r.aux_loss = st.aux_loss;
	r.z_loss = st.z_loss;
	r.has_z_loss = st.has_z_loss;
	*ret = r;
	return 0;
}
