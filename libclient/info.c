/* SPDX-License-Identifier: MIT */
/*
 * info: moe_model_info_get(), the model's shape and this connection's limits,
 * from the private copy of the region's info page that shm_region_attach()
 * validated. The caller's struct may be older (smaller) than ours: only its
 * size bytes are written, so a program built against an earlier moe.h keeps
 * working when struct moe_model_info grows.
 */
#include <errno.h>
#include <string.h>

#include "client_internal.h"

MOE_API int moe_model_info_get(const struct moe_client *client, struct moe_model_info *ret_info)
{
	const struct moe_region_info *ri;
	struct moe_model_info mi;
	size_t n;

	if (!client || !ret_info || ret_info->size < sizeof(ret_info->size))
		return -EINVAL;
	ri = &client->session.region.info;

	mi = (struct moe_model_info){
		.size = ret_info->size,
		.d_model = ri->d_model,
		.n_layers = ri->n_layers,
		.max_experts = ri->max_experts,
		.max_slots = ri->max_slots,
		.max_tokens = ri->max_tokens,
		.client_id = ri->client_id,
		.arena_size = ri->arena_size,
	};
	/* The info page is moed's: do not trust it to be NUL-terminated. */
	_Static_assert(sizeof(mi.model_name) == sizeof(ri->model_name), "model_name size");
	memcpy(mi.model_name, ri->model_name, sizeof(mi.model_name) - 1);
	mi.model_name[sizeof(mi.model_name) - 1] = '\0';

	n = ret_info->size < sizeof(mi) ? ret_info->size : sizeof(mi);
	memcpy(ret_info, &mi, n);
	return 0;
}
