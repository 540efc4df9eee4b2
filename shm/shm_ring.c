/* SPDX-License-Identifier: MIT */
/*
 * shm_ring: produce and consume on one ring of a connection's region
 * (moe_abi.h), for both sides: libmoe produces SQEs and consumes CQEs, moed
 * consumes SQEs and produces CQEs. The peer is another process and may be
 * hostile, so every shared word is read once, through shm_atomic.h, and
 * checked before it is used; the authoritative index stays in struct shm_ring.
 *
 * The atomics of one ring and their partners:
 *
 *   producer                                consumer
 *   A1 load_acquire(head)  <-- pairs -->    R2 store_seq_cst(head)
 *      (the consumer is done reading          (after copying the slots out)
 *       the slots we are about to reuse)
 *   R1 store_seq_cst(tail) <-- pairs -->    A2 load_acquire(tail)
 *      (after writing the slots)               (before copying them out)
 *   S1 load_seq_cst(flags) <-- Dekker -->   S2 fetch_or_seq_cst(flags)
 *      (after R1)                              S3 load_seq_cst(tail) after S2
 *   R3 fetch_add_release(futex) <-- pairs -> A3 load_acquire(futex)
 *                                              (before S2; futex_wait on it)
 *                                           S4 fetch_and_seq_cst(flags)
 *
 *   a full ring (PRODUCER_WAITING):
 *   P1 fetch_or_seq_cst(flags) <-- Dekker --> R2 store_seq_cst(head)
 *   P2 load_seq_cst(head) after P1             C1 load_seq_cst(flags) after R2
 *                                              C2 fetch_and_seq_cst(flags)
 *
 * Index arithmetic, written once: indices are free-running uint32_t and
 * n_entries is a power of two <= 2^31, so 2^32 is a multiple of n_entries and
 * (index & mask) addresses the same slot before and after index wraps past
 * UINT32_MAX. tail - head computed in uint32_t is the number of filled slots
 * modulo 2^32; an honest peer keeps it in [0, n_entries], so any larger value
 * (which includes a peer index "ahead" of ours, seen as a huge difference) is
 * corruption.
 */
#include "shm_ring.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "shm_atomic.h"
#include "shm_futex.h"

int shm_ring_init(struct shm_ring *r, struct moe_ring_ctl *ctl, void *entries,
		  uint32_t n_entries, uint32_t entry_size, uint32_t index)
{
	/*
	 * 2^30 at most, not 2^31: shm_ring_free_slots() and shm_ring_peek()
	 * return a count up to n_entries in an int.
	 */
	if (!r || !ctl || !entries || entry_size == 0)
		return -EINVAL;
	if (n_entries == 0 || n_entries > (1u << 30) || (n_entries & (n_entries - 1)) != 0)
		return -EINVAL;

	*r = (struct shm_ring){
		.ctl = ctl,
		.entries = entries,
		.n_entries = n_entries,
		.mask = n_entries - 1,
		.entry_size = entry_size,
		.index = index,
	};
	return 0;
}

static inline uint8_t *ring_slot_at(const struct shm_ring *r, uint32_t index)
{
	return r->entries + (size_t)(index & r->mask) * r->entry_size;
}

/* ---- producer side ---- */

int shm_ring_free_slots(const struct shm_ring *r)
{
	/*
	 * A1: the consumer's head; pairs with R2 in shm_ring_consume_release().
	 * Acquire so that the consumer's reads of the slots it released
	 * happen before our writes into them (no slot reused while being read).
	 */
	uint32_t head = load_acquire(&r->ctl->head);
	uint32_t used = r->index - head;

	if (used > r->n_entries)
		return -EPROTO;
	return (int)(r->n_entries - used);
}

void *shm_ring_slot(const struct shm_ring *r, uint32_t i)
{
	return ring_slot_at(r, r->index + i);
}

bool shm_ring_publish(struct shm_ring *r, uint32_t n)
{
	r->index += n;
	/*
	 * R1: publishes the slots written since the last publish; pairs with
	 * A2 in shm_ring_peek() (release half) and, as the first half of the
	 * Dekker handshake, with S3 in shm_ring_prepare_sleep() (seq_cst).
	 */
	store_seq_cst(&r->ctl->tail, r->index);
	/*
	 * S1: after R1 in the single seq_cst order; pairs with S2 in
	 * shm_ring_prepare_sleep(). Either the sleeping consumer's S3 sees the
	 * tail stored by R1, or this load sees its NEED_WAKEUP.
	 */
	return (load_seq_cst(&r->ctl->flags) & MOE_RING_NEED_WAKEUP) != 0;
}

/* ---- consumer side ---- */

int shm_ring_peek(const struct shm_ring *r)
{
	/*
	 * A2: the producer's tail; pairs with R1 in shm_ring_publish(). The
	 * producer's writes into the slots before R1 are visible to the
	 * shm_ring_copy_out() calls that follow.
	 */
	uint32_t tail = load_acquire(&r->ctl->tail);
	uint32_t filled = tail - r->index;

	if (filled > r->n_entries)
		return -EPROTO;
	return (int)filled;
}

