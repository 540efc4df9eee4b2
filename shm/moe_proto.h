/* SPDX-License-Identifier: MIT */
/*
 * moe_proto: the messages on moed's control socket, a Unix SOCK_SEQPACKET
 * socket (one message per send, boundaries kept by the kernel).
 *
 * A connection's first message decides what it is:
 *
 *   HELLO -> HELLO_REPLY (+ SCM_RIGHTS: info memfd, ring memfd
 *            [, eventfd doorbell]) and the connection stays open for the
 *            session's lifetime: its hang-up is how each side learns the
 *            other is gone (moed also watches the client's pidfd)
 *   STATUS -> STATUS_REPLY (+ SCM_RIGHTS: a sealed memfd holding the status
 *            as JSON, so its size has no message limit), then moed closes
 *   EXPERT_CHANGE -> EXPERT_CHANGE_REPLY, then moed closes: a copy of one
 *            expert made, moved or dropped while moed serves; only root and
 *            moed's own uid may ask (SO_PEERCRED), anyone else gets -EPERM
 *
 * While moed loads its experts it answers STATUS with the load's progress
 * ("load" in the JSON, daemon.phase "loading") and HELLO and EXPERT_CHANGE
 * with -EAGAIN: try again once daemon.phase is "serving".
 *
 * Every message starts with struct moe_msg_header; moed checks magic, type
 * and that size equals both the received length and the type's struct size
 * before it reads a field (HELLO parsing is fuzzed: fuzz_hello).
 * Integers are in host byte order: both ends are on the same machine.
 *
 * HELLO and HELLO_REPLY keep their layout across ABI majors (moe_abi.h):
 * they are how the two versions meet. A HELLO of another major is answered
 * with status -EPROTONOSUPPORT and moed's abi_major, and moed logs both
 * versions; the region is never made.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define MOE_PROTO_MAGIC 0x4c54434du /* "MCTL" in memory order */

enum moe_msg_type {
	MOE_MSG_HELLO = 1,
	MOE_MSG_HELLO_REPLY = 2,
	MOE_MSG_STATUS = 3,
	MOE_MSG_STATUS_REPLY = 4,
	MOE_MSG_EXPERT_CHANGE = 5,
	MOE_MSG_EXPERT_CHANGE_REPLY = 6,
};

struct moe_msg_header {
	uint32_t magic; /* MOE_PROTO_MAGIC */
	uint16_t type;  /* enum moe_msg_type */
	uint16_t size;  /* bytes of the whole message, header included */
};

#define MOE_CLIENT_NAME_MAX 32

struct moe_hello {
	struct moe_msg_header hdr;
	uint16_t abi_major; /* the client's MOE_ABI_MAJOR: must equal moed's */
	uint16_t abi_minor; /* the client's MOE_ABI_MINOR: informational */
	uint32_t flags;     /* none defined yet: must be 0 */
	uint32_t sq_entries; /* wanted; a power of two within moed's limits */
	uint32_t cq_entries; /* wanted; a power of two, >= sq_entries */
	uint64_t arena_size; /* wanted bytes of arena; within moed's limits */
	char name[MOE_CLIENT_NAME_MAX]; /* for moectl status; NUL-padded */
};

struct moe_hello_reply {
	struct moe_msg_header hdr;
	int32_t status;     /* 0, or -errno: the HELLO was refused, no fds follow */
	uint16_t abi_major; /* moed's */
	uint16_t abi_minor;
	uint32_t client_id;
	uint32_t n_fds;           /* fds attached: 2, or 3 with an eventfd doorbell */
	uint64_t max_arena_size;  /* moed's limits, so a refused client can adapt */
	uint32_t max_sq_entries;
	uint32_t max_tokens;
};

struct moe_status_request {
	struct moe_msg_header hdr;
	uint32_t flags; /* none defined yet: must be 0 */
	uint32_t reserved;
};

struct moe_status_reply {
	struct moe_msg_header hdr;
	int32_t status;     /* 0, or -errno (then no fd follows) */
	uint32_t reserved;
	uint64_t json_size; /* bytes of JSON in the attached memfd */
};

enum moe_expert_op {
	MOE_EXPERT_REPLICATE = 1, /* a copy more, on node */
	MOE_EXPERT_MOVE = 2,      /* the primary copy to node */
	MOE_EXPERT_DROP = 3,      /* the copy on node goes (never the last) */
};

struct moe_expert_change {
	struct moe_msg_header hdr;
	uint32_t op;     /* enum moe_expert_op */
	uint32_t layer;
	uint32_t expert;
	uint32_t node;   /* a NUMA node id, as moectl experts shows them */
	uint32_t flags;  /* none defined yet: must be 0 */
	uint32_t reserved;
};

#define MOE_EXPERT_CHANGE_MSG_MAX 96

struct moe_expert_change_reply {
	struct moe_msg_header hdr;
	int32_t status;  /* 0: queued; -errno: refused, why in message */
	uint32_t reserved;
	uint64_t epoch;  /* queued: the map epoch that will hold the change */
	char message[MOE_EXPERT_CHANGE_MSG_MAX]; /* NUL-terminated */
};

_Static_assert(sizeof(struct moe_msg_header) == 8, "msg_header size");
_Static_assert(sizeof(struct moe_hello) == 64, "hello size");
_Static_assert(offsetof(struct moe_hello, arena_size) == 24, "hello.arena_size");
_Static_assert(offsetof(struct moe_hello, name) == 32, "hello.name");
_Static_assert(sizeof(struct moe_hello_reply) == 40, "hello_reply size");
_Static_assert(offsetof(struct moe_hello_reply, max_arena_size) == 24, "reply.max_arena");
_Static_assert(sizeof(struct moe_status_request) == 16, "status_request size");
_Static_assert(sizeof(struct moe_status_reply) == 24, "status_reply size");
_Static_assert(sizeof(struct moe_expert_change) == 32, "expert_change size");
_Static_assert(offsetof(struct moe_expert_change, node) == 20, "expert_change.node");
_Static_assert(sizeof(struct moe_expert_change_reply) == 120, "expert_change_reply size");
_Static_assert(offsetof(struct moe_expert_change_reply, epoch) == 16, "reply.epoch");
_Static_assert(offsetof(struct moe_expert_change_reply, message) == 24, "reply.message");
