/* SPDX-License-Identifier: MIT */
/* uring_futex: IORING_OP_FUTEX_WAIT defined locally and probed; see uring_futex.h. */
#include "reactor/uring_futex.h"

#include <string.h>

/* From the kernel's include/uapi/linux/io_uring.h and linux/futex.h. */
#define MOED_IORING_OP_FUTEX_WAIT 51
#define MOED_FUTEX2_SIZE_U32 0x02
#define MOED_FUTEX_BITSET_MATCH_ANY 0xffffffffu

bool uring_futex_probe(struct io_uring *ring)
{
	struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
	bool ok;

	if (!probe)
		return false;
	/* liburing 2.3's helper bounds-checks against probe->last_op itself */
	ok = io_uring_opcode_supported(probe, MOED_IORING_OP_FUTEX_WAIT);
	io_uring_free_probe(probe);
	return ok;
}

void uring_prep_futex_wait(struct io_uring_sqe *sqe, uint32_t *word, uint32_t expected)
{
	/*
	 * io_futex_prep(): fd carries the futex2 flags (size u32, no
	 * FUTEX2_PRIVATE: the word is shared with the client process), addr the
	 * word, addr2 the expected value, addr3 the bitset mask; len,
	 * futex_flags (the op-flags union), buf_index and file_index must be 0.
	 */
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = MOED_IORING_OP_FUTEX_WAIT;
	sqe->fd = MOED_FUTEX2_SIZE_U32;
	sqe->addr = (uint64_t)(uintptr_t)word;
	sqe->addr2 = expected;
	sqe->addr3 = MOED_FUTEX_BITSET_MATCH_ANY;
}
