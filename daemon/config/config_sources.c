/* SPDX-License-Identifier: MIT */
/* config_sources: the configuration's sources, read (again); see config_sources.h. */
#include "config/config_sources.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int config_sources_add(struct config_sources *src, const char *option, const char *value)
{
	if (src->n == CONFIG_SOURCES_MAX_SETS)
		return -E2BIG;
	src->option[src->n] = option;
	src->value[src->n] = value;
	src->n++;
	return 0;
}

int config_sources_build(const struct config_sources *src, struct moed_config *cfg,
			 struct diag *d)
{
	int r;

	moed_config_init(cfg);
	if (src->file) {
		r = moed_config_load_all(cfg, src->file, d);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < src->n; i++) {
		const char *value = src->value[i];
		char key[64];

		if (strcmp(src->option[i], "--set") == 0) {
			const char *eq = strchr(value, '=');

			if (!eq || (size_t)(eq - value) >= sizeof(key))
				return diag_set(d, -EINVAL, "--set %s: expected KEY=VALUE", value);
			memcpy(key, value, (size_t)(eq - value));
			key[eq - value] = '\0';
			value = eq + 1;
		} else {
			/* --model and --socket name their key */
			snprintf(key, sizeof(key), "%s", src->option[i] + 2);
		}
		r = moed_config_set(cfg, key, value, d);
		if (r < 0)
			return r;
	}
	return moed_config_validate(cfg, d);
}
