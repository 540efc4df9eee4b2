/* SPDX-License-Identifier: MIT */
/*
 * reactor_internal: the reactor's state, shared by its files (reactor.c:
 * the loop, watchers and client lifetimes; ctl_socket.c: connections,
 * HELLO and STATUS).
 */
#pragma once

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "engine/engine.h"
#include "model/model.h"
#include "reactor/admission.h"
#include "reactor/reactor.h"
#include "sched/sched.h"
#include "peers/peers.h"
#include "service/service_notify.h"
#include "store/rebalance.h"
#include "session/session.h"
#include "session/sqe_validate.h"
#include "util/ratelimit.h"

struct reactor;

/*
 * Watchers. Every io_uring operation the reactor arms carries a user_data
 * of (watcher id, slot, generation): the id selects the callback from the
 * reactor's table, the slot says which connection or client it is for, and
 * the generation (24 bits) makes a completion for a departed occupant of
 * the slot stale. Id 0 is for cancellations and other fire-and-forget ops.
 * A new event source (the transport's worker fd, a watchdog) registers one
 * entry and arms its own operations with ud_make().
 */
typedef void (*watch_fn)(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res);

struct watcher {
	const char *name;
	watch_fn fn;
	void *arg;
};

#define WATCH_IGNORE 0
#define MAX_WATCHERS 16

static inline uint64_t ud_make(uint32_t watcher, uint32_t slot, uint32_t gen)
{
	return (uint64_t)watcher << 56 | (uint64_t)(gen & 0xffffffu) << 24 | (slot & 0xffffffu);
}
static inline uint32_t ud_watcher(uint64_t ud) { return (uint32_t)(ud >> 56); }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)(ud & 0xffffffu); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)((ud >> 24) & 0xffffffu); }

/*
 * Register @fn; returns its id (> 0), or -ENOSPC when the table is full.
 * Ids are stable for the reactor's lifetime.
 */
int reactor_watcher_add(struct reactor *r, const char *name, watch_fn fn, void *arg);

#define CONN_BUF_SIZE 256

/* An accepted connection that has not said what it wants yet. */
struct pending_conn {
	int fd; /* -1: slot free */
	uint32_t gen;
	uint64_t t_accepted_ns;
	uint8_t buf[CONN_BUF_SIZE];
};

struct reactor_totals {
	uint64_t rejected; /* SQEs refused by validation (not in batches or errors) */
	uint64_t clients_served, clients_refused, clients_dropped_corrupt;
};

/* The watcher ids of the reactor's own event sources. */
struct reactor_watch_ids {
	uint32_t accept, conn_recv, signal, timer, doorbell, hangup, pidfd, run_done, peers;
};

struct reactor {
	const struct moed_config *cfg;
	struct expert_store *store;
	const struct moe_model *model; /* the store's */
	struct engine *engine;
	struct sched *sched;
	struct rebalancer *rebalancer; /* NULL unless rebalance_interval_ms */
	struct peers *peers;           /* NULL unless listen or peers is set */
	int peers_fd[3];               /* what peers_fds() gave: polled before a sleep */
	bool peers_fd_armed[3];
	struct io_uring ring;
	bool ring_ready;
	bool futex_doorbells; /* the probe said IORING_OP_FUTEX_WAIT works */
	bool needs_submit;

	struct watcher watchers[MAX_WATCHERS];
	uint32_t n_watchers;
	struct reactor_watch_ids w;

	int listen_fd, signal_fd, timer_fd;
	uint64_t signal_buf[16]; /* struct signalfd_siginfo is 128 bytes */
	uint64_t timer_buf;
	uint64_t run_done_buf;

	struct client_slot *clients; /* [cfg->max_clients] */
	/*
	 * live[0 .. n_clients): the slots that hold a session, in no order
	 * (reactor_client_add/drop), so that the loop's passes over the
	 * clients cost what the connected ones do, not max_clients.
	 */
	uint32_t *live;
	uint32_t n_clients;
	uint32_t next_client_id;
	struct pending_conn *conns; /* [n_conns] */
	uint32_t n_conns;
	/* admission (ctl_socket.c, admission.h): who holds conns[i], per-peer limits */
	struct adm_peer *conn_peers; /* [n_conns], parallel to conns */
	struct adm_limits adm;
	struct ratelimit conn_log_rl; /* every line about a refused or closed connection */
	bool accept_paused;          /* out of fds: no accept armed until the next tick */
	bool accept_starved;         /* an out-of-fds episode is on (logged once) */
	uint64_t accept_failures;    /* accepts that failed in this episode */

	struct moe_region_info model_info; /* model fields for every client's region */
	struct sqe_limits limits;
	uint32_t *layer_slots, *layer_experts, *layer_d_model; /* [n_layers], for sqe_validate */

	struct reactor_totals totals;
	uint64_t t_start_ns;
	uint64_t last_work_ns;
	bool stopping;
	int stop_signal;

	/* reloads (reactor_reload.c) */
	struct moed_config *cfg_mut; /* the same object as cfg, writable by a reload */
	reactor_reload_fn reload_fn;
	void *reload_arg;
	uint64_t reloads, reloads_refused;
	char reload_message[768];

	/* systemd (reactor_service.c) */
	struct service_watchdog watchdog;
	uint32_t status_clients;        /* the client count the last STATUS= told */
	uint64_t status_ns;             /* when it was sent */
	uint64_t status_batches, status_tokens; /* the totals then, for the rates */
};

uint64_t reactor_now_ns(void);
struct io_uring_sqe *reactor_get_sqe(struct reactor *r);
/* Queue a cancellation of the io_uring op armed with @ud. */
void reactor_cancel(struct reactor *r, uint64_t ud);

/*
 * reactor_service.c: what systemd hears from the reactor (service_notify.h).
 * start: the watchdog from WATCHDOG_USEC; pass: every loop pass (the
 * watchdog's ping); tick: STATUS= when the clients change and every
 * STATUS_INTERVAL with the rates; stopping: STOPPING=1 with the drain's size.
 */
void reactor_service_start(struct reactor *r, uint64_t now_ns);
static inline void reactor_service_pass(struct reactor *r, uint64_t now_ns)
{
	service_watchdog_kick(&r->watchdog, now_ns);
}
void reactor_service_tick(struct reactor *r, uint64_t now_ns);
void reactor_service_stopping(uint32_t queued, uint32_t in_flight);

/* reactor_reload.c: SIGHUP. */
void reactor_reload(struct reactor *r);

/* ctl_experts.c: answer EXPERT_CHANGE (checked by ctl_request_parse); takes @fd over */
void ctl_expert_change(struct reactor *r, int fd, const struct moe_expert_change *req);

/* ctl_socket.c */
/* Register the accept and first-message watchers; 0 or -ENOSPC. */
int ctl_register(struct reactor *r);
int ctl_arm_accept(struct reactor *r);
/* The 100 ms tick: expire silent connections, resume a paused accept. */
void ctl_on_tick(struct reactor *r, uint64_t now_ns);
/* Fill the admission state (r->cfg and r->n_conns set). 0 or -ENOMEM. */
int ctl_admission_init(struct reactor *r);
void ctl_close_all_conns(struct reactor *r);

/* reactor.c: a client leaves (hang-up, pidfd, corruption, shutdown) */
void reactor_drop_client(struct reactor *r, uint32_t slot, const char *why);
/* reactor.c: session @s takes free slot @slot (and joins r->live) */
void reactor_client_add(struct reactor *r, uint32_t slot, struct session *s);
int reactor_arm_client_watches(struct reactor *r, uint32_t slot);
