/* SPDX-License-Identifier: MIT */
/*
 * shm_atomic: the only ordering primitives the shared-memory rings use.
 *
 * Both sides of the region (libmoe and moed) are separate processes, so every
 * word another process writes is read through one of these, never with a
 * plain load. They are C11 atomics on plain uint32_t storage (the ABI structs
 * hold fixed-width integers, not _Atomic types, so the layout is the same for
 * every compiler that includes moe_abi.h).
 *
 *   load_acquire(p)     later reads see everything the writer published
 *                       before its matching store_release
 *   store_release(p,v)  earlier writes (an SQE's contents, a CQE's) become
 *                       visible before the new index
 *   read_once(p)        a single untorn read with no ordering (statistics)
 *   write_once(p,v)     a single untorn write with no ordering
 *   *_seq_cst           only the "sleeper flag vs. index" handshake needs
 *                       them (see moe_abi.h, "Sleeping and waking"); they
 *                       are atomic operations, not standalone fences, so
 *                       ThreadSanitizer models them
 *
 * Every call site carries a label and names its partner, e.g.
 * "R1: publishes the SQE; pairs with A1 in sq_consume_peek()".
 */
#pragma once

#include <stdint.h>

#define load_acquire(_p) __atomic_load_n((_p), __ATOMIC_ACQUIRE)
#define store_release(_p, _v) __atomic_store_n((_p), (_v), __ATOMIC_RELEASE)
#define read_once(_p) __atomic_load_n((_p), __ATOMIC_RELAXED)
#define write_once(_p, _v) __atomic_store_n((_p), (_v), __ATOMIC_RELAXED)
#define fetch_add_release(_p, _v) __atomic_fetch_add((_p), (_v), __ATOMIC_RELEASE)
#define fetch_or_seq_cst(_p, _v) __atomic_fetch_or((_p), (_v), __ATOMIC_SEQ_CST)
#define fetch_and_seq_cst(_p, _v) __atomic_fetch_and((_p), (_v), __ATOMIC_SEQ_CST)
#define load_seq_cst(_p) __atomic_load_n((_p), __ATOMIC_SEQ_CST)
#define store_seq_cst(_p, _v) __atomic_store_n((_p), (_v), __ATOMIC_SEQ_CST)
