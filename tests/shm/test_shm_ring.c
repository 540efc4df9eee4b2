/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of shm/: the rings (produce, consume, full, wrap-around of the
 * free-running positions across 2^32, hostile seq words, a corrupted head,
 * the NEED_WAKEUP and PRODUCER_WAITING handshakes as seen by one thread), the region (layout arithmetic and its
 * refusals, create + attach in one process with both mappings sharing bytes,
 * the seals really holding, attach refusing forged info pages, re-attach at a
 * kept address range) and the futex doorbell. Every test ends by checking
 * that it left no fd open. Concurrency is covered by stress_shm_ring.
 */
#include "test_assert.h"
#include "test_fds.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "shm_atomic.h"
#include "shm_futex.h"
#include "shm_region.h"
#include "shm_ring.h"

/* ---------------------------------------------------------------- helpers */


static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static uint64_t page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

/* One ring of 8 entries (a seq word and a value), with a producer and a consumer view. */
#define T_ENTRIES 8u

struct t_entry {
	uint32_t seq; /* MOE_ENTRY_SEQ_OFF */
	uint32_t pad;
	uint64_t v;
};

struct ring_pair {
	struct moe_ring_ctl ctl __attribute__((aligned(MOE_ABI_CACHELINE)));
	struct t_entry slots[T_ENTRIES];
	struct shm_ring prod;
	struct shm_ring cons;
};

/* The seq word a slot holds when the entry at @pos (of a ring of @n) was the last one read. */
static uint32_t seq_consumed(uint32_t pos, uint32_t n)
{
	return pos + 1 - n;
}

/*
 * Both views at @index. A region's rings start at 0 on zeroed slots; one
 * that starts elsewhere gets the seq words of a ring that got there: every
 * slot holds the entry one lap before the position that addresses it next.
 */
static void ring_pair_init(struct ring_pair *p, uint32_t index)
{
	memset(p, 0, sizeof(*p));
	p->ctl.head = index;
	for (uint32_t k = 0; index && k < T_ENTRIES; k++)
		p->slots[(index + k) & (T_ENTRIES - 1)].seq = seq_consumed(index + k, T_ENTRIES);
	ASSERT_OK(shm_ring_init(&p->prod, &p->ctl, p->slots, T_ENTRIES, sizeof(struct t_entry),
				index));
	ASSERT_OK(shm_ring_init(&p->cons, &p->ctl, p->slots, T_ENTRIES, sizeof(struct t_entry),
				index));
}

/* Write @n values from @first and publish them; returns publish's "wake the consumer". */
static bool produce_values(struct ring_pair *p, uint64_t first, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		/* a seq in the caller's struct is never copied: publish owns the word */
		struct t_entry e = { .seq = 0xdeadbeef, .v = first + i };

		shm_ring_write(&p->prod, i, &e);
	}
	return shm_ring_publish(&p->prod, n);
}

static void consume_values(struct ring_pair *p, uint64_t first, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct t_entry e = { 0 };

		shm_ring_copy_out(&p->cons, i, &e);
		ASSERT_EQ(e.v, first + i);
		ASSERT_EQ(e.seq, p->cons.index + i + 1);
	}
	shm_ring_consume_release(&p->cons, n);
}

/* ------------------------------------------------------------------ rings */

static void test_ring_init_rejects(void **state)
{
	struct moe_ring_ctl ctl = { 0 };
	uint64_t slots[4];
	struct shm_ring r, untouched;

	(void)state;
	memset(&r, 0xa5, sizeof(r));
	untouched = r;
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 0, 8, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 3, 8, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 6, 8, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 0x80000001u, 8, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, UINT32_MAX, 8, 0), EINVAL);
	/* a count of 2^31 would not fit the int the counting calls return */
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 1u << 31, 8, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 4, 0, 0), EINVAL);
	/* an entry holds its seq word and a payload, seq words stay aligned */
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 4, 4, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, slots, 4, 10, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, NULL, slots, 4, 8, 0), EINVAL);
	ASSERT_ERRNO(shm_ring_init(&r, &ctl, NULL, 4, 8, 0), EINVAL);
	assert_memory_equal(&r, &untouched, sizeof(r));

	ASSERT_OK(shm_ring_init(&r, &ctl, slots, 1, 8, 0));
	ASSERT_EQ(r.mask, 0);
	ASSERT_OK(shm_ring_init(&r, &ctl, slots, 4, 12, 7));
	ASSERT_EQ(r.mask, 3);
	ASSERT_EQ(r.index, 7);
	ASSERT_OK(shm_ring_init(&r, &ctl, slots, 1u << 30, 8, 0));
	/* init touches no shared word */
	ASSERT_EQ(ctl.head, 0);
	ASSERT_EQ(ctl.flags, 0);
}

