/* SPDX-License-Identifier: MIT */
/*
 * stress_shm_ring: the rings under real concurrency, both directions at once.
 * A "client" produces SQEs and consumes CQEs, a "daemon" consumes SQEs and
 * answers each with a CQE, as libmoe and moed do, on one region made by
 * shm_region_create() with small rings (64 slots) so that they run full and
 * empty all the time:
 *
 *   threads     two threads of this process on one mapping (ThreadSanitizer
 *               sees every access; it tracks addresses, so both threads must
 *               use the same mapping for it to see the races)
 *   processes   fork(): the parent is the daemon on the creator's mapping,
 *               the child the client on its own shm_region_attach() of the
 *               memfds, as a real client maps them
 *
 * What is checked, per entry:
 *   - sequence: user_data counts 0, 1, 2 ... in both rings, so an entry
 *     lost, duplicated or reordered shows as the first mismatch;
 *   - contents: every field is derived from the sequence number and a
 *     checksum over the entry is stored in it (SQE: counts_off; CQE:
 *     n_sanitized), so a torn or stale copy shows; the seq word must be
 *     the entry's position + 1 (the ring's own publication, moe_abi.h);
 *   - ownership (as DPDK's check_updt_elem): after copying a slot out and
 *     before releasing it, the consumer stamps the slot's user_data with
 *     (seq ^ STAMP); the producer checks that stamp before it overwrites the
 *     slot one lap later. A slot reused before its consumer let go of it, or
 *     a release that does not order the consumer's accesses (R2/A1), fails
 *     the check (and, in the threads mode, TSan reports the race).
 *
 * Both sides wait by the ring protocol part of the time (prepare_sleep,
 * futex_wait, clear_sleep on one side; publish, wake_consumer on the other)
 * and spin the rest, chosen at random per wait, so the NEED_WAKEUP Dekker
 * handshake runs thousands of times per second against a live peer. A
 * futex wait that times out while its ring holds entries is a lost wake-up
 * and fails the test.
 *
 * Usage: stress_shm_ring threads|processes [ENTRIES]. ENTRIES defaults to
 * $MOE_STRESS_ENTRIES, else DEFAULT_ENTRIES (about 5 s on two cores in an
 * optimized build; ctest passes fewer under ThreadSanitizer). Exit 0 on
 * success, 1 on a failed check, 77 when the machine lacks something.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm_atomic.h"
#include "shm_futex.h"
#include "shm_region.h"
#include "shm_ring.h"

#define DEFAULT_ENTRIES 15000000ull
#define RING_ENTRIES 64u
#define STAMP 0x5717e55ab1e00000ull /* "consumed" mark, xor the sequence */
#define WAIT_TIMEOUT_NS 1000000000ll
#define IDLE_CHECK_EVERY 1024u /* idle rounds between looks at the peer */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

struct side_stats {
	uint64_t batches;
	uint64_t sleeps;        /* futex waits entered */
	uint64_t sleeps_avoided; /* prepare_sleep saw an entry after raising the flag */
	uint64_t wakes;         /* publish asked for a wake */
	uint64_t timeouts;      /* futex waits that timed out on an empty ring */
	uint64_t yields;
};

/* One side's view: its own mapping of the region and its rings. */
struct side {
	const char *name;
	struct shm_region *region;
	uint64_t n_entries;
	uint64_t rng;
	uint32_t *abort_word; /* in the arena: either side sets it on failure */
	pid_t child;          /* processes mode, parent: the client to watch */
	pid_t parent;         /* processes mode, child: the daemon to watch */
	bool child_reaped;
	int child_status;
	struct side_stats st;
	char error[256];
};

/* ---------------------------------------------------------------- helpers */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t mix(uint64_t seq, uint64_t salt)
{
	uint64_t s = seq ^ salt;

	return splitmix64(&s);
}

