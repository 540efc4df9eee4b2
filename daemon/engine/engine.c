/* SPDX-License-Identifier: MIT */
/*
 * engine: one MoE layer's forward pass over the pool; see engine.h.
 *
 * Work split. Expert GEMMs are cut into tiles of (expert, block of rows,
 * block of output columns). An expert with few rows is never split by rows,
 * so its weights stream from memory once; its columns are split instead, so
 * a decode step with two active experts still keeps every worker busy. Large
 * experts are split by rows and columns into tiles big enough for sgemm's
 * packing to pay off. Workers claim tiles dynamically, so uneven experts
 * balance.
 *
 * With experts' homes (engine_batch.homes) the same tiles are grouped by the
 * node that holds each tile's copy of the weights and run with
 * pool_run_nodes() (engine_homes.c); without, exactly as before.
 */
#include "engine.h"
#include "engine_homes.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/activations.h"
#include "compute/expert.h"
#include "dispatch/combine.h"
#include "dispatch/plan.h"
#include "pool/pool.h"
#include "util/scratch.h"

/* Experts with at most this many rows are not split by rows (weights read once). */
#define SMALL_EXPERT_ROWS 64
/* Rows per tile of a larger expert, and output columns per tile. */
#define ROW_TILE 256
#define COL_TILE 512
/* BASE experts run whole per block of rows. */
#define BASE_ROW_TILE 64
/* Rows or tokens per gather/combine task. */
#define COPY_BLOCK 32

struct engine {
	struct pool *pool;
	struct scratch scratch;
	struct blas_info blas;
	enum matmul_kernel kernel;
};

struct forward_ctx {
	const struct moe_layer *layer;
	const struct router_config *cfg;
	const struct route_result *route;
	const struct dispatch_plan *plan;
	enum matmul_kernel kernel;
	const float *x;
	float *xs, *ys, *y;
	const float *xin; /* the experts' input rows: xs, or rows another host sent */
	float *h;      /* FFN: [n_rows][ldh]; BASE: [n_rows][d_ff] */
	uint32_t ldh;
	float *ln;     /* BASE: [n_rows][d_model] */
	float *mix;    /* BASE: [n_rows] */
	float *tmp;    /* FFN gated: per worker, tmp_stride floats each */
	size_t tmp_stride;
	const float *shared_gate; /* [T] or NULL */
	const struct expert_home *homes; /* [n_experts] or NULL (engine_batch.homes) */
	const uint16_t *remote_host;     /* [n_experts] or NULL: bins computed elsewhere */
	const struct ffn_tile *tiles;
};

void engine_opts_init(struct engine_opts *o)
{
	*o = (struct engine_opts){ .n_workers = 0, .kernel = MATMUL_AUTO };
}

int engine_new(const struct engine_opts *opts, struct engine **ret_engine, struct diag *d)
{
	struct engine *e;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->kernel = opts->kernel;
	r = blas_setup_single_thread(&e->blas);
	if (r == -ENOLCK) {
		diag_set(d, r, "OpenBLAS (%s) takes its work buffers without the lock of "
			       "blas_buffer_lock.c: the workers would corrupt each other's results",
			 e->blas.library);
		goto fail;
	}
	if (r < 0) {
		diag_set(d, r, "OpenBLAS still reports %d threads after setting 1; the worker "
			       "pool must own the parallelism",
			 e->blas.threads);
		goto fail;
	}
	if (opts->topo)
		r = pool_nodes_new(opts->topo, opts->n_workers, opts->steal, &e->pool);
	else
		r = pool_threads_new(opts->n_workers, &e->pool);
	if (r < 0) {
		diag_set(d, r, "cannot start %u worker threads%s", opts->n_workers,
			 opts->topo ? " pinned to the topology's nodes" : "");
		goto fail;
	}
	*ret_engine = e;
	return 0;
fail:
	engine_free(e);
	return r;
}

struct engine *engine_free(struct engine *e)
{
	if (!e)
		return NULL;
	pool_free(e->pool);
	scratch_done(&e->scratch);
	free(e);
	return NULL;
}

const struct blas_info *engine_blas_info(const struct engine *e)
{
	return &e->blas;
}

