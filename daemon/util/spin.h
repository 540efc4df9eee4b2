/* SPDX-License-Identifier: MIT */
/*
 * spin: what a thread that spins before it sleeps needs: a monotonic clock
 * in nanoseconds to bound the spin, the CPU's pause hint between polls (it
 * saves power and lets a hyperthread sibling run), and a step that gives
 * the CPU away now and then.
 */
#pragma once

#include <sched.h>
#include <stdbool.h>
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

/*
 * One step of a spin bounded by @deadline (spin_now_ns() based); @i counts
 * the steps. Every 64 steps it reads the clock and calls sched_yield(): a
 * thread woken on this CPU (on a 2-CPU machine, often the very thread the
 * spinner waits for: a client, the reactor, a runner) runs at once instead
 * of after the spin. False once the deadline has passed.
 */
static inline bool spin_step(unsigned i, uint64_t deadline)
{
	if ((i & 63) == 63) {
		if (spin_now_ns() > deadline)
			return false;
		sched_yield();
	}
	spin_pause();
	return true;
}
