/* SPDX-License-Identifier: MIT */
/* session: one client's region, rings, pending batches and flow control. */
#include "session/session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/log.h"

/* pidfd_open(2): glibc 2.36 has no wrapper in every configuration, so call it. */
static int session_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd < 0 ? -errno : fd;
#else
	(void)pid;
	return -ENOSYS;
#endif
}

int session_new(const struct session_params *p, struct session **ret_session)
{
	struct moe_region_info info = *p->model_info;
	struct session *s;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->sock = -1;
	s->pidfd = -1;
	s->eventfd = -1;
	s->region.info_fd = -1;
	s->region.ring_fd = -1;

	r = shm_region_layout(p->hello->sq_entries, p->hello->cq_entries, p->hello->arena_size,
			      &info);
	if (r < 0)
		goto err_free;
	info.client_id = p->id;
	info.flags = p->eventfd_doorbell ? MOE_REGION_F_EVENTFD_DOORBELL : 0;
	r = shm_region_create(&info, &s->region);
	if (r < 0)
		goto err_free;
	r = shm_ring_init(&s->sq, s->region.sq_ctl, s->region.sqes, info.sq_entries,
			  sizeof(struct moe_sqe), 0);
	if (r < 0)
		goto err_region;
	r = shm_ring_init(&s->cq, s->region.cq_ctl, s->region.cqes, info.cq_entries,
			  sizeof(struct moe_cqe), 0);
	if (r < 0)
		goto err_region;
	s->pending = calloc(info.cq_entries, sizeof(*s->pending));
	if (!s->pending) {
		r = -ENOMEM;
		goto err_region;
	}
	if (p->eventfd_doorbell) {
		s->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (s->eventfd < 0) {
			r = -errno;
			goto err_pending;
		}
	}
	/* a missing pidfd is fine: the socket's hang-up still tells us */
	r = session_pidfd_open(p->pid);
	s->pidfd = r >= 0 ? r : -1;

	s->id = p->id;
	s->pid = p->pid;
	s->uid = p->uid;
	memcpy(s->name, p->hello->name, sizeof(s->name));
	s->name[sizeof(s->name) - 1] = '\0';
	s->sock = p->sock;
	*ret_session = s;
	return 0;

err_pending:
	free(s->pending);
err_region:
	shm_region_done(&s->region);
err_free:
	free(s);
	return r;
}

/*
 * Free the pages of the client's ring memfd before closing our fd. Pages
 * that moed's output writes faulted in are charged to moed's memory cgroup,
 * and a client that hangs up but keeps its fd would otherwise keep them
 * alive (and charged to us) for as long as it likes. The session is over,
 * so the client reading zeros from its mapping afterwards is fine. Not at
 * daemon shutdown, though (session_free without this): clients may still
 * read the results of the batches the drain completed. The ring
 * memfd is sealed against F_ADD_SEALS, so no client can have added
 * F_SEAL_WRITE to make the punch fail; should it fail anyway, we log and
 * close as before.
 */
static void session_ring_punch(struct session *s)
{
	if (!s->region.sq_ctl || s->region.ring_fd < 0)
		return;
	if (fallocate(s->region.ring_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		      (off_t)s->region.info.ring_size) < 0)
		log_warning("client %u: cannot free its ring memfd's pages: %s, ignoring", s->id,
			    strerror(errno));
}

struct session *session_end(struct session *s)
{
	if (!s)
		return NULL;
	session_ring_punch(s);
	return session_free(s);
}

struct session *session_free(struct session *s)
{
	if (!s)
		return NULL;
	shm_region_done(&s->region);
	if (s->eventfd >= 0)
		close(s->eventfd);
	if (s->pidfd >= 0)
		close(s->pidfd);
	if (s->sock >= 0) {
		/* a poll in io_uring may hold the socket past close(): EOF now */
		shutdown(s->sock, SHUT_RDWR);
		close(s->sock);
	}
	free(s->pending);
	free(s);
	return NULL;
}

unsigned session_reply_fds(const struct session *s, int fds[3])
{
	unsigned n = 0;

	fds[n++] = s->region.info_fd;
	fds[n++] = s->region.ring_fd;
	if (s->eventfd >= 0)
		fds[n++] = s->eventfd;
	return n;
}

void session_drop_info_fd(struct session *s)
{
	/* the daemon never reads the info page back: its private copy is in region.info */
	if (s->region.info_fd >= 0) {
		close(s->region.info_fd);
		s->region.info_fd = -1;
	}
}

/* Of @free_slots CQ slots, those not promised to a batch or holding an unpublished CQE. */
static int session_cq_budget_after(const struct session *s, int free_slots)
{
	uint32_t taken = s->cq_reserved + s->cq_unpublished;

	if (free_slots < 0)
		return free_slots;
	/* a client that moves its head backwards only shrinks its own budget */
	return (uint32_t)free_slots > taken ? (int)((uint32_t)free_slots - taken) : 0;
}

