/* SPDX-License-Identifier: MIT */
/*
 * moectl peers: the other moed daemons this one works with.
 *
 *   moectl [--socket PATH] peers [--json]
 *
 * Per configured peer: its state (up, connecting, down, refused, and why),
 * the experts it computes for us, tokens and bytes each way, the round trip
 * of a call (last, average, worst), failed calls, deadline misses, late
 * replies and reconnects; then what this daemon serves for others. --json
 * prints the status's "peers" object as it came (null on a single host).
 * Exit status: 0, 1 when moed cannot be asked, 2 for a bad command line.
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

static long long get_int(const json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

static double get_real(const json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static const char *get_str(const json_t *o, const char *key, char *buf, size_t size)
{
	const char *s = json_string_value(json_object_get(o, key));

	return moectl_term_safe(s ? s : "?", buf, size);
}

void moectl_print_peers(const json_t *peers)
{
	const json_t *pe, *served = json_object_get(peers, "served_by_us");
	char name[96], addr[96], state[32], why[320], b1[32], b2[32];
	size_t i;

	if (!peers || json_is_null(peers))
		return;
	printf("peers (listen %s, deadline %lld ms, on failure: %s):\n",
	       *json_string_value(json_object_get(peers, "listen")) ? get_str(peers, "listen", addr,
								       sizeof(addr))
								: "off",
	       get_int(peers, "peer_deadline_ms"), get_str(peers, "peer_failure", state, sizeof(state)));
	json_array_foreach(json_object_get(peers, "peers"), i, pe) {
		const char *w = json_string_value(json_object_get(pe, "why"));

		printf("  %s %s:%lld: %s for %.1f s, %lld experts over all layers; out %lld tokens (%s), in %lld "
		       "tokens (%s); rtt %.0f us (avg %.0f, max %.0f); %lld calls, %lld failed, %lld "
		       "past the deadline, %lld late replies, %lld reconnects",
		       get_str(pe, "name", name, sizeof(name)), get_str(pe, "addr", addr, sizeof(addr)),
		       get_int(pe, "port"), get_str(pe, "state", state, sizeof(state)),
		       get_real(pe, "state_for_s"), get_int(pe, "experts"), get_int(pe, "tokens_out"),
		       moectl_human_bytes((uint64_t)get_int(pe, "bytes_out"), b1, sizeof(b1)),
		       get_int(pe, "tokens_in"),
		       moectl_human_bytes((uint64_t)get_int(pe, "bytes_in"), b2, sizeof(b2)),
		       get_real(pe, "rtt_last_us"), get_real(pe, "rtt_avg_us"),
		       get_real(pe, "rtt_max_us"), get_int(pe, "calls"), get_int(pe, "calls_failed"),
		       get_int(pe, "deadline_misses"), get_int(pe, "late_replies"),
		       get_int(pe, "connects") > 0 ? get_int(pe, "connects") - 1 : 0);
		if (w && *w)
			printf(" (%s)", moectl_term_safe(w, why, sizeof(why)));
		printf("\n");
	}
	if (get_int(json_object_get(peers, "overlap"), "remote_batches") > 0) {
		const json_t *o = json_object_get(peers, "overlap");

		printf("  %lld engine calls with remote experts: %.3f s remote, %.3f s waited for "
		       "(%.0f%% hidden behind local compute)\n",
		       get_int(o, "remote_batches"), get_real(o, "remote_span_s"),
		       get_real(o, "waited_s"), 100.0 * get_real(o, "hidden_share"));
	}
	if (served)
		printf("  serving %zu peer connections: %lld requests, %lld tokens, %lld failed\n",
		       json_array_size(json_object_get(served, "connections")),
		       get_int(served, "requests"), get_int(served, "tokens"),
		       get_int(served, "errors"));
}

int cmd_peers(int argc, char **argv, const char *socket_path)
{
	bool json;
	json_t *root, *peers;
	int r = moectl_show_options(argc, argv, "moectl [--socket PATH] peers [--json]", &json);

	if (r >= 0)
		return r;
	root = moectl_status_get(socket_path);
	if (!root)
		return 1;
	peers = json_object_get(root, "peers");
	if (json) {
		char *out = json_dumps(peers ? peers : json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);

		printf("%s\n", out ? out : "null");
		free(out);
	} else if (!peers) {
		printf("no peers: this moed serves alone (listen and peers are not set)\n");
	} else {
		moectl_print_peers(peers);
	}
	json_decref(root);
	return 0;
}
