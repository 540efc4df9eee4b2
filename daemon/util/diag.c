/* SPDX-License-Identifier: MIT */
/* diag: formatting of failure reasons; see diag.h. */
#include "diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int diag_set(struct diag *d, int r, const char *fmt, ...)
{
	va_list ap;

	if (!d || d->msg[0])
		return r;
	va_start(ap, fmt);
	vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
	va_end(ap);
	return r;
}

int diag_prefix(struct diag *d, int r, const char *fmt, ...)
{
	char prefix[256], old[sizeof(d->msg)];
	va_list ap;

	if (!d)
		return r;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, d->msg, sizeof(old));
	/* bounded pieces: the prefix and the cause both survive a long message */
	snprintf(d->msg, sizeof(d->msg), "%.200s: %.300s", prefix, old[0] ? old : strerror(-r));
	return r;
}

void diag_clear(struct diag *d)
{
	if (d)
		d->msg[0] = '\0';
}
