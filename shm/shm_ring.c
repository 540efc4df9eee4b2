/* SPDX-License-Identifier: MIT */
/*
 * shm_ring: produce and consume on one ring of a connection's region
 * (moe_abi.h), for both sides: libmoe produces SQEs and consumes CQEs, moed
 * consumes SQEs and produces CQEs. The peer is another process and may be
 * hostile, so every shared word is read once, through shm_atomic.h, and
 * checked before it is used; the authoritative positions stay in struct
 * shm_ring.
 *
 * The atomics of one ring and their partners:
 *
 *   producer                                consumer
 *   A1 load_acquire(head)  <-- pairs -->    R2 store_release(head)
 *      (the consumer is done reading          (after copying the slots out)
 *       the slots we are about to reuse;    R2s store_seq_cst(head) (the CQ)
 *       only when the private free count
 *       runs out)
 *   R1 store_release(seq) of every slot <-- pairs --> A2 load_acquire(seq)
 *      but the first, then                   (of the slot at our position,
 *   R1s store_seq_cst(seq) of the first       before copying it out)
 *   S1 load_seq_cst(flags) <-- Dekker -->   S2 fetch_or_seq_cst(flags)
 *      (after R1s)                             S3 load_seq_cst(seq) after S2
 *   R3 fetch_add_release(futex) <-- pairs -> A3 load_acquire(futex)
 *                                              (before S2; futex_wait on it)
 *                                           S4 fetch_and_seq_cst(flags)
 *
 *   a full ring (PRODUCER_WAITING):
 *   P1 fetch_or_seq_cst(flags) <-- Dekker --> R2s store_seq_cst(head)
 *   P2 load_seq_cst(head) after P1             C1 load_seq_cst(flags) after R2s
 *                                              C2 fetch_and_seq_cst(flags)
 *
 * Position arithmetic, written once: positions are free-running uint32_t and
 * n_entries is a power of two <= 2^30, so 2^32 is a multiple of n_entries and
 * (pos & mask) addresses the same slot before and after pos wraps past
 * UINT32_MAX. The entry at position p carries seq p + 1 (mod 2^32) once
 * written; the same slot's previous entry carried p + 1 - n_entries, which
 * differs because n_entries < 2^32. Our position minus the consumer's head,
 * computed in uint32_t, is the number of slots in use modulo 2^32; an honest
 * consumer keeps it in [0, n_entries], so any larger value (which includes a
 * head "ahead" of us, seen as a huge difference) is corruption.
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
	 * 2^30 at most, not 2^31: shm_ring_free_slots() and
	 * shm_ring_producer_wait() return a count up to n_entries in an int.
	 */
	if (!r || !ctl || !entries || entry_size < 8 || entry_size % sizeof(uint32_t) != 0)
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

static inline uint8_t *ring_slot_at(const struct shm_ring *r, uint32_t pos)
{
	return r->entries + (size_t)(pos & r->mask) * r->entry_size;
}

/* The seq word of the slot that position @pos addresses (moe_abi.h: MOE_ENTRY_SEQ_OFF). */
static inline uint32_t *ring_seq_at(const struct shm_ring *r, uint32_t pos)
{
	return (uint32_t *)(void *)(ring_slot_at(r, pos) + MOE_ENTRY_SEQ_OFF);
}

/* ---- producer side ---- */

/* Free slots after a head read of @head; -EPROTO for a head that cannot be. */
static int ring_free_from_head(struct shm_ring *r, uint32_t head)
{
	uint32_t used = r->index - head;

	if (used > r->n_entries)
		return -EPROTO;
	r->free_cached = r->n_entries - used;
	return (int)r->free_cached;
}

int shm_ring_free_slots(struct shm_ring *r, uint32_t want)
{
	if (r->free_cached >= want)
		return (int)r->free_cached;
	/*
	 * A1: the consumer's head; pairs with R2/R2s. Acquire so that the
	 * consumer's reads of the slots it released happen before our writes
	 * into them (no slot reused while being read).
	 */
	return ring_free_from_head(r, load_acquire(&r->ctl->head));
}