static void test_ring_produce_consume(void **state)
{
	struct ring_pair p;

	(void)state;
	ring_pair_init(&p, 0);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), T_ENTRIES);
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 0);

	assert_false(produce_values(&p, 100, 3));
	/* published by the seq words alone: position + 1 */
	ASSERT_EQ(p.slots[0].seq, 1);
	ASSERT_EQ(p.slots[2].seq, 3);
	ASSERT_EQ(p.slots[3].seq, 0);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), T_ENTRIES - 3);
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 3);
	ASSERT_EQ(shm_ring_peek(&p.cons, 2), 2);

	consume_values(&p, 100, 2);
	ASSERT_EQ(p.ctl.head, 2);
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 1);
	/* the private count, while it covers what is asked: the head is not read */
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), T_ENTRIES - 3);
	/* asked for more than it knows: the head is read again */
	ASSERT_EQ(shm_ring_free_slots(&p.prod, T_ENTRIES), T_ENTRIES - 1);
	consume_values(&p, 102, 1);
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 0);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, T_ENTRIES), T_ENTRIES);
	/* nobody asked to be woken */
	ASSERT_EQ(p.ctl.flags, 0);
	ASSERT_EQ(p.ctl.futex, 0);
}

static void test_ring_full(void **state)
{
	struct ring_pair p;

	(void)state;
	ring_pair_init(&p, 0);
	produce_values(&p, 0, T_ENTRIES);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), 0);
	ASSERT_EQ(shm_ring_peek(&p.cons, UINT32_MAX), T_ENTRIES);
	consume_values(&p, 0, 2);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), 2);
	produce_values(&p, T_ENTRIES, 2);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), 0);
	/* the two new entries follow the six old ones in order */
	ASSERT_EQ(shm_ring_peek(&p.cons, UINT32_MAX), T_ENTRIES);
	consume_values(&p, 2, T_ENTRIES);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), T_ENTRIES);
}

static void test_ring_wrap_around(void **state)
{
	const uint32_t start = UINT32_MAX - 20;
	struct ring_pair p;
	uint64_t next = 0;
	bool wrapped = false, seq_zero = false;

	(void)state;
	ring_pair_init(&p, start);
	/* batches of 1..8, through 2^32 and well past it */
	for (uint32_t round = 0; round < 40; round++) {
		uint32_t n = round % T_ENTRIES + 1;

		ASSERT_EQ(shm_ring_free_slots(&p.prod, T_ENTRIES), T_ENTRIES);
		ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 0);
		produce_values(&p, next, n);
		/* the slot is addressed by the masked position, across the wrap too */
		for (uint32_t i = 0; i < n; i++) {
			uint32_t pos = p.prod.index - n + i;

			ASSERT_EQ(p.slots[pos & (T_ENTRIES - 1)].seq, pos + 1);
			ASSERT_EQ(p.slots[pos & (T_ENTRIES - 1)].v, next + i);
			seq_zero |= pos + 1 == 0; /* UINT32_MAX's entry carries seq 0 */
		}
		ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), T_ENTRIES - n);
		ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), n);
		consume_values(&p, next, n);
		next += n;
		if (p.cons.index < start)
			wrapped = true;
	}
	assert_true(wrapped);
	assert_true(seq_zero);
	ASSERT_EQ(p.prod.index, (uint32_t)(start + next));
	ASSERT_EQ(p.ctl.head, p.prod.index);

	/* a full ring that straddles the wrap */
	ring_pair_init(&p, UINT32_MAX - 3);
	produce_values(&p, 0, T_ENTRIES);
	ASSERT_EQ(p.prod.index, 4);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), 0);
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), T_ENTRIES);
	consume_values(&p, 0, T_ENTRIES);
}

/*
 * What a hostile producer can write into seq words: only "ready" or "not
 * ready" for the one position the consumer is at. Nothing it writes makes
 * the consumer count past the ring, read a position twice, or move.
 */
static void test_ring_hostile_seq(void **state)
{
	static const uint32_t not_ready[] = {
		0, 5, 6 + T_ENTRIES, 6 - T_ENTRIES, 6 + 0x80000000u, UINT32_MAX, 7,
	};
	struct ring_pair p;
	uint32_t val = 0xdead;

	(void)state;
	ring_pair_init(&p, 5);
	/* position 5 needs seq 6: the previous lap, a later lap, junk are not ready */
	for (size_t i = 0; i < sizeof(not_ready) / sizeof(not_ready[0]); i++) {
		p.slots[5 & (T_ENTRIES - 1)].seq = not_ready[i];
		ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 0);
		assert_true(shm_ring_prepare_sleep(&p.cons, &val));
		shm_ring_clear_sleep(&p.cons);
	}
	/* a ready entry behind a gap is not seen: the consumer stops at the first */
	p.slots[6 & (T_ENTRIES - 1)].seq = 7;
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 0);
	/* every slot "ready" at once: at most the ring, whatever the caller asks */
	for (uint32_t k = 0; k < T_ENTRIES; k++)
		p.slots[(5 + k) & (T_ENTRIES - 1)].seq = 5 + k + 1;
	ASSERT_EQ(shm_ring_peek(&p.cons, UINT32_MAX), T_ENTRIES);
	ASSERT_EQ(shm_ring_peek(&p.cons, 3), 3);
	val = 0xdead;
	assert_false(shm_ring_prepare_sleep(&p.cons, &val));
	ASSERT_EQ(val, 0xdead);
	ASSERT_EQ(p.ctl.flags & MOE_RING_NEED_WAKEUP, 0);
	/* and the consumer's own position never moved */
	ASSERT_EQ(p.cons.index, 5);

	/*
	 * Consumed slots keep the seq they were read with; the next lap needs
	 * other values, so nothing is read twice unless written again.
	 */
	shm_ring_consume_release(&p.cons, T_ENTRIES);
	ASSERT_EQ(shm_ring_peek(&p.cons, UINT32_MAX), 0);
	ASSERT_EQ(p.ctl.head, 5 + T_ENTRIES);
}

