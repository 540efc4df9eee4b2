/* SPDX-License-Identifier: MIT */
/*
 * expert_store: load or re-attach a model's weights in per-node objects;
 * see expert_store.h. The load is store_load.c's; this file owns the store,
 * re-attaches, and builds the model, placement and homes over the objects.
 */
#include "store/expert_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "store/store_internal.h"
#include "util/log.h"

/* Note why an existing store is not used (truncated to fit); returns -EBADMSG. */
__attribute__((format(printf, 3, 4))) static int why_set(char *why, size_t len, const char *fmt,
							 ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void store_progress_init(struct store_progress *p)
{
	atomic_init(&p->phase, STORE_PHASE_STARTING);
	atomic_init(&p->bytes_done, 0);
	atomic_init(&p->bytes_total, 0);
}

const char *store_phase_name(enum store_phase phase)
{
	static const char *const names[] = {
		[STORE_PHASE_STARTING] = "starting",
		[STORE_PHASE_ATTACHING] = "attaching",
		[STORE_PHASE_LOADING] = "loading",
		[STORE_PHASE_READY] = "ready",
	};

	return (unsigned)phase < sizeof(names) / sizeof(names[0]) ? names[phase] : "?";
}

void expert_store_default_name(const char *socket_path, char *buf, size_t len)
{
	const char *base = strrchr(socket_path, '/');
	size_t n;

	base = base ? base + 1 : socket_path;
	n = strlen(base);
	if (n > 5 && strcmp(base + n - 5, ".sock") == 0)
		n -= 5;
	if (n > 64)
		n = 64;
	snprintf(buf, len, "moed-%.*s-%08x", (int)n, base,
		 (unsigned)XXH32(socket_path, strlen(socket_path), 0));
}

int store_placement_key(const struct expert_store_opts *o, char *buf, size_t len)
{
	size_t at;
	int n;

	n = snprintf(buf, len,
		     "policy=%s;expert_nodes=%s;replica_budget=%llu;simulated=%d;expert_dtype=%s;"
		     "remote=%s;nodes=",
		     placement_policy_name(o->policy),
		     o->policy == PLACEMENT_EXPLICIT ? o->expert_nodes : "",
		     (unsigned long long)o->replica_budget, o->topo->simulated,
		     o->widen_experts ? "f32" : "checkpoint",
		     o->remote_experts && o->remote_key ? o->remote_key : "");
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	at = (size_t)n;
	for (uint32_t i = 0; i < o->topo->n_nodes; i++) {
		n = snprintf(buf + at, len - at, "%s%u", i ? "," : "", o->topo->nodes[i].id);
		if (n < 0 || (size_t)n >= len - at)
			return -ENAMETOOLONG;
		at += (size_t)n;
	}
	return 0;
}

/* Where a copy's data are. */
static void *copy_data(const struct expert_store *s, const struct manifest_copy *c)
{
	const struct store_object *o = &s->objects[c->node];

	return o->base + store_object_header(o)->data_offset + c->offset;
}

/*
 * The placement the manifest records (each expert where its tensors are,
 * epoch 1) into *ret, and the node of each expert's loaded copy into
 * loaded_node.
 */
static int placement_of_manifest(struct expert_store *s, struct placement **ret, struct diag *d)
{
	const struct moe_model *m = s->model;
	struct placement *p = calloc(1, sizeof(*p));
	int r = -ENOMEM;

	if (!p)
		return diag_set(d, -ENOMEM, "out of memory");
	p->epoch = 1;
	p->n_nodes = s->manifest.n_nodes;
	p->n_layers = moe_model_n_layers(m);
	p->layers = calloc(p->n_layers ?: 1, sizeof(*p->layers));
	s->loaded_node = calloc(p->n_layers ?: 1, sizeof(*s->loaded_node));
	s->remote = calloc(p->n_layers ?: 1, sizeof(*s->remote));
	if (!p->layers || !s->loaded_node || !s->remote)
		goto fail;
	s->n_loaded_layers = p->n_layers;
	for (uint32_t l = 0; l < p->n_layers; l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		if (!L)
			continue;
		p->layers[l].experts = calloc(L->n_experts, sizeof(*p->layers[l].experts));
		s->loaded_node[l] = calloc(L->n_experts, sizeof(*s->loaded_node[l]));
		s->remote[l] = calloc(L->n_experts, sizeof(*s->remote[l]));
		if (!p->layers[l].experts || !s->loaded_node[l] || !s->remote[l])
			goto fail;
		p->layers[l].n_experts = L->n_experts;
		for (uint32_t e = 0; e < L->n_experts; e++)
			p->layers[l].experts[e].n_copies = 1; /* node 0 until a tensor says */
	}
	for (size_t i = 0; i < s->manifest.n_tensors; i++) {
		const struct manifest_tensor *t = &s->manifest.tensors[i];
		struct expert_place *ep;

		if (t->expert < 0)
			continue;
		if (t->layer >= p->n_layers || (uint64_t)t->expert >= p->layers[t->layer].n_experts) {
			r = diag_set(d, -EBADMSG, "tensor '%s' names an expert the model lacks",
				     t->name);
			goto fail_diag;
		}
		if (t->n_copies == 0) {
			/*
			 * Another host computes it: no copy here. The placement
			 * keeps it on node 0 (placement.h wants a node for
			 * every expert); its home is never used (engine_remote).
			 */
			s->remote[t->layer][t->expert] = true;
			continue;
		}
		/* the model reads copy 0 (store_build_model): that is the loaded one */
		ep = &p->layers[t->layer].experts[t->expert];
		ep->n_copies = 1;
		ep->node[0] = (uint8_t)t->copy[0].node;
		s->loaded_node[t->layer][t->expert] = t->copy[0].node;
	}
	*ret = p;
	return 0;
fail:
	diag_set(d, r, "out of memory");
fail_diag:
	placement_free(p);
	return r;
}

/* Experts per node (primary copies) for the info. */
static void count_node_experts(struct expert_store *s, const struct placement *p)
{
	memset(s->info.node_experts, 0, sizeof(s->info.node_experts));
	s->info.remote_experts = 0;
	for (uint32_t l = 0; l < p->n_layers; l++)
		for (uint32_t e = 0; e < p->layers[l].n_experts; e++) {
			if (s->remote[l][e])
				s->info.remote_experts++;
			else
				s->info.node_experts[p->layers[l].experts[e].node[0]]++;
		}
}

int store_build_model(struct expert_store *s, struct diag *d)
{
	const struct manifest *m = &s->manifest;
	struct st_tensor *tensors = calloc(m->n_tensors ?: 1, sizeof(*tensors));
	struct placement *p = NULL;
	struct st_set *set;
	int r;

	if (!tensors)
		return diag_set(d, -ENOMEM, "out of memory");
	for (size_t i = 0; i < m->n_tensors; i++) {
		const struct manifest_tensor *t = &m->tensors[i];

		tensors[i] = (struct st_tensor){
			.name = t->name,
			.dtype = t->dtype,
			.ndim = t->ndim,
			.n_elements = t->n_elements,
			.n_bytes = t->n_elements * st_dtype_size(t->dtype),
			/* an expert another host computes: the model gets no weights for it */
			.data = t->n_copies ? copy_data(s, &t->copy[0]) : NULL,
		};
		memcpy(tensors[i].shape, t->shape, sizeof(t->shape));
		if (t->n_copies)
			s->info.weight_bytes += tensors[i].n_bytes;
	}
	r = st_set_new_virtual(m->dir, tensors, m->n_tensors, (const char *const(*)[2])m->meta,
			       m->n_meta, &set, d);
	free(tensors);
	if (r < 0)
		return r;
	r = moe_model_open_set(set, m->model,
			       &(struct model_opts){ .overrides = s->opts.overrides,
						     .n_overrides = s->opts.n_overrides,
						     .widen_experts = s->opts.widen_experts },
			       &s->model, d);
	if (r < 0)
		return r;
	r = placement_of_manifest(s, &p, d);
	if (r < 0)
		return r;
	count_node_experts(s, p);
	for (uint32_t n = 0; n < s->n_objects; n++) {
		const struct store_object *o = &s->objects[n];

		r = store_space_init(s, n, store_object_spare_begin(o),
				     store_object_header(o)->object_bytes);
		if (r < 0) {
			placement_free(p);
			return diag_set(d, r, "out of memory");
		}
	}
	s->info.n_nodes = m->n_nodes;
	memcpy(s->info.node_bytes, m->node_bytes, sizeof(m->node_bytes));
	return store_map_build(s, p, NULL, 0, &s->map, d);
}

/*
 * Do the checkpoint's files still hold what the store was made from? Every
 * file must keep its fingerprint. The headers' identity alone cannot say:
 * weights rewritten with the same names and shapes give the same headers,
 * and re-attaching then would serve the old values.
 */
static int files_unchanged(const struct expert_store *s, char *why, size_t len)
{
	for (size_t i = 0; i < s->manifest.n_files; i++) {
		const struct manifest_file *f = &s->manifest.files[i];
		struct file_print p;
		int r = file_print_of(f->path, &p);

		if (r < 0)
			return why_set(why, len, "%s: %s", f->path, strerror(-r));
		if (!file_print_equal(&p, &f->print))
			return why_set(why, len, "%s changed since the store was made", f->path);
	}
	return 0;
}

/*
 * Node @n's object at @path, or, when its file is gone, the one systemd's
 * fd store kept for it (a copy of the fd: the kept one stays the caller's).
 */
static int object_attach(struct expert_store *s, uint32_t n, const char *path, struct diag *d)
{
	int r = store_object_attach(path, &s->objects[n], d), fd;

	if (r != -ENOENT || !s->opts.kept_fds || s->opts.kept_fds[n] < 0)
		return r;
	fd = fcntl(s->opts.kept_fds[n], F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return diag_set(d, -errno, "%s: the fd store's copy: %s", path, strerror(errno));
	diag_clear(d);
	r = store_object_attach_fd(fd, path, &s->objects[n], d);
	if (r == 0)
		s->info.from_kept_fds++;
	return r;
}

static int attach_nodes(struct expert_store *s, struct diag *d)
{
	const struct store_header *home = store_object_header(&s->objects[0]);

	if (home->data_bytes != s->manifest.node_bytes[0] || home->node != 0)
		return diag_set(d, -EBADMSG, "%s: does not match its manifest", s->objects[0].path);
	for (uint32_t n = 1; n < s->manifest.n_nodes; n++) {
		char path[4096];
		const struct store_header *h;
		int r;

		r = store_object_path(s->opts.dir, s->opts.name, n, path, sizeof(path));
		if (r == 0)
			r = object_attach(s, n, path, d);
		if (r < 0)
			return r;
		s->n_objects = n + 1;
		h = store_object_header(&s->objects[n]);
		if (memcmp(h->identity, home->identity, sizeof(h->identity)) != 0 || h->node != n ||
		    h->data_bytes != s->manifest.node_bytes[n])
			return diag_set(d, -EBADMSG, "%s: belongs to another store", path);
	}
	return 0;
}

/* Does another moed hold the lock of the home object at @path? */
static bool home_busy(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	bool busy;

	if (fd < 0)
		return false;
	busy = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	close(fd);
	return busy;
}

/*
 * Re-attach what a previous moed left. -ENOENT: nothing there. -EBADMSG: a
 * store that cannot be used (why in @why). Other errors are moed's own
 * (-EBUSY: another moed holds it).
 */
static int store_attach(struct expert_store *s, const char *path, char *why, size_t len,
			struct diag *d)
{
	const struct store_header *h;
	char home[4096], key[8192];
	int r;

	r = store_object_path(s->opts.dir, s->opts.name, 0, home, sizeof(home));
	if (r < 0)
		return diag_set(d, r, "%s/%s: store path too long", s->opts.dir, s->opts.name);
	r = object_attach(s, 0, home, d);
	if (r == -EBADMSG) {
		/* a moed still loading has a home that does not verify yet, and its lock */
		if (home_busy(home))
			return diag_set(d, -EBUSY, "%s: in use by another moed", home);
		return why_set(why, len, "%s", d->msg);
	}
	if (r < 0)
		return r;
	r = store_object_lock(&s->objects[0], d);
	if (r < 0) {
		/* not ours: not counted, so that a failed open with keep=no removes nothing */
		store_object_close(&s->objects[0]);
		return r;
	}
	s->n_objects = 1;
	h = store_object_header(&s->objects[0]);
	if (!h->manifest_bytes)
		return why_set(why, len, "%s: no manifest", home);
	r = manifest_from_json((const char *)s->objects[0].base + h->manifest_offset,
			       h->manifest_bytes, &s->manifest, d);
	if (r < 0)
		return why_set(why, len, "%s: %s", home, d->msg);
	if (strcmp(s->manifest.model, path) != 0)
		return why_set(why, len, "it holds another model (%s)", s->manifest.model);
	if (store_placement_key(&s->opts, key, sizeof(key)) < 0 ||
	    strcmp(key, s->manifest.placement_key) != 0)
		return why_set(why, len, "the placement settings changed");
	r = files_unchanged(s, why, len);
	if (r < 0)
		return r;
	r = attach_nodes(s, d);
	if (r == -EBADMSG || r == -ENOENT)
		return why_set(why, len, "%s", d->msg);
	return r;
}

/* Back to nothing attached, the objects left where they are. */
static void store_release(struct expert_store *s)
{
	/* every other reference went with the runs that held them */
	s->map = expert_map_put(s->map);
	store_space_done(s);
	for (uint32_t l = 0; s->loaded_node && l < s->n_loaded_layers; l++)
		free(s->loaded_node[l]);
	for (uint32_t l = 0; s->remote && l < s->n_loaded_layers; l++)
		free(s->remote[l]);
	free(s->loaded_node);
	free(s->remote);
	s->loaded_node = NULL;
	s->remote = NULL;
	s->n_loaded_layers = 0;
	s->model = moe_model_free(s->model);
	manifest_done(&s->manifest);
	for (uint32_t n = 0; n < s->n_objects; n++)
		store_object_close(&s->objects[n]);
	s->n_objects = 0;
	memset(s->info.node_experts, 0, sizeof(s->info.node_experts));
	s->info.weight_bytes = 0;
}

int expert_store_open(const char *model_path, const struct expert_store_opts *o,
		      struct expert_store **ret_store, struct diag *d)
{
	struct expert_store *s;
	double t0 = now_s();
	char why[256] = "";
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return diag_set(d, -ENOMEM, "out of memory");
	s->opts = *o;
	store_progress_init(&s->own_progress);
	s->progress = o->progress ? o->progress : &s->own_progress;
	atomic_store_explicit(&s->progress->phase, STORE_PHASE_ATTACHING, memory_order_relaxed);
	pthread_mutex_init(&s->map_lock, NULL);
	pthread_mutex_init(&s->space_lock, NULL);
	for (uint32_t n = 0; n < TOPOLOGY_MAX_NODES; n++)
		s->objects[n].fd = -1;
	if (store_changes_init(s) < 0) {
		expert_store_close(s);
		return diag_set(d, -ENOMEM, "out of memory");
	}
	r = store_attach(s, model_path, why, sizeof(why), d);
	if (r == 0)
		r = store_build_model(s, d);
	if (r == 0) {
		s->info.source = STORE_ATTACHED;
	} else if (r == -ENOENT || r == -EBADMSG) {
		if (r == -EBADMSG) {
			why_set(s->info.reload_reason, sizeof(s->info.reload_reason), "%s",
				why[0] ? why : d->msg);
			log_info("expert store %s/%s not used (%s): loading the weights again",
				 o->dir, o->name, s->info.reload_reason);
		}
		store_release(s);
		diag_clear(d);
		atomic_store_explicit(&s->progress->phase, STORE_PHASE_LOADING, memory_order_relaxed);
		r = store_load(s, model_path, d);
		if (r == 0)
			r = store_build_model(s, d);
		s->info.source = STORE_LOADED;
	}
	if (r < 0) {
		expert_store_close(s);
		return r;
	}
	s->info.seconds = now_s() - t0;
	atomic_store_explicit(&s->progress->phase, STORE_PHASE_READY, memory_order_relaxed);
	model_identity_hex(store_object_header(&s->objects[0])->identity, s->info.identity);
	/* read_bytes is the fill's; an attach read none */
	for (uint32_t n = 0; n < s->n_objects; n++)
		s->info.huge_pages = s->info.huge_pages || store_object_huge_mapped(&s->objects[n]);
	*ret_store = s;
	return 0;
}

uint32_t expert_store_object_fds(const struct expert_store *s, int *fds, uint32_t max)
{
	for (uint32_t n = 0; n < s->n_objects && n < max; n++)
		fds[n] = s->objects[n].fd;
	return s->n_objects;
}

struct expert_store *expert_store_close(struct expert_store *s)
{
	uint32_t n_objects;

	if (!s)
		return NULL;
	store_changes_stop(s);
	n_objects = s->n_objects;
	s->model = moe_model_free(s->model);
	if (!s->opts.keep)
		for (uint32_t n = 0; n < n_objects; n++)
			store_object_destroy(&s->objects[n]);
	store_release(s);
	pthread_mutex_destroy(&s->map_lock);
	pthread_mutex_destroy(&s->space_lock);
	free(s);
	return NULL;
}

const char *expert_store_model_path(const struct expert_store *s)
{
	return s->manifest.model;
}

const struct moe_model *expert_store_model(const struct expert_store *s)
{
	return s->model;
}

const struct expert_store_info *expert_store_info(const struct expert_store *s)
{
	return &s->info;
}

const struct topology *expert_store_topology(const struct expert_store *s)
{
	return s->opts.topo;
}

int expert_store_drop(const char *dir, const char *name, struct diag *d)
{
	unsigned removed = 0;

	for (uint32_t n = 0; n < TOPOLOGY_MAX_NODES; n++) {
		char path[4096];
		int fd;

		if (store_object_path(dir, name, n, path, sizeof(path)) < 0)
			return diag_set(d, -ENAMETOOLONG, "%s/%s: path too long", dir, name);
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (fd < 0)
			continue;
		/* the home object is locked while a moed serves from the store */
		if (n == 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
			close(fd);
			return diag_set(d, -EBUSY, "%s: in use by a running moed", path);
		}
		if (unlink(path) == 0)
			removed++;
		close(fd);
	}
	if (!removed)
		return diag_set(d, -ENOENT, "%s/%s: no expert store of that name", dir, name);
	return 0;
}
