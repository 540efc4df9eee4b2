/* SPDX-License-Identifier: MIT */
/*
 * store_load: a cold load of the expert store.
 *
 *   headers -> the model built once over them, to learn which tensors it
 *   uses and whose they are -> the experts other hosts compute, left out
 *   -> placement -> layout (each node's tensors back to back, 64-byte
 *   aligned) -> manifest -> objects -> fill -> seal (nodes first, the home
 *   object last: a half-made store never verifies).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/load_record.h"
#include "store/store_fill.h"
#include "store/store_internal.h"
#include "util/log.h"

struct plan_tensor {
	const struct st_tensor *t;
	uint32_t layer;
	int64_t expert;
	enum st_dtype as; /* in the store: ST_F32, or the checkpoint's BF16/F16 kept */
	bool remote;      /* an expert's, which another host computes: not stored */
};

struct plan {
	struct plan_tensor *v;
	size_t n, cap;
};

/* The model's tensor hook while planning: note the tensor, compute nothing. */
static int plan_hook(void *ctx, const struct st_tensor *t, uint32_t layer, int64_t expert,
		     enum st_dtype as, const void **ret, struct diag *d)
{
	struct plan *p = ctx;

	if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 &&
	    t->dtype != ST_F64)
		return diag_set(d, -EINVAL, "tensor '%s': dtype %s is not a floating-point type",
				t->name, st_dtype_name(t->dtype) ?: "?");
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 256;
		struct plan_tensor *v = reallocarray(p->v, cap, sizeof(*v));

		if (!v)
			return diag_set(d, -ENOMEM, "out of memory");
		p->v = v;
		p->cap = cap;
	}
	p->v[p->n++] = (struct plan_tensor){ .t = t, .layer = layer, .expert = expert, .as = as };
	/* a pointer the planning model keeps but never reads: the data comes later */
	*ret = t->data;
	return 0;
}

/* The bytes a planned tensor takes in the store, each tensor 64-byte aligned. */
static uint64_t store_bytes(const struct plan_tensor *pt)
{
	uint64_t n = pt->t->n_elements * st_dtype_size(pt->as);

	return (n + STORE_ALIGN - 1) / STORE_ALIGN * STORE_ALIGN;
}

/* The load a previous moed recorded, or NULL (logged when a record is there but unusable). */
static double **recorded_load(const struct expert_store *s, uint32_t n_layers,
			      const uint32_t *n_experts)
{
	struct diag d = { { 0 } };
	double **load = NULL;
	int r;

	if (!s->opts.load_record)
		return NULL;
	r = load_record_read(s->opts.load_record, n_layers, n_experts, &load, &d);
	if (r == 0)
		log_info("placement: experts weighed by the load recorded in %s",
			 s->opts.load_record);
	else if (r != -ENOENT)
		log_warning("placement: the load record is not used (%s): experts weighed alike",
			    d.msg[0] ? d.msg : strerror(-r));
	return r == 0 ? load : NULL;
}

/* Place the experts by the settings, weighing each by its bytes (and measured load). */
static int plan_placement(struct expert_store *s, const struct moe_model *m,
			  const struct plan *p, struct placement **ret, struct diag *d)
{
	uint32_t n_layers = moe_model_n_layers(m);
	uint32_t *n_experts = calloc(n_layers ?: 1, sizeof(*n_experts));
	uint64_t **bytes = calloc(n_layers ?: 1, sizeof(*bytes));
	struct placement_input in;
	double **load = NULL;
	int r = -ENOMEM;

	if (!n_experts || !bytes)
		goto out;
	for (uint32_t l = 0; l < n_layers; l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		n_experts[l] = L ? L->n_experts : 0;
		if (n_experts[l] && !(bytes[l] = calloc(n_experts[l], sizeof(**bytes))))
			goto out;
	}
	for (size_t i = 0; i < p->n; i++)
		if (p->v[i].expert >= 0 && !p->v[i].remote)
			bytes[p->v[i].layer][p->v[i].expert] += store_bytes(&p->v[i]);
	in = (struct placement_input){
		.topo = s->opts.topo,
		.policy = s->opts.policy,
		.expert_nodes = s->opts.expert_nodes,
		.n_layers = n_layers,
		.n_experts = n_experts,
		.bytes = (const uint64_t *const *)bytes,
	};
	if (s->opts.policy == PLACEMENT_BALANCED)
		load = recorded_load(s, n_layers, n_experts);
	in.load = (const double *const *)load;
	r = placement_make(&in, ret, d);
	load_record_free(load, n_layers);
out:
	if (r == -ENOMEM && !d->msg[0])
		diag_set(d, r, "out of memory");
	for (uint32_t l = 0; bytes && l < n_layers; l++)
		free(bytes[l]);
	free(bytes);
	free(n_experts);
	return r;
}

