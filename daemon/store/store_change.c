/* SPDX-License-Identifier: MIT */
/*
 * store_change: changes to the map while serving (replicate, move, drop);
 * see expert_store.h.
 *
 * expert_store_change() checks a change against the *intended* placement
 * (the current map's with every queued change applied), reserves the space
 * of the copy it needs in the target node's spare space, and queues it; so
 * every refusal is the caller's to see at once, and the epoch it returns is
 * the one the change will publish. One thread per store, started with the
 * first change, takes the queue in order: it runs on the target node's CPUs
 * while it copies an expert's weights (the object's memory is bound to the
 * node anyway; its CPUs read the source and write the copy at the node's
 * bandwidth), builds the next map and publishes it. It is the only thread
 * that publishes, so the map it clones is the map it replaces.
 *
 * Every queued change takes its epoch, made or not: a change that fails
 * when it is applied (out of memory, or one that depended on a change that
 * failed) publishes the map unchanged under its epoch and is remembered in
 * a short list of failed epochs (expert_store_failed_epochs()), so that
 * the epochs promised to the changes after it still hold and a waiter can
 * tell a failed change from a made one.
 *
 * The copies the load made stay where they are for the store's life (a
 * restart re-attaches them): moving or dropping one only takes it out of
 * the map, and a change back to its node uses it again instead of copying.
 * Changes are not written to the manifest: a restarted moed serves the
 * placement of its settings again.
 */
#include "store/store_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* More than a person or a rebalancer queues at once; the queue is a ring. */
#define CHANGES_MAX_QUEUED 64
/* Failed epochs remembered for waiters (moectl experts --wait). */
#define CHANGES_FAILED_KEPT 16

struct change_item {
	struct expert_change c;
	bool has_extent;        /* a copy is to be made in [offset, offset + bytes) */
	uint64_t offset, bytes;
};

struct store_changes {
	pthread_mutex_t lock;
	pthread_cond_t wake;            /* the thread waits here for work */
	pthread_cond_t idle;            /* changes_wait() waits here for an empty queue */
	struct change_item queue[CHANGES_MAX_QUEUED];
	uint32_t head, n_queued;
	bool busy;                      /* the thread is making `current`, not yet published */
	struct change_item current;
	uint64_t failed[CHANGES_FAILED_KEPT]; /* the latest failed epochs, a ring */
	uint32_t n_failed;                    /* ever */
	bool stopping;
	bool started;
	pthread_t thread;
	/* the current map's placement with the queued changes applied; NULL:
	 * to be made again from those (after a change failed) */
	struct placement *intended;
};

static const char *const op_names[] = {
	[EXPERT_REPLICATE] = "replicate",
	[EXPERT_MOVE] = "move",
	[EXPERT_DROP] = "drop",
};

static int placement_apply(struct placement *p, const struct expert_change *c)
{
	switch (c->op) {
	case EXPERT_REPLICATE:
		return placement_add_replica(p, c->layer, c->expert, c->node);
	case EXPERT_MOVE:
		return placement_move(p, c->layer, c->expert, c->node);
	case EXPERT_DROP:
		return placement_drop_copy(p, c->layer, c->expert, c->node);
	}
	return -EINVAL;
}

/* Does applying @c to @p put a copy on a node that had none? */
static bool adds_copy(const struct placement *p, const struct expert_change *c)
{
	const struct expert_place *e = &p->layers[c->layer].experts[c->expert];

	if (c->op == EXPERT_DROP)
		return false;
	for (uint32_t i = 0; i < e->n_copies; i++)
		if (e->node[i] == c->node)
			return false;
	return true;
}

static uint64_t align_up(uint64_t n)
{
	return (n + STORE_ALIGN - 1) / STORE_ALIGN * STORE_ALIGN;
}

/* Bytes of a copy of @f in a layer of width @d: each tensor 64-byte aligned. */
static uint64_t ffn_copy_bytes(const struct ffn_weights *f, uint32_t d)
{
	uint64_t ff = f->d_ff, n = 0;

	n += align_up(ff * d * weight_dtype_size(f->dtype)) * (f->w3 ? 3 : 2); /* w1, w2 (and w3) */
	n += f->b1 ? align_up(ff * sizeof(float)) : 0;
	n += f->b2 ? align_up((uint64_t)d * sizeof(float)) : 0;
	return n;
}

/* Copy @bytes from @src to @at, advance @at; NULL in, NULL out (no tensor). */
static const void *tensor_copy(uint8_t **at, const void *src, uint64_t bytes)
{
	void *dst = *at;

	if (!src)
		return NULL;
	memcpy(dst, src, bytes);
	*at += align_up(bytes);
	return dst;
}

