/* SPDX-License-Identifier: MIT */
/* cpu_load: other processes' share of the machine; see cpu_load.h. */
#include "util/cpu_load.h"

#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util/spin.h"

double cpu_machine_busy_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "re");
	int n;

	if (!f)
		return -1;
	/* user nice system idle iowait irq softirq steal: all but idle and iowait are busy */
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 8)
		return -1;
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

double cpu_rusage_s(int who)
{
	struct rusage ru;

	if (getrusage(who, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

void cpu_load_mark_take(struct cpu_load_mark *m)
{
	m->machine_s = cpu_machine_busy_s();
	m->self_s = cpu_rusage_s(RUSAGE_SELF);
	m->wall_s = 1e-9 * (double)spin_now_ns();
}

double cpu_load_others(const struct cpu_load_mark *m)
{
	struct cpu_load_mark now;
	double others;

	cpu_load_mark_take(&now);
	if (m->machine_s < 0 || now.machine_s < 0 || now.wall_s <= m->wall_s)
		return -1;
	/* /proc/stat counts in clock ticks: a short interval may come out slightly negative */
	others = (now.machine_s - m->machine_s) - (now.self_s - m->self_s);
	return others > 0 ? others / (now.wall_s - m->wall_s) : 0;
}