uint32_t engine_n_workers(const struct engine *e)
{
	return pool_n_workers(e->pool);
}

uint32_t engine_n_nodes(const struct engine *e)
{
	return pool_n_nodes(e->pool);
}

void engine_node_stats(const struct engine *e, uint32_t node, struct pool_node_stats *ret)
{
	pool_node_stats(e->pool, node, ret);
}

static const struct ffn_weights *bin_ffn(const struct forward_ctx *c, uint32_t bin)
{
	return bin < c->layer->n_experts ? &c->layer->experts[bin].ffn : &c->layer->shared;
}

/* ---- tasks ---- */

static void task_gather(void *arg, uint32_t task, uint32_t worker)
{
	const struct forward_ctx *c = arg;
	uint32_t row0 = task * COPY_BLOCK, row1 = row0 + COPY_BLOCK;

	(void)worker;
	if (row1 > c->plan->n_rows)
		row1 = c->plan->n_rows;
	dispatch_gather(c->plan, c->route, c->cfg->scale, c->x, c->layer->d_model, row0, row1,
			c->xs);
}

static void task_ffn_up(void *arg, uint32_t task, uint32_t worker)
{
	const struct forward_ctx *c = arg;
	const struct ffn_tile *t = &c->tiles[task];
	const uint32_t dm = c->layer->d_model;

	expert_ffn_up(t->ffn, c->cfg->activation, c->kernel,
		      c->xin + (size_t)t->row0 * dm, t->rows, dm, t->c0, t->c1,
		      c->h + (size_t)t->row0 * c->ldh, c->ldh, c->tmp + worker * c->tmp_stride);
}

static void task_ffn_down(void *arg, uint32_t task, uint32_t worker)
{
	const struct forward_ctx *c = arg;
	const struct ffn_tile *t = &c->tiles[task];
	const uint32_t dm = c->layer->d_model;

	(void)worker;
	expert_ffn_down(t->ffn, c->kernel, c->h + (size_t)t->row0 * c->ldh, c->ldh,
			t->rows, dm, t->c0, t->c1, c->ys + (size_t)t->row0 * dm);
}

static void task_base(void *arg, uint32_t task, uint32_t worker)
{
	const struct forward_ctx *c = arg;
	const struct ffn_tile *t = &c->tiles[task];
	const struct moe_layer *L = c->layer;
	const size_t r0 = t->row0;

	(void)worker;
	expert_base(&L->experts[t->bin], c->cfg->base_sublayers, L->d_model, L->d_ff,
		    c->xin + r0 * L->d_model, c->mix + r0, t->rows, c->ys + r0 * L->d_model,
		    c->ln + r0 * L->d_model, c->h + r0 * L->d_ff);
}

static void task_combine(void *arg, uint32_t task, uint32_t worker)
{
	const struct forward_ctx *c = arg;
	uint32_t t0 = task * COPY_BLOCK, t1 = t0 + COPY_BLOCK;

	(void)worker;
	if (t1 > c->plan->n_tokens)
		t1 = c->plan->n_tokens;
	dispatch_combine(c->plan, c->route, c->cfg->scale, c->cfg->drop, c->x, c->ys,
			 c->shared_gate, c->layer->d_model, t0, t1, c->y);
}

/* ---- tiling ---- */

/* Column tile i of n over [0, cols), boundaries on multiples of 8 floats. */
static void col_tile(uint32_t cols, uint32_t n, uint32_t i, uint32_t *c0, uint32_t *c1)
{
	uint64_t a = (uint64_t)cols * i / n, b = (uint64_t)cols * (i + 1) / n;

	a = i == 0 ? 0 : (a + 7) & ~(uint64_t)7;
	b = i + 1 == n ? cols : (b + 7) & ~(uint64_t)7;
	*c0 = (uint32_t)(a < cols ? a : cols);
	*c1 = (uint32_t)(b < cols ? b : cols);
}

/*
 * Tiles of every non-empty bin over its rows and its columns (up: the bin's
 * d_ff, down: d_model), into @tiles when it is not NULL. Returns the count,
 * so a first call with NULL sizes the array exactly: a bound computed apart
 * from the loop that fills it is a bound that can be wrong.
 */
