/* SPDX-License-Identifier: MIT */
/* status: a JSON snapshot of the daemon's counters (jansson); see status.h. */
#include "control/status.h"
#include "control/status_store.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compute/kernel_calibrate.h"
#include "compute/matmul_bf16_dot.h"
#include "config/config.h"
#include "engine/engine.h"
#include "moe_abi.h"
#include "peers/peers.h"

bool status_may_see(uid_t uid, uid_t client_uid)
{
	return uid == 0 || uid == geteuid() || uid == client_uid;
}

static json_t *status_clients(const struct status_view *v, uid_t uid)
{
	json_t *arr = json_array();

	for (uint32_t i = 0; arr && i < v->n_client; i++) {
		const struct status_client *c = &v->client[i];

		if (!status_may_see(uid, c->uid))
			continue;
		json_array_append_new(
			arr, json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
				       "id", (json_int_t)c->id, "name", c->name, "pid",
				       (json_int_t)c->pid, "uid", (json_int_t)c->uid, "batches",
				       (json_int_t)c->batches, "tokens", (json_int_t)c->tokens,
				       "errors", (json_int_t)c->errors, "merged",
				       (json_int_t)c->merged, "dropped", (json_int_t)c->dropped,
				       "queued", (json_int_t)c->queued, "in_flight",
				       (int)c->in_flight));
	}
	return arr;
}

/*
 * A layer's latency: count, sum and quantiles in microseconds, and the
 * cumulative counts below 2^3, 2^4, ... 2^35 us ("below_pow2_us", for
 * Prometheus' histogram buckets; metrics.c).
 */
static json_t *status_latency(const struct latency_hist *h)
{
	json_t *below = json_array();

	for (unsigned p = 3; below && p <= LATENCY_MAX_LOG; p++)
		json_array_append_new(below,
				      json_integer((json_int_t)latency_hist_count_below_pow2(h, p)));
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:o*}", "count", (json_int_t)h->count, "sum",
			 (json_int_t)h->sum_us, "p50", (json_int_t)latency_hist_quantile(h, 0.5),
			 "p99", (json_int_t)latency_hist_quantile(h, 0.99), "p999",
			 (json_int_t)latency_hist_quantile(h, 0.999), "below_pow2", below);
}

static json_t *status_layers(const struct status_view *v)
{
	json_t *arr = json_array();

	for (uint32_t l = 0; arr && l < v->n_layers; l++) {
		const struct layer_stats *ls = &v->layers[l];
		json_t *per_expert;

		if (!ls->tokens_per_expert)
			continue;
		per_expert = json_array();
		for (uint32_t e = 0; per_expert && e < ls->n_experts; e++)
			json_array_append_new(per_expert,
					      json_integer((json_int_t)ls->tokens_per_expert[e]));
		/* the mean over the batches that completed (their CQEs carry each one) */
		json_array_append_new(arr, json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:o*, s:o*}",
						     "layer", (json_int_t)l, "experts",
						     (json_int_t)ls->n_experts, "batches",
						     (json_int_t)ls->batches, "tokens",
						     (json_int_t)ls->tokens, "dropped",
						     (json_int_t)ls->dropped, "aux_loss_mean",
						     ls->latency.count ? ls->aux_loss_sum /
									 (double)ls->latency.count
								       : 0.0,
						     "tokens_per_expert", per_expert, "latency_us",
						     status_latency(&ls->latency)));
	}
	return arr;
}

/*
 * The matmul kernels in use and where their bounds came from
 * (kernel_calibrate.h); bf16_dot: whether BF16 weights go to the
 * dot-product kernel (the setting on and the CPU able).
 */
