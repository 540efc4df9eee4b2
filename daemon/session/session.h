/* SPDX-License-Identifier: MIT */
/*
 * session: one connected client as moed sees it: its control socket, its
 * pidfd, its region and the daemon's private view of its two rings, the
 * batches consumed from its SQ but not yet run, and its counters.
 *
 * Flow control. Every SQE consumed reserves one CQ slot (for its CQE), and
 * moed consumes only as many SQEs as the CQ has free slots beyond those
 * already reserved: a client that stops reaping stops its own submissions
 * (MOE_RING_PRODUCER_WAITING tells it to ring when it reaps), and no
 * completion is ever dropped or written over an unreaped one.
 *
 * Thread-safety: sessions belong to the reactor thread.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "moe_abi.h"
#include "moe_proto.h"
#include "shm_region.h"
#include "shm_ring.h"
#include "session/sqe_validate.h"

struct pending_batch {
	struct moe_sqe sqe; /* the validated private copy */
	uint64_t t_consumed_ns;
};

struct session_stats {
	uint64_t batches;  /* completed FORWARDs, failed or not */
	uint64_t tokens;
	uint64_t errors;   /* CQEs with a negative status, rejected SQEs included */
	uint64_t rejected; /* SQEs refused by validation */
	uint64_t merged;   /* batches that ran merged with other clients' */
	uint64_t dropped;
};

struct session {
	uint32_t id;   /* the client id moectl status shows */
	int sock;      /* control connection: its hang-up means the client is gone */
	int pidfd;     /* -1 where the kernel offers none */
	int eventfd;   /* the doorbell in eventfd mode, else -1 */
	pid_t pid;
	uid_t uid;
	char name[MOE_CLIENT_NAME_MAX];

	struct shm_region region;
	struct shm_ring sq; /* moed consumes */
	struct shm_ring cq; /* moed produces */

	/* consumed, validated, waiting to run: a FIFO of cq_entries slots */
	struct pending_batch *pending;
	uint32_t pending_head, pending_count;
	uint32_t cq_reserved;    /* CQ slots promised: pending batches */
	uint32_t cq_unpublished; /* CQEs written into slots, not yet published */

	bool doorbell_armed;
	bool run_in_flight; /* one of its batches is in an executor run (sched.h) */
	struct session_stats stats;
	uint64_t log_window_ns; /* per-client error log rate limit */
	uint32_t log_in_window;
};

/*
 * A slot of the daemon's client table. The generation changes whenever the
 * occupant goes, so a late io_uring completion or a finished run for a
 * departed client is recognised and ignored.
 */
struct client_slot {
	struct session *s; /* NULL: free */
	uint32_t gen;
};

struct session_params {
	const struct moe_hello *hello;
	uint32_t id;
	int sock;
	pid_t pid;
	uid_t uid;
	bool eventfd_doorbell;
	/* region info fields moed fills in: model shape and limits */
	const struct moe_region_info *model_info;
};

/*
 * Create the region for @p->hello (sizes already checked by ctl_request_parse)
 * and the session around it. Takes ownership of @p->sock on success only.
 */
int session_new(const struct session_params *p, struct session **ret_session);

/*
 * Unmap and close everything; NULL-safe. Returns NULL. The pages of the ring
 * memfd stay as they are: at daemon shutdown a client may still read the
 * results of the batches moed drained.
 */
struct session *session_free(struct session *s);

/*
 * The client's session is over (it hung up, exited, was disconnected or its
 * HELLO failed): free every page of its ring memfd, then session_free(). A
 * client that keeps its ring fd would otherwise keep the pages moed's output
 * writes faulted in, charged to moed's memory cgroup; it reads zeros
 * instead. NULL-safe. Returns NULL.
 */
struct session *session_end(struct session *s);

/* The fds to pass in the HELLO reply: info, ring[, eventfd]; returns how many. */
unsigned session_reply_fds(const struct session *s, int fds[3]);
/* Close the info memfd once the reply is sent (the client has its copy). */
void session_drop_info_fd(struct session *s);

/*
 * Consume SQEs as far as flow control allows: invalid SQEs and NOPs complete
 * at once; FORWARDs go to the pending FIFO, unless @refuse is negative:
 * then every SQE completes at once with it (moed drains: -ESHUTDOWN).
 * Returns how many SQEs were consumed (at most the CQ's free slots, whatever
 * the client writes into seq words meanwhile), or -EPROTO when the client
 * corrupted its CQ head (the caller disconnects it). @now_ns stamps the pending
 * batches. @model_lim holds the model's limits; the arena size is this
 * session's own.
 */
int session_consume(struct session *s, const struct sqe_limits *model_lim, uint64_t now_ns,
		    int refuse);

/* The oldest pending batch, or NULL. */
struct pending_batch *session_pending_peek(struct session *s);
/* Drop the oldest pending batch after its CQE is written (session_complete). */
void session_pending_pop(struct session *s);

/*
 * Write @cqe into the next CQ slot (one the SQE reserved). Published by
 * session_flush(), so a batch of completions costs one seq store per CQE and
 * at most one wake-up.
 */
void session_complete(struct session *s, const struct moe_cqe *cqe, bool was_pending);

/* Publish written CQEs and wake the client if it sleeps on its CQ. */
void session_flush(struct session *s);

/* The consumer side of the NEED_WAKEUP handshake on this client's SQ. */
bool session_prepare_sleep(struct session *s, uint32_t *ret_futex_val);
void session_clear_sleep(struct session *s);

/* Rate limit for per-client error messages: true while logging is allowed. */
bool session_log_allowed(struct session *s, uint64_t now_ns);
