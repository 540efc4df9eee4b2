/* SPDX-License-Identifier: MIT */
/* peer_status: the peers' states and counters as JSON (moectl status, moectl peers). */
#include <stdio.h>

#include "peers/peers_internal.h"

static json_t *peer_json(const struct peers *p, const struct peer *peer, uint64_t now)
{
	const struct peer_counters *n = &peer->n;
	uint32_t experts = 0;

	for (uint32_t l = 0; l < moe_model_n_layers(p->model); l++)
		for (uint32_t e = 0; e < p->n_experts[l]; e++)
			experts += p->host[l][e] == (uint16_t)(peer - p->peer) + 1;
	json_error_t err;
	json_t *j = json_pack_ex(&err, 0, "{s:s, s:s, s:i, s:s, s:f, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:I, s:I, s:f, s:f, s:f}",
			 "name", peer->cfg.name, "addr", peer->cfg.at.addr, "port",
			 (int)peer->cfg.at.port, "state", peer_state_name(peer->state),
			 "state_for_s",
			 peer->state_since_ns && now > peer->state_since_ns
				 ? (double)(now - peer->state_since_ns) / 1e9
				 : 0.0,
			 "why", peer->why, "experts", (int)experts, "calls", (json_int_t)n->calls,
			 "calls_failed", (json_int_t)n->calls_failed, "deadline_misses",
			 (json_int_t)n->deadline_misses, "late_replies", (json_int_t)n->late_replies,
			 "errors", (json_int_t)n->errors, "tokens_out", (json_int_t)n->rows_out,
			 "tokens_in", (json_int_t)n->rows_in, "bytes_out", (json_int_t)n->bytes_out,
			 "bytes_in", (json_int_t)n->bytes_in, "connects", (json_int_t)n->connects,
			 "disconnects", (json_int_t)n->disconnects, "rtt_last_us", n->rtt_last_us,
			 "rtt_avg_us", n->rtt_avg_us, "rtt_max_us", n->rtt_max_us);
	/* a format that does not match its values is a bug: say which */
	if (!j)
		fprintf(stderr, "peer_status: %s\n", err.text);
	return j;
}

json_t *peers_status_json(struct peers *p, uint64_t now)
{
	json_t *root = json_object(), *arr = json_array(), *acc = json_array();

	if (!root || !arr || !acc) {
		json_decref(root);
		json_decref(arr);
		json_decref(acc);
		return NULL;
	}
	for (uint32_t i = 0; i < p->n_peers; i++)
		json_array_append_new(arr, peer_json(p, &p->peer[i], now));
	for (uint32_t i = 0; i < ACCEPTED_MAX; i++)
		if (p->acc[i].used)
			json_array_append_new(acc, json_pack("{s:s, s:s, s:b}", "name",
							     p->acc[i].name, "addr",
							     p->acc[i].addr, "hello_ok",
							     p->acc[i].hello_ok));
	json_object_set_new(root, "listen", json_string(p->cfg->listen));
	json_object_set_new(root, "peer_failure",
			    json_string(p->cfg->peer_failure == PEER_FAILURE_DROP ? "drop"
										  : "error"));
	json_object_set_new(root, "peer_deadline_ms", json_integer(p->cfg->peer_deadline_ms));
	json_object_set_new(root, "peers", arr);
	pthread_mutex_lock(&p->mu);
	json_object_set_new(root, "overlap",
			    json_pack("{s:I, s:f, s:f, s:f}", "remote_batches",
				      (json_int_t)p->remote_batches, "remote_span_s",
				      (double)p->remote_span_ns / 1e9, "waited_s",
				      (double)p->waited_ns / 1e9, "hidden_share",
				      p->remote_span_ns ? 1.0 - (double)p->waited_ns /
								  (double)p->remote_span_ns
							: 0.0));
	pthread_mutex_unlock(&p->mu);
	json_object_set_new(root, "served_by_us",
			    json_pack("{s:o, s:I, s:I, s:I}", "connections", acc, "requests",
				      (json_int_t)p->served_requests, "tokens",
				      (json_int_t)p->served_rows, "errors",
				      (json_int_t)p->served_errors));
	return root;
}
