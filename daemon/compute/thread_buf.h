/* SPDX-License-Identifier: MIT */
/*
 * thread_buf: scratch buffers that belong to the calling thread, one per
 * use, kept from call to call. A matmul runs on whichever worker calls it
 * and needs a buffer of its own (the float32 panel that sgemm multiplies,
 * the BF16 copy of the activations that vdpbf16ps multiplies): a buffer
 * per thread needs no lock, and one kept between calls keeps allocation
 * off the hot path (STYLE 14) once it has reached the size the calls need.
 */
#pragma once

#include <stddef.h>

enum thread_buf_use {
	THREAD_BUF_WIDEN_PANEL, /* matmul.c: half-precision weights widened for sgemm */
	THREAD_BUF_BF16_X,      /* matmul_bf16_dot.c: the activations rounded to BF16 */
	THREAD_BUF_USES,
};

/*
 * The calling thread's buffer for @use, at least @bytes long and 64-byte
 * aligned; NULL without memory. It grows (without keeping its contents)
 * when a call asks for more than it holds, and is freed when the thread
 * ends. The pointer is valid until this thread's next call for the same
 * @use.
 */
void *thread_buf_get(enum thread_buf_use use, size_t bytes);