/* FNV-1a over @len bytes. */
static uint64_t checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int side_fail(struct side *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record the first failure, tell the peer to stop, wake it if it sleeps. */
static int side_fail(struct side *s, const char *fmt, ...)
{
	va_list ap;

	if (!s->error[0]) {
		va_start(ap, fmt);
		vsnprintf(s->error, sizeof(s->error), fmt, ap);
		va_end(ap);
	}
	/* the stop request; pairs with the load_acquire in side_should_stop() */
	store_release(s->abort_word, 1);
	/* the peer may sleep on either ring: move both futex words and wake */
	fetch_add_release(&s->region->sq_ctl->futex, 1);
	shm_futex_wake(&s->region->sq_ctl->futex, INT_MAX);
	fetch_add_release(&s->region->cq_ctl->futex, 1);
	shm_futex_wake(&s->region->cq_ctl->futex, INT_MAX);
	return -1;
}

static bool side_should_stop(struct side *s)
{
	/* A: pairs with the store_release in side_fail() */
	if (load_acquire(s->abort_word))
		return true;
	if (s->child > 0 && !s->child_reaped &&
	    waitpid(s->child, &s->child_status, WNOHANG) == s->child) {
		s->child_reaped = true;
		return true; /* the client is gone: nothing more will come */
	}
	/* the child, orphaned: the daemon died without a word */
	if (s->parent > 0 && getppid() != s->parent)
		return true;
	return false;
}

/* 1 .. avail, the whole of it half of the time. */
static uint32_t batch_size(struct side *s, uint32_t avail)
{
	uint64_t r = splitmix64(&s->rng);

	return (r & 1) ? avail : 1 + (uint32_t)((r >> 1) % avail);
}

/*
 * Nothing to consume on @r: wait for the peer. A quarter of the waits take
 * the sleeping protocol, the rest spin or yield. 0 to go on, -1 on failure.
 */
static int side_wait(struct side *s, struct shm_ring *r, uint64_t *idle)
{
	uint64_t mode = splitmix64(&s->rng) & 3;
	uint32_t v;
	int ret;

	if (++*idle % IDLE_CHECK_EVERY == 0 && side_should_stop(s))
		return side_fail(s, "peer stopped or died");
	if (mode == 1) {
		s->st.yields++;
		sched_yield();
		return 0;
	}
	if (mode >= 2) {
		for (int i = 0; i < 64; i++)
			cpu_relax();
		return 0;
	}
	if (!shm_ring_prepare_sleep(r, &v)) {
		s->st.sleeps_avoided++;
		return 0;
	}
	s->st.sleeps++;
	ret = shm_futex_wait(&r->ctl->futex, v, WAIT_TIMEOUT_NS);
	shm_ring_clear_sleep(r);
	if (ret == -ETIMEDOUT) {
		/*
		 * Entries there and nobody woke us in a whole second: the
		 * producer saw no NEED_WAKEUP although its seq store came
		 * before our flag, the bug the handshake exists to prevent.
		 */
		if (shm_ring_peek(r, UINT32_MAX) != 0)
			return side_fail(s, "lost wake-up: %u entries waited %lld ms",
					 shm_ring_peek(r, UINT32_MAX), WAIT_TIMEOUT_NS / 1000000);
		s->st.timeouts++;
		if (side_should_stop(s))
			return side_fail(s, "peer stopped or died");
	} else if (ret < 0 && ret != -EAGAIN && ret != -EINTR) {
		return side_fail(s, "futex wait: %s", strerror(-ret));
	}
	return 0;
}

/* ---------------------------------------------------------------- entries */

/* Everything between the seq word and counts_off. */
static uint64_t sqe_checksum(const struct moe_sqe *e)
{
	return checksum((const uint8_t *)e + sizeof(e->seq),
			offsetof(struct moe_sqe, counts_off) - sizeof(e->seq));
}

static void sqe_make(uint64_t seq, struct moe_sqe *e)
{
	uint64_t h = mix(seq, 0x5ce), h2 = mix(seq, 0x5ce2);

	*e = (struct moe_sqe){
		.user_data = seq,
		.opcode = (uint8_t)(h & 1),
		.flags = (uint16_t)((h >> 8) & MOE_SQE_F_ALL),
		.layer = (uint16_t)((h >> 16) & 0xff),
		.n_tokens = 1 + (uint32_t)(h >> 24) % 4096,
		.route_k = (uint16_t)((h >> 40) & 7),
		.in_off = h2 & ~63ull,
		.out_off = (h2 >> 7) & ~63ull,
		.route_off = mix(seq, 3),
		.weight_off = mix(seq, 4),
	};
	/*
	 * The ring does not interpret an entry, so the last field carries the
	 * checksum of all the others but the seq word (the ring's own).
	 */
	e->counts_off = sqe_checksum(e);
}

static void cqe_make(uint64_t seq, struct moe_cqe *e)
{
	uint64_t h = mix(seq, 0xc9e);

	*e = (struct moe_cqe){
		.user_data = seq,
		.status = -(int32_t)(h % 133),
		.flags = (uint16_t)((h >> 8) & 3),
		.route_k = (uint16_t)(h >> 16),
		.n_dropped = (uint32_t)(h >> 32),
		.aux_loss = (float)(h & 0xffff) / 64.0f,
		.z_loss = (float)((h >> 20) & 0xffff),
	};
	e->n_sanitized = (uint32_t)checksum(e, sizeof(*e));
}

static bool cqe_checksum_ok(const struct moe_cqe *e)
{
	struct moe_cqe c = *e;

	c.seq = 0; /* the ring's own word, not part of the checksum */
	c.n_sanitized = 0;
	return e->n_sanitized == (uint32_t)checksum(&c, sizeof(c));
}

/* Was the slot about to carry @seq released by the consumer of @seq - ring? */
static int slot_check_stamp(struct side *s, const char *ring, uint64_t slot_user_data,
			    uint64_t seq)
{
	uint64_t want = seq < RING_ENTRIES ? 0 : (seq - RING_ENTRIES) ^ STAMP;

	if (slot_user_data != want)
		return side_fail(s,
				 "%s slot for #%" PRIu64 " not released by its consumer: holds "
				 "%#" PRIx64 ", expected %#" PRIx64,
				 ring, seq, slot_user_data, want);
	return 0;
}

static int seq_check(struct side *s, const char *ring, uint64_t got, uint64_t want)
{
	if (got == want)
		return 0;
	return side_fail(s, "%s: got #%" PRIu64 " where #%" PRIu64 " was due (%s)", ring, got,
			 want, got < want ? "duplicated or stale" : "lost or reordered");
}

/* ----------------------------------------------------------------- client */

static int client_run(struct side *s)
{
	struct shm_region *reg = s->region;
	struct shm_ring sq, cq;
	uint64_t sent = 0, received = 0, idle = 0;

	if (shm_ring_init(&sq, reg->sq_ctl, reg->sqes, reg->info.sq_entries,
			  sizeof(struct moe_sqe), 0) < 0 ||
	    shm_ring_init(&cq, reg->cq_ctl, reg->cqes, reg->info.cq_entries,
			  sizeof(struct moe_cqe), 0) < 0)
		return side_fail(s, "ring init");

	while (received < s->n_entries) {
		bool progress = false;
		int avail;

		if (sent < s->n_entries) {
			/* the private count; the head is read again only when it is 0 */
			avail = shm_ring_free_slots(&sq, 1);
			if (avail < 0)
				return side_fail(s, "SQ free slots: %s", strerror(-avail));
			if (avail > 0) {
				uint64_t left = s->n_entries - sent;
				uint32_t n = batch_size(s, avail < (int64_t)left ? (uint32_t)avail
										 : (uint32_t)left);

				for (uint32_t i = 0; i < n; i++) {
					const struct moe_sqe *slot =
						&reg->sqes[(sq.index + i) & sq.mask];
					struct moe_sqe e;

					if (slot_check_stamp(s, "SQ", slot->user_data, sent + i))
						return -1;
					sqe_make(sent + i, &e);
					shm_ring_write(&sq, i, &e);
				}
				if (shm_ring_publish(&sq, n)) {
					s->st.wakes++;
					shm_ring_wake_consumer(&sq);
				}
				sent += n;
				s->st.batches++;
				progress = true;
			}
		}

		avail = (int)shm_ring_peek(&cq, UINT32_MAX);
		if (avail > 0) {
			uint32_t n = batch_size(s, (uint32_t)avail);

			for (uint32_t i = 0; i < n; i++) {
				struct moe_cqe got, want;
				struct moe_cqe *slot = &reg->cqes[(cq.index + i) & cq.mask];

				shm_ring_copy_out(&cq, i, &got);
				if (seq_check(s, "CQ", got.user_data, received + i))
					return -1;
				cqe_make(received + i, &want);
				want.seq = (uint32_t)(received + i + 1);
				if (!cqe_checksum_ok(&got) || memcmp(&got, &want, sizeof(got)))
					return side_fail(s, "CQE #%" PRIu64 " corrupted",
							 received + i);
				/* ownership stamp: ours until the release below */
				slot->user_data = (received + i) ^ STAMP;
			}
			/* as libmoe: nobody waits for CQ room here, so this never rings */
			if (shm_ring_consume_release_resume(&cq, n))
				return side_fail(s, "PRODUCER_WAITING raised by nobody");
			received += n;
			progress = true;
		}

		/* CQ empty, and the SQ full or all sent: only a CQE can help. */
		if (!progress && side_wait(s, &cq, &idle) < 0)
			return -1;
	}
	return 0;
}

/* ----------------------------------------------------------------- daemon */

static int daemon_run(struct side *s)
{
	struct shm_region *reg = s->region;
	struct shm_ring sq, cq;
	uint64_t done = 0, idle = 0;

	if (shm_ring_init(&sq, reg->sq_ctl, reg->sqes, reg->info.sq_entries,
			  sizeof(struct moe_sqe), 0) < 0 ||
	    shm_ring_init(&cq, reg->cq_ctl, reg->cqes, reg->info.cq_entries,
			  sizeof(struct moe_cqe), 0) < 0)
		return side_fail(s, "ring init");

	while (done < s->n_entries) {
		int filled, free_cq;
		uint32_t n;

		filled = (int)shm_ring_peek(&sq, UINT32_MAX);
		if (filled == 0) {
			if (side_wait(s, &sq, &idle) < 0)
				return -1;
			continue;
		}
		free_cq = shm_ring_free_slots(&cq, (uint32_t)filled);
		if (free_cq < 0)
			return side_fail(s, "CQ free slots: %s", strerror(-free_cq));
		if (free_cq == 0) {
			/* The client drains the CQ without our help: it never
			 * sleeps while the CQ holds entries. */
			if (++idle % IDLE_CHECK_EVERY == 0 && side_should_stop(s))
				return side_fail(s, "peer stopped or died");
			s->st.yields++;
			sched_yield();
			continue;
		}

		n = batch_size(s, (uint32_t)(filled < free_cq ? filled : free_cq));
		for (uint32_t i = 0; i < n; i++) {
			struct moe_sqe got, want;
			struct moe_sqe *slot = &reg->sqes[(sq.index + i) & sq.mask];
			const struct moe_cqe *cslot = &reg->cqes[(cq.index + i) & cq.mask];
			struct moe_cqe e;

			shm_ring_copy_out(&sq, i, &got);
			if (seq_check(s, "SQ", got.user_data, done + i))
				return -1;
			if (got.counts_off != sqe_checksum(&got))
				return side_fail(s, "SQE #%" PRIu64 " checksum", done + i);
			sqe_make(done + i, &want);
			want.seq = (uint32_t)(done + i + 1);
			if (memcmp(&got, &want, sizeof(got)))
				return side_fail(s, "SQE #%" PRIu64 " corrupted", done + i);
			slot->user_data = (done + i) ^ STAMP;

			if (slot_check_stamp(s, "CQ", cslot->user_data, done + i))
				return -1;
			cqe_make(done + i, &e);
			shm_ring_write(&cq, i, &e);
		}
		shm_ring_consume_release(&sq, n);
		if (shm_ring_publish(&cq, n)) {
			s->st.wakes++;
			shm_ring_wake_consumer(&cq);
		}
		done += n;
		s->st.batches++;
	}
	return 0;
}

/* ------------------------------------------------------------------ modes */

static void *client_thread(void *arg)
{
	return (void *)(intptr_t)client_run(arg);
}

static void *daemon_thread(void *arg)
{
	return (void *)(intptr_t)daemon_run(arg);
}

static void stats_print(const struct side *s)
{
	printf("  %-6s batches %" PRIu64 ", sleeps %" PRIu64 " (%" PRIu64 " avoided), "
	       "wakes sent %" PRIu64 ", yields %" PRIu64 ", empty timeouts %" PRIu64 "\n",
	       s->name, s->st.batches, s->st.sleeps, s->st.sleeps_avoided, s->st.wakes,
	       s->st.yields, s->st.timeouts);
}

/* The region both modes run on: 64-slot rings, a page of arena. */
static int region_make(struct shm_region *ret_region)
{
	struct moe_region_info info;
	int r;

	memset(&info, 0, sizeof(info));
	r = shm_region_layout(RING_ENTRIES, RING_ENTRIES, 4096, &info);
	if (r < 0)
		return r;
	strcpy(info.model_name, "stress");
	return shm_region_create(&info, ret_region);
}

/*
 * What both sides published at the end: heads of exactly @n entries, and
 * the last entry of each ring carrying seq @n (mod 2^32).
 */
static int region_check_final(const struct shm_region *reg, uint64_t n)
{
	uint32_t want = (uint32_t)n, last = (uint32_t)(n - 1) & (RING_ENTRIES - 1);

	if (reg->sq_ctl->head != want || reg->cq_ctl->head != want ||
	    (n && (reg->sqes[last].seq != want || reg->cqes[last].seq != want))) {
		fprintf(stderr, "final heads SQ %u CQ %u, last seq SQ %u CQ %u, expected %u\n",
			reg->sq_ctl->head, reg->cq_ctl->head, reg->sqes[last].seq,
			reg->cqes[last].seq, want);
		return -1;
	}
	return 0;
}

static int run_threads(uint64_t n_entries, struct side *client, struct side *daemon)
{
	struct shm_region reg;
	pthread_t tc, td;
	void *rc, *rd;
	int r;

	r = region_make(&reg);
	if (r < 0) {
		fprintf(stderr, "region: %s\n", strerror(-r));
		return r == -ENOSYS || r == -EPERM ? 77 : 1;
	}
	*client = (struct side){ .name = "client", .region = &reg, .n_entries = n_entries,
				 .rng = 1, .abort_word = (uint32_t *)reg.arena };
	*daemon = (struct side){ .name = "daemon", .region = &reg, .n_entries = n_entries,
				 .rng = 2, .abort_word = (uint32_t *)reg.arena };
	if (pthread_create(&td, NULL, daemon_thread, daemon) != 0) {
		shm_region_done(&reg);
		return 1;
	}
	if (pthread_create(&tc, NULL, client_thread, client) != 0) {
		side_fail(daemon, "cannot start the client thread");
		pthread_join(td, NULL);
		shm_region_done(&reg);
		return 1;
	}
	pthread_join(tc, &rc);
	pthread_join(td, &rd);
	r = (rc || rd || region_check_final(&reg, n_entries)) ? 1 : 0;
	shm_region_done(&reg);
	return r;
}

static int run_processes(uint64_t n_entries, struct side *client, struct side *daemon)
{
	struct shm_region reg, mine;
	pid_t pid;
	int r, info_fd, ring_fd;

	r = region_make(&reg);
	if (r < 0) {
		fprintf(stderr, "region: %s\n", strerror(-r));
		return r == -ENOSYS || r == -EPERM ? 77 : 1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		shm_region_done(&reg);
		return 1;
	}
	if (pid == 0) {
		/*
		 * The client: its own mapping, made from the fds as libmoe
		 * makes it from the ones it receives. The inherited mapping
		 * stays untouched.
		 */
		info_fd = dup(reg.info_fd);
		ring_fd = dup(reg.ring_fd);
		r = shm_region_attach(info_fd, ring_fd, NULL, &mine);
		if (r < 0) {
			fprintf(stderr, "client: attach: %s\n", strerror(-r));
			_exit(2);
		}
		*client = (struct side){ .name = "client", .region = &mine,
					 .n_entries = n_entries, .rng = 1,
					 .abort_word = (uint32_t *)mine.arena,
					 .parent = getppid() };
		r = client_run(client);
		if (r < 0)
			fprintf(stderr, "client: %s\n", client->error);
		else
			stats_print(client);
		fflush(NULL);
		shm_region_done(&mine);
		_exit(r < 0 ? 1 : 0);
	}

	*daemon = (struct side){ .name = "daemon", .region = &reg, .n_entries = n_entries,
				 .rng = 2, .abort_word = (uint32_t *)reg.arena, .child = pid };
	r = daemon_run(daemon);
	if (r < 0 && !daemon->child_reaped) {
		/* give the client a moment to see the abort word, then make sure */
		for (int i = 0; i < 200 && !daemon->child_reaped; i++) {
			if (waitpid(pid, &daemon->child_status, WNOHANG) == pid)
				daemon->child_reaped = true;
			else
				usleep(10000);
		}
		if (!daemon->child_reaped)
			kill(pid, SIGKILL);
	}
	if (!daemon->child_reaped && waitpid(pid, &daemon->child_status, 0) != pid) {
		perror("waitpid");
		r = -1;
	}
	if (!WIFEXITED(daemon->child_status) || WEXITSTATUS(daemon->child_status) != 0) {
		if (WIFSIGNALED(daemon->child_status))
			fprintf(stderr, "client process killed by signal %d\n",
				WTERMSIG(daemon->child_status));
		else
			fprintf(stderr, "client process exited with %d\n",
				WEXITSTATUS(daemon->child_status));
		r = -1;
	}
	if (r == 0)
		r = region_check_final(&reg, n_entries);
	shm_region_done(&reg);
	return r < 0 ? 1 : 0;
}

static int usage(const char *argv0)
{
	fprintf(stderr, "usage: %s threads|processes [ENTRIES]\n", argv0);
	return 2;
}

static bool parse_count(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v == 0 || s[0] == '-')
		return false;
	*ret = v;
	return true;
}