static void test_ring_corrupted_head(void **state)
{
	struct ring_pair p;

	(void)state;
	ring_pair_init(&p, 0);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), T_ENTRIES);
	produce_values(&p, 0, 4);
	/* while the private count covers it, a corrupted head is not even read */
	p.ctl.head = 5;
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 4), T_ENTRIES - 4);
	/* the consumer claims to have consumed more than was produced */
	ASSERT_ERRNO(shm_ring_free_slots(&p.prod, T_ENTRIES), EPROTO);
	/* or to be more than a ring behind */
	p.ctl.head = (uint32_t)(4 - T_ENTRIES - 1);
	ASSERT_ERRNO(shm_ring_free_slots(&p.prod, T_ENTRIES), EPROTO);
	p.ctl.head = UINT32_MAX / 2;
	ASSERT_ERRNO(shm_ring_free_slots(&p.prod, T_ENTRIES), EPROTO);
	ASSERT_ERRNO(shm_ring_producer_wait(&p.prod), EPROTO);
	/* exactly a ring behind: full */
	p.ctl.head = (uint32_t)(4 - T_ENTRIES);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, T_ENTRIES), 0);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), 0);
	ASSERT_EQ(p.prod.index, 4);
}

static void test_ring_copy_out(void **state)
{
	struct moe_ring_ctl ctl __attribute__((aligned(MOE_ABI_CACHELINE))) = { 0 };
	struct moe_sqe sqes[4], in, out;
	struct shm_ring prod, cons;

	(void)state;
	memset(sqes, 0, sizeof(sqes));
	ASSERT_OK(shm_ring_init(&prod, &ctl, sqes, 4, sizeof(struct moe_sqe), 0));
	ASSERT_OK(shm_ring_init(&cons, &ctl, sqes, 4, sizeof(struct moe_sqe), 0));
	in = (struct moe_sqe){
		.seq = 0x5e05e0,
		.user_data = 0x1122334455667788ull,
		.opcode = MOE_OP_FORWARD,
		.flags = MOE_SQE_F_ROUTE_GIVEN,
		.layer = 3,
		.n_tokens = 17,
		.route_k = 2,
		.in_off = 64,
		.out_off = 4096,
		.route_off = 8192,
		.weight_off = 12288,
	};
	shm_ring_write(&prod, 1, &in);
	/* written but for its seq word: not ready until published */
	ASSERT_EQ(sqes[1].seq, 0);
	ASSERT_EQ(sqes[1].user_data, in.user_data);
	(void)shm_ring_publish(&prod, 2);
	ASSERT_EQ(sqes[0].seq, 1);
	ASSERT_EQ(sqes[1].seq, 2);
	ASSERT_EQ(shm_ring_peek(&cons, 4), 2);
	shm_ring_copy_out(&cons, 1, &out);
	in.seq = 2;
	assert_memory_equal(&in, &out, sizeof(in));
	/* a copy: the producer scribbling on the slot later does not reach it */
	memset(&sqes[1], 0xff, sizeof(sqes[1]));
	assert_memory_equal(&in, &out, sizeof(in));
}