/*
 * Copy the expert of @it from its loaded copy into @it's extent on the
 * target node, as a replica with one reference (the caller's).
 */
static struct store_replica *replica_make(struct expert_store *s, const struct change_item *it)
{
	const struct moe_layer *L = moe_model_layer(s->model, it->c.layer);
	const struct ffn_weights *src = &L->experts[it->c.expert].ffn;
	struct store_replica *rep = calloc(1, sizeof(*rep));
	uint64_t d = L->d_model, ff = src->d_ff;
	uint8_t *at;

	if (!rep)
		return NULL;
	atomic_init(&rep->refs, 1);
	rep->layer = it->c.layer;
	rep->expert = it->c.expert;
	rep->node = it->c.node;
	rep->offset = it->offset;
	rep->bytes = it->bytes;
	at = s->objects[it->c.node].base + it->offset;
	rep->ffn.d_ff = src->d_ff;
	rep->ffn.dtype = src->dtype;
	rep->ffn.w1 = tensor_copy(&at, src->w1, ff * d * weight_dtype_size(src->dtype));
	rep->ffn.w2 = tensor_copy(&at, src->w2, d * ff * weight_dtype_size(src->dtype));
	rep->ffn.w3 = tensor_copy(&at, src->w3, ff * d * weight_dtype_size(src->dtype));
	rep->ffn.b1 = tensor_copy(&at, src->b1, ff * sizeof(float));
	rep->ffn.b2 = tensor_copy(&at, src->b2, d * sizeof(float));
	return rep;
}

/* Run the calling thread on @node's CPUs; a failure only costs bandwidth. */
static void run_on_node(const struct expert_store *s, uint32_t node)
{
	const cpu_set_t *cpus = &s->opts.topo->nodes[node].cpus;
	int r = pthread_setaffinity_np(pthread_self(), sizeof(*cpus), cpus);

	if (r != 0)
		log_debug("expert changes: cannot run on node %u's CPUs: %s", node, strerror(r));
}

/*
 * The map after @it: the current map with @it applied, its copy made. Only
 * this thread publishes, so the map cloned here is the one it replaces.
 */
static int change_apply(struct expert_store *s, const struct change_item *it,
			struct expert_map **ret_map, struct diag *d)
{
	struct expert_map *cur = expert_store_map_get(s);
	struct store_replica **reps = NULL, *rep = NULL;
	struct placement *next = NULL;
	size_t n_reps = 0;
	int r;

