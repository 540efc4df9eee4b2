/* SPDX-License-Identifier: MIT */
/*
 * admission: who may hold what on moed's control socket. Pure decisions
 * over tables the reactor keeps (no io_uring, no fds), so that a unit test
 * can drive them step by step (tests/daemon/test_admission.c).
 *
 * Two resources are limited per peer, the peer being the (pid, uid) that
 * SO_PEERCRED reports for a connection:
 *
 *  - Pending connections (accepted, nothing said yet): ADM_PENDING_PER_PID
 *    per process and ADM_PENDING_PER_UID per uid, and the last
 *    ADM_PENDING_RESERVED entries of the table are for privileged peers
 *    (root and moed's own uid) only, so that the operator's `moectl status`
 *    gets in whatever unprivileged peers do. A peer over a limit loses its
 *    own OLDEST pending connection rather than the new one: a real client
 *    speaks within microseconds of connect(), so the oldest is the one
 *    most likely to be silent, and a process that reopens silent
 *    connections only churns through its own share. Refusing the newcomer
 *    instead would let whoever came first and never spoke keep the slots.
 *    When the unprivileged share of the table is full (several uids at
 *    their limits), a newcomer evicts the oldest unprivileged connection.
 *  - Sessions (client slots): cfg max_clients_per_process and
 *    max_clients_per_uid. Privileged peers are exempt from the per-uid
 *    limit (a per-uid limit on root would only hurt the operator), not from
 *    the per-process one (one runaway root process must not take every slot
 *    either). The status request never takes a session.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define ADM_PENDING_PER_PID  4u
#define ADM_PENDING_PER_UID  16u
#define ADM_PENDING_RESERVED 4u

/* The limits in force; filled once by adm_limits_init(). */
struct adm_limits {
	uint32_t pending_per_pid, pending_per_uid, pending_reserved;
	uint32_t clients_per_pid, clients_per_uid;
	uid_t self_uid; /* moed's own uid: privileged, like root */
};

/* A peer holding an entry of a table (pending connections). */
struct adm_peer {
	bool used;
	pid_t pid;
	uid_t uid;
	uint64_t t_ns; /* when it was accepted: the oldest is evicted first */
};

/*
 * The limits for a pending table of @n_pending entries, sessions limited to
 * @clients_per_pid / @clients_per_uid (already derived from the config),
 * moed running as @self_uid. The reserve is capped at half the table.
 */
void adm_limits_init(struct adm_limits *l, uint32_t n_pending, uint32_t clients_per_pid,
                     uint32_t clients_per_uid, uid_t self_uid);

/* Root or moed's own uid. */
bool adm_privileged(const struct adm_limits *l, uid_t uid);

/* Why adm_pending_place() chose its slot: for the log line. */
enum adm_place {
	ADM_PLACE_FREE,         /* a free entry, nobody evicted */
	ADM_PLACE_EVICT_PID,    /* the peer's process was at its limit: its oldest goes */
	ADM_PLACE_EVICT_UID,    /* the peer's uid was at its limit: its oldest goes */
	ADM_PLACE_EVICT_OLDEST, /* the table (or its unprivileged share) was full */
};

/*
 * Where a new pending connection of (@pid, @uid) goes in @table[@n]: the
 * index of an entry, which holds a connection the caller must close first
 * unless *@ret_how is ADM_PLACE_FREE. -EUSERS when there is none (an
 * unprivileged peer while privileged ones hold the whole table): the caller
 * closes the new connection. @table is not changed.
 */
int adm_pending_place(const struct adm_limits *l, const struct adm_peer *table, uint32_t n,
                      pid_t pid, uid_t uid, enum adm_place *ret_how);

/*
 * May (@pid, @uid), which holds @n_pid sessions from its process and @n_uid
 * from its uid, have one more? 0, or -EUSERS with *@ret_why naming the limit
 * ("max_clients_per_process" or "max_clients_per_uid").
 */
int adm_client_check(const struct adm_limits *l, uid_t uid, uint32_t n_pid, uint32_t n_uid,
                     const char **ret_why);
