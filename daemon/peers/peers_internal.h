/* SPDX-License-Identifier: MIT */
/*
 * peers_internal: the state shared by the files of peers/ (peers.c: the
 * peer connections and hello; peer_calls.c: the calls of runs, both sides;
 * peer_serve.c: requests from peers; peer_status.c: counters as JSON).
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "exec/executor.h"
#include "peers/buf_cache.h"
#include "peers/peer_config.h"
#include "peers/peer_proto.h"
#include "peers/peers.h"
#include "transport.h"
#include "util/ratelimit.h"
#include "util/scratch.h"

/*
 * Cookies of transport sends and receives: a kind in the top byte, the
 * call id, accepted-connection slot or serve job in the rest.
 */
enum cookie_kind {
	COOKIE_NONE = 0,
	COOKIE_CALL_SEND = 1,  /* an EXPERT_REQ's rows; value: call id */
	COOKIE_CALL_RECV = 2,  /* an EXPERT_REPLY's rows; value: call id */
	COOKIE_SERVE_RECV = 3, /* a served request's rows; value: job id */
	COOKIE_SERVE_SEND = 4, /* a served reply's rows; value: job id */
	COOKIE_HELLO = 5,      /* a HELLO's asks; value: accepted slot */
};

static inline uint64_t peers_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t cookie_make(enum cookie_kind k, uint64_t v)
{
	return (uint64_t)k << 56 | (v & ((1ull << 56) - 1));
}
static inline enum cookie_kind cookie_kind(uint64_t c) { return (enum cookie_kind)(c >> 56); }
static inline uint64_t cookie_value(uint64_t c) { return c & ((1ull << 56) - 1); }

enum peer_state {
	PEER_DOWN,       /* no connection; the tick retries at next_try_ns */
	PEER_CONNECTING, /* connection opened, HELLO sent, no reply yet */
	PEER_UP,         /* HELLO accepted: calls go out */
	PEER_REFUSED,    /* the peer refused our HELLO (model, version, experts) */
};

const char *peer_state_name(enum peer_state s);

struct peer_counters {
	uint64_t calls, calls_failed, deadline_misses, late_replies, errors;
	uint64_t rows_out, rows_in, bytes_out, bytes_in;
	uint64_t connects, disconnects;
	double rtt_last_us, rtt_avg_us, rtt_max_us; /* request sent -> reply rows in */
};

struct peer {
	struct peer_entry cfg;     /* name and address */
	enum peer_state state;
	uint32_t conn;             /* valid unless PEER_DOWN */
	uint64_t state_since_ns;
	uint64_t next_try_ns;      /* PEER_DOWN/REFUSED: when to connect again */
	uint64_t backoff_ns;
	uint8_t *asks;             /* [n_layers][max_experts]: our HELLO's data */
	char why[256];             /* why it is not up (for the status) */
	char remote_name[32];      /* the name it gave in its HELLO reply */
	struct peer_counters n;
};

enum call_state {
	CALL_QUEUED,    /* in the inbox, not seen by the reactor yet */
	CALL_SENT,      /* in the reactor's pending list */
	CALL_DONE,      /* result holds the rows */
	CALL_FAILED,    /* status says why */
	CALL_ABANDONED, /* its runner gave up at the deadline */
};

/* One request to one peer: up to PEER_REQ_MAX_BINS experts' rows. */
struct peer_call {
	struct peer_call *next;    /* the inbox, then the reactor's pending list */
	struct peer_call *batch_next; /* the runner's list */
	uint64_t id;
	uint32_t peer;             /* index into peers->peer[] */
	uint32_t conn;             /* the connection it was sent on */
	enum call_state state;     /* under peers->mu */
	int status;
	int refs;                  /* runner and reactor; under peers->mu */
	bool send_busy, recv_busy; /* reactor only: transfers in flight */
	bool missed;               /* reactor only: counted as a deadline miss */
	uint64_t t_sent_ns;
	uint64_t t_final_ns;       /* when it reached a final state (under peers->mu) */
	struct peer_expert_req req;
	float *rows;               /* [total_rows][d_model] out */
	float *result;             /* [total_rows][d_model] in */
	size_t bytes;              /* of each */
};

/* A request a peer sent us, from its arrival to our reply's send. */
struct serve_job {
	struct exec_item item;     /* first: the executor's link */
	struct serve_job *next;    /* the jobs list */
	struct peers *p;
	uint64_t id;
	uint32_t accepted;         /* slot in peers->acc[] */
	uint32_t acc_gen;
	struct peer_expert_req req;
	float *x, *y;
	size_t bytes;              /* of each */
	uint64_t t_reply_ns;       /* our reply's send began (0: not yet) */
	int status;
	char why[160];
	struct scratch scratch;
};