	r = placement_clone(cur->placement, &next);
	if (r < 0) {
		diag_set(d, r, "out of memory");
		goto out;
	}
	r = placement_apply(next, &it->c);
	if (r < 0) {
		/* checked against the intended placement: a change before it failed */
		diag_set(d, r, "does not apply to the map of epoch %" PRIu64,
			 expert_map_epoch(cur));
		goto out;
	}
	reps = calloc(cur->n_replicas + 1, sizeof(*reps));
	if (!reps) {
		r = diag_set(d, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(reps, cur->replicas, cur->n_replicas * sizeof(*reps));
	n_reps = cur->n_replicas;
	if (it->has_extent) {
		run_on_node(s, it->c.node);
		rep = replica_make(s, it);
		if (!rep) {
			r = diag_set(d, -ENOMEM, "out of memory");
			goto out;
		}
		reps[n_reps++] = rep;
	}
	r = store_map_build(s, next, reps, n_reps, ret_map, d);
	next = NULL; /* taken over */
out:
	if (rep)
		store_replica_put(s, rep); /* the map holds its own reference */
	else if (it->has_extent)
		store_space_free(s, it->c.node, it->offset, it->bytes);
	free(reps);
	placement_free(next);
	expert_map_put(cur);
	return r;
}

/* The current map again under the next epoch: what a failed change publishes. */
static int map_unchanged(struct expert_store *s, struct expert_map **ret_map, struct diag *d)
{
	struct expert_map *cur = expert_store_map_get(s);
	struct placement *next;
	int r = placement_clone(cur->placement, &next);

	if (r == 0)
		r = store_map_build(s, next, cur->replicas, cur->n_replicas, ret_map, d);
	else
		diag_set(d, r, "out of memory");
	expert_map_put(cur);
	return r;
}

static void *changes_thread(void *arg)
{
	struct expert_store *s = arg;
	struct store_changes *q = s->changes;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct change_item it;
		struct expert_map *next;
		struct diag d = { 0 };
		bool failed;
		int r;

		while (!q->n_queued && !q->stopping)
			pthread_cond_wait(&q->wake, &q->lock);
		if (q->stopping)
			break;
		it = q->current = q->queue[q->head];
		q->head = (q->head + 1) % CHANGES_MAX_QUEUED;
		q->n_queued--;
		q->busy = true;
		pthread_mutex_unlock(&q->lock);

		r = change_apply(s, &it, &next, &d);
		failed = r < 0;
		if (!failed) {
			log_info("expert change %s layer %u expert %u node %u: published",
				 op_names[it.c.op], it.c.layer, it.c.expert, it.c.node);
		} else {
			log_error("expert change %s layer %u expert %u node %u failed: %s; the "
				  "map stays as it was, ignoring",
				  op_names[it.c.op], it.c.layer, it.c.expert, it.c.node, d.msg);
			diag_clear(&d);
			r = map_unchanged(s, &next, &d);
			if (r < 0)
				log_error("the map cannot take the failed change's epoch (%s): "
					  "later changes publish one epoch early", d.msg);
		}

		pthread_mutex_lock(&q->lock);
		/* published under the lock: busy is true until the map is current */
		if (r == 0)
			store_map_publish(s, next);
		if (failed) {
			if (r == 0)
				q->failed[q->n_failed++ % CHANGES_FAILED_KEPT] = expert_map_epoch(next);
			/* the intended map holds what did not happen: make it again */
			q->intended = placement_free(q->intended);
		}
		q->busy = false;
		if (!q->n_queued)
			pthread_cond_broadcast(&q->idle);
	}
	/* nobody waits for changes that will not be made */
	pthread_cond_broadcast(&q->idle);
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* The intended placement, made again from the current map and the queue when lost. */
static int intended_get(struct expert_store *s, struct placement **ret_intended)
{
	struct store_changes *q = s->changes;
	struct expert_map *cur;
	int r;

	if (q->intended) {
		*ret_intended = q->intended;
		return 0;
	}
	cur = expert_store_map_get(s);
	r = placement_clone(cur->placement, &q->intended);
	expert_map_put(cur);
	if (r < 0)
		return r;
	/*
	 * The clone's epoch is the next one: give it back, then count each
	 * change not yet published (the thread's own first, if any); each
	 * takes an epoch whether it applies or not (see the top).
	 */
	q->intended->epoch--;
	if (q->busy) {
		(void)placement_apply(q->intended, &q->current.c);
		q->intended->epoch++;
	}
	for (uint32_t i = 0; i < q->n_queued; i++) {
		const struct change_item *it = &q->queue[(q->head + i) % CHANGES_MAX_QUEUED];

		(void)placement_apply(q->intended, &it->c);
		q->intended->epoch++;
	}
	*ret_intended = q->intended;
	return 0;
}

int store_changes_init(struct expert_store *s)
{
	struct store_changes *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->wake, NULL);
	pthread_cond_init(&q->idle, NULL);
	s->changes = q;
	return 0;
}

/* Check @c against what the store holds (not against any placement). */
static int change_check_target(const struct expert_store *s, const struct expert_change *c,
			       struct diag *d)
{
	const struct moe_layer *L = c->layer < moe_model_n_layers(s->model)
					    ? moe_model_layer(s->model, c->layer)
					    : NULL;

	if ((unsigned)c->op > EXPERT_DROP)
		return diag_set(d, -EINVAL, "unknown change %d", (int)c->op);
	if (!L)
		return diag_set(d, -EINVAL, "layer %u: no MoE block there", c->layer);
	if (L->router.kind == ROUTER_BASE)
		return diag_set(d, -EINVAL, "layer %u: BASE experts run on every node, they have "
			       "no home", c->layer);
	if (c->expert >= L->n_experts)
		return diag_set(d, -EINVAL, "layer %u has %u experts, not %u", c->layer,
			       L->n_experts, c->expert + 1);
	if (c->node >= s->n_objects)
		return diag_set(d, -EINVAL, "node index %u: the store has %u nodes", c->node,
			       s->n_objects);
	if (expert_store_is_remote(s, c->layer, c->expert))
		return diag_set(d, -EREMOTE, "layer %u expert %u computes on another host "
			       "(expert_hosts): this one holds no copy of it", c->layer, c->expert);
	return 0;
}

static const char *refusal(int r)
{
	switch (r) {
	case -EEXIST:
		return "a copy is on that node already";
	case -ENOENT:
		return "no copy on that node";
	case -EPERM:
		return "the last copy cannot go";
	case -E2BIG:
		return "as many copies as an expert may have";
	default:
		return strerror(-r);
	}
}

/* Queue @it (the lock held); start the thread with the first change. */
static int change_enqueue(struct expert_store *s, const struct change_item *it, struct diag *d)
{
	struct store_changes *q = s->changes;

	if (!q->started) {
		int r = pthread_create(&q->thread, NULL, changes_thread, s);

		if (r != 0)
			return diag_set(d, -r, "cannot start the change thread: %s", strerror(r));
		q->started = true;
	}
	q->queue[(q->head + q->n_queued) % CHANGES_MAX_QUEUED] = *it;
	q->n_queued++;
	pthread_cond_signal(&q->wake);
	return 0;
}

int64_t expert_store_change(struct expert_store *s, const struct expert_change *c,
			    struct diag *d)
{
	struct change_item it = { .c = *c };
	struct store_changes *q;
	struct placement *want;
	int64_t epoch = 0;
	int r;

