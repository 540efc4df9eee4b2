/* SPDX-License-Identifier: MIT */
/*
 * expert_store: the owner of a model's weights in moed, laid out per NUMA
 * node in shared-memory objects (store_object.h) that outlive moed.
 *
 * Opening a model through the store either
 * - re-attaches the objects a previous moed left (same store name): the
 *   home object's manifest names the checkpoint's files with their
 *   fingerprints; when every file still has its fingerprint, the placement
 *   settings are the same and every node's object verifies (header,
 *   checksum, the identity of the home's), the model is built over the
 *   objects without opening a weight file; or
 * - loads: reads the checkpoint's headers, builds the model once to learn
 *   which tensors it uses and which expert each belongs to, places the
 *   experts on nodes (placement.h), creates one object per node, fills
 *   them (store_fill.h: io_uring, one thread on each node, float32 with
 *   the checkpoint's dtype recorded) and builds the model over them.
 * Anything that does not verify on the way is reported in the log with
 * its reason and replaced by a clean load: never wrong weights.
 *
 * The model's weights then point into the objects: one copy of the weights
 * in memory, shared by every engine, resident in the node they belong to.
 *
 * Thread-safety: open and close on one thread; the model is immutable and
 * may be read from any thread; the map is taken by reference (below).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "model/model.h"
#include "numa/topology.h"
#include "placement/placement.h"
#include "util/diag.h"

/* Where an open is, for `moectl status` while moed loads. */
enum store_phase {
	STORE_PHASE_STARTING,  /* before the store looked at anything */
	STORE_PHASE_ATTACHING, /* checking a store a previous moed left */
	STORE_PHASE_LOADING,   /* reading the weight files */
	STORE_PHASE_READY,
};

/* Written by the opening thread, read by any (relaxed: figures for people). */
struct store_progress {
	atomic_int phase;                /* enum store_phase */
	atomic_uint_fast64_t bytes_done; /* read from the weight files so far */
	atomic_uint_fast64_t bytes_total; /* to read; 0 until known */
};

void store_progress_init(struct store_progress *p);
const char *store_phase_name(enum store_phase phase);

struct expert_store_opts {
	const char *dir;                /* where the objects live */
	const char *name;               /* their name: DIR/NAME.nodeN */
	bool keep;                      /* false: removed at close */
	uint64_t replica_budget;        /* per node: spare space for changes' copies */
	const struct topology *topo;    /* must outlive the store */
	enum placement_policy policy;
	const char *expert_nodes;       /* policy explicit */
	const char *const *overrides;   /* router options, as for moe_model_open() */
	unsigned n_overrides;
	bool widen_experts;             /* expert matrices as float32 (model_opts) */
	struct store_progress *progress; /* NULL, or filled during the open (outlives it) */
	const char *load_record;        /* NULL, or the measured load for balanced (load_record.h) */
	/*
	 * NULL, or [TOPOLOGY_MAX_NODES] fds (-1: none) of this store's objects
	 * as systemd's fd store kept them (borrowed): node n's object is taken
	 * from kept_fds[n] when its file is gone, and checked as any other.
	 */
	const int *kept_fds;
	/*
	 * NULL, or which experts other hosts compute (expert_hosts,
	 * daemon/peers/): a load calls it once the model's layers are known,
	 * to set remote[l][e] (n_layers arrays of n_experts[l], zeroed), and
	 * neither reads nor keeps those experts' weights. 0, or -errno with
	 * @d. @remote_key names the split (it joins the placement key, so a
	 * store made for another one is loaded again, not re-attached).
	 */
	int (*remote_experts)(const void *ctx, uint32_t n_layers, const uint32_t *n_experts,
			      bool *const *remote, struct diag *d);
	const void *remote_ctx;
	const char *remote_key;
};

enum store_source {
	STORE_LOADED,   /* read from the weight files */
	STORE_ATTACHED, /* re-attached: no weight file read */
};

struct expert_store_info {
	enum store_source source;
	char reload_reason[256];  /* why an existing store was not used; empty if none */
	char identity[2 * 16 + 1];
	uint64_t weight_bytes;    /* of every tensor in the store */
	uint64_t read_bytes;      /* from the weight files (0 when attached) */
	double seconds;           /* open to ready */
	uint32_t n_nodes;
	uint64_t node_bytes[TOPOLOGY_MAX_NODES];
	uint32_t node_experts[TOPOLOGY_MAX_NODES];
	bool huge_pages;          /* hugetlbfs, or tmpfs huge pages mapped when the open ended */
	uint32_t from_kept_fds;   /* objects re-attached from kept_fds: their files were gone */
	uint32_t remote_experts;  /* experts other hosts compute: not held here */
};

