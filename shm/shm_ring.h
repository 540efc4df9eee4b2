/* SPDX-License-Identifier: MIT */
/*
 * shm_ring: one side's private view of one ring of the region (moe_abi.h),
 * used by both libmoe and moed: the client produces SQEs and consumes CQEs,
 * moed consumes SQEs and produces CQEs.
 *
 * Every entry starts with its seq word (moe_abi.h, "Rings"): the producer
 * publishes an entry by storing position + 1 there, and the consumer polls
 * the seq of the slot at its own position, never the producer's index. The
 * authoritative position of each side lives in this private struct; the
 * consumer's head in shared memory is only published, for the producer's
 * flow control. The producer reads that head once when its private count of
 * free slots runs out, and checks it: a head more than n_entries behind
 * means the peer corrupted it, and the call returns -EPROTO (moed then
 * disconnects that client; libmoe marks the connection dead). No call
 * trusts any shared word for more than the one use it was read for.
 *
 * Thread-safety: a struct shm_ring is used by one thread at a time; the two
 * sides of one ring may run concurrently in different processes.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "moe_abi.h"

struct shm_ring {
	struct moe_ring_ctl *ctl; /* shared */
	uint8_t *entries;         /* shared: n_entries * entry_size bytes */
	uint32_t n_entries;       /* power of two */
	uint32_t mask;
	uint32_t entry_size;
	uint32_t index;           /* private: the producer's or the consumer's position */
	uint32_t free_cached;     /* producer: slots free as of the last head read */
};

/*
 * Set up @r over @ctl and @entries. @n_entries must be a power of two in
 * [1, 2^30] (the counts below are returned in an int); @entry_size a
 * multiple of 4, at least 8 (the seq word and a payload). @index is the
 * starting position: 0 for a region's rings, whose zeroed slots then read
 * as "not ready" (a test that starts elsewhere sets the seq words itself).
 * Touches no shared memory. Returns 0 or -EINVAL.
 */
int shm_ring_init(struct shm_ring *r, struct moe_ring_ctl *ctl, void *entries,
		  uint32_t n_entries, uint32_t entry_size, uint32_t index);

/* ---- producer side ---- */

/*
 * Free slots: the private count when it is at least @want, else the count
 * from the consumer's head read again (A1: load_acquire, pairs with R2 in
 * shm_ring_consume_release()). Returns 0..n_entries (possibly fewer than
 * @want), or -EPROTO when the head is not within n_entries behind our
 * position. So a producer with room reads no shared word at all.
 */
int shm_ring_free_slots(struct shm_ring *r, uint32_t want);

/*
 * Write @entry (entry_size bytes) into the slot at position + @i (i < free
 * slots), all but its seq word: that one is shm_ring_publish()'s, stored
 * after everything else.
 */
void shm_ring_write(const struct shm_ring *r, uint32_t i, const void *entry);

/*
 * Publish @n written slots by their seq words (R1: release stores, the first
 * slot's last and seq_cst; pairs with A2 in shm_ring_peek()) and report
 * whether the consumer asked to be woken (MOE_RING_NEED_WAKEUP, read with
 * seq_cst after the stores: the Dekker handshake of moe_abi.h). The caller
 * then calls shm_ring_wake_consumer().
 */
bool shm_ring_publish(struct shm_ring *r, uint32_t n);

/* ---- consumer side ---- */

/*
 * Entries ready from our position on, at most @max and n_entries: each
 * slot's seq read with acquire (A2, pairs with R1) and compared with the
 * position it must hold. Never fails: whatever a hostile producer writes
 * only makes an entry ready or not ready, and a slot is read at most once
 * per position because the position is ours.
 */
uint32_t shm_ring_peek(const struct shm_ring *r, uint32_t max);

/*
 * Copy the entry at private position + @i (i < ready entries) into @out,
 * once. The copy is what the caller validates and uses; the slot may change
 * under it at any time (a hostile producer).
 */
void shm_ring_copy_out(const struct shm_ring *r, uint32_t i, void *out);

/*
 * Release @n consumed slots (R2: store_release of the head; pairs with A1).
 * For a ring whose producer never waits for room (the SQ: libmoe returns
 * -EAGAIN instead).
 */
void shm_ring_consume_release(struct shm_ring *r, uint32_t n);

/*
 * Release @n consumed slots as shm_ring_consume_release(), but with a
 * seq_cst store (R2s), and then, if the producer waits for room, clear
 * MOE_RING_PRODUCER_WAITING (C1: load_seq_cst, C2: fetch_and_seq_cst) and
 * return true: the caller rings the producer's doorbell. R2s before C1 in
 * the single seq_cst order against P1 before P2 in shm_ring_producer_wait():
 * either the producer's P2 sees the slots R2s freed, or C1 sees the bit P1
 * raised (a Dekker handshake; with a release store and an acquire load
 * both sides could miss each other). For the CQ.
 */
bool shm_ring_consume_release_resume(struct shm_ring *r, uint32_t n);

/* ---- a full ring: the PRODUCER_WAITING handshake (moe_abi.h) ---- */

/*
 * Producer, its ring full (moed's CQ): raise MOE_RING_PRODUCER_WAITING
 * (P1: fetch_or_seq_cst), then read the consumer's head again (P2:
 * load_seq_cst) and return the free slots it shows, 0..n_entries, or
 * -EPROTO. If 0, the producer may stop: the consumer's next
 * shm_ring_consume_release_resume() sees the bit and rings the producer's
 * doorbell.
 */
int shm_ring_producer_wait(struct shm_ring *r);

/* ---- sleeping and waking (moe_abi.h, "Sleeping and waking") ---- */

/*
 * Consumer, before it sleeps: returns the futex value to wait on in
 * @ret_futex_val and true when the entry at our position is still not ready
 * (sleep now), false when it arrived meanwhile (NEED_WAKEUP is cleared
 * again; go on consuming).
 */
bool shm_ring_prepare_sleep(struct shm_ring *r, uint32_t *ret_futex_val);

/* Consumer, awake: clear MOE_RING_NEED_WAKEUP. */
void shm_ring_clear_sleep(struct shm_ring *r);

/*
 * The futex word the consumer sleeps on, for a wait armed elsewhere (moed
 * arms it in io_uring with the value shm_ring_prepare_sleep() returned).
 * Only its address leaves: the word is read and written here.
 */
static inline uint32_t *shm_ring_futex_word(const struct shm_ring *r)
{
	return &r->ctl->futex;
}

/* Producer: bump the futex counter and FUTEX_WAKE its sleepers (one syscall). */
void shm_ring_wake_consumer(struct shm_ring *r);