static size_t build_tiles(const struct forward_ctx *c, bool up, struct ffn_tile *tiles)
{
	const struct dispatch_plan *p = c->plan;
	size_t n = 0;

	for (uint32_t bin = 0; bin < p->n_bins; bin++) {
		uint32_t rows = p->bin_start[bin + 1] - p->bin_start[bin];
		const struct ffn_weights *ffn = bin_ffn(c, bin);
		uint32_t cols = up ? ffn->d_ff : c->layer->d_model;
		/* equal row tiles: 260 rows become 2 x 130, not 256 + 4, which would
		 * read the weights once more for 4 rows */
		uint32_t n_row = rows <= SMALL_EXPERT_ROWS ? 1 : (rows + ROW_TILE - 1) / ROW_TILE;
		uint32_t row_tile = rows ? (rows + n_row - 1) / n_row : 0;
		uint32_t n_col = (uint32_t)(((uint64_t)cols + COL_TILE - 1) / COL_TILE);

		if (c->remote_host && bin < c->layer->n_experts && c->remote_host[bin])
			continue; /* another host computes it */
		for (uint32_t r0 = 0; r0 < rows; r0 += row_tile) {
			for (uint32_t i = 0; i < n_col; i++) {
				struct ffn_tile t = {
					.bin = bin,
					.row0 = p->bin_start[bin] + r0,
					.rows = rows - r0 < row_tile ? rows - r0 : row_tile,
					.ffn = ffn,
				};

				col_tile(cols, n_col, i, &t.c0, &t.c1);
				if (t.c1 <= t.c0)
					continue;
				if (tiles)
					tiles[n] = t;
				n++;
			}
		}
	}
	return n;
}

static uint32_t build_base_tiles(const struct dispatch_plan *p, struct ffn_tile *tiles)
{
	uint32_t n = 0;

	for (uint32_t bin = 0; bin < p->n_bins; bin++)
		for (uint32_t r = p->bin_start[bin]; r < p->bin_start[bin + 1]; r += BASE_ROW_TILE) {
			uint32_t end = p->bin_start[bin + 1];

			tiles[n++] = (struct ffn_tile){ .bin = bin, .row0 = r,
							.rows = end - r < BASE_ROW_TILE
									? end - r
									: BASE_ROW_TILE };
		}
	return n;
}

/* ---- input checks ---- */

/*
 * Every expert that gets rows here and is not sent to its host (@remote_host
 * NULL: none is) has weights in this process: an expert held elsewhere that
 * reached this call with rows is a configuration this engine cannot compute.
 */
static int check_held(const struct moe_layer *L, const uint32_t *bin_start,
		      const uint16_t *remote_host, struct diag *d)
{
	for (uint32_t e = 0; e < L->n_experts; e++)
		if (bin_start[e + 1] > bin_start[e] && (!remote_host || !remote_host[e]) &&
		    moe_expert_held_elsewhere(&L->experts[e]))
			return diag_set(d, -EINVAL, "layer %u expert %u: another host holds its "
						    "weights (expert_hosts), and no peer takes its "
						    "rows here",
					L->index, e);
	return 0;
}

/*
 * Can @layer run with @cfg? The layer's own settings were checked when the
 * model loaded; a caller's settings may ask for weights the layer lacks.
 */
