/* SPDX-License-Identifier: MIT */
/*
 * moe_abi: the shared-memory contract between libmoe (a client) and moed.
 * This header is the single source of truth for both sides; every size and
 * key offset below is pinned by a static assertion, and any change that
 * moves one is an ABI major bump.
 *
 * A connection owns two memfds, created, sized and sealed by moed and passed
 * to the client with SCM_RIGHTS in the HELLO reply (moe_proto.h):
 *
 *   info memfd (read-only for the client: sealed F_SEAL_WRITE before it is
 *   sent, so the client can only map it PROT_READ)
 *     struct moe_region_info: magic, ABI version, the offsets and sizes of
 *     everything in the ring memfd, the limits and the model's shape
 *
 *   ring memfd (read-write for both; sealed F_SEAL_SHRINK | F_SEAL_GROW |
 *   F_SEAL_SEAL so its size never changes under the daemon)
 *     +----------------+----------------+-----------+-----------+---------+
 *     | SQ ring_ctl    | CQ ring_ctl    | SQ entries| CQ entries| arena   |
 *     | (256 bytes)    | (256 bytes)    | 64 B each | 64 B each | page-   |
 *     |                |                |           |           | aligned |
 *     +----------------+----------------+-----------+-----------+---------+
 *
 * The client writes token rows into its arena, pushes an SQE naming them by
 * arena offset, and moed posts a CQE when the result is in the arena. moed
 * treats every byte of the ring memfd as hostile input (THREAT-MODEL.md).
 *
 * Rings (ABI 2: entries carry their own sequence number). Positions are
 * free-running uint32_t counters; a position is masked with (entries - 1)
 * only when a slot is addressed, and entries is a power of two, so unsigned
 * wrap-around keeps every difference of positions right across 2^32.
 *
 * Every entry begins with a uint32_t seq. The producer writes the entry at
 * its position p, then stores seq = p + 1 with release: that store, not an
 * index, publishes the entry. The consumer, at its position c, polls the
 * seq of the slot c addresses with acquire and takes the entry when it
 * equals c + 1. A slot's previous content (position c - entries) holds
 * c - entries + 1, and a slot never written holds 0 (the region starts
 * zeroed, the rings at position 0), so neither looks ready. The consumer
 * never reads a producer's index, and an idle consumer polls the very cache
 * line the producer's next entry arrives in.
 *
 *   slot            0         1         2         3     (entries = 4)
 *   seq             5         6         3         4
 *   written at      4         5         2         3     (seq - 1)
 *                   consumed  ready     old       old   (consumer at c = 5)
 *
 * Slot 1 holds 5 + 1: the entry at 5 is ready. The one at 6 is ready when
 * slot 2 holds 7.
 *
 * The consumer returns slots through its head (the only index left): its
 * position, published with release once it has copied the entries out
 * (with seq_cst on the CQ, for MOE_RING_PRODUCER_WAITING below). The producer
 * keeps a private count of free slots and reads the head again only when
 * that count runs out:
 *
 *      head (consumer)            producer's position p (private)
 *        v                          v
 *   [ . . X X X X X X X X X X . . . . ]     X = published or being read
 *
 *   empty: p == head          full: p - head == entries
 *   a head with p - head > entries is a corrupted ring.
 *
 * The SQ's producer is the client and its consumer moed; the CQ's producer
 * is moed and its consumer the client. Each side keeps its own position in
 * private memory and never trusts a word in shared memory beyond the one use
 * it was read for: a seq the peer wrote only says "ready" or "not ready" for
 * the one position the reader is at, and an entry is copied out once before
 * it is checked.
 *
 * Sleeping and waking (a Dekker handshake, as io_uring's SQPOLL NEED_WAKEUP):
 *
 *   consumer, before it sleeps           producer, after it publishes
 *   v = load_acquire(&ctl->futex)        store_seq_cst(&entry[p].seq, p + 1)
 *   fetch_or_seq_cst(&ctl->flags,        if (load_seq_cst(&ctl->flags)
 *                    NEED_WAKEUP)              & NEED_WAKEUP)
 *   if (load_seq_cst(&entry[c].seq)          fetch_add(&ctl->futex, 1)
 *       == c + 1) -> do not sleep             futex_wake(&ctl->futex)
 *   futex_wait(&ctl->futex, v)
 *
 * Among seq_cst operations one total order holds, so either the consumer's
 * seq load sees the new entry, or the producer's flags load sees NEED_WAKEUP.
 * (A producer that publishes several entries stores the later ones' seq with
 * release first and the first one's, at the position a caught-up consumer
 * polls, last and seq_cst.)
 * Reading v first makes a wake that lands between the flag and the wait
 * harmless: the futex word has moved and the wait returns at once.
 * moed waits on the SQ futex through io_uring (IORING_OP_FUTEX_WAIT), or on an
 * eventfd when the kernel lacks that (MOE_REGION_F_EVENTFD_DOORBELL): the
 * client then writes the eventfd instead of calling futex_wake.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define MOE_ABI_MAGIC 0x52454f4du /* "MOER" in memory order */
