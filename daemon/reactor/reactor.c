/* SPDX-License-Identifier: MIT */
/* reactor: the io_uring loop, watchers, adaptive polling and client lifetimes; see reactor.h. */
#include "reactor/reactor.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "reactor/reactor_internal.h"
#include "reactor/uring_futex.h"
#include "router/router_config.h"
#include "util/log.h"

#define RING_ENTRIES 1024
#define TICK_NS (100ull * 1000 * 1000) /* the timerfd: lost-wake-up sweep, expiries */
/*
 * How long the reactor keeps polling for a run it handed over before it
 * sleeps, whatever poll_us says: a decode step's run takes microseconds, and
 * catching its end by polling saves the eventfd's wake-up of a sleeping
 * reactor, as the runner's own spin (executor.c) saves the wake-up of a
 * sleeping runner. Equal to those spins.
 */
#define RUN_POLL_NS (50ull * 1000)

uint64_t reactor_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct io_uring_sqe *reactor_get_sqe(struct reactor *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	if (!sqe) {
		/* the submission ring is full: hand what is queued to the kernel */
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
	}
	r->needs_submit = true;
	return sqe;
}

void reactor_cancel(struct reactor *r, uint64_t ud)
{
	struct io_uring_sqe *sqe;

	if (!r->ring_ready)
		return;
	sqe = reactor_get_sqe(r);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, ud, 0);
	io_uring_sqe_set_data64(sqe, ud_make(WATCH_IGNORE, 0, 0));
}

int reactor_watcher_add(struct reactor *r, const char *name, watch_fn fn, void *arg)
{
	/* id 0 is WATCH_IGNORE */
	if (r->n_watchers == 0)
		r->n_watchers = 1;
	if (r->n_watchers == MAX_WATCHERS)
		return -ENOSPC;
	r->watchers[r->n_watchers] = (struct watcher){ .name = name, .fn = fn, .arg = arg };
	return (int)r->n_watchers++;
}

static int reactor_model_tables(struct reactor *r, const char *model_name, struct diag *d)
{
	uint32_t n = moe_model_n_layers(r->model);
	struct moe_region_info *mi = &r->model_info;

	r->layer_slots = calloc(n ? n : 1, sizeof(*r->layer_slots));
	r->layer_experts = calloc(n ? n : 1, sizeof(*r->layer_experts));
	r->layer_d_model = calloc(n ? n : 1, sizeof(*r->layer_d_model));
	if (!r->layer_slots || !r->layer_experts || !r->layer_d_model)
		return diag_set(d, -ENOMEM, "out of memory");
	memset(mi, 0, sizeof(*mi));
	for (uint32_t l = 0; l < n; l++) {
		const struct moe_layer *L = moe_model_layer(r->model, l);

		if (!L)
			continue;
		r->layer_slots[l] = router_config_slots(&L->router);
		r->layer_experts[l] = L->n_experts;
		r->layer_d_model[l] = L->d_model;
		mi->d_model = L->d_model;
		if (L->n_experts > mi->max_experts)
			mi->max_experts = L->n_experts;
		if (r->layer_slots[l] > mi->max_slots)
			mi->max_slots = r->layer_slots[l];
	}
	if (!mi->d_model)
		return diag_set(d, -EINVAL, "the model has no MoE layer");
	mi->n_layers = n;
	mi->max_tokens = r->cfg->max_tokens;
	snprintf(mi->model_name, sizeof(mi->model_name), "%s", model_name);

	r->limits = (struct sqe_limits){ .n_layers = n,
					 .max_tokens = r->cfg->max_tokens,
					 .max_experts = mi->max_experts,
					 .layer_slots = r->layer_slots,
					 .layer_experts = r->layer_experts,
					 .layer_d_model = r->layer_d_model };
	return 0;
}

static int reactor_setup_fds(struct reactor *r, struct diag *d)
{
	struct itimerspec tick = { .it_interval = { 0, (long)TICK_NS },
				   .it_value = { 0, (long)TICK_NS } };
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	r->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (r->signal_fd < 0)
		return diag_set(d, -errno, "signalfd: %s", strerror(errno));
	r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (r->timer_fd < 0)
		return diag_set(d, -errno, "timerfd_create: %s", strerror(errno));
	if (timerfd_settime(r->timer_fd, 0, &tick, NULL) < 0)
		return diag_set(d, -errno, "timerfd_settime: %s", strerror(errno));
	return 0;
}

