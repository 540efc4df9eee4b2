/* SPDX-License-Identifier: MIT */
/*
 * bench_scratch: private folders for a benchmark's files (a generated
 * model, store objects), removed at exit and on a fatal signal, so that an
 * interrupted run leaves nothing in /var/tmp or /dev/shm. The folders hold
 * files only. SIGKILL cannot be caught: a killed run leaves them.
 */
#pragma once

#include <stddef.h>

/*
 * mkdtemp("@parent/@prefix.XXXXXX") into @buf (@len bytes); the folder and
 * its files are removed at exit and on SIGINT, SIGTERM, SIGHUP, SIGQUIT and
 * the fatal signals (the first call installs the handlers). At most 4.
 * 0, -ENAMETOOLONG, -ENOSPC (a fifth) or mkdtemp's -errno.
 */
int bench_scratch_dir(const char *parent, const char *prefix, char *buf, size_t len);

/* Remove every folder made so far now (and not again at exit). */
void bench_scratch_remove(void);