void shm_ring_write(const struct shm_ring *r, uint32_t i, const void *entry)
{
	/* Everything but the seq word, which publishes the entry once stored. */
	_Static_assert(MOE_ENTRY_SEQ_OFF == 0, "the payload follows the seq word");
	memcpy(ring_slot_at(r, r->index + i) + sizeof(uint32_t),
	       (const uint8_t *)entry + sizeof(uint32_t), r->entry_size - sizeof(uint32_t));
}

bool shm_ring_publish(struct shm_ring *r, uint32_t n)
{
	if (n == 0)
		return false;
	/*
	 * R1: each slot's seq after its contents; pairs with A2 in
	 * shm_ring_peek(). Last to first: a consumer reads a slot's seq only
	 * after it found the previous one ready, so the later slots may go
	 * first, and the first one's store (R1s) then publishes them all.
	 */
	for (uint32_t k = n - 1; k > 0; k--)
		store_release(ring_seq_at(r, r->index + k), r->index + k + 1);
	/*
	 * R1s: the first slot, at the position a caught-up consumer polls;
	 * release for A2 and, as the first half of the Dekker handshake,
	 * seq_cst against S3 in shm_ring_prepare_sleep().
	 */
	store_seq_cst(ring_seq_at(r, r->index), r->index + 1);
	r->index += n;
	/* a caller that wrote past its free slots is a bug; do not wrap */
	r->free_cached = r->free_cached > n ? r->free_cached - n : 0;
	/*
	 * S1: after R1s in the single seq_cst order; pairs with S2 in
	 * shm_ring_prepare_sleep(). Either the sleeping consumer's S3 sees the
	 * seq stored by R1s, or this load sees its NEED_WAKEUP.
	 */
	return (load_seq_cst(&r->ctl->flags) & MOE_RING_NEED_WAKEUP) != 0;
}

/* ---- consumer side ---- */

uint32_t shm_ring_peek(const struct shm_ring *r, uint32_t max)
{
	uint32_t n = 0;

	if (max > r->n_entries)
		max = r->n_entries;
	/*
	 * A2: the seq of each slot from our position on; pairs with R1/R1s in
	 * shm_ring_publish(). The producer's writes into a slot before its
	 * seq store are visible to the shm_ring_copy_out() that follows. At
	 * most n_entries slots, each once: a hostile producer cannot make us
	 * loop or look at a position twice.
	 */
	while (n < max && load_acquire(ring_seq_at(r, r->index + n)) == r->index + n + 1)
		n++;
	return n;
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
	 * shm_ring_free_slots(). Release: our copies out of them are complete
	 * before the producer can see the slots free.
	 */
	store_release(&r->ctl->head, r->index);
}

bool shm_ring_consume_release_resume(struct shm_ring *r, uint32_t n)
{
	r->index += n;
	/*
	 * R2s: as R2, and sequentially consistent as the first half of the
	 * consumer's side of the PRODUCER_WAITING handshake; pairs with A1 and
	 * with P2 in shm_ring_producer_wait().
	 */
	store_seq_cst(&r->ctl->head, r->index);
	/*
	 * C1: after R2s in the single seq_cst order; pairs with P1. A load, not
	 * an RMW, so that the usual case (bit clear) leaves the flags' cache
	 * line shared.
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

/* ---- a full ring ---- */

int shm_ring_producer_wait(struct shm_ring *r)
{
	/*
	 * P1: ask to be told; pairs with C1 in shm_ring_consume_release_resume()
	 * (Dekker). An RMW: the consumer owns other bits of flags
	 * (MOE_RING_NEED_WAKEUP).
	 */
	fetch_or_seq_cst(&r->ctl->flags, MOE_RING_PRODUCER_WAITING);
	/*
	 * P2: after P1 in the single seq_cst order; pairs with R2s. A consumer
	 * that released slots before our bit became visible to it is seen here.
	 * Acquire as well (seq_cst loads are), like A1.
	 */
	return ring_free_from_head(r, load_seq_cst(&r->ctl->head));
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
	 * S3: after S2 in the single seq_cst order; pairs with R1s in
	 * shm_ring_publish(). If a producer published the entry at our
	 * position before our flag became visible to it, we see its seq here
	 * and must not sleep.
	 */
	if (load_seq_cst(ring_seq_at(r, r->index)) == r->index + 1) {
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
