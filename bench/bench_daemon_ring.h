/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_ring: the shared-memory ring alone, as libmoe and moed drive
 * it, between two processes: this one submits an SQE and spins for its CQE
 * (moe_submit + moe_wait's spin), a forked one spins on the SQ, copies the
 * SQE out, releases it and posts a CQE at once (moed's session_consume and
 * session_flush), all through shm/shm_ring.c on a region from
 * shm_region_create(). No reactor, no runner hand-off, no engine, no
 * validation: the part of section 2's round trip that the ring ABI decides,
 * set against the same raw spinning ping-pong.
 */
#pragma once

#include <stdint.h>

/*
 * @warmup untimed, then @n timed ring round trips into @samples_ns. 0 or
 * -errno (-ECHILD: the answering process failed).
 */
int ring_pingpong_run(uint32_t warmup, uint32_t n, double *samples_ns);
