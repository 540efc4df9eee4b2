/* SPDX-License-Identifier: MIT */
/*
 * diag: the human-readable reason behind a negative errno.
 *
 * Library code never logs (STYLE 5). A function that can fail for a reason a
 * user must see (a file and a tensor name, a bad option) takes a `struct diag *`
 * last, fills it when it fails and returns -errno; the caller that decides
 * prints it. Passing NULL is always allowed: the message is then dropped.
 */
#pragma once

#include <stddef.h>

struct diag {
	char msg[512];
};

/*
 * Format a message into @d (if not NULL) and return @r, so that an error path
 * reads `return diag_set(d, -EINVAL, "%s: tensor %s: ...", path, name);`.
 * Keeps the first message: an outer caller cannot overwrite the precise cause
 * found deeper down (use diag_prefix() to add context).
 */
int diag_set(struct diag *d, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prepend "PREFIX: " to the message already in @d and return @r. */
int diag_prefix(struct diag *d, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Forget any message (before reusing @d for a new operation). */
void diag_clear(struct diag *d);