/* A connection a peer opened to us. */
struct accepted {
	bool used;
	bool hello_ok;
	uint32_t conn;
	uint32_t gen;
	uint32_t jobs;             /* its requests not answered yet */
	uint64_t t_accept_ns;
	uint64_t t_refused_ns;     /* we refused its HELLO (0: not) */
	char addr[64];
	char name[32];
	struct peer_hello hello;   /* while its asks arrive */
	uint8_t *asks;
};

#define ACCEPTED_MAX 64
/* Requests of one connection in flight at once: more are answered -EBUSY. */
#define SERVE_MAX_JOBS_PER_CONN 16

struct peers {
	const struct moed_config *cfg;
	const struct moe_model *model;
	struct engine *engine;
	struct expert_store *store;
	struct transport *t;
	struct peer_model_id model_id;
	char name[32];
	uint32_t max_experts;
	uint32_t *n_experts;       /* [n_layers] */
	uint16_t **host;           /* [n_layers][n_experts[l]]: 0 here, i + 1 peer i */
	bool *layer_remote;        /* [n_layers]: some expert of the layer is elsewhere */
	struct router_config *host_limited; /* [n_layers]: max_hosts_per_token's routing */
	bool *has_host_limit;      /* [n_layers]: host_limited[l] applies */
	struct peer peer[PEERS_MAX];
	uint32_t n_peers;
	struct accepted acc[ACCEPTED_MAX];
	/* runner <-> reactor */
	pthread_mutex_t mu;
	pthread_cond_t done;       /* a call finished (CLOCK_MONOTONIC) */
	struct peer_call *inbox;   /* under mu, newest first */
	struct buf_cache bufs;     /* under mu: calls' rows */
	int inbox_fd;              /* eventfd: the inbox has calls */
	/* reactor only */
	struct peer_call *pending; /* sent, awaiting their reply or their transfers */
	uint64_t next_call_id;
	struct executor *serve;    /* computes requests from peers */
	struct buf_cache serve_bufs; /* served requests' rows (reactor only) */
	struct serve_job *jobs;
	uint64_t next_job_id;
	uint64_t served_requests, served_rows, served_errors;
	bool stopping;             /* the daemon drains: requests are answered -ESHUTDOWN */
	struct ratelimit log_rl;   /* lines a peer's messages provoke */
	/*
	 * Overlap, under mu: per engine call with remote experts, the span from
	 * dispatch to the last reply (remote_span) and the part of it its
	 * runner spent blocked in collect (waited). 1 - waited / remote_span is
	 * the share of the remote work hidden behind the local experts.
	 */
	uint64_t remote_span_ns, waited_ns, remote_batches;
	uint64_t now_ns;           /* the time of the current peers_poll() */
	uint32_t fds_ready;        /* bit i: peers_fds()[i] was readable (peers_fd_ready) */
	uint64_t last_progress_ns;
	/* connections to close once transport_progress() returned (not from its callbacks) */
	uint32_t to_close[TRANSPORT_MAX_CONNS];
	uint32_t n_to_close;
};

/* peers.c: close @conn after the current progress (never from inside a callback). */
void peers_close_later(struct peers *p, uint32_t conn);

/* peers.c */
void peers_peer_failed(struct peers *p, uint32_t i, int err, const char *why, uint64_t now_ns);
struct peers *peers_of_transport(void *ctx);

/* peer_calls.c: the reactor's side of runs' calls */
int calls_take_inbox(struct peers *p, uint64_t now_ns, bool fd_ready);
/* A reply arrived on the connection of peer @i. */
void calls_on_reply(struct peers *p, uint32_t i, const struct transport_msg *m,
		    struct transport_rx *rx, uint64_t now_ns);
void calls_on_transfer_done(struct peers *p, uint64_t cookie, int status, uint64_t now_ns);
/* Fail every call of peer @i (down); those with transfers in flight leave later. */
void calls_fail_peer(struct peers *p, uint32_t i, int err);
/* Calls whose runner gave up, and calls past their deadline: their peers are down. */
void calls_sweep(struct peers *p, uint64_t now_ns);
/* A call leaves the reactor: drop its reference (the last one frees it). */
void call_put(struct peers *p, struct peer_call *c);

/* peer_serve.c */
int serve_start(struct peers *p);
/* Stop the serve threads (after the jobs they compute). */
void serve_stop(struct peers *p);
/* Free the jobs and the accepted slots' buffers: after the transport is gone. */
void serve_free(struct peers *p);
/* Connections without HELLO in time, refused ones, replies stuck past the deadline. */
void serve_tick(struct peers *p, uint64_t now_ns);
void serve_on_accept(struct peers *p, uint32_t conn, const char *addr);
void serve_on_conn_error(struct peers *p, uint32_t slot);
int serve_find(const struct peers *p, uint32_t conn);
void serve_on_message(struct peers *p, uint32_t slot, const struct transport_msg *m,
		      struct transport_rx *rx);
void serve_on_transfer_done(struct peers *p, uint64_t cookie, int status);
int serve_take_done(struct peers *p, bool fd_ready);
