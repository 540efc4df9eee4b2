/* SPDX-License-Identifier: MIT */
/* test_metrics: reading moed's Prometheus text in tests (test_metrics_text, it_metrics). */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_assert.h"

/*
 * The value of the sample line "SERIES VALUE" of @text (SERIES: the name and
 * its labels, exactly as written), or fail the test. @text must start with
 * a newline or have the line after its first.
 */
static inline double test_metrics_sample(const char *text, const char *series)
{
	char want[256];
	const char *at;

	snprintf(want, sizeof(want), "\n%s ", series);
	at = strstr(text, want);
	if (!at)
		fail_msg("no sample %s in:\n%s", series, text);
	return strtod(at + strlen(want), NULL);
}
