/* SPDX-License-Identifier: MIT */
/*
 * moectl status: what a running moed is doing, from its control socket.
 *
 *   moectl [--socket PATH] status [--json]
 *
 * --json prints the daemon's JSON as it came (for scripts; JSON escapes
 * control characters itself); without it, a summary: the model, totals, the
 * clients and each layer's expert load, its strings escaped for the terminal.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moe.h>

#include "moectl.h"
#include "util/log.h"

static json_int_t get_int(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *get_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "?";
}

/* "; latency p50 180 us, p99 2.1 ms, p999 9.8 ms" (bucket edges: at most 12.5% high) */
static void print_latency(const json_t *lat)
{
	static const char *const keys[] = { "p50", "p99", "p999" };

	if (!json_is_object(lat) || get_int(lat, "count") <= 0)
		return;
	printf("; latency");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		double us = (double)get_int(lat, keys[i]);

		if (us < 1000)
			printf(" %s %.0f us", keys[i], us);
		else
			printf(" %s %.1f ms", keys[i], us / 1000);
	}
}

static void print_layers(const json_t *layers)
{
	size_t i, e;
	json_t *l, *v;

	json_array_foreach(layers, i, l)
	{
		const json_t *tpe = json_object_get(l, "tokens_per_expert");
		json_int_t max = 0, sum = 0;
		size_t n = json_array_size(tpe);

		json_array_foreach(tpe, e, v)
		{
			sum += json_integer_value(v);
			if (json_integer_value(v) > max)
				max = json_integer_value(v);
		}
		printf("layer %lld: %lld batches, %lld tokens, %lld dropped; tokens per expert:",
		       (long long)get_int(l, "layer"), (long long)get_int(l, "batches"),
		       (long long)get_int(l, "tokens"), (long long)get_int(l, "dropped"));
		json_array_foreach(tpe, e, v) printf(" %lld", (long long)json_integer_value(v));
		/* max over mean: 1.0 is perfect balance */
		if (sum && n)
			printf(" (imbalance %.2f)", (double)max * (double)n / (double)sum);
		if (json_is_number(json_object_get(l, "aux_loss_mean")))
			printf("; aux loss %.4g", json_number_value(json_object_get(l, "aux_loss_mean")));
		print_latency(json_object_get(l, "latency_us"));
		printf("\n");
	}
}

static void print_store(const json_t *store)
{
	const char *why = json_string_value(json_object_get(store, "reload_reason"));
	const json_t *node;
	char b[32], safe[320];
	size_t i;

	if (!store)
		return;
	printf("expert store: %s on %s topology in %.2f s, %s of weights, map epoch %lld",
	       get_str(store, "source"), moectl_term_safe(get_str(store, "topology"), safe, sizeof(safe)),
	       json_real_value(json_object_get(store, "ready_s")),
	       moectl_human_bytes((uint64_t)get_int(store, "weight_bytes"), b, sizeof(b)),
	       (long long)get_int(store, "epoch"));
	if (get_int(store, "remote_experts") > 0)
		printf("; %lld experts held by other hosts", (long long)get_int(store, "remote_experts"));
	if (why && *why)
		printf("; loaded again because %s", moectl_term_safe(why, safe, sizeof(safe)));
	printf("\n");
	json_array_foreach(json_object_get(store, "nodes"), i, node)
		moectl_print_node(node);
}

/* moed answers while its experts load: the phase and how far. */
/*
 * "kernels: avx512 small-m up to 32 rows (F32), 48 (BF16), 48 (F16), one row by sgemv;
 * bounds measured in 0.210 s; BF16 by vdpbf16ps (activations in BF16)"
 */
static void print_kernels(const json_t *k)
{
	const json_t *max = json_object_get(k, "small_m_max");
	char safe[64], src[32];

	if (!json_is_object(k))
		return;
	printf("kernels: %s small-m up to %lld rows (F32), %lld (BF16), %lld (F16), one row by "
	       "%s; bounds %s",
	       moectl_term_safe(get_str(k, "small_m_variant"), safe, sizeof(safe)),
	       (long long)get_int(max, "F32"), (long long)get_int(max, "BF16"),
	       (long long)get_int(max, "F16"),
	       json_is_true(json_object_get(k, "small_m_at_1")) ? "small-m" : "sgemv",
	       moectl_term_safe(get_str(k, "bounds"), src, sizeof(src)));
	if (strcmp(src, "built-in") != 0)
		printf(" in %.3f s", json_real_value(json_object_get(k, "calibration_s")));
	if (json_is_true(json_object_get(k, "bf16_dot")))
		printf("; BF16 by vdpbf16ps (activations in BF16)");
	printf("\n");
}