static int layer_serves_config(const struct moe_layer *L, const struct router_config *cfg,
			       struct diag *d)
{
	if (cfg->kind == ROUTER_HIERARCHICAL &&
	    (cfg->groups != L->router.groups || cfg->experts_per_group != L->router.experts_per_group))
		return diag_set(d, -EINVAL,
				"layer %u's hierarchical router has %u groups of %u experts, not "
				"%u of %u",
				L->index, L->router.groups, L->router.experts_per_group, cfg->groups,
				cfg->experts_per_group);
	if (cfg->kind == ROUTER_BASE) {
		if (cfg->base_sublayers > L->router.base_sublayers || !L->experts[0].sublayers)
			return diag_set(d, -EINVAL,
					"layer %u has %u BASE sublayers per expert, %u asked",
					L->index, L->experts[0].sublayers ? L->router.base_sublayers : 0,
					cfg->base_sublayers);
		return 0;
	}
	for (uint32_t e = 0; e < L->n_experts; e++) {
		const struct ffn_weights *f = &L->experts[e].ffn;

		if (moe_expert_held_elsewhere(&L->experts[e]))
			continue; /* never computed here: check_held() */
		if (!f->w1 || !f->w2)
			return diag_set(d, -EINVAL, "layer %u expert %u has no FFN weights for "
						    "router %s",
					L->index, e, router_kind_name(cfg->kind));
		if (activation_is_gated(cfg->activation) && !f->w3)
			return diag_set(d, -EINVAL,
					"activation %s needs w3, which expert %u of layer %u lacks",
					activation_name(cfg->activation), e, L->index);
	}
	if (L->has_shared && activation_is_gated(cfg->activation) && !L->shared.w3)
		return diag_set(d, -EINVAL, "activation %s needs w3, which the shared expert of "
					    "layer %u lacks",
				activation_name(cfg->activation), L->index);
	return 0;
}

/*
 * The magnitude bound is applied to the client's own finite values only,
 * before sanitising: with nonfinite=sanitize an infinity becomes ±FLT_MAX
 * (torch.nan_to_num's semantics, kept as they were), and refusing that value
 * would make sanitize mean fail. Such a batch may still overflow in the
 * experts and fail with -ERANGE after the computation, as before; a client
 * that asks for sanitising accepts that. A finite value above 2^64 was never
 * meant as an activation: it is refused up front so that it cannot sink a
 * merged run.
 */
int engine_check_input(const struct router_config *cfg, const float *x, uint32_t n_tokens,
		       uint32_t d_model, struct diag *d)
{
	const size_t n = (size_t)n_tokens * d_model;
	size_t bad = 0, first = 0, huge_at = SIZE_MAX;

	for (size_t i = 0; i < n; i++) {
		if (!isfinite(x[i])) {
			if (bad++ == 0)
				first = i;
		} else if (fabsf(x[i]) > ENGINE_INPUT_MAX_ABS && huge_at == SIZE_MAX) {
			huge_at = i;
		}
	}
	if (bad && cfg->nonfinite == NONFINITE_FAIL)
		return diag_set(d, -EDOM,
				"the batch has %zu non-finite activations (first at token %zu, "
				"column %zu)",
				bad, first / d_model, first % d_model);
	if (huge_at != SIZE_MAX)
		return diag_set(d, -ERANGE,
				"activation %g at token %zu, column %zu exceeds 2^64 in magnitude "
				"(products of two such values overflow float32)",
				(double)x[huge_at], huge_at / d_model, huge_at % d_model);
	return 0;
}

static int check_input(const struct router_config *cfg, struct engine_batch *b,
		       uint32_t d_model, struct scratch *s, const float **ret_x, struct diag *d)
{
	const size_t n = (size_t)b->n_tokens * d_model;
	size_t bad = 0;
	float *copy = NULL;
	int r;

	b->n_sanitized = 0;
	r = engine_check_input(cfg, b->x, b->n_tokens, d_model, d);
	if (r < 0)
		return r;
	/* torch.nan_to_num, as fairseq does: NaN -> 0, ±inf -> ±FLT_MAX; copy only if needed */
	for (size_t i = 0; i < n; i++) {
		float v = b->x[i];

		if (isfinite(v))
			continue;
		if (!copy) {
			copy = scratch_alloc(s, sizeof(float) * n);
			if (!copy)
				return -ENOMEM;
			memcpy(copy, b->x, sizeof(float) * n);
		}
		copy[i] = isnan(v) ? 0.0f : (v > 0 ? FLT_MAX : -FLT_MAX);
		bad++;
	}
	b->n_sanitized = (uint32_t)(bad > UINT32_MAX ? UINT32_MAX : bad);
	*ret_x = copy ? copy : b->x;
	return 0;
}

/*
 * Segments must tile the batch exactly and the routing must be per token:
 * with capacity or a balanced assignment a segment's routing, and so its
 * statistics, would depend on the other segments' tokens.
 */
