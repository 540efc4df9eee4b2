/* SPDX-License-Identifier: MIT */
/*
 * metrics_text: moed's status as Prometheus' text exposition format
 * (version 0.0.4), for the metrics endpoint (metrics_http.h) and `moectl
 * metrics`: both render the same status JSON with this one function, so
 * the two print the same text.
 *
 * Names are moed_*, labels are few and bounded (layer, expert, peer, node):
 *
 *   moed_info{model,abi_major} 1                    moed_uptime_seconds
 *   moed_clients  moed_clients_served_total  moed_clients_refused_total
 *   moed_batches_total{layer}  moed_layer_tokens_total{layer}
 *   moed_dropped_tokens_total{layer}  moed_tokens_total{layer,expert}
 *   moed_batch_latency_seconds{layer} (histogram: _bucket{le}, _sum, _count)
 *   moed_aux_loss{layer} (the router's mean load-balancing loss)
 *   moed_errors_total  moed_rejected_total  moed_engine_runs_total
 *   moed_merged_batches_total  moed_reloads_total  moed_reloads_refused_total
 *   moed_node_expert_bytes{node}  moed_node_busy_ratio{node}
 *   moed_peer_up{peer}  moed_peer_{bytes,tokens}_{sent,received}_total{peer}
 *   moed_peer_calls_total{peer}  moed_peer_calls_failed_total{peer}
 *   moed_peer_deadline_misses_total{peer}  moed_peer_rtt_seconds{peer}
 *
 * moed_tokens_total counts what each expert computed (a token routed to k
 * experts counts k times); moed_layer_tokens_total counts the tokens of the
 * batches. A value missing from the status (an older moed) is left out.
 */
#pragma once

#include <stdio.h>

struct json_t;

/* Write @status (moed's status JSON, parsed) to @out. 0, or -EINVAL when it is not a status. */
int metrics_text_write(const struct json_t *status, FILE *out);
