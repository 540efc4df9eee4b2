/* SPDX-License-Identifier: MIT */
/*
 * test_cpu: what the CPU has, read from the kernel's /proc/cpuinfo, for the
 * tests that run every instantiation of a kernel the CPU supports.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "test_assert.h"

/*
 * Whether the "flags" line of /proc/cpuinfo lists @flag: what the kernel says
 * the CPU has, independent of the __builtin_cpu_supports() that the kernels'
 * run-time choice asks (matmul_small_m.c, activations.c). Fails the test
 * when the line cannot be read.
 */
static inline bool cpuinfo_has_flag(const char *flag)
{
	char line[8192];
	size_t len = strlen(flag);
	bool found = false, seen = false;
	FILE *f = fopen("/proc/cpuinfo", "re");

	if (!f)
		fail_msg("/proc/cpuinfo: %s", strerror(errno));
	while (!seen && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		seen = true;
		for (const char *p = strchr(line, ':'); p && *p; p += strcspn(p, " \n")) {
			p += strspn(p, ": \n");
			if (strncmp(p, flag, len) == 0 && (p[len] == ' ' || p[len] == '\n'))
				found = true;
		}
	}
	fclose(f);
	if (!seen)
		fail_msg("/proc/cpuinfo has no flags line");
	return found;
}
