/* SPDX-License-Identifier: MIT */
/* test_metrics: reading moed's Prometheus text in tests (test_metrics_text, it_metrics). */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_assert.h"

/*
 * The value of the sample line "SERIES VALUE" of @text (SERIES: the name and
 * its labels, exactly as written), or fail the test.
 */
static inline double test_metrics_sample(const char *text, const char *series)
{
	char want[256];
	size_t len;
	const char *at;

	len = (size_t)snprintf(want, sizeof(want), "\n%s ", series);
	/* a line starts the text or follows a newline */
	if (strncmp(text, want + 1, len - 1) == 0)
		return strtod(text + len - 1, NULL);
	at = strstr(text, want);
	if (!at)
		fail_msg("no sample %s in:\n%s", series, text);
	return strtod(at + len, NULL);
}