int main(int argc, char **argv)
{
	struct side client = { .name = "client" }, daemon = { .name = "daemon" };
	uint64_t n_entries = DEFAULT_ENTRIES;
	const char *env = getenv("MOE_STRESS_ENTRIES");
	bool threads;
	int64_t t0, elapsed;
	int r;

	if (argc < 2 || argc > 3)
		return usage(argv[0]);
	if (!strcmp(argv[1], "threads"))
		threads = true;
	else if (!strcmp(argv[1], "processes"))
		threads = false;
	else
		return usage(argv[0]);
	if (env && *env && !parse_count(env, &n_entries)) {
		fprintf(stderr, "MOE_STRESS_ENTRIES=%s: not a positive count\n", env);
		return 2;
	}
	if (argc == 3 && !parse_count(argv[2], &n_entries)) {
		fprintf(stderr, "%s: not a positive count\n", argv[2]);
		return 2;
	}

	printf("%s: %" PRIu64 " entries each way through %u-slot rings\n", argv[1], n_entries,
	       RING_ENTRIES);
	fflush(stdout);
	t0 = now_ns();
	r = threads ? run_threads(n_entries, &client, &daemon)
		    : run_processes(n_entries, &client, &daemon);
	elapsed = now_ns() - t0;
	if (r == 77)
		return 77;

	if (client.error[0])
		fprintf(stderr, "client: %s\n", client.error);
	if (daemon.error[0])
		fprintf(stderr, "daemon: %s\n", daemon.error);
	if (threads)
		stats_print(&client);
	stats_print(&daemon);
	printf("%s: %s, %.2f s, %.2f M round trips/s\n", argv[1], r ? "FAILED" : "ok",
	       (double)elapsed / 1e9, (double)n_entries / ((double)elapsed / 1e3));
	return r ? 1 : 0;
}