static int check_segments(const struct router_config *cfg, const struct engine_batch *b,
			  struct diag *d)
{
	uint64_t sum = 0;

	if (!b->n_segments)
		return 0;
	if (!b->segment_rows || !b->segment_stats)
		return diag_set(d, -EINVAL, "%u segments without their rows or statistics",
				b->n_segments);
	if (!router_config_per_token(cfg))
		return diag_set(d, -EINVAL, "router %s with these settings is not per token: its "
					    "statistics cannot be split into segments",
				router_kind_name(cfg->kind));
	for (uint32_t i = 0; i < b->n_segments; i++) {
		if (!b->segment_rows[i])
			return diag_set(d, -EINVAL, "segment %u is empty", i);
		sum += b->segment_rows[i];
	}
	if (sum != b->n_tokens)
		return diag_set(d, -EINVAL, "segments hold %llu tokens, the batch %u",
				(unsigned long long)sum, b->n_tokens);
	return 0;
}

/* Each segment's statistics, over its own tokens, by the code that gave the batch's. */
static int segment_stats_fill(const struct router_config *cfg, const struct route_result *route,
			      uint32_t d_model, struct engine_batch *b, struct scratch *s)
{
	uint32_t t0 = 0;

	for (uint32_t i = 0; i < b->n_segments; i++) {
		const float *x = b->x + (size_t)t0 * d_model;
		size_t bad = 0;
		struct route_stats st;
		int r = router_stats(cfg, route, t0, t0 + b->segment_rows[i], s, &st);

		if (r < 0)
			return r;
		/* a second pass over the input only when something was replaced */
		for (size_t j = 0; b->n_sanitized && j < (size_t)b->segment_rows[i] * d_model; j++)
			bad += !isfinite(x[j]);
		b->segment_stats[i] = (struct engine_segment_stats){
			.n_dropped = st.n_dropped,
			.n_sanitized = (uint32_t)(bad > UINT32_MAX ? UINT32_MAX : bad),
			.aux_loss = st.aux_loss, .z_loss = st.z_loss, .has_z_loss = st.has_z_loss
		};
		t0 += b->segment_rows[i];
	}
	return 0;
}

static int check_output(const float *y, uint32_t n_tokens, uint32_t d_model, struct diag *d)
{
	for (size_t i = 0; i < (size_t)n_tokens * d_model; i++)
		if (!isfinite(y[i]))
			return diag_set(d, -ERANGE,
					"the layer's output is not finite at token %zu column %zu "
					"(weights or activations overflow float32)",
					i / d_model, i % d_model);
	return 0;
}

/* ---- the forward pass ---- */

/*
 * The two FFN phases with the experts' homes: each phase's tiles, built in
 * @tiles as without homes, are grouped by node into a second array and run
 * with pool_run_nodes(), each on the copy of its expert that its node holds.
 */
static int run_ffn_homes(struct engine *e, struct scratch *s, struct forward_ctx *c,
			 struct ffn_tile *tiles, size_t n_up, size_t n_down)
{
	uint32_t n_nodes = pool_n_nodes(e->pool);
	struct ffn_tile *by_node = scratch_calloc(s, n_up > n_down ? n_up : n_down,
						  sizeof(*by_node));
	uint32_t *node_end = scratch_calloc(s, n_nodes, sizeof(*node_end));

	if (!by_node || !node_end)
		return -ENOMEM;
	c->tiles = by_node;
	build_tiles(c, true, tiles);
	engine_tiles_by_node(tiles, n_up, c->homes, c->layer->n_experts, n_nodes, by_node,
			     node_end);
	pool_run_nodes(e->pool, n_nodes, node_end, task_ffn_up, c);
	build_tiles(c, false, tiles);
	engine_tiles_by_node(tiles, n_down, c->homes, c->layer->n_experts, n_nodes, by_node,
			     node_end);
	pool_run_nodes(e->pool, n_nodes, node_end, task_ffn_down, c);
	return 0;
}

