/* SPDX-License-Identifier: MIT */
/*
 * peers: moed daemons on several hosts serving one model together.
 *
 * Each daemon keeps a connection to every configured peer and sends it the
 * rows of the experts it computes (expert_hosts); it answers the requests
 * its peers send it with its own engine. Two sides, two threads:
 *
 *   runner thread (a run's engine call)       reactor thread (all I/O)
 *   dispatch(): calls per peer, rows copied
 *     -> inbox, eventfd ----------------->    peers_poll(): send EXPERT_REQ
 *   local experts compute                     replies: rows into the call
 *   collect(): wait until done or deadline <- DONE / FAILED, condvar
 *     abandon what is late (the reactor then  deadline missed: peer down,
 *     marks the peer down and reconnects)     reconnect on the tick
 *
 * A peer that is not up fails its calls at once, so after one deadline miss
 * a dead or hung host costs its batches nothing more than the policy
 * (peer_failure: an -EHOSTUNREACH completion or dropped slots). Requests
 * from peers are decoded and checked on the reactor and computed on an
 * executor of their own (engine_experts_scratch), never on the reactor.
 *
 * Thread-safety: peers_batch_* on runner threads (one batch object per
 * run); everything else on the reactor thread. Call states are guarded by
 * one mutex (a handful of calls per run: contention is not a concern).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "engine/engine.h"
#include "model/model.h"
#include "util/diag.h"

#define PEERS_PROGRESS_NS 1000000ull /* 1 ms */

struct expert_store;
struct transport;
struct transport_handlers;

typedef int (*transport_new_fn)(const struct transport_handlers *h, struct transport **ret,
				char *why, size_t why_len);

struct peers_opts {
	const struct moed_config *cfg;
	const struct moe_model *model;
	const char *identity_hex;       /* the store's model identity (32 hex digits) */
	const char *model_path;         /* the checkpoint, sampled by peer_identity() */
	struct engine *engine;          /* computes the requests peers send */
	struct expert_store *store;     /* NULL: the layers' own weights (tests) */
	const char *name;               /* this host's name for the peers' logs */
	transport_new_fn transport_new; /* NULL: UCX, eager only; tests give a fake */
};

struct peers;

/*
 * NULL in *@ret_peers when neither listen nor peers is set (a single host).
 * Else the parsed settings checked against the model, the transport, the
 * listener and a connection attempt to every peer. 0 or -errno with @d.
 */
int peers_new(const struct peers_opts *o, struct peers **ret_peers, struct diag *d);
struct peers *peers_free(struct peers *p);

/*
 * The fds the reactor waits on (poll for readability): the transport's,
 * the runners' inbox eventfd and the served requests' eventfd. Returns the
 * count (3).
 */
int peers_fds(const struct peers *p, int fds[3]);
/* The reactor saw peers_fds()[@i] readable. */
void peers_fd_ready(struct peers *p, uint32_t i);
/*
 * Do what is pending: the runners' calls, replies, served requests. The
 * number of events. Cheap when nothing is (no syscall): UCX is progressed
 * when its fd was readable, while calls or served requests are in flight,
 * and at least every PEERS_PROGRESS_NS while the reactor is too busy to
 * sleep.
 */
int peers_poll(struct peers *p, uint64_t now_ns);
/* Before the reactor sleeps: 0, or -EAGAIN when it must poll again first. */
int peers_arm(struct peers *p);
/* The reactor's tick: reconnects, deadlines of connections and calls. */
void peers_tick(struct peers *p, uint64_t now_ns);
/* Calls of our runs still in flight (the reactor drains them before it exits). */
bool peers_busy(const struct peers *p);
/*
 * Calls of ours or requests of peers in flight: the reactor polls a while
 * for their ends instead of sleeping, as it does for runs (a one-token
 * remote call is a chain of hand-offs between threads; each wake-up from a
 * sleep would add to it).
 */
bool peers_in_flight(const struct peers *p);
/* The daemon drains: requests from peers are answered -ESHUTDOWN from now on. */
void peers_stopping(struct peers *p);

/* Experts of @layer that compute on a peer ([n_experts], 0: here), or NULL if none does. */
const uint16_t *peers_layer_hosts(const struct peers *p, uint32_t layer);

/*
 * The routing of @layer under max_hosts_per_token (the layer's own with
 * groups that are the hosts' blocks of experts), or NULL: the layer's own.
 */
const struct router_config *peers_layer_router(const struct peers *p, uint32_t layer);

/* One run's remote calls (a runner's; see engine_remote). */
struct peers_batch;
int peers_batch_new(struct peers *p, struct peers_batch **ret);
struct peers_batch *peers_batch_free(struct peers_batch *b);
/*
 * @ret for an engine call of @layer through @b, or false when no expert of
 * the layer computes elsewhere (then leave engine_batch.remote NULL).
 */
bool peers_batch_remote(struct peers_batch *b, uint32_t layer, struct engine_remote *ret);

/* The peers for `moectl status` and `moectl peers`: an array of objects. */
json_t *peers_status_json(struct peers *p, uint64_t now_ns);
