/* SPDX-License-Identifier: MIT */
/*
 * placement_internal: what the policy files share with placement.c. Each
 * fill function receives a placement allocated for the input (every layer's
 * experts array sized, n_copies 0) and sets every expert's primary node, or
 * fails with @d filled; placement.c frees the placement on failure.
 */
#pragma once

#include "placement/placement.h"

int placement_balanced_fill(const struct placement_input *in, struct placement *p, struct diag *d);
int placement_explicit_fill(const struct placement_input *in, struct placement *p, struct diag *d);

/* Set @e's single copy (the primary) to node index @node. */
static inline void expert_place_set(struct expert_place *e, uint32_t node)
{
	e->n_copies = 1;
	e->node[0] = (uint8_t)node;
}