void shm_ring_copy_out(const struct shm_ring *r, uint32_t i, void *out)
{
	/*
	 * One memcpy, one read of each byte: the caller validates and uses the
	 * private copy only, so a producer rewriting the slot meanwhile can at
	 * worst make the copy inconsistent, never change it after validation.
	 */
	memcpy(out, ring_slot_at(r, r->index + i), r->entry_size);
}

void shm_ring_consume_release(struct shm_ring *r, uint32_t n)
{
	r->index += n;
	/*
	 * R2: returns the slots to the producer; pairs with A1 in
	 * shm_ring_free_slots() and with P2 in shm_ring_producer_wait().
	 * Release: our copies out of them are complete before the producer
	 * can see the slots free. Sequentially consistent as well: it is the
	 * first half of the consumer's side of the PRODUCER_WAITING handshake
	 * (C1 in shm_ring_consumer_resume() follows it).
	 */
	store_seq_cst(&r->ctl->head, r->index);
}

/* ---- a full ring ---- */

int shm_ring_producer_wait(struct shm_ring *r)
{
	uint32_t head, used;

	/*
	 * P1: ask to be told; pairs with C1 in shm_ring_consumer_resume()
	 * (Dekker). An RMW: the consumer owns other bits of flags
	 * (MOE_RING_NEED_WAKEUP).
	 */
	fetch_or_seq_cst(&r->ctl->flags, MOE_RING_PRODUCER_WAITING);
	/*
	 * P2: after P1 in the single seq_cst order; pairs with R2. A consumer
	 * that released slots before our bit became visible to it is seen here.
	 * Acquire as well (seq_cst loads are), like A1.
	 */
	head = load_seq_cst(&r->ctl->head);
	used = r->index - head;
	if (used > r->n_entries)
		return -EPROTO;
	return (int)(r->n_entries - used);
}

bool shm_ring_consumer_resume(struct shm_ring *r)
{
	/*
	 * C1: after R2 (the caller's shm_ring_consume_release()) in the single
	 * seq_cst order; pairs with P1. A load, not an RMW, so that the usual
	 * case (bit clear) leaves the flags' cache line shared.
	 */
	if (!(load_seq_cst(&r->ctl->flags) & MOE_RING_PRODUCER_WAITING))
		return false;
	/*
	 * C2: clear it with an RMW (the same word holds our NEED_WAKEUP, which
	 * a plain store could lose); only the caller that cleared it rings.
	 */
	return (fetch_and_seq_cst(&r->ctl->flags, ~MOE_RING_PRODUCER_WAITING) &
		MOE_RING_PRODUCER_WAITING) != 0;
}

/* ---- sleeping and waking ---- */

bool shm_ring_prepare_sleep(struct shm_ring *r, uint32_t *ret_futex_val)
{
	/*
	 * A3: the futex word, read before the flag is raised; pairs with R3 in
	 * shm_ring_wake_consumer(). Any wake that lands after this load has
	 * bumped the word, so the futex_wait(v) that follows returns at once
	 * instead of sleeping through it.
	 */
	uint32_t v = load_acquire(&r->ctl->futex);

	/*
	 * S2: announce the sleep; pairs with S1 in shm_ring_publish() (Dekker).
	 * An atomic RMW: the producer's side owns other bits of flags
	 * (MOE_RING_PRODUCER_WAITING).
	 */
	fetch_or_seq_cst(&r->ctl->flags, MOE_RING_NEED_WAKEUP);
	/*
	 * S3: after S2 in the single seq_cst order; pairs with R1 in
	 * shm_ring_publish(). If a producer stored a tail before our flag
	 * became visible to it, we see that tail here and must not sleep.
	 * A corrupted tail also differs from our head: "arrived", and the
	 * caller's next shm_ring_peek() returns -EPROTO.
	 */
	if (load_seq_cst(&r->ctl->tail) != r->index) {
		shm_ring_clear_sleep(r);
		return false;
	}
	*ret_futex_val = v;
	return true;
}

void shm_ring_clear_sleep(struct shm_ring *r)
{
	/*
	 * S4: withdraw NEED_WAKEUP, leaving the other bits alone; pairs with S1
	 * in shm_ring_publish(). A producer that still saw the bit only costs
	 * a spurious wake.
	 */
	fetch_and_seq_cst(&r->ctl->flags, ~MOE_RING_NEED_WAKEUP);
}

void shm_ring_wake_consumer(struct shm_ring *r)
{
	/*
	 * R3: move the futex word so that a consumer between A3 and its
	 * futex_wait() does not sleep; pairs with A3 in
	 * shm_ring_prepare_sleep(). Release, so a consumer whose A3 reads this
	 * value also sees our R1.
	 */
	fetch_add_release(&r->ctl->futex, 1);
	/*
	 * All sleepers: a wake costs one syscall either way, and waking one of
	 * two waiters on a shared ring could strand the other. A failure can
	 * only be -EFAULT on a word we just wrote, so there is nothing to do.
	 */
	(void)shm_futex_wake(&r->ctl->futex, INT_MAX);
}