static int run_experts(struct engine *e, struct scratch *s, struct forward_ctx *c)
{
	const struct moe_layer *L = c->layer;
	const struct dispatch_plan *p = c->plan;
	struct ffn_tile *tiles;
	size_t n_up, n_down;

	if (c->cfg->kind == ROUTER_BASE) {
		c->h = scratch_alloc(s, sizeof(float) * p->n_rows * L->d_ff);
		c->ln = scratch_alloc(s, sizeof(float) * p->n_rows * L->d_model);
		c->mix = scratch_alloc(s, sizeof(float) * p->n_rows);
		tiles = scratch_alloc(s, sizeof(*tiles) * (p->n_rows / BASE_ROW_TILE + p->n_bins));
		if (!c->h || !c->ln || !c->mix || !tiles)
			return -ENOMEM;
		for (uint32_t row = 0; row < p->n_rows; row++)
			c->mix[row] = c->route->base_mix[p->row_token[row]];
		c->tiles = tiles;
		pool_run(e->pool, build_base_tiles(p, tiles), task_base, c);
		return 0;
	}

	c->ldh = L->d_ff;
	if (L->has_shared && L->shared.d_ff > c->ldh)
		c->ldh = L->shared.d_ff;
	c->h = scratch_alloc(s, sizeof(float) * p->n_rows * c->ldh);
	c->tmp_stride = (size_t)ROW_TILE * (COL_TILE + 8);
	c->tmp = scratch_alloc(s, sizeof(float) * c->tmp_stride * pool_n_workers(e->pool));
	n_up = build_tiles(c, true, NULL);
	n_down = build_tiles(c, false, NULL);
	/* a pool job counts its tasks in 32 bits */
	if (n_up > UINT32_MAX || n_down > UINT32_MAX)
		return -E2BIG;
	tiles = scratch_calloc(s, n_up > n_down ? n_up : n_down, sizeof(*tiles));
	if (!c->h || !c->tmp || !tiles)
		return -ENOMEM;
	if (c->homes)
		return run_ffn_homes(e, s, c, tiles, n_up, n_down);
	c->tiles = tiles;
	build_tiles(c, true, tiles);
	pool_run(e->pool, (uint32_t)n_up, task_ffn_up, c);
	build_tiles(c, false, tiles);
	pool_run(e->pool, (uint32_t)n_down, task_ffn_down, c);
	return 0;
}

/*
 * A remote expert that failed loses its slots as a capacity drop does: no
 * row in the combine (so a token that lost every slot gets the drop
 * policy's passthrough), -1 in the routing the client sees, and counted in
 * the batch's and its token's drops.
 */
static void drop_failed_experts(const uint8_t *failed, uint32_t n_experts,
				struct dispatch_plan *plan, struct route_result *route)
{
	for (uint32_t ex = 0; ex < n_experts; ex++) {
		if (!failed[ex])
			continue;
		for (uint32_t row = plan->bin_start[ex]; row < plan->bin_start[ex + 1]; row++) {
			uint32_t slot = plan->row_slot[row];

			plan->slot_row[slot] = PLAN_NO_ROW;
			route->expert[slot] = -1;
			route->weight[slot] = 0.0f;
			if (route->token_dropped)
				route->token_dropped[slot / plan->k]++;
			route->n_dropped++;
			route->tokens_per_expert[ex]--;
		}
	}
}

/*
 * The experts with remote experts: their rows leave before the local
 * experts compute and are collected after, so the transfers overlap the
 * local work. collect() runs whenever dispatch() succeeded, even when the
 * local part failed, so that the peers' side lets go of the batch.
 */
static int run_experts_remote(struct engine *e, struct scratch *s, struct forward_ctx *c,
			      const struct engine_remote *remote, struct route_result *route,
			      struct dispatch_plan *plan, struct diag *d)
{
	const uint32_t n_experts = c->layer->n_experts;
	struct engine_remote_job job = {
		.layer = c->layer->index, .d_model = c->layer->d_model,
		.activation = c->cfg->activation, .n_experts = n_experts,
		.host = remote->host, .bin_start = plan->bin_start, .xs = c->xs, .ys = c->ys,
	};
	uint8_t *failed;
	bool any = false;
	int r, rc;