#define MOE_ABI_MAJOR 2 /* 2: entries carry a seq word; the ring_ctl tail is gone */
#define MOE_ABI_MINOR 0

#define MOE_ABI_CACHELINE 64
#define MOE_ARENA_ALIGN 64 /* every offset an SQE names is a multiple of this */

/* ---- ring control block: one for the SQ, one for the CQ ---- */

/* flags bits (struct moe_ring_ctl.flags), each changed with an atomic RMW */
/* The consumer is asleep or about to be: the producer must bump and wake futex. */
#define MOE_RING_NEED_WAKEUP (1u << 0)
/*
 * CQ only: moed stopped consuming the SQ because the CQ is full. After it
 * frees CQ slots the client clears the bit and rings the SQ doorbell.
 */
#define MOE_RING_PRODUCER_WAITING (1u << 1)

struct moe_ring_ctl {
	uint32_t head; /* consumer's published count of consumed entries */
	uint8_t pad_head[MOE_ABI_CACHELINE - 4];
	uint32_t flags; /* MOE_RING_* */
	uint8_t pad_flags[MOE_ABI_CACHELINE - 4];
	uint32_t futex; /* wake-up counter: the futex word the consumer sleeps on */
	uint8_t pad_futex[MOE_ABI_CACHELINE - 4];
	uint8_t reserved[MOE_ABI_CACHELINE]; /* 0; keeps the block 4 cache lines */
};

/*
 * The first word of every ring entry: position + 1 once the producer has
 * written the entry at that position (see "Rings" above). Both entry types
 * start with it, so the ring code reads it the same way in either.
 */
#define MOE_ENTRY_SEQ_OFF 0

/* ---- submission queue entry (client -> moed) ---- */

enum moe_opcode {
	MOE_OP_NOP = 0,     /* completes with status 0; measures the ring itself */
	MOE_OP_FORWARD = 1, /* run one MoE layer on n_tokens rows */
};

/*
 * Routing buffers: int32 expert[n_tokens][route_k] at route_off and float
 * weight[n_tokens][route_k] at weight_off. moed reads them once (GIVEN: the
 * client chose the experts; an index must be < the layer's expert count) or
 * writes them (RETURN: the routing moed chose; route_k >= the layer's slots).
 */
#define MOE_SQE_F_ROUTE_GIVEN (1u << 0)  /* moed uses the routing in the buffers */
#define MOE_SQE_F_ROUTE_RETURN (1u << 1) /* moed writes its routing into them */
#define MOE_SQE_F_NO_MERGE (1u << 2)     /* never merge this batch with others */
/*
 * moed writes int32 tokens_per_expert[max_experts] at counts_off: the tokens
 * each expert was routed in this batch, before capacity (0 past the layer's
 * expert count). Implies NO_MERGE: the counts are this batch's alone.
 */
#define MOE_SQE_F_COUNTS_RETURN (1u << 3)
#define MOE_SQE_F_ALL                                                               \
	(MOE_SQE_F_ROUTE_GIVEN | MOE_SQE_F_ROUTE_RETURN | MOE_SQE_F_NO_MERGE | \
	 MOE_SQE_F_COUNTS_RETURN)

struct moe_sqe {
	uint32_t seq;       /* position + 1, stored last (see "Rings") */
	uint8_t opcode;     /* enum moe_opcode */
	uint8_t reserved0;  /* must be 0 */
	uint16_t flags;     /* MOE_SQE_F_* */
	uint64_t user_data; /* returned untouched in the CQE */
	uint16_t layer;     /* < moe_region_info.n_layers */
	uint16_t route_k;   /* slots per token in the routing buffer (with ROUTE_*) */
	uint32_t n_tokens;  /* 1 .. moe_region_info.max_tokens */
	uint64_t in_off;    /* float x[n_tokens][d_model] in the arena */
	uint64_t out_off;   /* float y[n_tokens][d_model] in the arena */
	uint64_t route_off;  /* int32 expert indices (with ROUTE_*), else 0 */
	uint64_t weight_off; /* float expert weights (with ROUTE_*), else 0 */
	uint64_t counts_off; /* int32 counts (with COUNTS_RETURN), else 0 */
};

/* ---- completion queue entry (moed -> client) ---- */

#define MOE_CQE_F_MERGED (1u << 0) /* ran merged with other clients' batches; */
				   /* the statistics are still this batch's own */
#define MOE_CQE_F_Z_LOSS (1u << 1) /* z_loss is valid */

struct moe_cqe {
	uint32_t seq;         /* position + 1, stored last (see "Rings") */
	int32_t status;       /* 0, or -errno (-EINVAL: bad SQE, -EDOM: NaN input ...) */
	uint64_t user_data;
	uint16_t flags;       /* MOE_CQE_F_* */
	uint16_t route_k;     /* slots written with ROUTE_RETURN */
	uint32_t n_dropped;   /* token slots over capacity */
	uint32_t n_sanitized; /* non-finite inputs replaced */
	float aux_loss;
	float z_loss;
	uint32_t reserved0;   /* 0 */
	uint64_t reserved[3]; /* 0; one CQE a cache line */
};