static void test_ring_sleep_handshake(void **state)
{
	struct ring_pair p;
	uint32_t val = 0xdead;

	(void)state;
	ring_pair_init(&p, 0);
	p.ctl.futex = 41;
	/* the producer's own bit must survive the consumer's RMWs */
	p.ctl.flags = MOE_RING_PRODUCER_WAITING;

	/* empty: sleep on the futex value read before the flag went up */
	assert_true(shm_ring_prepare_sleep(&p.cons, &val));
	ASSERT_EQ(val, 41);
	ASSERT_EQ(p.ctl.flags, MOE_RING_NEED_WAKEUP | MOE_RING_PRODUCER_WAITING);

	/* the producer sees the request, and waking moves the futex word */
	assert_true(produce_values(&p, 0, 1));
	shm_ring_wake_consumer(&p.prod);
	ASSERT_EQ(p.ctl.futex, 42);
	/* so a futex_wait on the value read earlier does not sleep */
	ASSERT_ERRNO(shm_futex_wait(&p.ctl.futex, val, -1), EAGAIN);

	shm_ring_clear_sleep(&p.cons);
	ASSERT_EQ(p.ctl.flags, MOE_RING_PRODUCER_WAITING);
	shm_ring_clear_sleep(&p.cons);
	ASSERT_EQ(p.ctl.flags, MOE_RING_PRODUCER_WAITING);

	/* without the request, publish reports nothing to wake */
	assert_false(produce_values(&p, 1, 1));

	/* an entry is waiting: do not sleep, withdraw the flag, leave val alone */
	val = 0xdead;
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 2);
	assert_false(shm_ring_prepare_sleep(&p.cons, &val));
	ASSERT_EQ(val, 0xdead);
	ASSERT_EQ(p.ctl.flags, MOE_RING_PRODUCER_WAITING);
	consume_values(&p, 0, 2);
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), 0);
	assert_true(shm_ring_prepare_sleep(&p.cons, &val));
	ASSERT_EQ(val, 42);
	shm_ring_clear_sleep(&p.cons);
}

/* The PRODUCER_WAITING handshake, both halves in one thread. */
static void test_ring_producer_wait(void **state)
{
	struct ring_pair p;

	(void)state;
	ring_pair_init(&p, 0);
	produce_values(&p, 0, T_ENTRIES);
	ASSERT_EQ(shm_ring_producer_wait(&p.prod), 0);
	ASSERT_EQ(p.ctl.flags, MOE_RING_PRODUCER_WAITING);
	/* the consumer frees slots, sees the bit, clears it: it must ring */
	ASSERT_EQ(shm_ring_peek(&p.cons, T_ENTRIES), T_ENTRIES);
	assert_true(shm_ring_consume_release_resume(&p.cons, 2));
	ASSERT_EQ(p.ctl.flags, 0);
	ASSERT_EQ(p.ctl.head, 2);
	/* only once */
	assert_false(shm_ring_consume_release_resume(&p.cons, 1));
	/* a producer that asks after the consumer released sees the room at once */
	ASSERT_EQ(shm_ring_producer_wait(&p.prod), 3);
	ASSERT_EQ(shm_ring_free_slots(&p.prod, 1), 3);
	/* the consumer's own bit is left alone by the producer's RMW */
	p.ctl.flags = MOE_RING_NEED_WAKEUP;
	ASSERT_EQ(shm_ring_producer_wait(&p.prod), 3);
	ASSERT_EQ(p.ctl.flags, MOE_RING_NEED_WAKEUP | MOE_RING_PRODUCER_WAITING);
	assert_true(shm_ring_consume_release_resume(&p.cons, 1));
	ASSERT_EQ(p.ctl.flags, MOE_RING_NEED_WAKEUP);
}

/* ----------------------------------------------------------------- layout */

static void test_region_layout(void **state)
{
	uint64_t page = page_size();
	struct moe_region_info info;

	(void)state;
	memset(&info, 0, sizeof(info));
	info.d_model = 7;
	info.flags = MOE_REGION_F_EVENTFD_DOORBELL;
	strcpy(info.model_name, "tiny");

	ASSERT_OK(shm_region_layout(64, 128, 1, &info));
	ASSERT_EQ(info.magic, MOE_ABI_MAGIC);
	ASSERT_EQ(info.abi_major, MOE_ABI_MAJOR);
	ASSERT_EQ(info.abi_minor, MOE_ABI_MINOR);
	ASSERT_EQ(info.info_size, sizeof(struct moe_region_info));
	ASSERT_EQ(info.sq_entries, 64);
	ASSERT_EQ(info.cq_entries, 128);
	ASSERT_EQ(info.sq_ctl_off, 0);
	ASSERT_EQ(info.cq_ctl_off, 256);
	ASSERT_EQ(info.sqes_off, 512);
	ASSERT_EQ(info.cqes_off, 512 + 64 * 64);
	ASSERT_EQ(info.arena_off % page, 0);
	assert_true(info.arena_off >= info.cqes_off + 128 * 64);
	assert_true(info.arena_off < info.cqes_off + 128 * 64 + page);
	ASSERT_EQ(info.arena_size, page);
	ASSERT_EQ(info.ring_size, info.arena_off + info.arena_size);
	/* the model and client fields are the caller's */
	ASSERT_EQ(info.d_model, 7);
	ASSERT_EQ(info.flags, MOE_REGION_F_EVENTFD_DOORBELL);
	assert_string_equal(info.model_name, "tiny");

	/* exactly a page stays a page; one byte more is two */
	ASSERT_OK(shm_region_layout(1, 1, page, &info));
	ASSERT_EQ(info.arena_size, page);
	ASSERT_EQ(info.arena_off, page);
	ASSERT_OK(shm_region_layout(1, 1, page + 1, &info));
	ASSERT_EQ(info.arena_size, 2 * page);

	/* the largest region the limits admit */
	ASSERT_OK(shm_region_layout(SHM_REGION_MAX_ENTRIES, SHM_REGION_MAX_ENTRIES,
				    SHM_REGION_MAX_ARENA, &info));
	ASSERT_EQ(info.arena_size, SHM_REGION_MAX_ARENA);
	ASSERT_EQ(info.cqes_off, 512 + 64ull * SHM_REGION_MAX_ENTRIES);
	ASSERT_EQ(info.ring_size, info.arena_off + SHM_REGION_MAX_ARENA);
}

