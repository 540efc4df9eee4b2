/* SPDX-License-Identifier: MIT */
/*
 * uring_futex: io_uring's futex opcodes, which Debian 12's liburing 2.3
 * header predates (the kernel has them from 6.7). The opcode numbers and the
 * SQE encoding are the kernel's ABI (include/uapi/linux/io_uring.h,
 * io_uring/futex.c), so they are defined here and their presence is probed
 * at start, never inferred from a version number.
 */
#pragma once

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

/* Whether this kernel's io_uring knows IORING_OP_FUTEX_WAIT. */
bool uring_futex_probe(struct io_uring *ring);

/*
 * Prepare a wait on the shared (not process-private) u32 futex at @word,
 * completing when it is woken, or at once with -EAGAIN if *@word != @expected.
 */
void uring_prep_futex_wait(struct io_uring_sqe *sqe, uint32_t *word, uint32_t expected);