static int reactor_arm_read(struct reactor *r, int fd, void *buf, unsigned len, uint32_t watcher)
{
	struct io_uring_sqe *sqe = reactor_get_sqe(r);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, fd, buf, len, 0);
	io_uring_sqe_set_data64(sqe, ud_make(watcher, 0, 0));
	return 0;
}

/* ---- other hosts (peers/) ---- */

/* One of the peers' fds is readable: peers_poll() in the loop does the work. */
static void reactor_on_peers(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	(void)arg, (void)gen, (void)res;
	if (slot < 3) {
		r->peers_fd_armed[slot] = false;
		peers_fd_ready(r->peers, slot);
	}
}

/*
 * UCX's protocol before a sleep: arm the worker (busy: events came in, poll
 * again), then wait on its fd. The inbox and served-request eventfds are
 * polled the same way; peers_poll() drains them.
 */
static bool reactor_peers_prepare_sleep(struct reactor *r)
{
	if (peers_arm(r->peers) == -EAGAIN)
		return false;
	for (uint32_t i = 0; i < 3; i++) {
		struct io_uring_sqe *sqe;

		if (r->peers_fd_armed[i])
			continue;
		sqe = reactor_get_sqe(r);
		if (!sqe)
			return false;
		io_uring_prep_poll_add(sqe, r->peers_fd[i], POLLIN);
		io_uring_sqe_set_data64(sqe, ud_make(r->w.peers, i, 0));
		r->peers_fd_armed[i] = true;
	}
	return true;
}

static int reactor_peers_new(struct reactor *r, struct diag *d)
{
	const struct expert_store_info *info = expert_store_info(r->store);
	struct peers_opts o = { .cfg = r->cfg, .model = r->model, .identity_hex = info->identity,
				.model_path = expert_store_model_path(r->store),
				.engine = r->engine, .store = r->store };
	char host[64] = "moed";
	char name[32];
	int ret;

	if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "moed");
	snprintf(name, sizeof(name), "%.31s", r->cfg->listen[0] ? r->cfg->listen : host);
	o.name = name;
	ret = peers_new(&o, &r->peers, d);
	if (ret < 0 || !r->peers)
		return ret;
	peers_fds(r->peers, r->peers_fd);
	ret = reactor_watcher_add(r, "peers", reactor_on_peers, NULL);
	if (ret < 0)
		return diag_set(d, ret, "no room for the peers' watcher");
	r->w.peers = (uint32_t)ret;
	return 0;
}

/* ---- the reactor's own watchers ---- */

/* Batches consumed from the clients' rings that wait for a run (slow path: the drain log). */
static uint32_t reactor_pending_count(const struct reactor *r)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < r->cfg->max_clients; i++)
		if (r->clients[i].s)
			n += r->clients[i].s->pending_count;
	return n;
}

static void reactor_on_signal(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	struct signalfd_siginfo si;

	(void)arg, (void)slot, (void)gen;
	if (res == (int)sizeof(si)) {
		memcpy(&si, r->signal_buf, sizeof(si));
		if (si.ssi_signo == SIGHUP) {
			reactor_reload(r);
		} else if (!r->stopping) {
			uint32_t queued = reactor_pending_count(r);

			r->stopping = true;
			r->stop_signal = (int)si.ssi_signo;
			log_info(
			    "%s: draining %u queued batches and %u runs in flight, then exiting",
			    strsignal((int)si.ssi_signo), queued, sched_in_flight(r->sched));
			reactor_service_stopping(queued, sched_in_flight(r->sched));
		}
	}
	if (reactor_arm_read(r, r->signal_fd, r->signal_buf, sizeof(struct signalfd_siginfo),
			     r->w.signal) < 0)
		log_error("cannot re-arm the signalfd, ignoring");
}

static void reactor_on_timer(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	(void)arg, (void)slot, (void)gen, (void)res;
	uint64_t now = reactor_now_ns();

	ctl_on_tick(r, now);
	reactor_service_tick(r, now);
	if (r->peers)
		peers_tick(r->peers, now);
	if (r->cfg->rebalance_interval_ms) {
		const struct rebalance_opts o = { .hot_percent = r->cfg->rebalance_hot_percent };

		rebalancer_tick(r->rebalancer, r->store, sched_layer_stats(r->sched), now,
				r->cfg->rebalance_interval_ms, &o);
	}
	if (reactor_arm_read(r, r->timer_fd, &r->timer_buf, sizeof(r->timer_buf), r->w.timer) < 0)
		log_error("cannot re-arm the timerfd, ignoring");
}

