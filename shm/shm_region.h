/* SPDX-License-Identifier: MIT */
/*
 * shm_region: the two memfds of one connection (moe_abi.h): their layout,
 * their creation and sealing by moed, and their mapping and validation by
 * libmoe.
 *
 * Thread-safety: none needed; a region is created or attached once and then
 * only read through its pointers.
 */
#pragma once

#include <stdint.h>

#include "moe_abi.h"

#define SHM_REGION_MAX_ENTRIES (1u << 16) /* SQ or CQ */
#define SHM_REGION_MAX_ARENA (1ull << 40)

struct shm_region {
	struct moe_region_info info; /* private copy: what moed published */
	int info_fd;                 /* -1 once closed */
	int ring_fd;
	uint8_t *ring;               /* the ring memfd, mapped read-write */
	struct moe_ring_ctl *sq_ctl;
	struct moe_ring_ctl *cq_ctl;
	struct moe_sqe *sqes;
	struct moe_cqe *cqes;
	uint8_t *arena;
};

/*
 * Fill the layout fields of @info (offsets, ring_size, entries, arena_size,
 * magic, ABI version, info_size) for the given sizes; leaves the model and
 * client fields alone. Entries must be powers of two in
 * [1, SHM_REGION_MAX_ENTRIES], cq_entries >= sq_entries, and arena_size in
 * [1, SHM_REGION_MAX_ARENA] (rounded up to the page size). 0 or -EINVAL.
 */
int shm_region_layout(uint32_t sq_entries, uint32_t cq_entries, uint64_t arena_size,
		      struct moe_region_info *info);

/*
 * moed: create the info memfd (holding @info, sealed against every write)
 * and the ring memfd (ring_size bytes, zeroed, sealed against shrink, grow and
 * further seals), and map the ring memfd. 0, or -errno with nothing left open.
 */
int shm_region_create(const struct moe_region_info *info, struct shm_region *ret_region);

/*
 * libmoe: check the seals (the info memfd's against shrink, grow and write,
 * the ring memfd's against shrink and grow: without them a peer could make
 * our mappings fault with SIGBUS), map the info memfd read-only, validate it
 * (magic, major version, every offset and size inside ring memfd's real
 * size, ring alignment), map the ring memfd. With @fixed_addr non-NULL the
 * ring is mapped there with MAP_FIXED (a reconnect keeps the arena's
 * addresses; the old mapping must have the same ring_size, else -EXDEV).
 * Takes ownership of both fds on success only. 0, -EPROTO (bad info, a seal
 * missing, not memfds), -EXDEV, or -errno.
 */
int shm_region_attach(int info_fd, int ring_fd, void *fixed_addr,
		      struct shm_region *ret_region);

/* Unmap the ring and close both fds; NULL-safe and idempotent. */
void shm_region_done(struct shm_region *r);

/* As shm_region_done() but keeps the ring's address range reserved
 * (PROT_NONE) for a later shm_region_attach(..., fixed_addr = r->ring). */
void shm_region_detach_keep_range(struct shm_region *r);
