/* SPDX-License-Identifier: MIT */
/* status: a JSON snapshot of the reactor's counters (jansson). */
#include "control/status.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reactor/reactor_internal.h"

static json_t *status_clients(const struct reactor *r)
{
	json_t *arr = json_array();

	for (uint32_t i = 0; arr && i < r->cfg->max_clients; i++) {
		const struct session *s = r->clients[i].s;

		if (!s)
			continue;
		json_array_append_new(
			arr, json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
				       "id", (json_int_t)s->id, "name", s->name, "pid",
				       (json_int_t)s->pid, "uid", (json_int_t)s->uid, "batches",
				       (json_int_t)s->stats.batches, "tokens",
				       (json_int_t)s->stats.tokens, "errors",
				       (json_int_t)s->stats.errors, "merged",
				       (json_int_t)s->stats.merged, "dropped",
				       (json_int_t)s->stats.dropped, "queued",
				       (json_int_t)s->pending_count));
	}
	return arr;
}

static json_t *status_layers(const struct reactor *r)
{
	json_t *arr = json_array();

	for (uint32_t l = 0; arr && l < r->model_info.n_layers; l++) {
		const struct layer_stats *ls = &r->layers[l];
		json_t *per_expert;

		if (!ls->tokens_per_expert)
			continue;
		per_expert = json_array();
		for (uint32_t e = 0; per_expert && e < ls->n_experts; e++)
			json_array_append_new(per_expert,
					      json_integer((json_int_t)ls->tokens_per_expert[e]));
		json_array_append_new(arr, json_pack("{s:I, s:I, s:I, s:I, s:I, s:o*}", "layer",
						     (json_int_t)l, "experts",
						     (json_int_t)ls->n_experts, "batches",
						     (json_int_t)ls->batches, "tokens",
						     (json_int_t)ls->tokens, "dropped",
						     (json_int_t)ls->dropped, "tokens_per_expert",
						     per_expert));
	}
	return arr;
}

int status_json(const struct reactor *r, char **ret_json, size_t *ret_len)
{
	const struct reactor_totals *t = &r->totals;
	double uptime = (double)(reactor_now_ns() - r->t_start_ns) / 1e9;
	json_t *root;
	char *text;

	root = json_pack(
		"{s:{s:I, s:f, s:s, s:I, s:I, s:I, s:I}, "
		"s:{s:s, s:I, s:I, s:I, s:I}, "
		"s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o*, s:o*}",
		"daemon", "pid", (json_int_t)getpid(), "uptime_s", uptime, "doorbell",
		r->futex_doorbells ? "futex" : "eventfd", "merge_window_us",
		(json_int_t)r->cfg->merge_window_us, "poll_us", (json_int_t)r->cfg->poll_us,
		"workers", (json_int_t)engine_n_workers(r->engine), "abi_major",
		(json_int_t)MOE_ABI_MAJOR,
		"model", "name", r->model_info.model_name, "layers",
		(json_int_t)r->model_info.n_layers, "d_model", (json_int_t)r->model_info.d_model,
		"max_experts", (json_int_t)r->model_info.max_experts, "max_slots",
		(json_int_t)r->model_info.max_slots,
		"totals", "clients", (json_int_t)r->n_clients, "clients_served",
		(json_int_t)t->clients_served, "clients_refused", (json_int_t)t->clients_refused,
		"clients_corrupt", (json_int_t)t->clients_dropped_corrupt, "batches",
		(json_int_t)t->batches, "tokens", (json_int_t)t->tokens, "errors",
		(json_int_t)t->errors, "rejected", (json_int_t)t->rejected, "dropped", (json_int_t)t->dropped, "engine_runs",
		(json_int_t)t->engine_runs, "merged_batches", (json_int_t)t->merged_batches,
		"clients", status_clients(r), "layers", status_layers(r));
	if (!root)
		return -ENOMEM;
	text = json_dumps(root, JSON_INDENT(2));
	json_decref(root);
	if (!text)
		return -ENOMEM;
	*ret_json = text;
	*ret_len = strlen(text);
	return 0;
}