/*
 * CQ slots that neither hold an unreaped CQE nor are promised to a batch.
 * From the private free count while it covers one more slot; the client's
 * CQ head is read again only when it does not (a client that streams reads
 * it about once per CQ's worth of completions).
 */
static int session_cq_budget(struct session *s)
{
	return session_cq_budget_after(s, shm_ring_free_slots(&s->cq, s->cq_reserved +
									   s->cq_unpublished + 1));
}

static void session_complete_at_once(struct session *s, const struct moe_sqe *sqe, int status)
{
	struct moe_cqe cqe = { .user_data = sqe->user_data, .status = status };

	session_complete(s, &cqe, false);
	if (status < 0) {
		s->stats.errors++;
		s->stats.rejected++;
	}
}

int session_consume(struct session *s, const struct sqe_limits *model_lim, uint64_t now_ns,
		    int refuse)
{
	struct sqe_limits lim = *model_lim;
	int consumed = 0;

	lim.arena_size = s->region.info.arena_size; /* the private copy, never the shared page */

	/*
	 * Bounded: every SQE taken holds a CQ slot until after this call (its
	 * CQE is published by session_flush(), its reservation ends when its
	 * run completes), and a client's head can free at most cq.n_entries
	 * slots, so at most that many SQEs are taken whatever the client
	 * writes meanwhile.
	 */
	for (;;) {
		int budget = session_cq_budget(s);
		uint32_t n;

		if (budget < 0)
			return -EPROTO;
		if (budget == 0) {
			if (shm_ring_peek(&s->sq, 1) == 0)
				break;
			/*
			 * CQ full: ask the client to ring once it reaps, and look
			 * again in case it reaped before it could see the request
			 * (shm_ring_producer_wait(): the handshake's both halves
			 * are sequentially consistent).
			 */
			budget = session_cq_budget_after(s, shm_ring_producer_wait(&s->cq));
			if (budget < 0)
				return -EPROTO;
			if (budget == 0)
				break;
		}
		/* the SQEs whose seq words say they are there, as many as the CQ takes */
		n = shm_ring_peek(&s->sq, (uint32_t)budget);
		for (uint32_t i = 0; i < n; i++) {
			struct moe_sqe sqe;
			const char *why = "";
			int r;

			shm_ring_copy_out(&s->sq, i, &sqe);
			r = sqe_validate(&sqe, &lim, &why);
			if (r < 0 && session_log_allowed(s, now_ns))
				log_info("client %u: bad SQE (user_data %llu): %s", s->id,
					 (unsigned long long)sqe.user_data, why);
			if (r < 0 || sqe.opcode == MOE_OP_NOP || refuse < 0) {
				session_complete_at_once(s, &sqe, r < 0 ? r : refuse < 0 ? refuse : 0);
				continue;
			}
			struct pending_batch *pb =
				&s->pending[(s->pending_head + s->pending_count) %
					    s->cq.n_entries];
			pb->sqe = sqe;
			pb->t_consumed_ns = now_ns;
			s->pending_count++;
			s->cq_reserved++;
		}
		if (n)
			shm_ring_consume_release(&s->sq, n);
		consumed += (int)n;
		/* fewer than the budget: the SQ had no more (the rest waits for a pass) */
		if (n < (uint32_t)budget)
			break;
	}
	return consumed;
}

struct pending_batch *session_pending_peek(struct session *s)
{
	return s->pending_count ? &s->pending[s->pending_head] : NULL;
}

void session_pending_pop(struct session *s)
{
	s->pending_head = (s->pending_head + 1) % s->cq.n_entries;
	s->pending_count--;
}

void session_complete(struct session *s, const struct moe_cqe *cqe, bool was_pending)
{
	shm_ring_write(&s->cq, s->cq_unpublished, cqe);
	s->cq_unpublished++;
	if (was_pending)
		s->cq_reserved--;
}

void session_flush(struct session *s)
{
	if (!s->cq_unpublished)
		return;
	if (shm_ring_publish(&s->cq, s->cq_unpublished))
		shm_ring_wake_consumer(&s->cq);
	s->cq_unpublished = 0;
}

bool session_prepare_sleep(struct session *s, uint32_t *ret_futex_val)
{
	return shm_ring_prepare_sleep(&s->sq, ret_futex_val);
}

void session_clear_sleep(struct session *s)
{
	shm_ring_clear_sleep(&s->sq);
}

bool session_log_allowed(struct session *s, uint64_t now_ns)
{
	/* at most 5 lines per client per 10 s: a hostile client cannot flood the journal */
	if (now_ns - s->log_window_ns > 10ull * 1000000000ull) {
		s->log_window_ns = now_ns;
		s->log_in_window = 0;
	}
	return s->log_in_window++ < 5;
}
