/* SPDX-License-Identifier: MIT */
/*
 * reactor_internal: the reactor's state, shared by its files (reactor.c:
 * the loop; ctl_socket.c: connections and HELLO; batch_exec.c: running
 * batches; control/status.c reads it through status_snapshot).
 */
#pragma once

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "engine/engine.h"
#include "model/model.h"
#include "session/session.h"
#include "session/sqe_validate.h"

/*
 * io_uring user_data: what completed, for which slot, in which generation.
 * A slot's generation changes whenever its occupant goes, so a late
 * completion for a departed client or connection is recognised and ignored.
 */
enum ud_kind {
	UD_IGNORE = 0, /* cancellations and other fire-and-forget ops */
	UD_ACCEPT,
	UD_SIGNAL,
	UD_TIMER,
	UD_CONN_RECV, /* a new connection's first message */
	UD_DOORBELL,
	UD_HANGUP,
	UD_PIDFD,
};

static inline uint64_t ud_make(enum ud_kind kind, uint32_t slot, uint32_t gen)
{
	return (uint64_t)kind << 56 | (uint64_t)(gen & 0xffffffu) << 24 | (slot & 0xffffffu);
}
static inline enum ud_kind ud_kind(uint64_t ud) { return (enum ud_kind)(ud >> 56); }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)(ud & 0xffffffu); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)((ud >> 24) & 0xffffffu); }

#define CONN_BUF_SIZE 256

/* An accepted connection that has not said what it wants yet. */
struct pending_conn {
	int fd; /* -1: slot free */
	uint32_t gen;
	uint64_t t_accepted_ns;
	uint8_t buf[CONN_BUF_SIZE];
};

struct client_slot {
	struct session *s; /* NULL: free */
	uint32_t gen;
};

struct layer_stats {
	uint64_t batches, tokens, dropped;
	uint64_t *tokens_per_expert; /* [n_experts] */
	uint32_t n_experts;
};

struct reactor_totals {
	uint64_t batches, tokens, errors, dropped;
	uint64_t rejected; /* SQEs refused by validation (not in batches or errors) */
	uint64_t engine_runs, merged_runs, merged_batches;
	uint64_t clients_served, clients_refused, clients_dropped_corrupt;
};

/* Private staging for one engine run: inputs copied out of client arenas once. */
struct staging {
	float *x, *y;
	int32_t *expert;
	float *weight;
	int32_t *tokens_per_expert;
	size_t cap_rows, cap_route, cap_experts;
};

struct reactor {
	const struct moed_config *cfg;
	const struct moe_model *model;
	struct engine *engine;
	struct io_uring ring;
	bool ring_ready;
	bool futex_doorbells; /* the probe said IORING_OP_FUTEX_WAIT works */
	bool needs_submit;

	int listen_fd, signal_fd, timer_fd;
	uint64_t signal_buf[16]; /* struct signalfd_siginfo is 128 bytes */
	uint64_t timer_buf;

	struct client_slot *clients; /* [cfg->max_clients] */
	uint32_t n_clients;
	uint32_t next_client_id;
	struct pending_conn *conns; /* [n_conns] */
	uint32_t n_conns;

	struct moe_region_info model_info; /* model fields for every client's region */
	struct sqe_limits limits;
	uint32_t *layer_slots, *layer_experts, *layer_d_model;
	bool *layer_mergeable;

	struct staging st;
	struct layer_stats *layers;
	struct reactor_totals totals;
	uint64_t t_start_ns;
	uint64_t last_work_ns;
	bool stopping;
	int stop_signal;
};

uint64_t reactor_now_ns(void);
struct io_uring_sqe *reactor_get_sqe(struct reactor *r);
/* Queue a cancellation of the io_uring op armed with @ud. */
void reactor_cancel(struct reactor *r, uint64_t ud);
/*
 * Handle every completion already in the CQ ring (no syscall). May drop
 * clients: call it only where no pointer to a session is held.
 */
unsigned reactor_handle_ready(struct reactor *r);

/* ctl_socket.c */
int ctl_arm_accept(struct reactor *r);
void ctl_on_accept(struct reactor *r, int res);
void ctl_on_recv(struct reactor *r, uint32_t slot, uint32_t gen, int res);
void ctl_expire_conns(struct reactor *r, uint64_t now_ns);
void ctl_close_all_conns(struct reactor *r);

/* reactor.c: a client leaves (hang-up, pidfd, corruption, shutdown) */
void reactor_drop_client(struct reactor *r, uint32_t slot, const char *why);
int reactor_arm_client_watches(struct reactor *r, uint32_t slot);

/* batch_exec.c */
/*
 * Run every pending batch that is ready under the merge policy; returns
 * how many batches ran. *@ret_wait_ns (if not NULL) is set to how long the
 * oldest waiting batch may still wait for merge partners (0: none waits).
 */
int batches_run_ready(struct reactor *r, uint64_t now_ns, bool force, uint64_t *ret_wait_ns);
void staging_done(struct staging *st);
