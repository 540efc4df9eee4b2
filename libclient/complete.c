/* SPDX-License-Identifier: MIT */
/*
 * complete: take completions off the CQ, and wait for them. moe_wait() spins
 * on the CQ for opts.spin_ns, then sleeps on the CQ futex in slices of at
 * most COMPLETE_SLICE_NS, checking between slices that moed is still there:
 * a daemon that died never wakes the futex, and the slices bound how long the
 * caller waits to learn that (the API promises -ECONNRESET "within a bounded
 * time").
 *
 * One wait, step by step (moe_abi.h, "Sleeping and waking"):
 *
 *   reap                      nothing yet
 *   spin until spin_ns        poll the next CQE's seq word, no syscall
 *   prepare_sleep             v = futex; NEED_WAKEUP on; that seq re-checked
 *   futex_wait(v, <= 50 ms)   moed: seq store, sees NEED_WAKEUP, bumps, wakes
 *   clear_sleep, reap         the completion
 *   (slice over, nothing)     poll(sock): hung up -> -ECONNRESET
 */
#include <errno.h>
#include <time.h>

#include "client_internal.h"
#include "moe_abi.h"
#include "shm_futex.h"

#define COMPLETE_SLICE_NS (50ll * 1000 * 1000)

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static void complete_from_cqe(const struct moe_cqe *cqe, struct moe_completion *out)
{
	*out = (struct moe_completion){
		.user_data = cqe->user_data,
		.status = cqe->status,
		.flags = ((cqe->flags & MOE_CQE_F_MERGED) ? MOE_COMPLETION_MERGED : 0) |
			 ((cqe->flags & MOE_CQE_F_Z_LOSS) ? MOE_COMPLETION_Z_LOSS : 0),
		.n_dropped = cqe->n_dropped,
		.n_sanitized = cqe->n_sanitized,
		.route_k = cqe->route_k,
		.aux_loss = cqe->aux_loss,
		.z_loss = cqe->z_loss,
	};
}

MOE_API int moe_reap(struct moe_client *client, struct moe_completion *ret, unsigned max)
{
	struct moe_cqe cqe;
	unsigned n;

	if (!client || (!ret && max > 0))
		return -EINVAL;
	if (client->dead)
		return -ECONNRESET;

	/* The CQEs whose seq words say they are there; never more than the ring holds. */
	n = shm_ring_peek(&client->session.cq, max);
	if (n == 0)
		return 0;

	for (unsigned i = 0; i < n; i++) {
		shm_ring_copy_out(&client->session.cq, i, &cqe);
		complete_from_cqe(&cqe, &ret[i]);
	}
	/*
	 * If moed stopped consuming the SQ because the CQ was full
	 * (MOE_RING_PRODUCER_WAITING), the bit is cleared and the SQ doorbell
	 * rung (the function holds the handshake's ordering).
	 */
	if (shm_ring_consume_release_resume(&client->session.cq, n))
		client_doorbell_ring(client);
	/* A daemon that posts more completions than we submitted is not our counter's problem. */
	client->in_flight = client->in_flight > n ? client->in_flight - n : 0;
	return (int)n;
}

/* Spin on the CQ until it has an entry (true) or @until passes (false). */
static bool complete_spin(const struct moe_client *c, int64_t until)
{
	unsigned k = 0;

	for (;;) {
		/* The next CQE's seq word: the line moed writes the CQE into. */
		if (shm_ring_peek(&c->session.cq, 1) != 0)
			return true;
		/* The vDSO clock is cheap, but not as cheap as a pause. */
		if ((++k & 63) == 0 && mono_ns() >= until)
			return false;
		cpu_relax();
	}
}

MOE_API int moe_wait(struct moe_client *client, struct moe_completion *ret, unsigned max,
		     int64_t timeout_ns)
{
	int64_t now, deadline = INT64_MAX, spin_end, slice_end;
	bool sliced = false;
	uint32_t v;
	int r;

	if (!client || !ret || max == 0)
		return -EINVAL;

	r = moe_reap(client, ret, max);
	if (r != 0)
		return r;

	now = mono_ns();
	if (timeout_ns >= 0 && timeout_ns < INT64_MAX - now)
		deadline = now + timeout_ns;
	spin_end = client->conf.spin_ns < (uint64_t)(deadline - now)
			   ? now + (int64_t)client->conf.spin_ns
			   : deadline;

	for (;;) {
		if (now >= deadline)
			return -ETIMEDOUT;
		/* Only after a full slice without a completion: no syscall when one is near. */
		if (sliced) {
			r = client_check_alive(client);
			if (r < 0)
				return r;
		}
		slice_end = deadline - now > COMPLETE_SLICE_NS ? now + COMPLETE_SLICE_NS : deadline;

		if (now < spin_end) {
			complete_spin(client, spin_end < slice_end ? spin_end : slice_end);
		} else if (shm_ring_prepare_sleep(&client->session.cq, &v)) {
			/* 0, -EAGAIN (already moved), -ETIMEDOUT, -EINTR: all mean "look again". */
			r = shm_futex_wait(&client->session.cq.ctl->futex, v, slice_end - now);
			shm_ring_clear_sleep(&client->session.cq);
			if (r < 0 && r != -EAGAIN && r != -ETIMEDOUT && r != -EINTR)
				return r;
		}
		sliced = true;

		r = moe_reap(client, ret, max);
		if (r != 0)
			return r;
		now = mono_ns();
	}
}

MOE_API int moe_forward(struct moe_client *client, const struct moe_request *req,
			struct moe_completion *ret)
{
	struct moe_completion done;
	int r;

	if (!client || !req || !ret)
		return -EINVAL;
	if (client->dead)
		return -ECONNRESET;
	if (client->in_flight > 0)
		return -EBUSY;

	r = moe_submit(client, req);
	if (r < 0)
		return r;
	/*
	 * Nothing else is in flight, so the first completion is ours; one with
	 * another user_data could only be a daemon's bug, and is dropped.
	 */
	do {
		r = moe_wait(client, &done, 1, -1);
		if (r < 0)
			return r;
	} while (done.user_data != req->user_data);
	*ret = done;
	return 0;
}
