/* SPDX-License-Identifier: MIT */
/* bench_scratch: private folders removed at exit and on a signal; see bench_scratch.h. */
#include "bench_scratch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCRATCH_MAX 4

static char dirs[SCRATCH_MAX][PATH_MAX];
static volatile sig_atomic_t made[SCRATCH_MAX];
static unsigned n_dirs;

/*
 * Remove the files in @dir, then @dir. Only async-signal-safe calls
 * (open, getdents64, unlinkat, rmdir), as a signal handler runs it.
 */
static void dir_remove(const char *dir)
{
	char buf[4096] __attribute__((aligned(8)));
	ssize_t n;
	int fd;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		while ((n = getdents64(fd, buf, sizeof(buf))) > 0)
			for (ssize_t at = 0; at < n;) {
				struct dirent64 *e = (struct dirent64 *)(void *)(buf + at);

				if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
					(void)unlinkat(fd, e->d_name, 0);
				at += e->d_reclen;
			}
		close(fd);
	}
	(void)rmdir(dir);
}

void bench_scratch_remove(void)
{
	/* the latest first: a later folder may sit inside an earlier one */
	for (unsigned i = SCRATCH_MAX; i-- > 0;)
		if (made[i]) {
			made[i] = 0;
			dir_remove(dirs[i]);
		}
}

static void on_fatal_signal(int sig)
{
	bench_scratch_remove();
	/* SA_RESETHAND restored the default action: die of the same signal */
	raise(sig);
}

static void guard_install(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT,
				    SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGPIPE };
	struct sigaction sa = { .sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		(void)sigaction(sigs[i], &sa, NULL);
	atexit(bench_scratch_remove);
}

int bench_scratch_dir(const char *parent, const char *prefix, char *buf, size_t len)
{
	char *dir;

	if (n_dirs == SCRATCH_MAX)
		return -ENOSPC;
	if (n_dirs == 0)
		guard_install();
	dir = dirs[n_dirs];
	if ((size_t)snprintf(dir, PATH_MAX, "%s/%s.XXXXXX", parent, prefix) >= PATH_MAX ||
	    strlen(dir) >= len)
		return -ENAMETOOLONG;
	if (!mkdtemp(dir))
		return -errno;
	made[n_dirs++] = 1;
	memcpy(buf, dir, strlen(dir) + 1);
	return 0;
}