static void test_region_layout_rejects(void **state)
{
	static const struct {
		uint32_t sq, cq;
		uint64_t arena;
	} bad[] = {
		{ 0, 1, 4096 },                                        /* no SQ */
		{ 1, 0, 4096 },                                        /* no CQ */
		{ 3, 4, 4096 },                                        /* not a power of two */
		{ 4, 12, 4096 },
		{ 8, 4, 4096 },                                        /* CQ smaller than SQ */
		{ SHM_REGION_MAX_ENTRIES * 2, SHM_REGION_MAX_ENTRIES * 2, 4096 },
		{ 1u << 31, 1u << 31, 4096 },
		{ 4, 4, 0 },                                           /* no arena */
		{ 4, 4, SHM_REGION_MAX_ARENA + 1 },                    /* over the limit */
		{ 4, 4, UINT64_MAX },                                  /* would wrap when rounded */
		{ 4, 4, UINT64_MAX - 4094 },                           /* (both over the limit) */
	};
	struct moe_region_info info, untouched;

	(void)state;
	memset(&info, 0x5a, sizeof(info));
	untouched = info;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = shm_region_layout(bad[i].sq, bad[i].cq, bad[i].arena, &info);

		if (r != -EINVAL)
			fail_msg("case %zu (sq %u cq %u arena %llu): %d, expected -EINVAL", i,
				 bad[i].sq, bad[i].cq, (unsigned long long)bad[i].arena, r);
		assert_memory_equal(&info, &untouched, sizeof(info));
	}
	ASSERT_ERRNO(shm_region_layout(4, 4, 4096, NULL), EINVAL);
}

/* ----------------------------------------------------------------- region */

static void region_info_for(uint32_t sq, uint32_t cq, uint64_t arena,
			    struct moe_region_info *info)
{
	memset(info, 0, sizeof(*info));
	ASSERT_OK(shm_region_layout(sq, cq, arena, info));
	info->client_id = 9;
	info->max_tokens = 32;
	info->d_model = 16;
	info->n_layers = 2;
	info->max_experts = 8;
	info->max_slots = 2;
	strcpy(info->model_name, "unit");
}

