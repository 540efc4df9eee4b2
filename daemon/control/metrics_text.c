/* SPDX-License-Identifier: MIT */
/* metrics_text: the status JSON as Prometheus text; see metrics_text.h. */
#include "control/metrics_text.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

/* A label value: backslash, double quote and newline escaped, as the format asks. */
static void put_label_value(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(out, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double num(const json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static void daemon_wide(const json_t *st, FILE *out)
{
	const json_t *dm = json_object_get(st, "daemon"), *totals = json_object_get(st, "totals");
	const json_t *model = json_object_get(st, "model"), *reload = json_object_get(dm, "reload");
	const char *name = json_string_value(json_object_get(model, "name"));
	static const struct {
		const char *metric, *key, *type, *help;
	} counters[] = {
		{ "moed_clients", "clients", "gauge", "Clients connected now." },
		{ "moed_clients_served_total", "clients_served", "counter",
		  "Clients that connected since moed started." },
		{ "moed_clients_refused_total", "clients_refused", "counter",
		  "Connections refused (limits, bad HELLO)." },
		{ "moed_errors_total", "errors", "counter", "Batches that completed with an error." },
		{ "moed_rejected_total", "rejected", "counter",
		  "Submissions refused before running (malformed, over a limit)." },
		{ "moed_engine_runs_total", "engine_runs", "counter", "Engine runs (merged or not)." },
		{ "moed_merged_batches_total", "merged_batches", "counter",
		  "Batches computed as part of a merged run." },
		{ "moed_inline_runs_total", "inline_runs", "counter",
		  "Engine runs computed on the reactor thread (inline_run_bytes)." },
	};

	family(out, "moed_info", "gauge", "The model moed serves and its ring ABI.");
	fputs("moed_info{model=\"", out);
	put_label_value(out, name ? name : "");
	fprintf(out, "\",abi_major=\"%lld\"} 1\n",
		(long long)json_integer_value(json_object_get(dm, "abi_major")));
	family(out, "moed_uptime_seconds", "gauge", "Seconds since moed started serving.");
	fprintf(out, "moed_uptime_seconds %.3f\n", num(dm, "uptime_s"));
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		if (!json_object_get(totals, counters[i].key))
			continue;
		family(out, counters[i].metric, counters[i].type, counters[i].help);
		fprintf(out, "%s %.0f\n", counters[i].metric, num(totals, counters[i].key));
	}
	if (json_is_object(reload)) {
		family(out, "moed_reloads_total", "counter", "Reloads of the configuration.");
		fprintf(out, "moed_reloads_total %.0f\n", num(reload, "count"));
		family(out, "moed_reloads_refused_total", "counter",
		       "Reloads refused (the configuration in force stayed).");
		fprintf(out, "moed_reloads_refused_total %.0f\n", num(reload, "refused"));
	}
}

/* One counter per layer from the layer objects' @key. */
static void per_layer(const json_t *layers, FILE *out, const char *metric, const char *key,
		      const char *help)
{
	const json_t *L;
	size_t i;

	family(out, metric, "counter", help);
	json_array_foreach(layers, i, L)
		fprintf(out, "%s{layer=\"%lld\"} %.0f\n", metric,
			(long long)json_integer_value(json_object_get(L, "layer")), num(L, key));
}

static void layer_aux_loss(const json_t *layers, FILE *out)
{
	const json_t *L;
	size_t i;

	family(out, "moed_aux_loss", "gauge",
	       "Mean auxiliary (load-balancing) loss of the router per layer, since moed started.");
	json_array_foreach(layers, i, L)
		if (json_is_number(json_object_get(L, "aux_loss_mean")))
			fprintf(out, "moed_aux_loss{layer=\"%lld\"} %.6g\n",
				(long long)json_integer_value(json_object_get(L, "layer")),
				num(L, "aux_loss_mean"));
}

static void layer_latency(const json_t *layers, FILE *out)
{
	const char *m = "moed_batch_latency_seconds";
	const json_t *L;
	size_t i;

	family(out, m, "histogram",
	       "Batch latency per layer: from moed taking a batch off its ring to its completion.");
	json_array_foreach(layers, i, L) {
		const json_t *lat = json_object_get(L, "latency_us"), *below, *c;
		long long layer = (long long)json_integer_value(json_object_get(L, "layer"));
		size_t j;

		if (!json_is_object(lat))
			continue;
		below = json_object_get(lat, "below_pow2");
		/* below_pow2[j] counts batches under 2^(j+3) us; Prometheus wants seconds */
		json_array_foreach(below, j, c)
			fprintf(out, "%s_bucket{layer=\"%lld\",le=\"%.6g\"} %lld\n", m, layer,
				(double)(1ull << (j + 3)) / 1e6, (long long)json_integer_value(c));
		fprintf(out, "%s_bucket{layer=\"%lld\",le=\"+Inf\"} %.0f\n", m, layer,
			num(lat, "count"));
		fprintf(out, "%s_sum{layer=\"%lld\"} %.6f\n", m, layer, num(lat, "sum") / 1e6);
		fprintf(out, "%s_count{layer=\"%lld\"} %.0f\n", m, layer, num(lat, "count"));
	}
}

static void expert_tokens(const json_t *layers, FILE *out)
{
	const json_t *L, *t;
	size_t i, e;

	family(out, "moed_tokens_total", "counter",
	       "Tokens each expert computed (a token routed to k experts counts k times).");
	json_array_foreach(layers, i, L) {
		long long layer = (long long)json_integer_value(json_object_get(L, "layer"));

		json_array_foreach(json_object_get(L, "tokens_per_expert"), e, t)
			fprintf(out, "moed_tokens_total{layer=\"%lld\",expert=\"%zu\"} %lld\n",
				layer, e, (long long)json_integer_value(t));
	}
}

static void nodes(const json_t *store, FILE *out)
{
	const json_t *nodes = json_object_get(store, "nodes"), *n;
	size_t i;

	if (!json_is_array(nodes))
		return;
	family(out, "moed_node_expert_bytes", "gauge",
	       "Bytes of expert weights loaded on each NUMA node.");
	json_array_foreach(nodes, i, n)
		fprintf(out, "moed_node_expert_bytes{node=\"%lld\"} %.0f\n",
			(long long)json_integer_value(json_object_get(n, "node")), num(n, "bytes"));
	family(out, "moed_node_busy_ratio", "gauge",
	       "Share of the time each node's workers computed, since moed started.");
	json_array_foreach(nodes, i, n)
		if (json_object_get(n, "busy"))
			fprintf(out, "moed_node_busy_ratio{node=\"%lld\"} %.4f\n",
				(long long)json_integer_value(json_object_get(n, "node")),
				num(n, "busy"));
}

static void peer_line(FILE *out, const char *metric, const json_t *pe, double value)
{
	const char *name = json_string_value(json_object_get(pe, "name"));

	fprintf(out, "%s{peer=\"", metric);
	put_label_value(out, name ? name : "");
	fprintf(out, "\"} %.6g\n", value);
}

static void peers(const json_t *pr, FILE *out)
{
	static const struct {
		const char *metric, *key, *type, *help;
		double scale; /* to the metric's unit */
	} fields[] = {
		{ "moed_peer_bytes_sent_total", "bytes_out", "counter", "Bytes sent to each peer.",
		  1 },
		{ "moed_peer_bytes_received_total", "bytes_in", "counter",
		  "Bytes received from each peer.", 1 },
		{ "moed_peer_tokens_sent_total", "tokens_out", "counter",
		  "Token rows sent to each peer.", 1 },
		{ "moed_peer_tokens_received_total", "tokens_in", "counter",
		  "Token rows whose results came back.", 1 },
		{ "moed_peer_calls_total", "calls", "counter", "Calls to each peer.", 1 },
		{ "moed_peer_calls_failed_total", "calls_failed", "counter", "Calls that failed.", 1 },
		{ "moed_peer_deadline_misses_total", "deadline_misses", "counter",
		  "Calls past peer_deadline_ms.", 1 },
		{ "moed_peer_rtt_seconds", "rtt_avg_us", "gauge", "Average round trip of a call.",
		  1e-6 },
	};
	const json_t *list = json_object_get(pr, "peers"), *pe;
	size_t i;

	if (!json_is_array(list))
		return;
	family(out, "moed_peer_up", "gauge", "1 when the connection to the peer is up.");
	json_array_foreach(list, i, pe) {
		const char *state = json_string_value(json_object_get(pe, "state"));

		peer_line(out, "moed_peer_up", pe, state && strcmp(state, "up") == 0);
	}
	for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
		family(out, fields[f].metric, fields[f].type, fields[f].help);
		json_array_foreach(list, i, pe)
			peer_line(out, fields[f].metric, pe, num(pe, fields[f].key) * fields[f].scale);
	}
}

int metrics_text_write(const json_t *status, FILE *out)
{
	const json_t *layers = json_object_get(status, "layers");

	if (!json_is_object(json_object_get(status, "daemon")) || !json_is_array(layers))
		return -EINVAL;
	daemon_wide(status, out);
	per_layer(layers, out, "moed_batches_total", "batches", "Batches completed per layer.");
	per_layer(layers, out, "moed_layer_tokens_total", "tokens",
		  "Tokens of the batches completed per layer.");
	per_layer(layers, out, "moed_dropped_tokens_total", "dropped",
		  "Token slots dropped per layer (capacity, failed peers).");
	expert_tokens(layers, out);
	layer_aux_loss(layers, out);
	layer_latency(layers, out);
	nodes(json_object_get(status, "store"), out);
	peers(json_object_get(status, "peers"), out);
	return 0;
}