/* ---- the info page (read-only for the client) ---- */

/* The daemon waits on an eventfd doorbell, not on the SQ futex (see above). */
#define MOE_REGION_F_EVENTFD_DOORBELL (1u << 0)

#define MOE_MODEL_NAME_MAX 64

struct moe_region_info {
	uint32_t magic;      /* MOE_ABI_MAGIC */
	uint16_t abi_major;  /* MOE_ABI_MAJOR */
	uint16_t abi_minor;  /* MOE_ABI_MINOR */
	uint32_t info_size;  /* sizeof(struct moe_region_info) of the daemon */
	uint32_t flags;      /* MOE_REGION_F_* */
	uint64_t ring_size;  /* bytes of the ring memfd */
	uint64_t sq_ctl_off; /* offsets inside the ring memfd */
	uint64_t cq_ctl_off;
	uint64_t sqes_off;
	uint64_t cqes_off;
	uint64_t arena_off;
	uint64_t arena_size;
	uint32_t sq_entries; /* powers of two */
	uint32_t cq_entries;
	uint32_t client_id;  /* as moectl status shows it */
	uint32_t max_tokens; /* per SQE */
	/* the model's shape */
	uint32_t d_model;
	uint32_t n_layers;    /* SQE layer index < n_layers */
	uint32_t max_experts; /* the largest expert count of any layer */
	uint32_t max_slots;   /* the largest route_k any layer needs */
	char model_name[MOE_MODEL_NAME_MAX]; /* NUL-terminated */
	uint64_t reserved[8];
};

_Static_assert(sizeof(struct moe_ring_ctl) == 4 * MOE_ABI_CACHELINE, "ring_ctl size");
_Static_assert(offsetof(struct moe_ring_ctl, head) == 0, "ring_ctl.head");
_Static_assert(offsetof(struct moe_ring_ctl, flags) == 64, "ring_ctl.flags");
_Static_assert(offsetof(struct moe_ring_ctl, futex) == 128, "ring_ctl.futex");
_Static_assert(sizeof(struct moe_sqe) == 64, "sqe size");
_Static_assert(offsetof(struct moe_sqe, seq) == MOE_ENTRY_SEQ_OFF, "sqe.seq");
_Static_assert(offsetof(struct moe_sqe, opcode) == 4, "sqe.opcode");
_Static_assert(offsetof(struct moe_sqe, flags) == 6, "sqe.flags");
_Static_assert(offsetof(struct moe_sqe, user_data) == 8, "sqe.user_data");
_Static_assert(offsetof(struct moe_sqe, layer) == 16, "sqe.layer");
_Static_assert(offsetof(struct moe_sqe, route_k) == 18, "sqe.route_k");
_Static_assert(offsetof(struct moe_sqe, n_tokens) == 20, "sqe.n_tokens");
_Static_assert(offsetof(struct moe_sqe, in_off) == 24, "sqe.in_off");
_Static_assert(offsetof(struct moe_sqe, out_off) == 32, "sqe.out_off");
_Static_assert(offsetof(struct moe_sqe, route_off) == 40, "sqe.route_off");
_Static_assert(offsetof(struct moe_sqe, weight_off) == 48, "sqe.weight_off");
_Static_assert(offsetof(struct moe_sqe, counts_off) == 56, "sqe.counts_off");
_Static_assert(sizeof(struct moe_cqe) == 64, "cqe size");
_Static_assert(offsetof(struct moe_cqe, seq) == MOE_ENTRY_SEQ_OFF, "cqe.seq");
_Static_assert(offsetof(struct moe_cqe, status) == 4, "cqe.status");
_Static_assert(offsetof(struct moe_cqe, user_data) == 8, "cqe.user_data");
_Static_assert(offsetof(struct moe_cqe, flags) == 16, "cqe.flags");
_Static_assert(offsetof(struct moe_cqe, n_dropped) == 20, "cqe.n_dropped");
_Static_assert(offsetof(struct moe_cqe, aux_loss) == 28, "cqe.aux_loss");
_Static_assert(offsetof(struct moe_cqe, z_loss) == 32, "cqe.z_loss");
_Static_assert(sizeof(struct moe_region_info) == 232, "region_info size");
_Static_assert(offsetof(struct moe_region_info, ring_size) == 16, "info.ring_size");
_Static_assert(offsetof(struct moe_region_info, arena_off) == 56, "info.arena_off");
_Static_assert(offsetof(struct moe_region_info, sq_entries) == 72, "info.sq_entries");
_Static_assert(offsetof(struct moe_region_info, d_model) == 88, "info.d_model");
_Static_assert(offsetof(struct moe_region_info, model_name) == 104, "info.model_name");
