/* SPDX-License-Identifier: MIT */
/*
 * ctl_socket: the control socket's side of the reactor: accepting, reading
 * each connection's first message, answering HELLO (a session and its
 * region) and STATUS (a JSON snapshot in a sealed memfd). Who may wait and
 * who may hold a session is decided by admission.c; this file applies it,
 * rate-limits every line a peer can provoke, and stops accepting while moed
 * is out of fds instead of spinning on the error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/ctl_reply.h"
#include "control/status.h"
#include "reactor/reactor_internal.h"
#include "session/hello.h"
#include "util/log.h"

/* At most 5 lines about refused or closed connections per 10 s, over all peers. */
#define CONN_LOG_INTERVAL_NS (10ull * 1000000000ull)
#define CONN_LOG_BURST       5

int ctl_admission_init(struct reactor *r)
{
	r->conn_peers = calloc(r->n_conns, sizeof(*r->conn_peers));
	if (!r->conn_peers)
		return -ENOMEM;
	adm_limits_init(&r->adm, r->n_conns, moed_config_clients_per_process(r->cfg),
			moed_config_clients_per_uid(r->cfg), geteuid());
	r->conn_log_rl = (struct ratelimit)RATELIMIT_INIT(CONN_LOG_INTERVAL_NS, CONN_LOG_BURST);
	return 0;
}

static void ctl_log_suppressed(unsigned n)
{
	if (n)
		log_warning("%u more lines about refused or closed connections suppressed", n);
}

/*
 * A line about a refused or closed connection: any peer can provoke these
 * as fast as it can connect, so they share one global rate limit (a
 * per-peer one would not hold against many peers).
 */
__attribute__((format(printf, 3, 4))) static void ctl_log_conn(struct reactor *r,
								 enum log_level level,
								 const char *fmt, ...)
{
	char line[512];
	unsigned suppressed;
	bool allowed;
	va_list ap;

	allowed = ratelimit_below(&r->conn_log_rl, reactor_now_ns(), &suppressed);
	ctl_log_suppressed(suppressed);
	if (!allowed)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_emit(level, "%s", line);
}

int ctl_arm_accept(struct reactor *r)
{
	struct io_uring_sqe *sqe = reactor_get_sqe(r);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	io_uring_sqe_set_data64(sqe, ud_make(r->w.accept, 0, 0));
	return 0;
}

static int ctl_arm_recv(struct reactor *r, uint32_t slot)
{
	struct pending_conn *c = &r->conns[slot];
	struct io_uring_sqe *sqe = reactor_get_sqe(r);

	if (!sqe)
		return -EBUSY;
	/* MSG_TRUNC: the result is the message's real length, so an oversized one is seen */
	io_uring_prep_recv(sqe, c->fd, c->buf, sizeof(c->buf), MSG_TRUNC);
	io_uring_sqe_set_data64(sqe, ud_make(r->w.conn_recv, slot, c->gen));
	return 0;
}

static void ctl_conn_close(struct reactor *r, uint32_t slot)
{
	struct pending_conn *c = &r->conns[slot];

	if (c->fd < 0)
		return;
	/*
	 * Its recv may still be pending in io_uring, which holds the socket
	 * open past close(): shut it down so the peer sees EOF now, and cancel
	 * the recv so the kernel lets go of it.
	 */
	shutdown(c->fd, SHUT_RDWR);
	reactor_cancel(r, ud_make(r->w.conn_recv, slot, c->gen));
	close(c->fd);
	c->fd = -1;
	c->gen++;
	r->conn_peers[slot].used = false;
}

void ctl_close_all_conns(struct reactor *r)
{
	for (uint32_t i = 0; i < r->n_conns; i++)
		ctl_conn_close(r, i);
}

static const char *const adm_place_why[] = {
	[ADM_PLACE_FREE] = "",
	[ADM_PLACE_EVICT_PID] = "its process has",
	[ADM_PLACE_EVICT_UID] = "its uid has",
	[ADM_PLACE_EVICT_OLDEST] = "all peers have",
};