	for (uint32_t ex = 0; ex < n_experts && !any; ex++)
		any = remote->host[ex] && plan->bin_start[ex + 1] > plan->bin_start[ex];
	if (!any)
		return run_experts(e, s, c);
	failed = scratch_calloc(s, n_experts, sizeof(*failed));
	if (!failed)
		return -ENOMEM;
	r = remote->dispatch(remote->ctx, &job);
	if (r < 0)
		return diag_set(d, r, "cannot send layer %u's remote experts their rows",
				c->layer->index);
	c->remote_host = remote->host;
	r = run_experts(e, s, c);
	c->remote_host = NULL;
	rc = remote->collect(remote->ctx, &job, failed);
	if (r < 0)
		return r;
	if (rc < 0)
		return diag_set(d, rc, "layer %u: a host that computes some of its experts failed "
				       "or missed its deadline",
				c->layer->index);
	drop_failed_experts(failed, n_experts, plan, route);
	return 0;
}

static float *shared_gate_values(const struct moe_layer *L, const float *x, uint32_t n_tokens,
				 struct scratch *s)
{
	float *g = scratch_alloc(s, sizeof(float) * n_tokens);

	if (!g)
		return NULL;
	/* Qwen2-MoE: the shared expert's output is scaled by σ(x·w_gate) */
	gate_logits(x, n_tokens, L->d_model, L->shared_gate, NULL, 1, g);
	for (uint32_t t = 0; t < n_tokens; t++)
		g[t] = 1.0f / (1.0f + expf(-g[t]));
	return g;
}

int engine_experts_scratch(struct engine *e, struct scratch *s, const struct moe_layer *layer,
			   enum activation activation, const uint32_t *bin_start, const float *xs,
			   float *ys, const struct expert_home *homes, struct diag *d)
{
	struct router_config cfg;
	struct dispatch_plan plan;
	struct forward_ctx c;
	int r;

	if (layer->router.kind == ROUTER_BASE)
		return diag_set(d, -EINVAL, "layer %u's BASE experts do not compute elsewhere",
				layer->index);
	diag_clear(d);
	if (bin_start[0] != 0)
		return diag_set(d, -EINVAL, "remote rows start at row %u, not 0", bin_start[0]);
	for (uint32_t ex = 0; ex < layer->n_experts; ex++)
		if (bin_start[ex + 1] < bin_start[ex] ||
		    bin_start[ex + 1] - bin_start[ex] > ENGINE_MAX_TOKENS)
			return diag_set(d, -EINVAL, "expert %u's remote rows are out of order", ex);
	cfg = layer->router;
	cfg.activation = activation;
	r = layer_serves_config(layer, &cfg, d);
	if (r < 0)
		return r;
	if (homes) {
		r = engine_homes_check(layer, &cfg, homes, d);
		if (r < 0)
			return r;
	}
	scratch_reset(s);
	/* only what build_tiles() reads: the bins and their rows, no shared expert */
	plan = (struct dispatch_plan){ .n_bins = layer->n_experts,
				       .bin_start = scratch_alloc(s, sizeof(uint32_t) *
									(layer->n_experts + 1)),
				       .n_rows = bin_start[layer->n_experts] };
	if (!plan.bin_start) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(plan.bin_start, bin_start, sizeof(uint32_t) * (layer->n_experts + 1));
	r = check_held(layer, plan.bin_start, NULL, d);
	if (r < 0)
		goto out;
	c = (struct forward_ctx){ .layer = layer, .cfg = &cfg, .plan = &plan,
				  .kernel = e->kernel, .xin = xs, .ys = ys, .homes = homes };
	r = run_experts(e, s, &c);
out:
	scratch_reset(s);
	if (r == -ENOMEM)
		diag_set(d, r, "out of memory for %u rows of remote experts", plan.n_rows);
	return r;
}

int engine_forward(struct engine *e, const struct moe_layer *layer,
		   const struct router_config *cfg, struct engine_batch *b, struct diag *d)
{
	return engine_forward_scratch(e, &e->scratch, layer, cfg, b, d);
}

