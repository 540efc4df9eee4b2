/* SPDX-License-Identifier: MIT */
/*
 * expert_change: moe_daemon_expert_change(), one EXPERT_CHANGE on a
 * connection of its own (moe_proto.h). The reply's message is moed's text
 * or an impostor's: it is copied only up to its own bound and always ends
 * NUL-terminated here.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client_internal.h"

_Static_assert((int)MOE_EXPERT_CHANGE_REPLICATE == MOE_EXPERT_REPLICATE &&
		       (int)MOE_EXPERT_CHANGE_MOVE == MOE_EXPERT_MOVE &&
		       (int)MOE_EXPERT_CHANGE_DROP == MOE_EXPERT_DROP,
	       "moe.h's ops are the protocol's");

MOE_API int moe_daemon_expert_change(const char *socket_path, enum moe_expert_change_op op,
				     uint32_t layer, uint32_t expert, uint32_t node,
				     uint64_t *ret_epoch, char *msg, size_t msg_len)
{
	const struct moe_expert_change req = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_EXPERT_CHANGE,
			 .size = sizeof(req) },
		.op = (uint32_t)op,
		.layer = layer,
		.expert = expert,
		.node = node,
	};
	struct moe_expert_change_reply reply;
	unsigned n_fds;
	int fds[CTL_MAX_FDS];
	int sock, r;

	if (msg && msg_len)
		msg[0] = '\0';
	if (op < MOE_EXPERT_CHANGE_REPLICATE || op > MOE_EXPERT_CHANGE_DROP)
		return -EINVAL;
	r = ctl_socket_connect(ctl_socket_path_resolve(socket_path), &sock);
	if (r < 0)
		return r;
	memset(&reply, 0, sizeof(reply));
	r = ctl_call(sock, &req, sizeof(req), MOE_MSG_EXPERT_CHANGE_REPLY, &reply, sizeof(reply),
		     fds, 0, &n_fds);
	close(sock);
	/* a refusal (a plausible -errno in a well-formed reply) says why */
	if (msg && msg_len && r < 0 && r != -EPROTO && reply.hdr.magic == MOE_PROTO_MAGIC &&
	    reply.hdr.type == MOE_MSG_EXPERT_CHANGE_REPLY)
		snprintf(msg, msg_len, "%.*s", (int)sizeof(reply.message), reply.message);
	if (r < 0)
		return r;
	if (ret_epoch)
		*ret_epoch = reply.epoch;
	return 0;
}
