/* SPDX-License-Identifier: MIT */
/* store_change: changes to the map while serving; see expert_store.h. */
#include "store/store_internal.h"

#include <errno.h>

int64_t expert_store_change(struct expert_store *s, const struct expert_change *c,
			    struct diag *d)
{
	(void)s;
	(void)c;
	return diag_set(d, -EOPNOTSUPP, "changes to the expert map are not built yet");
}

void expert_store_changes_wait(struct expert_store *s)
{
	(void)s;
}
