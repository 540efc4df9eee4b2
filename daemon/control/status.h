/* SPDX-License-Identifier: MIT */
/*
 * status: the daemon's state as JSON, what `moectl status` shows: the
 * model, the clients, totals, and per layer the tokens each expert received.
 *
 * The reactor fills a struct status_view (plain values and borrowed
 * pointers) and this module turns it into text; it knows nothing of the
 * reactor's insides.
 *
 * Privacy: STATUS is open to anyone who may connect. The details of a
 * client (pid, uid, name, counters) go only to root, to moed's own uid and
 * to the client's own uid; everyone sees the totals.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sched/layer_stats.h"

struct engine;
struct expert_store;
struct moed_config;
struct peers;

struct status_client {
	uint32_t id;
	const char *name; /* escaped at HELLO: printable */
	pid_t pid;
	uid_t uid;
	uint64_t batches, tokens, errors, merged, dropped;
	uint32_t queued;
	bool in_flight;
};

struct status_view {
	/* daemon */
	double uptime_s;
	const char *doorbell;
	uint32_t merge_window_us, poll_us, workers, runs_in_flight;
	/* model */
	const char *model_name;
	uint32_t n_layers, d_model, max_experts, max_slots;
	/* totals */
	uint32_t clients;
	uint64_t clients_served, clients_refused, clients_corrupt;
	uint64_t batches, tokens, errors, rejected, dropped;
	uint64_t engine_runs, merged_batches;
	uint64_t inline_runs; /* engine runs computed on the reactor thread */
	uint32_t runs_active; /* runs computing now */
	/* reloads (SIGHUP, moectl reload): how many, how many refused, the last one's outcome */
	uint64_t reloads, reloads_refused;
	const char *reload_message; /* "" before the first */
	const struct moed_config *cfg; /* in force; shown to root and moed's own user only */
	/* per client and per layer */
	const struct status_client *client; /* [n_client] */
	uint32_t n_client;
	const struct layer_stats *layers;   /* [n_layers] */
	struct expert_store *store;   /* where the weights live */
	const struct engine *engine;  /* its pool's per-node counters */
	struct peers *peers;          /* other hosts, or NULL (its status takes its lock) */
	uint64_t now_ns;              /* CLOCK_MONOTONIC */
};

/*
 * A malloc'd JSON text in *@ret_json (length in *@ret_len), showing the
 * clients that requester @uid may see. 0 or -ENOMEM.
 */
int status_json(const struct status_view *v, uid_t uid, char **ret_json, size_t *ret_len);

/* Whether requester @uid may see the details of a client of @client_uid. */
bool status_may_see(uid_t uid, uid_t client_uid);