static void test_region_create_attach(void **state)
{
	struct shm_region server, client;
	struct moe_region_info info;
	struct shm_ring sq_prod, sq_cons;
	struct moe_sqe sqe = { .user_data = 77, .opcode = MOE_OP_NOP }, got;
	void *p;

	(void)state;
	region_info_for(8, 16, 3 * 4096 + 1, &info);
	ASSERT_OK(shm_region_create(&info, &server));
	assert_memory_equal(&server.info, &info, sizeof(info));
	assert_true(server.info_fd >= 0 && server.ring_fd >= 0);
	assert_ptr_equal(server.sq_ctl, (void *)server.ring);
	assert_ptr_equal(server.arena, server.ring + info.arena_off);
	/* a new region's rings are empty at position 0: heads and seq words zero */
	ASSERT_EQ(server.sq_ctl->head, 0);
	ASSERT_EQ(server.cq_ctl->head, 0);
	for (uint32_t i = 0; i < info.sq_entries; i++)
		ASSERT_EQ(server.sqes[i].seq, 0);
	for (uint32_t i = 0; i < info.cq_entries; i++)
		ASSERT_EQ(server.cqes[i].seq, 0);

	ASSERT_EQ(fcntl(server.info_fd, F_GET_SEALS),
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
	ASSERT_EQ(fcntl(server.ring_fd, F_GET_SEALS), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	ASSERT_EQ(fcntl(server.info_fd, F_GETFD), FD_CLOEXEC);
	ASSERT_EQ(fcntl(server.ring_fd, F_GETFD), FD_CLOEXEC);

	/* the client cannot write the info page, nor resize the ring memfd */
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, server.info_fd, 0);
	assert_ptr_equal(p, MAP_FAILED);
	ASSERT_EQ(errno, EPERM);
	ASSERT_EQ(pwrite(server.info_fd, "x", 1, 0), -1);
	ASSERT_EQ(errno, EPERM);
	ASSERT_EQ(ftruncate(server.ring_fd, 4096), -1);
	ASSERT_EQ(errno, EPERM);
	ASSERT_EQ(ftruncate(server.ring_fd, (off_t)info.ring_size * 2), -1);
	ASSERT_EQ(errno, EPERM);
	ASSERT_EQ(fcntl(server.ring_fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	ASSERT_EQ(errno, EPERM);

	ASSERT_OK(shm_region_attach(dup(server.info_fd), dup(server.ring_fd), NULL, &client));
	assert_memory_equal(&client.info, &info, sizeof(info));
	assert_ptr_not_equal(client.ring, server.ring);

	/* two mappings, one memory: both directions, every part */
	server.arena[0] = 0xab;
	server.arena[info.arena_size - 1] = 0xcd;
	ASSERT_EQ(client.arena[0], 0xab);
	ASSERT_EQ(client.arena[info.arena_size - 1], 0xcd);
	client.cqes[15].status = -22;
	ASSERT_EQ(server.cqes[15].status, -22);
	client.cq_ctl->head = 3;
	ASSERT_EQ(server.cq_ctl->head, 3);
	client.cq_ctl->head = 0;

	/* and a ring across them */
	ASSERT_OK(shm_ring_init(&sq_prod, client.sq_ctl, client.sqes, info.sq_entries,
				sizeof(struct moe_sqe), 0));
	ASSERT_OK(shm_ring_init(&sq_cons, server.sq_ctl, server.sqes, info.sq_entries,
				sizeof(struct moe_sqe), 0));
	shm_ring_write(&sq_prod, 0, &sqe);
	assert_false(shm_ring_publish(&sq_prod, 1));
	ASSERT_EQ(shm_ring_peek(&sq_cons, info.sq_entries), 1);
	shm_ring_copy_out(&sq_cons, 0, &got);
	sqe.seq = 1;
	assert_memory_equal(&got, &sqe, sizeof(sqe));
	shm_ring_consume_release(&sq_cons, 1);
	ASSERT_EQ(shm_ring_free_slots(&sq_prod, info.sq_entries), info.sq_entries);

	shm_region_done(&client);
	ASSERT_EQ(client.info_fd, -1);
	ASSERT_EQ(client.ring_fd, -1);
	assert_null(client.ring);
	shm_region_done(&client); /* idempotent */
	shm_region_done(&server);
	shm_region_done(NULL);
}

static void test_region_done_zeroed(void **state)
{
	struct shm_region never = { 0 };
	bool fd0_open = fd_is_open(0);

	(void)state;
	/* a struct that was never created owns nothing, not fd 0 */
	shm_region_done(&never);
	shm_region_detach_keep_range(&never);
	ASSERT_EQ(fd_is_open(0), fd0_open);
}

/* A forged pair of memfds: the info page holds @info; the ring is @ring_size bytes. */
static void forge_fds(const struct moe_region_info *info, size_t info_len, uint64_t ring_size,
		      int ring_seals, int *ret_info_fd, int *ret_ring_fd)
{
	int info_fd = memfd_create("forged-info", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int ring_fd = memfd_create("forged-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(info_fd >= 0 && ring_fd >= 0);
	ASSERT_EQ(ftruncate(info_fd, (off_t)info_len), 0);
	ASSERT_EQ(pwrite(info_fd, info, info_len < sizeof(*info) ? info_len : sizeof(*info), 0),
		  (ssize_t)(info_len < sizeof(*info) ? info_len : sizeof(*info)));
	ASSERT_EQ(fcntl(info_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
	ASSERT_EQ(ftruncate(ring_fd, (off_t)ring_size), 0);
	if (ring_seals)
		ASSERT_EQ(fcntl(ring_fd, F_ADD_SEALS, ring_seals), 0);
	*ret_info_fd = info_fd;
	*ret_ring_fd = ring_fd;
}

/* Attach must fail with -@err, leave both fds open (they stay the caller's) and
 * @out untouched. */
static void expect_attach_fails(const char *what, const struct moe_region_info *info,
				size_t info_len, uint64_t ring_size, int ring_seals, int err)
{
	struct shm_region out, untouched;
	int info_fd, ring_fd, r;

	forge_fds(info, info_len, ring_size, ring_seals, &info_fd, &ring_fd);
	memset(&out, 0x5a, sizeof(out));
	untouched = out;
	r = shm_region_attach(info_fd, ring_fd, NULL, &out);
	if (r != -err) {
		if (r == 0)
			shm_region_done(&out);
		fail_msg("%s: attach returned %d (%s), expected %d", what, r,
			 r < 0 ? strerror(-r) : "success", -err);
	}
	assert_memory_equal(&out, &untouched, sizeof(out));
	assert_true(fd_is_open(info_fd));
	assert_true(fd_is_open(ring_fd));
	close(info_fd);
	close(ring_fd);
}

static void test_region_attach_rejects(void **state)
{
	const int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	struct moe_region_info good, bad;
	struct shm_region out;
	uint64_t page = page_size();
	int info_fd, ring_fd, pipefd[2];

	(void)state;
	region_info_for(4, 8, 4096, &good);

	/* the forgery machinery itself accepts a well-formed pair */
	forge_fds(&good, page, good.ring_size, seals, &info_fd, &ring_fd);
	ASSERT_OK(shm_region_attach(info_fd, ring_fd, NULL, &out));
	shm_region_done(&out);

	bad = good;
	bad.magic ^= 1;
	expect_attach_fails("bad magic", &bad, page, good.ring_size, seals, EPROTO);

	bad = good;
	bad.abi_major = MOE_ABI_MAJOR + 1;
	expect_attach_fails("next major", &bad, page, good.ring_size, seals, EPROTO);
	bad.abi_major = MOE_ABI_MAJOR - 1;
	expect_attach_fails("previous major", &bad, page, good.ring_size, seals, EPROTO);

	/* a newer minor is fine */
	bad = good;
	bad.abi_minor = MOE_ABI_MINOR + 1;
	forge_fds(&bad, page, good.ring_size, seals, &info_fd, &ring_fd);
	ASSERT_OK(shm_region_attach(info_fd, ring_fd, NULL, &out));
	shm_region_done(&out);

	bad = good;
	bad.info_size = sizeof(bad) - 8;
	expect_attach_fails("short info_size", &bad, page, good.ring_size, seals, EPROTO);
	bad.info_size = (uint32_t)page + 1;
	expect_attach_fails("info_size past the page", &bad, page, good.ring_size, seals,
			    EPROTO);
	expect_attach_fails("info memfd too small", &good, 100, good.ring_size, seals, EPROTO);

	/* the ring memfd is smaller than the info claims */
	expect_attach_fails("ring_size past the file", &good, page, good.ring_size - page, seals,
			    EPROTO);
	bad = good;
	bad.arena_size += page;
	expect_attach_fails("arena past ring_size", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.arena_off = UINT64_MAX - page + 1;
	expect_attach_fails("arena offset wraps", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.arena_size = UINT64_MAX;
	expect_attach_fails("arena size wraps", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.cqes_off = good.ring_size - 64;
	expect_attach_fails("CQEs past the end", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.sq_ctl_off = UINT64_MAX - 63;
	expect_attach_fails("SQ ctl offset wraps", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.cq_ctl_off = 0;
	expect_attach_fails("CQ ctl on the SQ ctl", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.sqes_off = good.cqes_off;
	expect_attach_fails("SQEs on the CQEs", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.sqes_off += 8;
	expect_attach_fails("misaligned SQEs", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.arena_off -= 64;
	expect_attach_fails("misaligned arena", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	bad.sq_entries = 3;
	expect_attach_fails("SQ entries not a power of two", &bad, page, good.ring_size, seals,
			    EPROTO);
	bad = good;
	bad.cq_entries = 0;
	expect_attach_fails("no CQ", &bad, page, good.ring_size, seals, EPROTO);
	bad = good;
	memset(bad.model_name, 'x', sizeof(bad.model_name));
	expect_attach_fails("unterminated model name", &bad, page, good.ring_size, seals,
			    EPROTO);

	/* a ring memfd that could shrink under the mapping */
	expect_attach_fails("ring without F_SEAL_SHRINK", &good, page, good.ring_size,
			    F_SEAL_GROW, EPROTO);
	expect_attach_fails("ring without seals", &good, page, good.ring_size, 0, EPROTO);
	expect_attach_fails("ring without F_SEAL_GROW", &good, page, good.ring_size,
			    F_SEAL_SHRINK, EPROTO);

	/* fds that are no memfds at all */
	ASSERT_EQ(pipe(pipefd), 0);
	forge_fds(&good, page, good.ring_size, seals, &info_fd, &ring_fd);
	ASSERT_ERRNO(shm_region_attach(pipefd[0], ring_fd, NULL, &out), EPROTO);
	ASSERT_ERRNO(shm_region_attach(info_fd, pipefd[0], NULL, &out), EPROTO);
	ASSERT_ERRNO(shm_region_attach(-1, ring_fd, NULL, &out), EINVAL);
	/* a fixed address must be page-aligned */
	ASSERT_ERRNO(shm_region_attach(info_fd, ring_fd, (void *)(uintptr_t)(page + 8), &out),
		     EINVAL);
	close(pipefd[0]);
	close(pipefd[1]);
	close(info_fd);
	close(ring_fd);
}

static void test_region_fixed_addr(void **state)
{
	uint64_t page = page_size();
	struct shm_region server, first, again;
	struct moe_region_info info, big;
	uint8_t *addr;
	void *p;
	int info_fd, ring_fd;

	(void)state;
	region_info_for(8, 8, 2 * 4096, &info);
	ASSERT_OK(shm_region_create(&info, &server));
	ASSERT_OK(shm_region_attach(dup(server.info_fd), dup(server.ring_fd), NULL, &first));
	addr = first.ring;
	first.arena[5] = 0x42;

	shm_region_detach_keep_range(&first);
	ASSERT_EQ(first.info_fd, -1);
	ASSERT_EQ(first.ring_fd, -1);
	assert_ptr_equal(first.ring, addr); /* the range to re-attach at */
	/* still reserved: nobody else can map there */
	p = mmap(addr, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_ptr_equal(p, MAP_FAILED);
	ASSERT_EQ(errno, EEXIST);
	/* owns nothing any more: these must not unmap the reservation */
	shm_region_done(&first);
	shm_region_detach_keep_range(&first);

	/* the reconnect: the same region (a new one would do too) at the same address */
	ASSERT_OK(shm_region_attach(dup(server.info_fd), dup(server.ring_fd), addr, &again));
	assert_ptr_equal(again.ring, addr);
	ASSERT_EQ(again.arena[5], 0x42);
	again.arena[6] = 0x43;
	ASSERT_EQ(server.arena[6], 0x43);
	shm_region_done(&again);

	/* a larger ring than the reservation would map over a neighbour: -EXDEV */
	region_info_for(8, 8, 64 * 4096, &big);
	addr = mmap(NULL, 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_ptr_not_equal(addr, MAP_FAILED);
	ASSERT_EQ(munmap(addr + page, page), 0);
	forge_fds(&big, page, big.ring_size, F_SEAL_SHRINK | F_SEAL_GROW, &info_fd, &ring_fd);
	ASSERT_ERRNO(shm_region_attach(info_fd, ring_fd, addr, &again), EXDEV);
	assert_true(fd_is_open(info_fd) && fd_is_open(ring_fd));
	/* the reservation is intact, and unmapping it is the caller's job */
	p = mmap(addr, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_ptr_equal(p, MAP_FAILED);
	ASSERT_EQ(munmap(addr, page), 0);
	close(info_fd);
	close(ring_fd);
	shm_region_done(&server);
}

/* ------------------------------------------------------------------ futex */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_futex_wait_mismatch(void **state)
{
	uint32_t word = 1;

	(void)state;
	ASSERT_ERRNO(shm_futex_wait(&word, 0, -1), EAGAIN);
	ASSERT_ERRNO(shm_futex_wait(&word, 2, 1000000000), EAGAIN);
}

static void test_futex_wait_timeout(void **state)
{
	uint32_t word = 0;
	int64_t t0 = now_ns(), elapsed;

	(void)state;
	ASSERT_ERRNO(shm_futex_wait(&word, 0, 20 * 1000000), ETIMEDOUT);
	elapsed = now_ns() - t0;
	assert_true(elapsed >= 20 * 1000000);
	/* zero: poll */
	ASSERT_ERRNO(shm_futex_wait(&word, 0, 0), ETIMEDOUT);
	/* a timeout past one second takes the tv_sec path */
	word = 3;
	ASSERT_ERRNO(shm_futex_wait(&word, 0, 1500000000), EAGAIN);
}

struct waiter {
	uint32_t *word;
	int result;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	w->result = shm_futex_wait(w->word, 0, 10 * 1000000000ll);
	return NULL;
}

static void test_futex_wake(void **state)
{
	uint32_t word = 0;
	struct waiter w = { .word = &word, .result = 1 };
	pthread_t th;
	int64_t deadline = now_ns() + 5 * 1000000000ll;
	int woken = 0;

	(void)state;
	ASSERT_EQ(shm_futex_wake(&word, 1), 0); /* nobody waits */
	ASSERT_EQ(shm_futex_wake(&word, 0), 0);
	ASSERT_ERRNO(shm_futex_wake(&word, -1), EINVAL);

	ASSERT_EQ(pthread_create(&th, NULL, waiter_main, &w), 0);
	/* wake until the waiter was really asleep and this call woke it */
	while (woken == 0 && now_ns() < deadline) {
		woken = shm_futex_wake(&word, 1);
		ASSERT_OK(woken);
		if (woken == 0)
			usleep(1000);
	}
	ASSERT_EQ(pthread_join(th, NULL), 0);
	ASSERT_EQ(woken, 1);
	ASSERT_EQ(w.result, 0);
}

#define T(_f) cmocka_unit_test_setup_teardown(_f, fd_check_setup, fd_check_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_ring_init_rejects),
		T(test_ring_produce_consume),
		T(test_ring_full),
		T(test_ring_wrap_around),
		T(test_ring_hostile_seq),
		T(test_ring_corrupted_head),
		T(test_ring_copy_out),
		T(test_ring_sleep_handshake),
		T(test_ring_producer_wait),
		T(test_region_layout),
		T(test_region_layout_rejects),
		T(test_region_create_attach),
		T(test_region_done_zeroed),
		T(test_region_attach_rejects),
		T(test_region_fixed_addr),
		T(test_futex_wait_mismatch),
		T(test_futex_wait_timeout),
		T(test_futex_wake),
	};

	return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
