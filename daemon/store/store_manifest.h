/* SPDX-License-Identifier: MIT */
/*
 * store_manifest: the home object's description of the expert store, as
 * JSON: which checkpoint it holds (the path it was opened by, the folder of
 * its config.json, each file's fingerprint), the placement settings it was
 * laid out for, its metadata, the bytes of each node's object and every
 * tensor: name, dtype in the checkpoint and in the store, shape, layer,
 * expert (-1 for the layer's own tensors) and its copies (node, offset in
 * the node's data). In the store a tensor is float32, or BF16/F16 where the
 * model keeps an expert's matrices in the checkpoint's dtype (model.h).
 *
 * Reading a manifest trusts nothing in it: every copy must lie inside its
 * node's data, aligned, with a shape that adds up.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"
#include "numa/topology.h"
#include "placement/placement.h"
#include "store/model_identity.h"
#include "util/diag.h"

struct manifest_copy {
	uint32_t node;
	uint64_t offset; /* from the node object's data_offset */
};

struct manifest_tensor {
	char *name;
	enum st_dtype src_dtype; /* in the checkpoint */
	enum st_dtype dtype;     /* in the store: ST_F32, or src_dtype when it is BF16/F16 */
	unsigned ndim;
	uint64_t shape[ST_MAX_DIMS];
	uint64_t n_elements;
	uint32_t layer;
	int64_t expert;          /* -1: the layer's router, centroids, shared experts */
	uint32_t n_copies;
	struct manifest_copy copy[PLACEMENT_MAX_COPIES];
};

struct manifest_file {
	char *path;
	struct file_print print;
};

struct manifest {
	char *model;          /* the path moed was given */
	char *dir;            /* where config.json sits */
	char *placement_key;  /* the settings the layout was made for */
	uint32_t n_nodes;
	uint64_t node_bytes[TOPOLOGY_MAX_NODES]; /* data bytes of each node's object */
	size_t n_files;
	struct manifest_file *files;
	size_t n_meta;
	char *(*meta)[2];
	size_t n_tensors;
	struct manifest_tensor *tensors;
};

/* The JSON text (malloc'd, NUL-terminated), or NULL without memory. */
char *manifest_to_json(const struct manifest *m);

/* Parse and check @len bytes of JSON into @m (zeroed first). 0 or -EBADMSG/-ENOMEM with @d. */
int manifest_from_json(const char *json, size_t len, struct manifest *m, struct diag *d);

/* Free what @m owns and zero it. */
void manifest_done(struct manifest *m);
