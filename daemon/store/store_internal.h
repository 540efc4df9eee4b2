/* SPDX-License-Identifier: MIT */
/* The expert store's insides, shared by the files of daemon/store/. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "store/expert_store.h"
#include "store/store_manifest.h"
#include "store/store_object.h"

/* A copy of one expert that a change made, in a node's spare space. */
struct store_replica {
	atomic_uint refs;          /* the maps that use it */
	uint32_t layer, expert, node;
	uint64_t offset, bytes;    /* its extent in the node object's spare space */
	struct ffn_weights ffn;    /* pointing into that extent */
};

struct expert_map {
	atomic_uint refs;
	struct expert_store *store;
	struct placement *placement; /* its epoch is the map's */
	struct expert_home **homes;  /* [n_homes][n_experts]; NULL for a layer without */
	uint32_t n_homes;
	struct store_replica **replicas; /* the changes' copies it uses, a reference each */
	size_t n_replicas;
};

/* A free range of a node object's spare space. */
struct store_extent {
	uint64_t offset, bytes;
};

struct store_space {
	uint64_t begin, end;         /* the spare space: [begin, end) of the object */
	struct store_extent *free;   /* sorted by offset, never adjacent */
	size_t n_free, cap;
	uint64_t used;
};

struct expert_store {
	struct expert_store_opts opts;
	struct store_object objects[TOPOLOGY_MAX_NODES]; /* [n] is node index n's */
	uint32_t n_objects;
	struct manifest manifest;
	struct moe_model *model;        /* over the objects */
	uint32_t **loaded_node;         /* [layer][expert]: the node of the load's copy */
	bool **remote;                  /* [layer][expert]: another host computes it (no copy) */
	uint32_t n_loaded_layers;

	pthread_mutex_t map_lock;       /* guards `map` */
	struct expert_map *map;         /* the current map; the store holds a reference */

	pthread_mutex_t space_lock;     /* guards `space` */
	struct store_space space[TOPOLOGY_MAX_NODES];

	struct store_changes *changes;  /* the change queue and its thread (store_change.c) */
	struct store_progress own_progress;
	struct store_progress *progress; /* opts.progress, else own_progress */
	struct expert_store_info info;
};

/*
 * A map over @p (taken over, freed on failure too) whose copies are the
 * load's where @p names the loaded node, else one of @reps (a reference
 * taken on each used). 0, or -EINVAL (a copy with no bytes) / -ENOMEM.
 */
int store_map_build(struct expert_store *s, struct placement *p, struct store_replica *const *reps,
		    size_t n_reps, struct expert_map **ret_map, struct diag *d);

/* Drop a reference on @rep; the last one frees its extent. */
void store_replica_put(struct expert_store *s, struct store_replica *rep);

/* The change queue, empty, its thread not started. 0 or -ENOMEM. (store_change.c) */
int store_changes_init(struct expert_store *s);
/* Stop the change thread; changes still queued are logged and not made. NULL-safe queue. */
void store_changes_stop(struct expert_store *s);

/* Make @next the current map; drops the store's reference on the old one. Returns NULL. */
struct expert_map *store_map_publish(struct expert_store *s, struct expert_map *next);

/* Spare space of @node: 0 and the offset of @bytes, or -ENOSPC. (store_space.c) */
int store_space_alloc(struct expert_store *s, uint32_t node, uint64_t bytes, uint64_t *ret_off);
/* Give an extent back. */
void store_space_free(struct expert_store *s, uint32_t node, uint64_t offset, uint64_t bytes);
/* Set up node @node's spare space [begin, end) as free. 0 or -ENOMEM. */
int store_space_init(struct expert_store *s, uint32_t node, uint64_t begin, uint64_t end);
void store_space_done(struct expert_store *s);

/* The placement settings as one string, compared when re-attaching. */
int store_placement_key(const struct expert_store_opts *o, char *buf, size_t len);

/* Read @path into fresh objects: on success objects[] and manifest are set, sealed. */
int store_load(struct expert_store *s, const char *path, struct diag *d);

/* The model, placement and homes over the objects and the manifest. */
int store_build_model(struct expert_store *s, struct diag *d);