/* The manifest of a fresh store: files, metadata and each tensor's place. */
static int lay_out(struct expert_store *s, const char *path, const struct st_set *set,
		   const struct plan *p, const struct placement *pl, struct diag *d)
{
	struct manifest *m = &s->manifest;
	char key[8192];

	if (store_placement_key(&s->opts, key, sizeof(key)) < 0)
		return diag_set(d, -ENAMETOOLONG, "placement settings too long");
	m->model = strdup(path);
	m->dir = strdup(st_set_dir(set));
	m->placement_key = strdup(key);
	m->n_nodes = pl->n_nodes;
	m->files = calloc(st_set_file_count(set) ?: 1, sizeof(*m->files));
	m->meta = calloc(st_set_metadata_count(set) ?: 1, sizeof(*m->meta));
	m->tensors = calloc(p->n ?: 1, sizeof(*m->tensors));
	if (!m->model || !m->dir || !m->placement_key || !m->files || !m->meta || !m->tensors)
		return diag_set(d, -ENOMEM, "out of memory");
	for (size_t i = 0; i < st_set_file_count(set); i++) {
		const char *fp = st_file_path(st_set_file_at(set, i));
		int r;

		m->files[i].path = strdup(fp);
		m->n_files++;
		if (!m->files[i].path)
			return diag_set(d, -ENOMEM, "out of memory");
		r = file_print_of(fp, &m->files[i].print);
		if (r < 0)
			return diag_set(d, r, "%s: cannot stat: %s", fp, strerror(-r));
	}
	for (size_t i = 0; i < st_set_metadata_count(set); i++) {
		const char *k, *v;

		st_set_metadata_at(set, i, &k, &v);
		m->meta[i][0] = strdup(k);
		m->meta[i][1] = strdup(v);
		m->n_meta++;
		if (!m->meta[i][0] || !m->meta[i][1])
			return diag_set(d, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < p->n; i++) {
		const struct plan_tensor *pt = &p->v[i];
		struct manifest_tensor *t = &m->tensors[i];
		uint32_t node = pt->expert >= 0 ? pl->layers[pt->layer].experts[pt->expert].node[0]
						: 0; /* the layer's own tensors: home */

		t->name = strdup(pt->t->name);
		m->n_tensors++;
		if (!t->name)
			return diag_set(d, -ENOMEM, "out of memory");
		t->src_dtype = pt->t->dtype;
		t->dtype = pt->as;
		t->ndim = pt->t->ndim;
		memcpy(t->shape, pt->t->shape, sizeof(t->shape));
		t->n_elements = pt->t->n_elements;
		t->layer = pt->layer;
		t->expert = pt->expert;
		if (pt->remote)
			continue; /* no copy: the manifest says only what it is */
		t->n_copies = 1;
		t->copy[0] = (struct manifest_copy){ node, m->node_bytes[node] };
		m->node_bytes[node] += store_bytes(pt);
	}
	return 0;
}

/*
 * Remove the objects of nodes this store no longer has (a store made on
 * more nodes before): no store uses them, and on tmpfs they would hold
 * their memory until a drop. The home's lock says this name is ours.
 */
static void remove_stale_nodes(struct expert_store *s)
{
	for (uint32_t n = s->manifest.n_nodes; n < TOPOLOGY_MAX_NODES; n++) {
		char path[4096];

		if (store_object_path(s->opts.dir, s->opts.name, n, path, sizeof(path)) == 0 &&
		    unlink(path) < 0 && errno != ENOENT)
			log_warning("%s: cannot remove the stale object: %m, ignoring", path);
	}
}

static int create_objects(struct expert_store *s, const uint8_t *identity, size_t manifest_len,
			  struct diag *d)
{
	for (uint32_t n = 0; n < s->manifest.n_nodes; n++) {
		char path[4096];
		int r;

		r = store_object_path(s->opts.dir, s->opts.name, n, path, sizeof(path));
		if (r < 0)
			return diag_set(d, r, "%s/%s: store path too long", s->opts.dir,
					s->opts.name);
		r = store_object_create(path, s->opts.topo, n, identity, s->manifest.node_bytes[n],
					n == 0 ? manifest_len : 0, s->opts.replica_budget,
					&s->objects[n], d);
		if (r < 0)
			return r;
		s->n_objects = n + 1;
		if (n == 0) {
			r = store_object_lock(&s->objects[0], d);
			if (r < 0)
				return r;
		}
	}
	remove_stale_nodes(s);
	return 0;
}

struct fill_progress {
	struct store_progress *p;
	const char *path;
};

static void log_progress(void *ctx)
{
	struct fill_progress *fp = ctx;
	uint64_t done = atomic_load_explicit(&fp->p->bytes_done, memory_order_relaxed);
	uint64_t total = atomic_load_explicit(&fp->p->bytes_total, memory_order_relaxed);

	log_info("loading %s: %.1f of %.1f MB (%.0f%%)", fp->path, (double)done / 1e6,
		 (double)total / 1e6, total ? 100.0 * (double)done / (double)total : 100.0);
}

/* One fill per node: every tensor it holds, read from its file into its place. */
static int fill_objects(struct expert_store *s, const struct st_set *set, const struct plan *p,
			const char *path, struct diag *d)
{
	uint32_t n_nodes = s->manifest.n_nodes, n_files = (uint32_t)st_set_file_count(set);
	struct fill_item *items = calloc(p->n ?: 1, sizeof(*items));
	const char **paths = calloc(n_files ?: 1, sizeof(*paths));
	struct fill_job jobs[TOPOLOGY_MAX_NODES] = { { 0 } };
	struct fill_progress progress = { .p = s->progress, .path = path };
	uint64_t total = 0;
	size_t at = 0;
	int r = 0;

	if (!items || !paths) {
		r = diag_set(d, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t f = 0; f < n_files; f++)
		paths[f] = st_file_path(st_set_file_at(set, f));
	atomic_store_explicit(&s->progress->bytes_done, 0, memory_order_relaxed);
	/* items grouped by node: each job takes a contiguous run */
	for (uint32_t n = 0; n < n_nodes; n++) {
		jobs[n] = (struct fill_job){ .paths = paths, .n_paths = n_files, .items = items + at,
					     .cpus = &s->opts.topo->nodes[n].cpus,
					     .bytes_read = &s->progress->bytes_done };
		for (size_t i = 0; i < p->n; i++) {
			const struct manifest_tensor *t = &s->manifest.tensors[i];
			const struct store_object *o = &s->objects[n];
			const struct st_file *file;
			uint64_t offset;

			if (t->n_copies == 0 || t->copy[0].node != n)
				continue;
			if (st_set_tensor_file(set, p->v[i].t, &file, &offset) < 0) {
				r = diag_set(d, -EINVAL, "tensor '%s' has no file", t->name);
				goto out;
			}
			for (uint32_t f = 0; f < n_files; f++)
				if (st_set_file_at(set, f) == file)
					items[at].file = f;
			items[at].file_offset = offset;
			items[at].dtype = t->src_dtype;
			items[at].store_dtype = t->dtype;
			items[at].n_elements = t->n_elements;
			items[at].dst = o->base + store_object_header(o)->data_offset +
					t->copy[0].offset;
			total += p->v[i].t->n_bytes;
			jobs[n].n_items++;
			at++;
		}
	}
	atomic_store_explicit(&s->progress->bytes_total, total, memory_order_relaxed);
	r = store_fill_run(jobs, n_nodes, log_progress, &progress);
	for (uint32_t n = 0; r < 0 && n < n_nodes; n++)
		if (jobs[n].result < 0) {
			diag_set(d, jobs[n].result, "%s", jobs[n].diag.msg);
			break;
		}
	s->info.read_bytes = atomic_load(&s->progress->bytes_done);
out:
	free(items);
	free(paths);
	return r;
}

/*
 * Mark the planned tensors of the experts other hosts compute
 * (opts.remote_experts), which the load neither reads nor stores.
 */
static int plan_remote(struct expert_store *s, const struct moe_model *m, struct plan *p,
		       struct diag *d)
{
	uint32_t n_layers = moe_model_n_layers(m), *n_experts;
	bool **remote;
	int r = -ENOMEM;

	if (!s->opts.remote_experts)
		return 0;
	n_experts = calloc(n_layers ?: 1, sizeof(*n_experts));
	remote = calloc(n_layers ?: 1, sizeof(*remote));
	if (!n_experts || !remote)
		goto out;
	for (uint32_t l = 0; l < n_layers; l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		n_experts[l] = L ? L->n_experts : 0;
		/* one entry at least: the callback may index any layer it names */
		if (!(remote[l] = calloc(n_experts[l] ?: 1, sizeof(**remote))))
			goto out;
	}
	r = s->opts.remote_experts(s->opts.remote_ctx, n_layers, n_experts,
				   (bool *const *)remote, d);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < p->n; i++) {
		struct plan_tensor *pt = &p->v[i];
		const struct moe_layer *L = moe_model_layer(m, pt->layer);

		/* BASE experts compute on every host that routes with them (peers.c) */
		pt->remote = pt->expert >= 0 && (uint64_t)pt->expert < n_experts[pt->layer] &&
			     L->router.kind != ROUTER_BASE && remote[pt->layer][pt->expert];
	}
out:
	if (r == -ENOMEM && !d->msg[0])
		diag_set(d, r, "out of memory");
	for (uint32_t l = 0; remote && l < n_layers; l++)
		free(remote[l]);
	free(remote);
	free(n_experts);
	return r;
}

int store_load(struct expert_store *s, const char *path, struct diag *d)
{
	struct model_tensor_hook hook;
	struct moe_model *planned = NULL;
	struct placement *pl = NULL;
	uint8_t identity[MODEL_IDENTITY_BYTES];
	struct plan plan = { 0 };
	struct st_set *set;
	char *json = NULL;
	int r;

	r = st_set_open(path, &set, d);
	if (r < 0)
		return r;
	model_identity(set, identity);
	hook = (struct model_tensor_hook){ .data = plan_hook, .ctx = &plan };
	/* the planning model owns the set from here on */
	r = moe_model_open_set(set, path,
			       &(struct model_opts){ .overrides = s->opts.overrides,
						     .n_overrides = s->opts.n_overrides,
						     .hook = &hook,
						     .widen_experts = s->opts.widen_experts },
			       &planned, d);
	if (r < 0)
		goto out;
	r = plan_remote(s, planned, &plan, d);
	if (r < 0)
		goto out;
	r = plan_placement(s, planned, &plan, &pl, d);
	if (r < 0)
		goto out;
	r = lay_out(s, path, set, &plan, pl, d);
	if (r < 0)
		goto out;
	json = manifest_to_json(&s->manifest);
	if (!json) {
		r = diag_set(d, -ENOMEM, "out of memory writing the manifest");
		goto out;
	}
	r = create_objects(s, identity, strlen(json), d);
	if (r < 0)
		goto out;
	r = fill_objects(s, set, &plan, path, d);
	if (r < 0)
		goto out;
	memcpy(s->objects[0].base + store_object_header(&s->objects[0])->manifest_offset, json,
	       strlen(json));
	for (uint32_t n = s->n_objects; n-- > 0;)
		store_object_seal(&s->objects[n]);
out:
	if (r < 0)
		for (uint32_t n = 0; n < s->n_objects; n++)
			store_object_destroy(&s->objects[n]);
	free(json);
	free(plan.v);
	placement_free(pl);
	moe_model_free(planned);
	return r;
}
