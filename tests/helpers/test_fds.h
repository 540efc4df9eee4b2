/* SPDX-License-Identifier: MIT */
/*
 * test_fds: CMocka setup/teardown pair that fails a test which leaves a file
 * descriptor open (STYLE 15: every test ends by asserting clean teardown).
 * Include after <cmocka.h>.
 */
#pragma once

#include <dirent.h>
#include <stdint.h>

/* The number of open fds of this process, or -1. */
static inline int test_count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static inline int fd_check_setup(void **state)
{
	*state = (void *)(intptr_t)test_count_open_fds();
	return 0;
}

static inline int fd_check_teardown(void **state)
{
	int before = (int)(intptr_t)*state, after = test_count_open_fds();

	if (before != after) {
		print_error("fd leak: %d open before the test, %d after\n", before, after);
		return -1;
	}
	return 0;
}
