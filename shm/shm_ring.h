/* SPDX-License-Identifier: MIT */
/*
 * shm_ring: one side's private view of one ring of the region (moe_abi.h),
 * used by both libmoe and moed: the client produces SQEs and consumes CQEs,
 * moed consumes SQEs and produces CQEs.
 *
 * The authoritative index of each side (the producer's tail, the consumer's
 * head) lives in this private struct; the copy in shared memory is only
 * published. The peer's index is read once per call with acquire and checked:
 * a distance larger than the ring means the peer corrupted it, and the call
 * returns -EPROTO (moed then disconnects that client). No call trusts any
 * shared word for more than the one use it was read for.
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
	uint32_t index;           /* private: producer's tail or consumer's head */
};

/*
 * Set up @r over @ctl and @entries. @n_entries must be a power of two in
 * [1, 2^30] (the counts below are returned in an int). @index is the starting
 * index: the value ctl->head/tail had when the ring was created (0 for a new
 * ring). Touches no shared memory. Returns 0 or -EINVAL.
 */
int shm_ring_init(struct shm_ring *r, struct moe_ring_ctl *ctl, void *entries,
		  uint32_t n_entries, uint32_t entry_size, uint32_t index);

/* ---- producer side ---- */

/*
 * Free slots, from the consumer's published head (A1: load_acquire, pairs
 * with R2 in shm_ring_consume_release()). Returns 0..n_entries, or -EPROTO when
 * the head is not within n_entries behind our tail.
 */
int shm_ring_free_slots(const struct shm_ring *r);

/* The slot at private tail + @i (i < free slots): write the entry there. */
void *shm_ring_slot(const struct shm_ring *r, uint32_t i);

/*
 * Publish @n written slots (R1: store_seq_cst of the tail; pairs with A2 in
 * shm_ring_peek()) and report whether the consumer asked to be woken
 * (MOE_RING_NEED_WAKEUP, read with seq_cst after the tail store: the Dekker
 * handshake of moe_abi.h). The caller then calls shm_ring_wake_consumer().
 */
bool shm_ring_publish(struct shm_ring *r, uint32_t n);

/* ---- consumer side ---- */

/*
 * Filled slots, from the producer's published tail (A2: load_acquire, pairs
 * with R1). Returns 0..n_entries, or -EPROTO for a corrupted tail.
 */
int shm_ring_peek(const struct shm_ring *r);

/*
 * Copy the entry at private head + @i (i < filled slots) into @out, once.
 * The copy is what the caller validates and uses; the slot may change under
 * it at any time (a hostile producer).
 */
void shm_ring_copy_out(const struct shm_ring *r, uint32_t i, void *out);

/*
 * Release @n consumed slots (R2: store_seq_cst of the head: release for A1,
 * sequentially consistent as the first half of the consumer's side of the
 * PRODUCER_WAITING handshake below).
 */
void shm_ring_consume_release(struct shm_ring *r, uint32_t n);

/* ---- a full ring: the PRODUCER_WAITING handshake (moe_abi.h) ---- */

/*
 * Producer, its ring full (moed's CQ): raise MOE_RING_PRODUCER_WAITING
 * (P1: fetch_or_seq_cst), then read the consumer's head again (P2:
 * load_seq_cst) and return the free slots it shows, 0..n_entries, or
 * -EPROTO. If 0, the producer may stop: the consumer's next
 * shm_ring_consumer_resume() sees the bit and rings the producer's doorbell.
 */
int shm_ring_producer_wait(struct shm_ring *r);

/*
 * Consumer, right after shm_ring_consume_release(): if the producer waits
 * for room, clear the bit (C2: fetch_and_seq_cst) and return true: the
 * caller then rings the producer's doorbell. C1 (load_seq_cst of the flags)
 * follows R2 in the single seq_cst order: either the producer's P2 sees the
 * slots R2 freed, or C1 sees the bit P1 raised (a Dekker handshake; with a
 * release store and an acquire load both sides could miss each other).
 */
bool shm_ring_consumer_resume(struct shm_ring *r);

/* ---- sleeping and waking (moe_abi.h, "Sleeping and waking") ---- */

/*
 * Consumer, before it sleeps: returns the futex value to wait on in
 * @ret_futex_val and true when the ring is still empty (sleep now), false when
 * an entry arrived meanwhile (NEED_WAKEUP is cleared again; go on consuming).
 * A corrupted tail counts as "arrived": the caller's next peek reports it.
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