/* The executor finished a run: the loop completes it; only re-arm here. */
static void reactor_on_run_done(struct reactor *r, void *arg, uint32_t slot, uint32_t gen,
				int res)
{
	(void)arg, (void)slot, (void)gen, (void)res;
	if (reactor_arm_read(r, sched_event_fd(r->sched), &r->run_done_buf,
			     sizeof(r->run_done_buf), r->w.run_done) < 0)
		log_error("cannot re-arm the run-done eventfd, ignoring");
}

/* The client whose slot and generation an event names, or NULL when it is gone. */
static struct session *reactor_client(struct reactor *r, uint32_t slot, uint32_t gen)
{
	struct client_slot *cs;

	if (slot >= r->cfg->max_clients)
		return NULL;
	cs = &r->clients[slot];
	return cs->s && (cs->gen & 0xffffffu) == gen ? cs->s : NULL;
}

static void reactor_on_doorbell(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	struct session *s = reactor_client(r, slot, gen);

	(void)arg, (void)res;
	if (!s)
		return;
	s->doorbell_armed = false;
	if (s->eventfd >= 0) {
		uint64_t v;

		/* drain the counter so the next poll waits for a new write */
		if (read(s->eventfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_warning("client %u: eventfd read: %m, ignoring", s->id);
	}
}

static void reactor_on_hangup(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	(void)arg;
	if (res != -ECANCELED && reactor_client(r, slot, gen))
		reactor_drop_client(r, slot, "hung up");
}

static void reactor_on_pidfd(struct reactor *r, void *arg, uint32_t slot, uint32_t gen, int res)
{
	(void)arg;
	if (res != -ECANCELED && reactor_client(r, slot, gen))
		reactor_drop_client(r, slot, "exited");
}

static int reactor_watch_own(struct reactor *r, const char *name, watch_fn fn, uint32_t *ret_id)
{
	int id = reactor_watcher_add(r, name, fn, NULL);

	if (id < 0)
		return id;
	*ret_id = (uint32_t)id;
	return 0;
}

static int reactor_register_watchers(struct reactor *r, struct diag *d)
{
	if (reactor_watch_own(r, "signal", reactor_on_signal, &r->w.signal) < 0 ||
	    reactor_watch_own(r, "timer", reactor_on_timer, &r->w.timer) < 0 ||
	    reactor_watch_own(r, "run-done", reactor_on_run_done, &r->w.run_done) < 0 ||
	    reactor_watch_own(r, "doorbell", reactor_on_doorbell, &r->w.doorbell) < 0 ||
	    reactor_watch_own(r, "hangup", reactor_on_hangup, &r->w.hangup) < 0 ||
	    reactor_watch_own(r, "pidfd", reactor_on_pidfd, &r->w.pidfd) < 0 ||
	    ctl_register(r) < 0)
		return diag_set(d, -ENOSPC, "the reactor's watcher table is full");
	return 0;
}

int reactor_new(const struct moed_config *cfg, int listen_fd, struct expert_store *store,
		const char *model_name, struct engine *engine, struct reactor **ret_reactor,
		struct diag *d)
{
	struct sched_params sp;
	struct reactor *r;
	int ret;

	r = calloc(1, sizeof(*r));
	if (!r)
		return diag_set(d, -ENOMEM, "out of memory");
	r->cfg = cfg;
	r->store = store;
	r->model = expert_store_model(store);
	r->engine = engine;
	r->listen_fd = -1;
	r->signal_fd = -1;
	r->timer_fd = -1;
	r->n_conns = cfg->max_clients < 64 ? 64 : cfg->max_clients;
	r->clients = calloc(cfg->max_clients, sizeof(*r->clients));
	r->live = calloc(cfg->max_clients, sizeof(*r->live));
	r->conns = calloc(r->n_conns, sizeof(*r->conns));
	if (!r->clients || !r->live || !r->conns) {
		ret = diag_set(d, -ENOMEM, "out of memory");
		goto err;
	}
	for (uint32_t i = 0; i < r->n_conns; i++)
		r->conns[i].fd = -1;
	if (ctl_admission_init(r) < 0) {
		ret = diag_set(d, -ENOMEM, "out of memory");
		goto err;
	}
	ret = reactor_model_tables(r, model_name, d);
	if (ret < 0)
		goto err;
	ret = reactor_register_watchers(r, d);
	if (ret < 0)
		goto err;
	ret = reactor_peers_new(r, d);
	if (ret < 0)
		goto err;
	sp = (struct sched_params){ .cfg = cfg, .store = store, .engine = engine,
				    .clients = r->clients, .live = r->live,
				    .layer_slots = r->layer_slots,
				    .max_experts = r->model_info.max_experts, .peers = r->peers };
	ret = sched_new(&sp, &r->sched, d);
	if (ret < 0)
		goto err;
	/* made even while off: rebalance_interval_ms can change on reload */
	if (rebalancer_new(sched_layer_stats(r->sched), moe_model_n_layers(r->model),
			   &r->rebalancer) < 0) {
		ret = diag_set(d, -ENOMEM, "out of memory");
		goto err;
	}
	ret = io_uring_queue_init(RING_ENTRIES, &r->ring, 0);
	if (ret < 0) {
		ret = diag_set(d, ret, "io_uring_queue_init: %s", strerror(-ret));
		goto err;
	}
	r->ring_ready = true;
	r->futex_doorbells = cfg->doorbell != DOORBELL_EVENTFD && uring_futex_probe(&r->ring);
	if (cfg->doorbell == DOORBELL_FUTEX && !r->futex_doorbells) {
		ret = diag_set(d, -EOPNOTSUPP, "doorbell = futex, but this kernel's io_uring has "
					       "no IORING_OP_FUTEX_WAIT (use auto or eventfd)");
		goto err;
	}
	ret = reactor_setup_fds(r, d);
	if (ret < 0)
		goto err;
	r->listen_fd = listen_fd;
	r->t_start_ns = reactor_now_ns();
	*ret_reactor = r;
	return 0;
err:
	reactor_free(r);
	return ret;
}

const struct layer_stats *reactor_layer_stats(const struct reactor *r)
{
	return sched_layer_stats(r->sched);
}

struct reactor *reactor_free(struct reactor *r)
{
	if (!r)
		return NULL;
	/* first: runners may still compute; their runs reference no session */
	sched_free(r->sched);
	/* after the runners: none of them waits on a peer any more */
	peers_free(r->peers);
	rebalancer_free(r->rebalancer);
	if (r->clients)
		for (uint32_t i = 0; i < r->cfg->max_clients; i++)
			r->clients[i].s = session_free(r->clients[i].s);
	if (r->conns)
		ctl_close_all_conns(r);
	if (r->ring_ready)
		io_uring_queue_exit(&r->ring);
	if (r->listen_fd >= 0)
		close(r->listen_fd);
	if (r->signal_fd >= 0)
		close(r->signal_fd);
	if (r->timer_fd >= 0)
		close(r->timer_fd);
	free(r->layer_experts);
	free(r->layer_slots);
	free(r->layer_d_model);
	free(r->conns);
	free(r->conn_peers);
	free(r->clients);
	free(r->live);
	free(r);
	return NULL;
}

int reactor_arm_client_watches(struct reactor *r, uint32_t slot)
{
	struct client_slot *cs = &r->clients[slot];
	struct io_uring_sqe *sqe;

	/* hang-up of the control connection: every kernel, valgrind too */
	sqe = reactor_get_sqe(r);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, cs->s->sock, POLLRDHUP | POLLHUP | POLLERR | POLLIN);
	io_uring_sqe_set_data64(sqe, ud_make(r->w.hangup, slot, cs->gen));
	if (cs->s->pidfd >= 0) {
		sqe = reactor_get_sqe(r);
		if (!sqe)
			return -EBUSY;
		io_uring_prep_poll_add(sqe, cs->s->pidfd, POLLIN);
		io_uring_sqe_set_data64(sqe, ud_make(r->w.pidfd, slot, cs->gen));
	}
	return 0;
}

void reactor_drop_client(struct reactor *r, uint32_t slot, const char *why)
{
	struct client_slot *cs = &r->clients[slot];
	struct session *s = cs->s;

	if (!s)
		return;
	log_info("client %u (%s, pid %d) %s: %u batches discarded%s", s->id, s->name, (int)s->pid,
		 why, s->pending_count, s->run_in_flight ? ", one in flight" : "");
	/*
	 * Its queued batches are discarded with the session. A batch in flight
	 * computes from the run's private copy of its rows and finds the slot's
	 * generation changed when it completes, so its results go nowhere.
	 * The waits in io_uring are cancelled, and the generation bump makes
	 * any completion still on its way look stale.
	 */
	reactor_cancel(r, ud_make(r->w.doorbell, slot, cs->gen));
	reactor_cancel(r, ud_make(r->w.hangup, slot, cs->gen));
	reactor_cancel(r, ud_make(r->w.pidfd, slot, cs->gen));
	cs->gen++;
	cs->s = session_end(s);
	for (uint32_t k = 0; k < r->n_clients; k++)
		if (r->live[k] == slot) {
			r->live[k] = r->live[--r->n_clients];
			break;
		}
}

void reactor_client_add(struct reactor *r, uint32_t slot, struct session *s)
{
	r->clients[slot].s = s;
	r->live[r->n_clients++] = slot;
}

static void reactor_arm_doorbell(struct reactor *r, uint32_t slot, uint32_t futex_val)
{
	struct client_slot *cs = &r->clients[slot];
	struct io_uring_sqe *sqe;

	if (cs->s->doorbell_armed)
		return;
	sqe = reactor_get_sqe(r);
	if (!sqe)
		return; /* the tick sweeps this client's ring instead */
	if (cs->s->eventfd >= 0)
		io_uring_prep_poll_add(sqe, cs->s->eventfd, POLLIN);
	else
		uring_prep_futex_wait(sqe, shm_ring_futex_word(&cs->s->sq), futex_val);
	io_uring_sqe_set_data64(sqe, ud_make(r->w.doorbell, slot, cs->gen));
	cs->s->doorbell_armed = true;
}

static void reactor_handle_cqe(struct reactor *r, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	uint32_t id = ud_watcher(ud);

	if (id == WATCH_IGNORE || id >= r->n_watchers)
		return;
	r->watchers[id].fn(r, r->watchers[id].arg, ud_slot(ud), ud_gen(ud), cqe->res);
}

/* Handle every completion already in the CQ ring (no syscall). May drop clients. */
static unsigned reactor_handle_ready(struct reactor *r)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&r->ring, head, cqe)
	{
		reactor_handle_cqe(r, cqe);
		n++;
	}
	io_uring_cq_advance(&r->ring, n);
	return n;
}