int engine_forward_scratch(struct engine *e, struct scratch *s, const struct moe_layer *layer,
			   const struct router_config *cfg, struct engine_batch *b, struct diag *d)
{
	struct route_result route;
	struct dispatch_plan plan;
	struct forward_ctx c;
	const float *x = NULL;
	uint32_t k;
	int r;

	if (!layer || !b || !b->x || !b->output)
		return diag_set(d, -EINVAL, "engine_forward: missing layer, input or output");
	if (b->n_tokens == 0 || b->n_tokens > ENGINE_MAX_TOKENS)
		return diag_set(d, -EINVAL, "a batch has 1..%u tokens, not %u", ENGINE_MAX_TOKENS,
				b->n_tokens);
	/* a fresh message for this batch: diag keeps the first one it is given */
	diag_clear(d);
	if (!cfg)
		cfg = &layer->router;
	r = layer_serves_config(layer, cfg, d);
	if (r < 0)
		return r;
	r = check_segments(cfg, b, d);
	if (r < 0)
		return r;
	/* BASE experts have no homes: they run as a plain job over every worker */
	if (b->homes && cfg->kind != ROUTER_BASE) {
		r = engine_homes_check(layer, cfg, b->homes, d);
		if (r < 0)
			return r;
	}
	scratch_reset(s);

	r = check_input(cfg, b, layer->d_model, s, &x, d);
	if (r < 0)
		goto out;
	r = router_route(layer, cfg, x, b->n_tokens, b->given, s, &route, d);
	if (r < 0)
		goto out;
	r = dispatch_plan_build(&route, layer->has_shared && cfg->kind != ROUTER_BASE, s, &plan);
	if (r < 0)
		goto out;
	if (cfg->kind != ROUTER_BASE) {
		r = check_held(layer, plan.bin_start, b->remote ? b->remote->host : NULL, d);
		if (r < 0)
			goto out;
	}

	c = (struct forward_ctx){ .layer = layer, .cfg = cfg, .route = &route, .plan = &plan,
				  .kernel = e->kernel, .x = x, .y = b->output,
				  .homes = cfg->kind == ROUTER_BASE ? NULL : b->homes };
	c.xs = scratch_alloc(s, sizeof(float) * plan.n_rows * layer->d_model);
	c.xin = c.xs;
	c.ys = scratch_alloc(s, sizeof(float) * plan.n_rows * layer->d_model);
	if (!c.xs || !c.ys) {
		r = -ENOMEM;
		goto out;
	}
	if (plan.has_shared && layer->shared_gate) {
		c.shared_gate = shared_gate_values(layer, x, b->n_tokens, s);
		if (!c.shared_gate) {
			r = -ENOMEM;
			goto out;
		}
	}

	pool_run(e->pool, (plan.n_rows + COPY_BLOCK - 1) / COPY_BLOCK, task_gather, &c);
	r = cfg->kind != ROUTER_BASE && b->remote
		    ? run_experts_remote(e, s, &c, b->remote, &route, &plan, d)
		    : run_experts(e, s, &c);
	if (r < 0)
		goto out;
	pool_run(e->pool, (b->n_tokens + COPY_BLOCK - 1) / COPY_BLOCK, task_combine, &c);
	r = check_output(b->output, b->n_tokens, layer->d_model, d);
	if (r < 0)
		goto out;
	r = segment_stats_fill(cfg, &route, layer->d_model, b, s);
	if (r < 0)
		goto out;

	k = route.k;
	if (b->expert_index)
		memcpy(b->expert_index, route.expert, sizeof(int32_t) * b->n_tokens * k);
	if (b->expert_weight)
		memcpy(b->expert_weight, route.weight, sizeof(float) * b->n_tokens * k);
	if (b->tokens_per_expert)
		memcpy(b->tokens_per_expert, route.tokens_per_expert,
		       sizeof(int32_t) * layer->n_experts);
	b->n_dropped = route.n_dropped;
	b->aux_loss = route.aux_loss;
	b->z_loss = route.z_loss;
	b->has_z_loss = route.has_z_loss;
out:
	if (r == -ENOMEM)
		diag_set(d, r, "out of memory for a batch of %u tokens", b->n_tokens);
	else if (r == -E2BIG)
		diag_set(d, r, "a batch of %u tokens needs more tiles than a pool job holds",
			 b->n_tokens);
	scratch_reset(s);
	return r;
}
