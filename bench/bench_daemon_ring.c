/* SPDX-License-Identifier: MIT */
/* bench_daemon_ring: the ring alone between two processes; see bench_daemon_ring.h. */
#include "bench_daemon_ring.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_daemon_proc.h"
#include "shm_region.h"
#include "shm_ring.h"

#define RING_ENTRIES 64u
#define PEER_TIMEOUT_NS (10ull * 1000 * 1000 * 1000)

static int ring_pair(struct shm_region *reg, struct shm_ring *sq, struct shm_ring *cq)
{
	int r = shm_ring_init(sq, reg->sq_ctl, reg->sqes, reg->info.sq_entries,
			      sizeof(struct moe_sqe), 0);

	return r < 0 ? r
		     : shm_ring_init(cq, reg->cq_ctl, reg->cqes, reg->info.cq_entries,
				     sizeof(struct moe_cqe), 0);
}

/* Spin until @r has an entry; -ETIMEDOUT when the peer went quiet. */
static int ring_await(const struct shm_ring *r)
{
	uint64_t t0 = bench_now_ns();

	for (unsigned k = 1; shm_ring_peek(r, 1) == 0; k++)
		if ((k & 0xffff) == 0 && bench_now_ns() - t0 > PEER_TIMEOUT_NS)
			return -ETIMEDOUT;
	return 0;
}

/* The daemon's side: each SQE answered at once with a CQE of its user_data. */
static int __attribute__((noreturn)) ring_answer(struct shm_region *reg, uint32_t total)
{
	struct shm_ring sq, cq;

	if (ring_pair(reg, &sq, &cq) < 0)
		_exit(1);
	for (uint32_t i = 0; i < total; i++) {
		struct moe_sqe sqe;
		struct moe_cqe cqe;

		if (ring_await(&sq) < 0)
			_exit(1);
		shm_ring_copy_out(&sq, 0, &sqe);
		shm_ring_consume_release(&sq, 1);
		if (shm_ring_free_slots(&cq, 1) <= 0)
			_exit(1); /* the client reaps each CQE before its next SQE */
		cqe = (struct moe_cqe){ .user_data = sqe.user_data };
		shm_ring_write(&cq, 0, &cqe);
		(void)shm_ring_publish(&cq, 1); /* nobody sleeps here */
	}
	_exit(0);
}

int ring_pingpong_run(uint32_t warmup, uint32_t n, double *samples_ns)
{
	const uint32_t total = warmup + n;
	struct moe_region_info info;
	struct shm_region reg;
	struct shm_ring sq, cq;
	pid_t parent = getpid(), pid;
	int status, r;

	memset(&info, 0, sizeof(info));
	r = shm_region_layout(RING_ENTRIES, RING_ENTRIES, 4096, &info);
	if (r >= 0)
		r = shm_region_create(&info, &reg);
	if (r < 0)
		return r;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto done;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		ring_answer(&reg, total);
	}
	r = ring_pair(&reg, &sq, &cq);
	for (uint32_t i = 0; r >= 0 && i < total; i++) {
		struct moe_sqe sqe = { .user_data = i, .opcode = MOE_OP_NOP };
		uint64_t t0 = bench_now_ns();
		struct moe_cqe cqe;

		if (shm_ring_free_slots(&sq, 1) <= 0) {
			r = -EPROTO;
			break;
		}
		shm_ring_write(&sq, 0, &sqe);
		(void)shm_ring_publish(&sq, 1);
		r = ring_await(&cq);
		if (r < 0)
			break;
		shm_ring_copy_out(&cq, 0, &cqe);
		(void)shm_ring_consume_release_resume(&cq, 1);
		if (cqe.user_data != i) {
			r = -EPROTO;
			break;
		}
		if (i >= warmup)
			samples_ns[i - warmup] = (double)(bench_now_ns() - t0);
	}
	if (r < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r >= 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		r = -ECHILD;
done:
	shm_region_done(&reg);
	return r < 0 ? r : 0;
}