/* A new connection @fd waits for its first message, if admission finds it a place. */
static void ctl_conn_admit(struct reactor *r, int fd)
{
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	enum adm_place how;
	struct adm_peer *victim;
	int slot;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
		ctl_log_conn(r, LOG_LEVEL_WARNING, "SO_PEERCRED on a new connection: %s; closing it",
			     strerror(errno));
		close(fd);
		return;
	}
	slot = adm_pending_place(&r->adm, r->conn_peers, r->n_conns, cred.pid, cred.uid, &how);
	if (slot < 0) {
		ctl_log_conn(r, LOG_LEVEL_WARNING,
			     "connection of pid %d (uid %d) closed: every waiting slot left is "
			     "reserved for root and moed's uid", (int)cred.pid, (int)cred.uid);
		close(fd);
		return;
	}
	if (how != ADM_PLACE_FREE) {
		victim = &r->conn_peers[slot];
		ctl_log_conn(r, LOG_LEVEL_INFO,
			     "pid %d (uid %d) connects while %s too many silent connections: "
			     "closing the oldest, of pid %d (uid %d)", (int)cred.pid, (int)cred.uid,
			     adm_place_why[how], (int)victim->pid, (int)victim->uid);
		ctl_conn_close(r, (uint32_t)slot);
	}
	r->conns[slot].fd = fd;
	r->conns[slot].t_accepted_ns = reactor_now_ns();
	r->conn_peers[slot] = (struct adm_peer){ .used = true, .pid = cred.pid, .uid = cred.uid,
						 .t_ns = r->conns[slot].t_accepted_ns };
	if (ctl_arm_recv(r, (uint32_t)slot) < 0)
		ctl_conn_close(r, (uint32_t)slot);
}

/*
 * accept failed for want of fds or memory: the next connection in the
 * backlog would fail the same way at once, so re-arming now spins a core
 * (and logs) until something frees. Stop accepting; the tick re-arms every
 * 100 ms (ctl_on_tick). Logged once per episode; the episode ends with the
 * first accept that succeeds.
 */
static bool ctl_accept_starved(int res)
{
	return res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM;
}

static void ctl_accept_pause(struct reactor *r, int res)
{
	r->accept_paused = true;
	r->accept_failures++;
	if (r->accept_starved)
		return;
	r->accept_starved = true;
	log_warning("accept: %s: not accepting connections until resources free up (retrying "
		    "every 100 ms)", strerror(-res));
}

static void ctl_on_accept(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	(void)arg, (void)slot, (void)gen;
	if (res < 0 && ctl_accept_starved(res) && !r->stopping) {
		ctl_accept_pause(r, res);
		return;
	}
	if (res < 0) {
		if (res != -ECANCELED)
			ctl_log_conn(r, LOG_LEVEL_WARNING, "accept: %s, ignoring", strerror(-res));
	} else if (r->stopping) {
		close(res);
	} else {
		if (r->accept_starved) {
			log_info("accepting connections again after %llu failed attempts",
				 (unsigned long long)r->accept_failures);
			r->accept_starved = false;
			r->accept_failures = 0;
		}
		ctl_conn_admit(r, res);
	}
	if (!r->stopping && ctl_arm_accept(r) < 0) {
		log_warning("cannot re-arm accept now; retrying from the tick");
		r->accept_paused = true;
	}
}

/* Close the connections that said nothing for hello_timeout_ms. */
static void ctl_expire_conns(struct reactor *r, uint64_t now_ns)
{
	uint64_t limit = (uint64_t)r->cfg->hello_timeout_ms * 1000000ull;

	for (uint32_t i = 0; i < r->n_conns; i++)
		if (r->conns[i].fd >= 0 && now_ns - r->conns[i].t_accepted_ns > limit) {
			ctl_log_conn(r, LOG_LEVEL_INFO,
				     "connection of pid %d said nothing for %u ms, closing",
				     (int)r->conn_peers[i].pid, r->cfg->hello_timeout_ms);
			ctl_conn_close(r, i); /* its recv completes with an error: stale */
		}
}

void ctl_on_tick(struct reactor *r, uint64_t now_ns)
{
	ctl_expire_conns(r, now_ns);
	/* a flood that stopped still gets its "suppressed" line */
	ctl_log_suppressed(ratelimit_take_suppressed(&r->conn_log_rl, now_ns));
	if (r->accept_paused && !r->stopping && ctl_arm_accept(r) == 0)
		r->accept_paused = false;
}

static void ctl_refuse(struct reactor *r, int fd, int status)
{
	struct moe_hello_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO_REPLY,
			 .size = sizeof(rep) },
		.status = status,
		.abi_major = MOE_ABI_MAJOR,
		.abi_minor = MOE_ABI_MINOR,
		.max_arena_size = r->cfg->max_arena_bytes,
		.max_sq_entries = r->cfg->max_sq_entries,
		.max_tokens = r->cfg->max_tokens,
	};

	r->totals.clients_refused++;
	(void)ctl_send_with_fds(fd, &rep, sizeof(rep), NULL, 0);
}

