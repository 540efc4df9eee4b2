/* SPDX-License-Identifier: MIT */
/*
 * run: staging buffers and the runner's side of an engine run; see run.h.
 */
#include "sched/run.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	void *q;

	if (need <= *cap)
		return 0;
	/* the slow path: staging grows to the largest run seen, then stays */
	q = realloc(*p, need * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = need;
	return 0;
}

int run_reserve(struct run *run, size_t rows, size_t d, size_t route, size_t experts)
{
	size_t cap;

	/* pairs of buffers share a capacity: grow both, then record it */
	cap = run->cap_rows;
	if (grow((void **)&run->x, &cap, rows * d, sizeof(float)) < 0)
		return -ENOMEM;
	cap = run->cap_rows;
	if (grow((void **)&run->y, &cap, rows * d, sizeof(float)) < 0)
		return -ENOMEM;
	run->cap_rows = cap;
	cap = run->cap_route;
	if (grow((void **)&run->expert, &cap, route, sizeof(int32_t)) < 0)
		return -ENOMEM;
	cap = run->cap_route;
	if (grow((void **)&run->weight, &cap, route, sizeof(float)) < 0)
		return -ENOMEM;
	run->cap_route = cap;
	cap = run->cap_experts;
	if (grow((void **)&run->counts, &cap, experts, sizeof(int32_t)) < 0)
		return -ENOMEM;
	cap = run->cap_experts;
	if (grow((void **)&run->counts_total, &cap, experts, sizeof(uint64_t)) < 0)
		return -ENOMEM;
	run->cap_experts = cap;
	return 0;
}

void run_done(struct run *run)
{
	free(run->x);
	free(run->y);
	free(run->expert);
	free(run->weight);
	free(run->counts);
	free(run->counts_total);
	scratch_done(&run->scratch);
	run->x = run->y = run->weight = NULL;
	run->expert = run->counts = NULL;
	run->counts_total = NULL;
	run->cap_rows = run->cap_route = run->cap_experts = 0;
}

/*
 * One engine call over rows [row0, row0 + rows) of the staging buffers;
 * with @segmented, one segment per member (the whole run).
 */
static int run_engine_call(struct run *run, uint32_t row0, uint32_t rows, bool segmented,
			   struct engine_batch *b, struct diag *d)
{
	const size_t dm = run->layer->d_model, k = run->k;
	struct route_given given = { .expert = run->expert + row0 * k,
				     .weight = run->weight + row0 * k };
	int ret;

	*b = (struct engine_batch){
		.x = run->x + row0 * dm,
		.n_tokens = rows,
		.given = run->given ? &given : NULL,
		.output = run->y + row0 * dm,
		.expert_index = run->want_route ? run->expert + row0 * k : NULL,
		.expert_weight = run->want_route ? run->weight + row0 * k : NULL,
		.tokens_per_expert = run->counts,
		.homes = run->homes,
		.remote = run->has_remote ? &run->remote : NULL,
		.segment_rows = segmented ? run->segment_rows : NULL,
		.n_segments = segmented ? run->n_live : 0,
		.segment_stats = segmented ? run->segment_stats : NULL,
	};
	ret = engine_forward_scratch(run->engine, &run->scratch, run->layer,
				     run->given ? &run->given_cfg : run->host_cfg, b, d);
	run->engine_calls++;
	if (ret == 0)
		for (uint32_t e = 0; e < run->layer->n_experts; e++)
			run->counts_total[e] += (uint64_t)run->counts[e];
	return ret;
}

/* @seg: the member's own statistics in a merged call, NULL when it ran alone (@b's). */
static void member_set_result(struct run_member *m, int status, const struct engine_batch *b,
			      const struct engine_segment_stats *seg, const struct diag *d)
{
	m->status = status;
	m->merged = seg != NULL;
	if (status < 0) {
		/* the message may be cut: a log line, not a contract */
		snprintf(m->why, sizeof(m->why), "%.*s", (int)sizeof(m->why) - 1,
			 d->msg[0] ? d->msg : "failed");
		return;
	}
	if (seg) {
		m->n_dropped = seg->n_dropped;
		m->n_sanitized = seg->n_sanitized;
		m->aux_loss = seg->aux_loss;
		m->z_loss = seg->z_loss;
		m->has_z_loss = seg->has_z_loss;
		return;
	}
	m->n_dropped = b->n_dropped;
	m->n_sanitized = b->n_sanitized;
	m->aux_loss = b->aux_loss;
	m->z_loss = b->z_loss;
	m->has_z_loss = b->has_z_loss;
}

/*
 * Check each member's rows before they share an engine call: the failing
 * ones get their status now, the others are closed up in the staging rows
 * (x only: routing is given only to runs of one) and listed in run->live.
 */
static void run_check_members(struct run *run)
{
	const size_t dm = run->layer->d_model;
	const struct router_config *cfg = run->given  ? &run->given_cfg
						 : run->host_cfg ? run->host_cfg : &run->layer->router;
	uint32_t rows = 0;

	run->n_live = 0;
	for (uint32_t i = 0; i < run->n_members; i++) {
		struct run_member *m = &run->members[i];
		struct diag d = { { 0 } };
		int ret = 0;

		if (run->n_members > 1)
			ret = engine_check_input(cfg, run->x + m->row0 * dm, m->sqe.n_tokens,
						 (uint32_t)dm, &d);
		if (ret < 0) {
			member_set_result(m, ret, NULL, NULL, &d);
			continue;
		}
		if (m->row0 != rows)
			memmove(run->x + (size_t)rows * dm, run->x + (size_t)m->row0 * dm,
				sizeof(float) * m->sqe.n_tokens * dm);
		m->row0 = rows;
		rows += m->sqe.n_tokens;
		run->segment_rows[run->n_live] = m->sqe.n_tokens;
		run->live[run->n_live++] = i;
	}
	run->rows = rows;
}

void run_execute(struct exec_item *item)
{
	struct run *run = (struct run *)item;
	struct engine_batch b;
	struct diag d = { { 0 } };
	bool merged;
	int ret;

	run->engine_calls = 0;
	run->merged_ok = false;
	memset(run->counts_total, 0, sizeof(uint64_t) * run->layer->n_experts);
	run_check_members(run);
	if (run->n_live == 0)
		return;
	merged = run->n_live > 1;
	ret = run_engine_call(run, 0, run->rows, merged, &b, &d);
	if (ret == 0 || !merged) {
		run->merged_ok = ret == 0 && merged;
		for (uint32_t j = 0; j < run->n_live; j++)
			member_set_result(&run->members[run->live[j]], ret, &b,
					  merged ? &run->segment_stats[j] : NULL, &d);
		return;
	}
	/* a merged call failed: each batch again on its own, into its own rows */
	for (uint32_t j = 0; j < run->n_live; j++) {
		struct run_member *m = &run->members[run->live[j]];

		diag_clear(&d);
		ret = run_engine_call(run, m->row0, m->sqe.n_tokens, false, &b, &d);
		member_set_result(m, ret, &b, NULL, &d);
	}
}