/* Consume every client's SQ; returns how many SQEs were taken. */
static int reactor_sweep(struct reactor *r, uint64_t now_ns)
{
	/* draining: what clients submit from now on is refused, never queued */
	int refuse = r->stopping ? -ESHUTDOWN : 0, total = 0;

	/* backwards: a client dropped here swaps the last live slot into k */
	for (uint32_t k = r->n_clients; k-- > 0;) {
		uint32_t i = r->live[k];
		struct session *s = r->clients[i].s;
		uint64_t rejected;
		int n;

		rejected = s->stats.rejected;
		n = session_consume(s, &r->limits, now_ns, refuse);
		r->totals.rejected += s->stats.rejected - rejected;
		if (n < 0) {
			r->totals.clients_dropped_corrupt++;
			reactor_drop_client(r, i, "corrupted its rings, disconnected");
			continue;
		}
		total += n;
	}
	return total;
}

static void reactor_flush_all(struct reactor *r)
{
	for (uint32_t k = 0; k < r->n_clients; k++)
		session_flush(r->clients[r->live[k]].s);
}

static bool reactor_has_pending(const struct reactor *r)
{
	for (uint32_t k = 0; k < r->n_clients; k++)
		if (r->clients[r->live[k]].s->pending_count)
			return true;
	return false;
}