/* Per-process and per-uid session limits for a HELLO from @cred. 0 or -EUSERS. */
static int ctl_client_admit(struct reactor *r, const struct ucred *cred)
{
	uint32_t n_pid = 0, n_uid = 0;
	const char *why = "";
	int ret;

	for (uint32_t i = 0; i < r->cfg->max_clients; i++) {
		const struct session *s = r->clients[i].s;

		if (!s)
			continue;
		n_pid += s->pid == cred->pid;
		n_uid += s->uid == cred->uid;
	}
	ret = adm_client_check(&r->adm, cred->uid, n_pid, n_uid, &why);
	if (ret < 0)
		ctl_log_conn(r, LOG_LEVEL_WARNING, "client pid %d (uid %d) refused: %s (%u) reached",
			     (int)cred->pid, (int)cred->uid, why,
			     strcmp(why, "max_clients_per_uid") == 0 ? r->adm.clients_per_uid
								      : r->adm.clients_per_pid);
	return ret;
}

static int ctl_free_client_slot(const struct reactor *r)
{
	for (uint32_t i = 0; i < r->cfg->max_clients; i++)
		if (!r->clients[i].s)
			return (int)i;
	return -EUSERS;
}

/* Turn connection @fd into a session; takes @fd over in every case. */
static void ctl_hello(struct reactor *r, int fd, const struct moe_hello *hello)
{
	struct moe_hello_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO_REPLY,
			 .size = sizeof(rep) },
		.abi_major = MOE_ABI_MAJOR,
		.abi_minor = MOE_ABI_MINOR,
		.max_arena_size = r->cfg->max_arena_bytes,
		.max_sq_entries = r->cfg->max_sq_entries,
		.max_tokens = r->cfg->max_tokens,
	};
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	struct session_params p;
	struct session *s;
	int fds[3], slot, ret;
	unsigned n_fds;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
		ctl_log_conn(r, LOG_LEVEL_WARNING, "SO_PEERCRED: %s; refusing the client",
			     strerror(errno));
		ctl_refuse(r, fd, -EACCES);
		close(fd);
		return;
	}
	slot = ctl_client_admit(r, &cred);
	if (slot < 0) {
		ctl_refuse(r, fd, slot);
		close(fd);
		return;
	}
	slot = ctl_free_client_slot(r);
	if (slot < 0) {
		ctl_log_conn(r, LOG_LEVEL_WARNING, "client pid %d refused: max_clients (%u) reached",
			     (int)cred.pid, r->cfg->max_clients);
		ctl_refuse(r, fd, slot);
		close(fd);
		return;
	}
	p = (struct session_params){ .hello = hello, .id = ++r->next_client_id, .sock = fd,
				     .pid = cred.pid, .uid = cred.uid,
				     .eventfd_doorbell = !r->futex_doorbells,
				     .model_info = &r->model_info };
	ret = session_new(&p, &s);
	if (ret < 0) {
		ctl_log_conn(r, LOG_LEVEL_WARNING, "client pid %d refused: cannot create its region: %s",
			     (int)cred.pid, strerror(-ret));
		ctl_refuse(r, fd, ret);
		close(fd);
		return;
	}
	n_fds = session_reply_fds(s, fds);
	rep.client_id = s->id;
	rep.n_fds = n_fds;
	ret = ctl_send_with_fds(fd, &rep, sizeof(rep), fds, n_fds);
	session_drop_info_fd(s);
	if (ret < 0) {
		ctl_log_conn(r, LOG_LEVEL_WARNING, "client pid %d: HELLO reply failed: %s",
			     (int)cred.pid, strerror(-ret));
		session_end(s); /* closes fd */
		return;
	}
	reactor_client_add(r, (uint32_t)slot, s);
	r->totals.clients_served++;
	if (reactor_arm_client_watches(r, (uint32_t)slot) < 0) {
		reactor_drop_client(r, (uint32_t)slot, "could not be watched");
		return;
	}
	log_info("client %u (%s, pid %d, uid %d) connected: sq %u, cq %u, arena %llu bytes",
		 s->id, s->name, (int)s->pid, (int)s->uid, s->region.info.sq_entries,
		 s->region.info.cq_entries, (unsigned long long)s->region.info.arena_size);
}

