/* SPDX-License-Identifier: MIT */
/*
 * submit: turn a struct moe_request into an SQE and push it. The request's
 * pointers become arena offsets here, and every range is checked against
 * the arena first, so that a caller's mistake comes back as -EINVAL at once
 * instead of as a -EINVAL completion later (moed checks all of it again: it
 * trusts nothing in the region). On the fast path this costs no system call:
 * moed is woken only when it said it sleeps (MOE_RING_NEED_WAKEUP).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "client_internal.h"
#include "moe_abi.h"

MOE_API void moe_request_init(struct moe_request *req)
{
	if (!req)
		return;
	*req = (struct moe_request){.size = sizeof(*req)};
}

/*
 * The arena offset of @ptr when [@ptr, @ptr + @rows * @cols * 4) lies in the
 * arena (every buffer a request names holds 4-byte floats or int32s).
 */
static int submit_range_offset(const struct moe_client *c, const void *ptr, uint64_t rows,
			       uint64_t cols, uint64_t *ret_off)
{
	uint64_t len;
	int r;

	if (__builtin_mul_overflow(rows, cols, &len) ||
	    __builtin_mul_overflow(len, (uint64_t)sizeof(float), &len))
		return -EINVAL;
	r = arena_range_offset(&c->arena, ptr, len, ret_off);
	if (r < 0)
		return r;
	/* moed accepts only MOE_ARENA_ALIGN-aligned offsets (moe_abi.h). */
	if (*ret_off % MOE_ARENA_ALIGN != 0)
		return -EINVAL;
	return 0;
}

/*
 * Fill @sqe from @req, refusing what the client can already tell moed would
 * refuse (moed alone knows a layer's expert count and slots per token).
 */
static int submit_sqe_build(const struct moe_client *c, const struct moe_request *req,
			    struct moe_sqe *sqe)
{
	const struct moe_region_info *info = &c->session.region.info;
	const uint32_t route_flags = MOE_REQ_ROUTE_GIVEN | MOE_REQ_ROUTE_RETURN;
	const uint32_t known_flags = route_flags | MOE_REQ_NO_MERGE | MOE_REQ_COUNTS_RETURN;
	uint16_t flags = 0;
	int r;

	/* Version 1 is the first: a smaller struct is not an older caller but a bug. */
	if (req->size < sizeof(*req))
		return -EINVAL;
	/* GIVEN reads the routing buffers, RETURN writes them: one or the other. */
	if ((req->flags & ~known_flags) || (req->flags & route_flags) == route_flags)
		return -EINVAL;
	if (req->layer >= info->n_layers || req->n_tokens == 0 || req->n_tokens > info->max_tokens)
		return -EINVAL;
	/* The SQE holds both in 16 bits (models have at most 2^16 layers). */
	if (req->layer > UINT16_MAX || req->route_k > UINT16_MAX)
		return -EINVAL;

	if (req->flags & MOE_REQ_ROUTE_GIVEN)
		flags |= MOE_SQE_F_ROUTE_GIVEN;
	if (req->flags & MOE_REQ_ROUTE_RETURN)
		flags |= MOE_SQE_F_ROUTE_RETURN;
	if (req->flags & MOE_REQ_NO_MERGE)
		flags |= MOE_SQE_F_NO_MERGE;
	if (req->flags & MOE_REQ_COUNTS_RETURN)
		flags |= MOE_SQE_F_COUNTS_RETURN;

	*sqe = (struct moe_sqe){
		.user_data = req->user_data,
		.opcode = MOE_OP_FORWARD,
		.flags = flags,
		.layer = (uint16_t)req->layer,
		.n_tokens = req->n_tokens,
	};
	r = submit_range_offset(c, req->input, req->n_tokens, info->d_model, &sqe->in_off);
	if (r < 0)
		return r;
	r = submit_range_offset(c, req->output, req->n_tokens, info->d_model, &sqe->out_off);
	if (r < 0)
		return r;

	/* Without their flags, the optional buffers' fields stay 0, as moed requires. */
	if (req->flags & MOE_REQ_COUNTS_RETURN) {
		r = submit_range_offset(c, req->expert_counts, 1, info->max_experts,
					&sqe->counts_off);
		if (r < 0)
			return r;
	}
	if (req->flags & route_flags) {
		if (req->route_k == 0)
			return -EINVAL;
		sqe->route_k = (uint16_t)req->route_k;
		/* int32_t and float are both 4 bytes: one length rule serves both. */
		_Static_assert(sizeof(int32_t) == sizeof(float), "routing element size");
		r = submit_range_offset(c, req->route_expert, req->n_tokens, req->route_k,
					&sqe->route_off);
		if (r < 0)
			return r;
		r = submit_range_offset(c, req->route_weight, req->n_tokens, req->route_k,
					&sqe->weight_off);
		if (r < 0)
			return r;
	}
	return 0;
}

MOE_API int moe_submit(struct moe_client *client, const struct moe_request *req)
{
	struct moe_sqe sqe;
	int r;

	if (!client || !req)
		return -EINVAL;
	if (client->dead)
		return -ECONNRESET;
	r = submit_sqe_build(client, req, &sqe);
	if (r < 0)
		return r;

	/* The private free count: moed's SQ head is read only when it runs out. */
	r = shm_ring_free_slots(&client->session.sq, 1);
	if (r < 0)
		return client_kill(client); /* -EPROTO: moed corrupted the SQ head */
	if (r == 0)
		return -EAGAIN;

	/*
	 * Built privately, copied in whole but for its seq word; moed takes the
	 * slot only after the publish below (R1s in shm_ring_publish()) stores
	 * that word.
	 */
	shm_ring_write(&client->session.sq, 0, &sqe);
	if (shm_ring_publish(&client->session.sq, 1))
		client_doorbell_ring(client);
	client->in_flight++;
	return 0;
}
