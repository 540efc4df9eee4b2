/* SPDX-License-Identifier: MIT */
/*
 * ctl_experts: EXPERT_CHANGE on the control socket (moe_proto.h): a copy of
 * one expert made, moved or dropped while serving. It changes what every
 * client's batches compute on, so only root and moed's own user may ask
 * (SO_PEERCRED); anyone else gets -EPERM. The change is checked and queued
 * here: expert_store_change() holds the queue's mutex while it checks (and,
 * after a failed change, clones the placement once) and never waits for a
 * copy, so the reactor does not block.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/ctl_reply.h"
#include "reactor/reactor_internal.h"
#include "util/log.h"

static const enum expert_change_op op_of[] = {
	[MOE_EXPERT_REPLICATE] = EXPERT_REPLICATE,
	[MOE_EXPERT_MOVE] = EXPERT_MOVE,
	[MOE_EXPERT_DROP] = EXPERT_DROP,
};

static int64_t expert_change(struct reactor *r, int fd, const struct moe_expert_change *req,
			     struct diag *d)
{
	const struct topology *topo = expert_store_topology(r->store);
	struct expert_change c = { .op = op_of[req->op], .layer = req->layer,
				   .expert = req->expert };
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	int node;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0)
		return diag_set(d, -errno, "SO_PEERCRED: %s", strerror(errno));
	if (cred.uid != 0 && cred.uid != geteuid())
		return diag_set(d, -EPERM, "only root and moed's user may change the experts' map");
	node = topology_node_index(topo, req->node);
	if (node < 0)
		return diag_set(d, -EINVAL, "node %u: not a node of moed's topology", req->node);
	c.node = (uint32_t)node;
	return expert_store_change(r->store, &c, d);
}

void ctl_expert_change(struct reactor *r, int fd, const struct moe_expert_change *req)
{
	struct moe_expert_change_reply rep = {
		.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_EXPERT_CHANGE_REPLY,
			 .size = sizeof(rep) },
	};
	struct diag d = { { 0 } };
	int64_t epoch = expert_change(r, fd, req, &d);

	if (epoch < 0) {
		rep.status = (int32_t)epoch;
		/* cut to the reply's room: the messages above are shorter */
		snprintf(rep.message, sizeof(rep.message), "%.*s", (int)sizeof(rep.message) - 1,
			 d.msg);
		log_debug("expert change refused: %s", d.msg); /* anyone may ask: no flood */
	} else {
		rep.epoch = (uint64_t)epoch;
	}
	if (ctl_send_with_fds(fd, &rep, sizeof(rep), NULL, 0) < 0)
		log_info("expert change reply not delivered, ignoring");
	close(fd);
}