/*
 * Tell every client and the runners we are about to sleep, and arm each
 * client's doorbell. False when a client pushed work or a run finished in
 * the meantime (then do not sleep).
 */
static bool reactor_prepare_sleep(struct reactor *r)
{
	/* runs that finish from now on write the run-done eventfd */
	bool sleep_ok = sched_prepare_sleep(r->sched);

	for (uint32_t k = 0; k < r->n_clients; k++) {
		uint32_t i = r->live[k], v;
		struct session *s = r->clients[i].s;

		if (!session_prepare_sleep(s, &v)) {
			sleep_ok = false;
			continue;
		}
		reactor_arm_doorbell(r, i, v);
	}
	return sleep_ok;
}

static void reactor_clear_sleep(struct reactor *r)
{
	sched_clear_sleep(r->sched); /* polling: finished runs are seen without the eventfd */
	for (uint32_t k = 0; k < r->n_clients; k++)
		session_clear_sleep(r->clients[r->live[k]].s);
}

static int reactor_wait(struct reactor *r, uint64_t wait_ns)
{
	struct __kernel_timespec ts = { .tv_sec = (long long)(wait_ns / 1000000000ull),
					.tv_nsec = (long long)(wait_ns % 1000000000ull) };
	struct io_uring_cqe *cqe;
	int ret;

	ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, wait_ns ? &ts : NULL, NULL);
	r->needs_submit = false;
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		return ret;
	return 0;
}