static void print_loading(const json_t *d, const json_t *load)
{
	char b1[32], b2[32];

	printf("moed pid %lld, up %.1f s: %s its experts", (long long)get_int(d, "pid"),
	       json_real_value(json_object_get(d, "uptime_s")), get_str(load, "phase"));
	if (get_int(load, "total") > 0)
		printf(", %s of %s read (%.0f%%)",
		       moectl_human_bytes((uint64_t)get_int(load, "bytes"), b1, sizeof(b1)),
		       moectl_human_bytes((uint64_t)get_int(load, "total"), b2, sizeof(b2)),
		       json_real_value(json_object_get(load, "percent")));
	printf("; clients are told to try again until it serves\n");
}

static int print_summary(const char *text)
{
	json_error_t err;
	json_t *root = json_loads(text, 0, &err), *d, *m, *t, *clients, *c;
	char safe[256], safe2[256];
	double uptime;
	size_t i;

	if (!root)
		return log_errno(-EPROTO, "the daemon's status is not JSON: %s", err.text);
	d = json_object_get(root, "daemon");
	if (json_object_get(root, "load")) {
		print_loading(d, json_object_get(root, "load"));
		json_decref(root);
		return 0;
	}
	m = json_object_get(root, "model");
	t = json_object_get(root, "totals");
	printf("moed pid %lld, up %.1f s, %lld workers, doorbell %s, merge window %lld us\n",
	       (long long)get_int(d, "pid"), json_real_value(json_object_get(d, "uptime_s")),
	       (long long)get_int(d, "workers"),
	       moectl_term_safe(get_str(d, "doorbell"), safe, sizeof(safe)),
	       (long long)get_int(d, "merge_window_us"));
	if (json_string_length(json_object_get(d, "blas_advice")) > 0)
		printf("warning: %s\n", moectl_term_safe(get_str(d, "blas_advice"), safe, sizeof(safe)));
	print_kernels(json_object_get(d, "kernels"));
	printf("model %s: %lld layers, d_model %lld, up to %lld experts, %lld slots per token\n",
	       moectl_term_safe(get_str(m, "name"), safe2, sizeof(safe2)), (long long)get_int(m, "layers"),
	       (long long)get_int(m, "d_model"),
	       (long long)get_int(m, "max_experts"), (long long)get_int(m, "max_slots"));
	printf("clients: %lld connected, %lld served, %lld refused, %lld disconnected for "
	       "corrupt rings\n",
	       (long long)get_int(t, "clients"), (long long)get_int(t, "clients_served"),
	       (long long)get_int(t, "clients_refused"), (long long)get_int(t, "clients_corrupt"));
	printf("batches: %lld (%lld failed), %lld requests refused, %lld tokens, %lld slots "
	       "dropped, %lld engine runs (%lld inline), %lld batches merged\n",
	       (long long)get_int(t, "batches"), (long long)get_int(t, "errors"),
	       (long long)get_int(t, "rejected"),
	       (long long)get_int(t, "tokens"), (long long)get_int(t, "dropped"),
	       (long long)get_int(t, "engine_runs"), (long long)get_int(t, "inline_runs"),
	       (long long)get_int(t, "merged_batches"));
	/* the average since start; `moectl top` shows the rate of the moment */
	uptime = json_number_value(json_object_get(d, "uptime_s"));
	if (uptime > 0)
		printf("throughput since start: %.1f batches/s, %.0f tokens/s\n",
		       (double)get_int(t, "batches") / uptime, (double)get_int(t, "tokens") / uptime);
	clients = json_object_get(root, "clients");
	json_array_foreach(clients, i, c)
		printf("  client %lld %s (pid %lld): %lld batches, %lld tokens, %lld failed, "
		       "%lld merged, %lld queued\n",
		       (long long)get_int(c, "id"), moectl_term_safe(get_str(c, "name"), safe, sizeof(safe)),
		       (long long)get_int(c, "pid"),
		       (long long)get_int(c, "batches"), (long long)get_int(c, "tokens"),
		       (long long)get_int(c, "errors"), (long long)get_int(c, "merged"),
		       (long long)get_int(c, "queued"));
	print_layers(json_object_get(root, "layers"));
	print_store(json_object_get(root, "store"));
	moectl_print_peers(json_object_get(root, "peers"));
	json_decref(root);
	return 0;
}

int cmd_status(int argc, char **argv, const char *socket_path)
{
	bool json;
	char *text = NULL;
	int r = moectl_show_options(argc, argv, "moectl [--socket PATH] status [--json]", &json);

	if (r >= 0)
		return r;
	r = moe_daemon_status(socket_path, &text);
	if (r < 0) {
		log_error("cannot get the status of moed at %s: %s",
			  socket_path ? socket_path : "the default socket", moe_strerror(r));
		return 1;
	}
	if (json)
		printf("%s\n", text);
	else
		r = print_summary(text);
	free(text);
	return r < 0 ? 1 : 0;
}
