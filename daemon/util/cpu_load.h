/* SPDX-License-Identifier: MIT */
/*
 * cpu_load: how much of the machine other processes take, from /proc/stat
 * and getrusage(). A measurement of speed (the kernels' bounds at start,
 * every benchmark) is only as good as the CPUs it had: this says whether
 * it had them.
 */
#pragma once

/* CPU seconds the whole machine spent busy (/proc/stat's "cpu" line); < 0 when unreadable. */
double cpu_machine_busy_s(void);

/* User + system CPU seconds of getrusage(@who) (RUSAGE_SELF, RUSAGE_CHILDREN); 0 on failure. */
double cpu_rusage_s(int who);

/* Where a measurement started: the machine's busy time, this process's and the clock's. */
struct cpu_load_mark {
	double machine_s, self_s, wall_s;
};

void cpu_load_mark_take(struct cpu_load_mark *m);

/*
 * The cores other processes used on average since @m (the machine's busy
 * time less this process's, every thread of it, over the wall time); < 0
 * when /proc/stat could not be read.
 */
double cpu_load_others(const struct cpu_load_mark *m);
