/* SPDX-License-Identifier: MIT */
/*
 * sched: moed's scheduler, between the reactor (which consumes and
 * validates SQEs into each session's pending FIFO) and the executor (which
 * computes runs off the reactor thread).
 *
 * Fairness. A client has at most one run in flight, and runs go to clients
 * in round-robin order (a pass starts from the client after the last one
 * that got a run); so a client's backlog delays another client's batch by
 * at most about one run (its own in flight), never by the backlog. The reactor
 * stays free while runs compute: it accepts, answers HELLO and STATUS,
 * sees hang-ups and queues SQEs.
 *
 * Completion order a client can rely on: its valid batches complete in the
 * order they were submitted (one run in flight per client, taken from the
 * head of its FIFO). An SQE that fails validation, and a NOP, completes as
 * soon as it is consumed, which may be before earlier valid batches.
 *
 * Merge policy. Batches of one layer whose routing is per token (no
 * capacity, no balanced assignment, no random second expert, no given
 * routing) may run as one engine batch, so each expert does one larger GEMM
 * instead of one per client. The oldest such batch waits at most
 * merge_window_us for partners, and not at all once every connected client
 * has a batch of that layer at the head of its queue. merge_window_us = 0
 * runs every batch on its own. A merged run holds at most
 * max_merged_tokens rows.
 *
 * Inline runs. A run whose weights are at most inline_run_bytes (the
 * experts its rows can reach, the router, shared experts) computes on the
 * reactor thread when it starts: it costs about what its hand-off to a
 * runner would, and the bound keeps the reactor's pass short (sched.c).
 *
 * Copies. The reactor copies a batch's input rows out of the client's arena
 * into the run's private staging when the run starts, and the results back
 * into the client's output offsets when it completes: the router's expert
 * choices, and everything indexed by them, come from values the client
 * cannot change halfway (THREAT-MODEL.md), and a client that leaves while
 * its batch computes leaves nothing for the run to touch.
 *
 * Thread-safety: everything here runs on the reactor thread.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "engine/engine.h"
#include "store/expert_store.h"
#include "model/model.h"
#include "sched/layer_stats.h"
#include "session/session.h"
#include "util/diag.h"

struct sched_totals {
	uint64_t batches, tokens, errors, dropped;
	uint64_t engine_runs, merged_runs, merged_batches;
	uint64_t inline_runs; /* computed on the reactor thread (inline_run_bytes) */
};

struct sched_params {
	const struct moed_config *cfg;
	struct expert_store *store; /* the model and where its experts compute */
	struct engine *engine;
	struct client_slot *clients; /* the reactor's table, [cfg->max_clients] */
	const uint32_t *live;        /* the reactor's connected slots, [n_clients] of them */
	const uint32_t *layer_slots; /* routing slots per layer */
	uint32_t max_experts;        /* the counts array a client gets back */
	struct peers *peers;         /* other hosts' experts, or NULL */
};

struct sched;

/* Start cfg->runs_in_flight runners. 0 or -errno with a diag. */
int sched_new(const struct sched_params *p, struct sched **ret_sched, struct diag *d);

/* Stop the runners (after the runs they compute). NULL-safe; returns NULL. */
struct sched *sched_free(struct sched *s);

/*
 * The fd that becomes readable when a run finished: keep a read of it armed
 * in io_uring and call sched_complete_done() after each completion of that
 * read (executor.h: read first, then take).
 */
int sched_event_fd(const struct sched *s);

/*
 * The reactor is about to sleep: runs that finish from now on write the
 * eventfd. False when a run finished meanwhile (do not sleep). While the
 * reactor polls (after sched_clear_sleep()) finished runs are seen by
 * sched_complete_done() alone and write nothing (executor_watcher_sleep()).
 */
bool sched_prepare_sleep(struct sched *s);
/* The reactor polls again. */
void sched_clear_sleep(struct sched *s);

/*
 * Hand every batch that is ready under the fairness and merge policy to the
 * executor, as far as runs are free. @n_clients: connected clients (the
 * first n_clients entries of params.live); @force
 * (draining): do not wait for merge partners. Returns the batches handed
 * over; *@ret_wait_ns (if not NULL) is how long the oldest batch waiting
 * for partners may still wait (0: none waits).
 */
int sched_start_ready(struct sched *s, uint32_t n_clients, uint64_t now_ns, bool force,
		      uint64_t *ret_wait_ns);

/*
 * Complete the runs the executor finished: results into the arenas of the
 * clients still connected, CQEs written (published by session_flush()),
 * counters; errors are logged (rate-limited per client, @now_ns).
 * Returns the batches completed.
 */
int sched_complete_done(struct sched *s, uint64_t now_ns);

/* Runs handed over and not completed yet. */
uint32_t sched_in_flight(const struct sched *s);

const struct sched_totals *sched_totals(const struct sched *s);
const struct layer_stats *sched_layer_stats(const struct sched *s);