	r = change_check_target(s, c, d);
	if (r < 0)
		return r;
	q = s->changes;
	pthread_mutex_lock(&q->lock);
	if (q->n_queued == CHANGES_MAX_QUEUED) {
		r = diag_set(d, -EAGAIN, "%u changes queued already", CHANGES_MAX_QUEUED);
		goto out;
	}
	r = intended_get(s, &want);
	if (r < 0) {
		r = diag_set(d, r, "out of memory");
		goto out;
	}
	/* a node holding the loaded copy needs no bytes: the load's are there */
	if (adds_copy(want, c) && s->loaded_node[c->layer][c->expert] != c->node) {
		const struct moe_layer *L = moe_model_layer(s->model, c->layer);

		it.bytes = ffn_copy_bytes(&L->experts[c->expert].ffn, L->d_model);
		it.has_extent = true;
		if (store_space_alloc(s, c->node, it.bytes, &it.offset) < 0) {
			r = diag_set(d, -ENOSPC, "node %u: replica_budget has no room for %" PRIu64
				     " bytes", c->node, it.bytes);
			goto out;
		}
	}
	/* placement_apply() changes nothing when it refuses: `want` stays true */
	r = placement_apply(want, c);
	if (r < 0) {
		if (it.has_extent)
			store_space_free(s, c->node, it.offset, it.bytes);
		r = diag_set(d, r == -E2BIG ? -ENOSPC : r, "layer %u expert %u node %u: %s",
			     c->layer, c->expert, c->node, refusal(r));
		goto out;
	}
	want->epoch++;
	epoch = (int64_t)want->epoch;
	r = change_enqueue(s, &it, d);
	if (r < 0) {
		if (it.has_extent)
			store_space_free(s, c->node, it.offset, it.bytes);
		q->intended = placement_free(q->intended);
	}
out:
	pthread_mutex_unlock(&q->lock);
	return r < 0 ? r : epoch;
}

void expert_store_changes_wait(struct expert_store *s)
{
	struct store_changes *q = s->changes;

	pthread_mutex_lock(&q->lock);
	while ((q->n_queued || q->busy) && !q->stopping)
		pthread_cond_wait(&q->idle, &q->lock);
	pthread_mutex_unlock(&q->lock);
}

size_t expert_store_failed_epochs(struct expert_store *s, uint64_t *ret_epochs, size_t max)
{
	struct store_changes *q = s->changes;
	uint32_t first;
	size_t n = 0;

	pthread_mutex_lock(&q->lock);
	first = q->n_failed > CHANGES_FAILED_KEPT ? q->n_failed - CHANGES_FAILED_KEPT : 0;
	for (uint32_t i = first; i < q->n_failed && n < max; i++)
		ret_epochs[n++] = q->failed[i % CHANGES_FAILED_KEPT];
	pthread_mutex_unlock(&q->lock);
	return n;
}

void store_changes_stop(struct expert_store *s)
{
	struct store_changes *q = s->changes;

	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_signal(&q->wake);
	pthread_cond_broadcast(&q->idle);
	pthread_mutex_unlock(&q->lock);
	if (q->started)
		pthread_join(q->thread, NULL);
	for (uint32_t i = 0; i < q->n_queued; i++) {
		const struct change_item *it = &q->queue[(q->head + i) % CHANGES_MAX_QUEUED];

		log_info("expert change %s layer %u expert %u node %u: not made, moed stops",
			 op_names[it->c.op], it->c.layer, it->c.expert, it->c.node);
		if (it->has_extent)
			store_space_free(s, it->c.node, it->offset, it->bytes);
	}
	placement_free(q->intended);
	pthread_cond_destroy(&q->idle);
	pthread_cond_destroy(&q->wake);
	pthread_mutex_destroy(&q->lock);
	free(q);
	s->changes = NULL;
}
