/* SPDX-License-Identifier: MIT */
/* The expert store's insides, shared by expert_store.c and store_load.c. */
#pragma once

#include "store/expert_store.h"
#include "store/store_manifest.h"
#include "store/store_object.h"

struct expert_store {
	struct expert_store_opts opts;
	struct store_object objects[TOPOLOGY_MAX_NODES]; /* [n] is node index n's */
	uint32_t n_objects;
	struct manifest manifest;
	struct moe_model *model;        /* over the objects */
	struct placement *placement;
	struct expert_home **homes;     /* [n_homes][n_experts]; NULL: no FFN experts */
	uint32_t n_homes;
	struct expert_store_info info;
};

/* The placement settings as one string, compared when re-attaching. */
int store_placement_key(const struct expert_store_opts *o, char *buf, size_t len);

/* Read @path into fresh objects: on success objects[] and manifest are set, sealed. */
int store_load(struct expert_store *s, const char *path, struct diag *d);

/* The model, placement and homes over the objects and the manifest. */
int store_build_model(struct expert_store *s, struct diag *d);