static int reactor_arm_own(struct reactor *r)
{
	int ret = ctl_arm_accept(r);

	if (ret < 0)
		return log_errno(ret, "cannot arm accept: %m");
	if (reactor_arm_read(r, r->signal_fd, r->signal_buf, sizeof(struct signalfd_siginfo),
			     r->w.signal) < 0 ||
	    reactor_arm_read(r, r->timer_fd, &r->timer_buf, sizeof(r->timer_buf), r->w.timer) < 0 ||
	    reactor_arm_read(r, sched_event_fd(r->sched), &r->run_done_buf,
			     sizeof(r->run_done_buf), r->w.run_done) < 0)
		return log_errno(-EBUSY, "cannot arm the signalfd, timerfd and run-done eventfd");
	return 0;
}

int reactor_run(struct reactor *r)
{
	int ret;

	ret = reactor_arm_own(r);
	if (ret < 0)
		return ret;
	reactor_service_start(r, reactor_now_ns());
	log_info("doorbells: %s; %u runs in flight at most",
		 r->futex_doorbells ? "io_uring futex wait" : "eventfd polled by io_uring",
		 r->cfg->runs_in_flight);

	for (;;) {
		uint64_t now = reactor_now_ns(), wait_ns = 0;
		uint64_t poll_ns = (uint64_t)r->cfg->poll_us * 1000; /* changes on reload */
		uint64_t ping_ns;
		int worked;

		reactor_service_pass(r, now);
		/* one pass: every client's SQEs, finished runs, new runs, CQEs out */
		worked = reactor_sweep(r, now);
		if (r->peers)
			worked += peers_poll(r->peers, now);
		worked += sched_complete_done(r->sched, now);
		worked += sched_start_ready(r->sched, r->n_clients, now, r->stopping, &wait_ns);
		reactor_flush_all(r);
		if (r->stopping && r->peers)
			peers_stopping(r->peers);
		if (r->stopping && !reactor_has_pending(r) && !sched_in_flight(r->sched) &&
		    !(r->peers && peers_busy(r->peers)))
			break;
		if (r->needs_submit) {
			io_uring_submit(&r->ring);
			r->needs_submit = false;
		}
		now = reactor_now_ns();
		if (worked)
			r->last_work_ns = now;
		if (reactor_handle_ready(r) || worked)
			continue;
		if (sched_in_flight(r->sched) || (r->peers && peers_in_flight(r->peers))) {
			/*
			 * Nothing to do but wait for a run: let a runner that
			 * shares this CPU compute (on a small machine a spinning
			 * client and this loop can hold every CPU), and poll for
			 * its end a while before sleeping.
			 */
			sched_yield();
			if (now - r->last_work_ns < (poll_ns > RUN_POLL_NS ? poll_ns : RUN_POLL_NS))
				continue;
		}
		/* adaptive polling: right after work, more is likely to follow */
		if (now - r->last_work_ns < poll_ns || (wait_ns && wait_ns < poll_ns))
			continue;
		if (r->peers && !reactor_peers_prepare_sleep(r))
			continue;
		if (!reactor_prepare_sleep(r)) {
			reactor_clear_sleep(r);
			continue;
		}
		/* wake in time for the watchdog's next ping (wait_ns 0: no deadline) */
		ping_ns = service_watchdog_sleep_ns(&r->watchdog, now);
		if (ping_ns < (wait_ns ? wait_ns : UINT64_MAX))
			wait_ns = ping_ns + 1; /* + 1: 0 would mean no deadline */
		ret = reactor_wait(r, wait_ns);
		reactor_clear_sleep(r);
		if (ret < 0)
			return log_errno(ret, "io_uring wait: %m");
		reactor_handle_ready(r);
	}
	log_info("drained; %llu batches, %llu tokens served",
		 (unsigned long long)sched_totals(r->sched)->batches,
		 (unsigned long long)sched_totals(r->sched)->tokens);
	return 0;
}