/* What STATUS shows: the reactor's and the scheduler's counters, every client. */
static void ctl_status_view(struct reactor *r, struct status_client *cl, struct status_view *v)
{
	const struct sched_totals *t = sched_totals(r->sched);
	uint32_t n = 0;

	for (uint32_t i = 0; i < r->cfg->max_clients && n < r->n_clients; i++) {
		const struct session *s = r->clients[i].s;

		if (!s)
			continue;
		cl[n++] = (struct status_client){
			.id = s->id, .name = s->name, .pid = s->pid, .uid = s->uid,
			.batches = s->stats.batches, .tokens = s->stats.tokens,
			.errors = s->stats.errors, .merged = s->stats.merged,
			.dropped = s->stats.dropped, .queued = s->pending_count,
			.in_flight = s->run_in_flight,
		};
	}
	*v = (struct status_view){
		.uptime_s = (double)(reactor_now_ns() - r->t_start_ns) / 1e9,
		.store = r->store,
		.engine = r->engine,
		.peers = r->peers,
		.now_ns = reactor_now_ns(),
		.doorbell = r->futex_doorbells ? "futex" : "eventfd",
		.merge_window_us = r->cfg->merge_window_us,
		.poll_us = r->cfg->poll_us,
		.workers = engine_n_workers(r->engine),
		.runs_in_flight = r->cfg->runs_in_flight,
		.model_name = r->model_info.model_name,
		.n_layers = r->model_info.n_layers,
		.d_model = r->model_info.d_model,
		.max_experts = r->model_info.max_experts,
		.max_slots = r->model_info.max_slots,
		.clients = r->n_clients,
		.clients_served = r->totals.clients_served,
		.clients_refused = r->totals.clients_refused,
		.clients_corrupt = r->totals.clients_dropped_corrupt,
		.batches = t->batches,
		.tokens = t->tokens,
		.errors = t->errors,
		.rejected = r->totals.rejected,
		.dropped = t->dropped,
		.engine_runs = t->engine_runs,
		.merged_batches = t->merged_batches,
		.inline_runs = t->inline_runs,
		.runs_active = sched_in_flight(r->sched),
		.reloads = r->reloads,
		.reloads_refused = r->reloads_refused,
		.reload_message = r->reload_message,
		.cfg = r->cfg,
		.client = cl,
		.n_client = n,
		.layers = sched_layer_stats(r->sched),
	};
}

/*
 * Answer STATUS with a sealed memfd holding the JSON; takes @fd over. The
 * requester's uid (SO_PEERCRED) decides which clients' details it sees.
 */
static void ctl_status(struct reactor *r, int fd)
{
	struct status_view view;
	struct status_client *clients = NULL;
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	char *json = NULL;
	size_t len = 0;
	int ret;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
		ret = -errno;
		goto reply;
	}
	clients = calloc(r->n_clients ? r->n_clients : 1, sizeof(*clients));
	if (!clients) {
		ret = -ENOMEM;
		goto reply;
	}
	ctl_status_view(r, clients, &view);
	ret = status_json(&view, cred.uid, &json, &len);
reply:
	if (ctl_send_status(fd, ret, json, len) < 0)
		ctl_log_conn(r, LOG_LEVEL_INFO, "status reply not delivered, ignoring");
	free(clients);
	free(json);
	close(fd);
}

static void ctl_on_recv(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	struct hello_limits lim = { .max_sq_entries = r->cfg->max_sq_entries,
				    .max_arena_bytes = r->cfg->max_arena_bytes };
	struct pending_conn *c;
	struct ctl_request req;
	const char *why = "";
	int fd, ret;

	(void)arg;
	if (slot >= r->n_conns)
		return;
	c = &r->conns[slot];
	if (c->fd < 0 || (c->gen & 0xffffffu) != gen)
		return; /* expired and closed meanwhile */
	fd = c->fd;
	c->fd = -1; /* the connection leaves the waiting list in every case */
	c->gen++;
	r->conn_peers[slot].used = false;
	if (res <= 0 || r->stopping) {
		close(fd);
		return;
	}
	ret = ctl_request_parse(c->buf, res > CONN_BUF_SIZE ? (size_t)-1 : (size_t)res, &lim,
				&req, &why);
	if (ret == -EPROTONOSUPPORT) {
		char line[128];

		hello_abi_refusal(c->buf, (size_t)res, line, sizeof(line));
		ctl_log_conn(r, LOG_LEVEL_WARNING, "refusing a client: %s", line);
	} else if (ret < 0) {
		ctl_log_conn(r, LOG_LEVEL_INFO, "refusing a connection: %s (%s)", why,
			     strerror(-ret));
	}
	if (ret < 0) {
		if (ret != -EPROTO)
			ctl_refuse(r, fd, ret);
		close(fd);
		return;
	}
	if (req.kind == CTL_REQUEST_STATUS)
		ctl_status(r, fd);
	else if (req.kind == CTL_REQUEST_EXPERT_CHANGE)
		ctl_expert_change(r, fd, &req.change);
	else
		ctl_hello(r, fd, &req.hello);
}

int ctl_register(struct reactor *r)
{
	int accept_id = reactor_watcher_add(r, "accept", ctl_on_accept, NULL);
	int recv_id = reactor_watcher_add(r, "conn-recv", ctl_on_recv, NULL);

	if (accept_id < 0 || recv_id < 0)
		return -ENOSPC;
	r->w.accept = (uint32_t)accept_id;
	r->w.conn_recv = (uint32_t)recv_id;
	return 0;
}
