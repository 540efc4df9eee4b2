/* SPDX-License-Identifier: MIT */
/*
 * config_sources: where moed's configuration comes from, kept for its whole
 * life so that a reload reads the same sources again: the defaults, the
 * file and its drop-ins (config.h), then the command line's --model,
 * --socket and --set in their order.
 */
#pragma once

#include "config/config.h"
#include "util/diag.h"

#define CONFIG_SOURCES_MAX_SETS 128

struct config_sources {
	const char *file;                                  /* NULL: no file */
	const char *option[CONFIG_SOURCES_MAX_SETS];       /* "--model", "--socket", "--set" */
	const char *value[CONFIG_SOURCES_MAX_SETS];        /* its argument (KEY=VALUE for --set) */
	unsigned n;
};

/* Add a command-line setting (the strings are borrowed). -E2BIG when full. */
int config_sources_add(struct config_sources *src, const char *option, const char *value);

/*
 * Defaults, then the file and its drop-ins, then the command line, then
 * the cross-key checks: the configuration moed would run with. 0, or
 * -errno with the reason (file:line for a bad line) in @d.
 */
int config_sources_build(const struct config_sources *src, struct moed_config *cfg,
			 struct diag *d);
