/* SPDX-License-Identifier: MIT */
/*
 * buf: moe_buf_alloc() and moe_buf_free(), the public face of the client's
 * arena allocator (arena.c). They need no daemon: the allocator's
 * bookkeeping is private and outlives reconnects, as the arena's addresses do.
 */
#include <errno.h>

#include "client_internal.h"

MOE_API int moe_buf_alloc(struct moe_client *client, size_t bytes, void **ret_ptr)
{
	if (!client)
		return -EINVAL;
	return arena_buf_alloc(&client->arena, bytes, ret_ptr);
}

MOE_API void moe_buf_free(struct moe_client *client, void *ptr)
{
	if (!client || !ptr)
		return;
	/* A pointer that is not a live block is the caller's bug; the library cannot report it. */
	(void)arena_buf_free(&client->arena, ptr);
}