struct expert_store;

int expert_store_open(const char *model_path, const struct expert_store_opts *o,
		      struct expert_store **ret_store, struct diag *d);

/* Unmaps, and removes the objects unless the store is kept. NULL-safe. */
struct expert_store *expert_store_close(struct expert_store *s);

const struct moe_model *expert_store_model(const struct expert_store *s);
/* The checkpoint the store holds, as expert_store_open() was given it. */
const char *expert_store_model_path(const struct expert_store *s);

/*
 * The fds of the store's objects, node index order, into @fds (at most
 * @max; borrowed: valid until the store closes). Returns how many there are.
 */
uint32_t expert_store_object_fds(const struct expert_store *s, int *fds, uint32_t max);
const struct expert_store_info *expert_store_info(const struct expert_store *s);
const struct topology *expert_store_topology(const struct expert_store *s);

/* ---- the live map, and changes to it while serving ---- */

/*
 * Which copies serve each expert is a map with an epoch: the placement and
 * the homes (engine_batch.homes) built from it. A change publishes the next
 * map; a run holds a reference to the map it started with, so no run waits
 * for a change and none sees half of one. A copy that a change removed is
 * freed when the last run of an older map lets go of it.
 */
struct expert_map;

/* A reference to the current map (any thread); never NULL. */
struct expert_map *expert_store_map_get(struct expert_store *s);
/* Let go of @m (any thread). NULL-safe; returns NULL. */
struct expert_map *expert_map_put(struct expert_map *m);
uint64_t expert_map_epoch(const struct expert_map *m);
const struct placement *expert_map_placement(const struct expert_map *m);
/* [n_experts] homes of @layer's experts for engine_batch.homes; NULL for a layer without. */
const struct expert_home *expert_map_homes(const struct expert_map *m, uint32_t layer);

enum expert_change_op {
	EXPERT_REPLICATE, /* a copy more, on node */
	EXPERT_MOVE,      /* the primary copy to node (a replica there becomes primary) */
	EXPERT_DROP,      /* the copy on node goes; the last copy cannot */
};

struct expert_change {
	enum expert_change_op op;
	uint32_t layer, expert;
	uint32_t node; /* a topology index, not a kernel node id */
};

/*
 * Queue @c: checked now against the map it will change (-EINVAL: a layer,
 * expert or node the store lacks, or an expert without a home, as BASE's;
 * -EREMOTE: an expert another host computes;
 * -EEXIST: a copy already there; -ENOENT: no copy there to drop; -EPERM:
 * the last copy; -ENOSPC: the node's replica_budget cannot hold it;
 * -EAGAIN: too many changes queued), then copied by a thread on the target
 * node and published as the next epoch. Returns that epoch (> 0): the map
 * of that epoch holds the change, or, if it failed when applied (logged;
 * expert_store_failed_epochs()), the map before it. Any thread.
 */
int64_t expert_store_change(struct expert_store *s, const struct expert_change *c,
			    struct diag *d);

/* Wait until every queued change is published (or failed: logged). */
void expert_store_changes_wait(struct expert_store *s);

/*
 * The epochs of the latest changes that failed when applied (each still
 * took its epoch, publishing the map unchanged), oldest first, at most
 * @max of them (16 are kept). Any thread.
 */
size_t expert_store_failed_epochs(struct expert_store *s, uint64_t *ret_epochs, size_t max);

/* The node index of the copy the load made of (@layer, @expert): it stays for the store's life. */
uint32_t expert_store_loaded_node(const struct expert_store *s, uint32_t layer, uint32_t expert);

/*
 * Whether another host computes @expert of @layer (opts.remote_experts):
 * the store holds no copy of it, and the model's expert has no weights
 * (NULL matrices), so nothing here may compute it.
 */
bool expert_store_is_remote(const struct expert_store *s, uint32_t layer, uint32_t expert);

/* Node index @node's spare space for copies: bytes in use and in all (replica_budget). */
void expert_store_replica_space(struct expert_store *s, uint32_t node, uint64_t *ret_used,
				uint64_t *ret_budget);

/*
 * Remove the objects of the store NAME in DIR (moectl's drop). -EBUSY when a
 * running moed holds them, -ENOENT when there are none.
 */
int expert_store_drop(const char *dir, const char *name, struct diag *d);

/* The default store name for a control socket path: its base name without
 * ".sock" and a hash of the whole path, so that two instances never share. */
void expert_store_default_name(const char *socket_path, char *buf, size_t len);
