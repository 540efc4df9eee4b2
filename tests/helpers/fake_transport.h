/* SPDX-License-Identifier: MIT */
/*
 * fake_transport: an in-process stand-in for transport/ with knobs that
 * break it, for the unit tests of the peers' state machine. Transports made
 * by fake_transport_new() share one network (struct fake_net): a listener
 * is known by its port, a connect makes a pair of connections, a send puts
 * a copy of the message in the other side's queue and completes at once,
 * and transport_progress() delivers the queue. Every call is from one
 * thread (the test's pump), as with the real transport.
 *
 * Faults (set through fake_net, atomics, from any thread):
 *   fail_send_at     the Nth send of any transport fails (-EIO) (0: none)
 *   duplicate_id     the next message of this kind is delivered twice
 *   hold_id          messages of this kind wait until hold_id is 0 again
 *   refuse_connect   connects to a listener fail with on_conn_error
 */
#pragma once

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

#define FAKE_MAX_TRANSPORTS 4

struct fake_net {
	struct fake_transport *t[FAKE_MAX_TRANSPORTS];
	unsigned n;
	atomic_uint sends;          /* every send so far */
	atomic_uint fail_send_at;
	atomic_uint duplicate_id;
	atomic_uint hold_id;
	atomic_bool refuse_connect;
	atomic_uint delivered[8];   /* per message id */
};

/* The network the next fake_transport_new() joins (set before each). */
extern struct fake_net *fake_net_current;

int fake_transport_new(const struct transport_handlers *h, struct transport **ret, char *why,
		       size_t why_len);
/* Drop every connection of @t at once, as a crashed host does (the others see errors). */
void fake_transport_crash(struct transport *t);