static json_t *kernels_json(void)
{
	const struct calibrate_result *res = kernel_calibration();
	struct matmul_bounds b;
	json_t *max = json_object();

	matmul_bounds_get(&b);
	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++)
		json_object_set_new(max, weight_dtype_name((enum weight_dtype)dt),
				    json_integer(b.small_m_max[dt]));
	return json_pack("{s:s, s:s, s:f, s:o, s:b, s:b}", "small_m_variant",
			 matmul_small_m_variant(), "bounds", calibrate_source_name(res->source),
			 "calibration_s", res->seconds, "small_m_max", max, "small_m_at_1",
			 b.small_m_at_1, "bf16_dot", matmul_bf16_dot_enabled());
}

int status_json(const struct status_view *v, uid_t uid, char **ret_json, size_t *ret_len)
{
	json_t *root;
	char *text;

	root = json_pack(
		"{s:{s:I, s:s, s:f, s:s, s:I, s:I, s:I, s:I, s:I}, "
		"s:{s:s, s:I, s:I, s:I, s:I}, "
		"s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o*, s:o*, "
		"s:o*, s:o*}",
		"daemon", "pid", (json_int_t)getpid(), "phase", "serving", "uptime_s", v->uptime_s,
		"doorbell",
		v->doorbell, "merge_window_us", (json_int_t)v->merge_window_us, "poll_us",
		(json_int_t)v->poll_us, "workers", (json_int_t)v->workers, "runs_in_flight",
		(json_int_t)v->runs_in_flight, "abi_major", (json_int_t)MOE_ABI_MAJOR,
		"model", "name", v->model_name, "layers", (json_int_t)v->n_layers, "d_model",
		(json_int_t)v->d_model, "max_experts", (json_int_t)v->max_experts, "max_slots",
		(json_int_t)v->max_slots,
		"totals", "clients", (json_int_t)v->clients, "clients_served",
		(json_int_t)v->clients_served, "clients_refused", (json_int_t)v->clients_refused,
		"clients_corrupt", (json_int_t)v->clients_corrupt, "batches",
		(json_int_t)v->batches, "tokens", (json_int_t)v->tokens, "errors",
		(json_int_t)v->errors, "rejected", (json_int_t)v->rejected, "dropped",
		(json_int_t)v->dropped, "engine_runs", (json_int_t)v->engine_runs,
		"merged_batches", (json_int_t)v->merged_batches, "inline_runs",
		(json_int_t)v->inline_runs, "runs_active",
		(json_int_t)v->runs_active,
		"clients", status_clients(v, uid), "layers", status_layers(v), "store",
		v->store ? status_store_json(v->store, v->engine, v->layers, v->uptime_s) : NULL,
		"peers", v->peers ? peers_status_json(v->peers, v->now_ns) : NULL);
	if (!root)
		return -ENOMEM;
	if (json_object_set_new(json_object_get(root, "daemon"), "reload",
				json_pack("{s:I, s:I, s:s}", "count", (json_int_t)v->reloads,
					  "refused", (json_int_t)v->reloads_refused, "message",
					  v->reload_message ? v->reload_message : "")) < 0) {
		json_decref(root);
		return -ENOMEM;
	}
	/* paths, addresses and limits: the operator's business, not every client's */
	if (v->cfg && (uid == 0 || uid == geteuid()) &&
	    json_object_set_new(root, "config", moed_config_to_json(v->cfg)) < 0) {
		json_decref(root);
		return -ENOMEM;
	}
	if (v->engine) {
		const struct blas_info *b = engine_blas_info(v->engine);
		json_t *dm = json_object_get(root, "daemon");

		json_object_set_new(dm, "blas_core", json_string(b->core ? b->core : "?"));
		json_object_set_new(dm, "blas_advice", json_string(b->advice));
		json_object_set_new(dm, "blas_threading",
				    json_string(blas_parallel_name(b->parallel)));
		json_object_set_new(dm, "blas_library", json_string(b->library));
		json_object_set_new(dm, "kernels", kernels_json());
	}
	text = json_dumps(root, JSON_INDENT(2));
	json_decref(root);
	if (!text)
		return -ENOMEM;
	*ret_json = text;
	*ret_len = strlen(text);
	return 0;
}
