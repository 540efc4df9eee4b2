/* SPDX-License-Identifier: MIT */
/*
 * spin: what a thread that spins before it sleeps needs: a monotonic clock
 * in nanoseconds to bound the spin, and the CPU's pause hint between
 * polls (it saves power and lets a hyperthread sibling run).
 */
#pragma once

#include <stdint.h>
#include <time.h>

static inline uint64_t spin_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}
