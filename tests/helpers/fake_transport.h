/* SPDX-License-Identifier: MIT */
/*
 * fake_transport: an in-process stand-in for transport/ with knobs that
 * break it, for the unit tests of the peers' state machine. Transports made
 * by fake_transport_new() share one network (struct fake_net): a listener
 * is known by its port, a connect makes a pair of connections, a send puts
 * a copy of the message in the other side's queue, and transport_progress()
 * delivers the queue. Every call is from one thread (the test's pump), as
 * with the real transport.
 *
 * Sends complete at once (transport_send returns 0) unless defer_send_done
 * is set: then they follow transport.h's contract for a send in flight, as
 * UCX's usually are. The message is still queued for the peer at once (an
 * eager send: the bytes left, the completion did not), transport_send
 * returns 1, and on_send_done(cookie, status) comes from a later
 * transport_progress() of the sender, after the messages it delivers (the
 * order of transport_ucx.c: am_recv runs inside ucp_worker_progress, the
 * completions queued meanwhile are drained after it), so a reply can come
 * before its request's send completed. The status is 0, -ECANCELED when
 * the sender closed the connection first (transport_close's forced close),
 * or -ECONNRESET when the other side closed, crashed or was freed first;
 * a connection's failed sends complete before its on_conn_error. Each
 * deferred send completes exactly once, or is dropped without a callback
 * by transport_free(). At completion and at that drop the fake reads the
 * sender's data buffer again and compares it with what was sent: a daemon
 * that freed or reused it while the send was in flight shows up in
 * send[].buf_changed, and under ASan as a use after free.
 *
 * Faults (set through fake_net, atomics, from any thread):
 *   fail_send_at     the Nth send of any transport fails (-EIO) (0: none)
 *   duplicate_id     the next message of this kind is delivered twice
 *   hold_id          messages of this kind wait until hold_id is 0 again
 *   refuse_connect   connects to a listener fail with on_conn_error
 *   defer_send_done  sends return 1 and complete later (see above)
 *   defer_send_id    with defer_send_done: only sends of this kind (0: all)
 *   hold_send_done   deferred sends do not complete while set, not even
 *                    failed ones (UCX may purge a failed or closed
 *                    endpoint's requests late), and so a failed
 *                    connection's on_conn_error waits as well: "late"
 *                    completions, after a deadline or a reconnect
 */
#pragma once

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

#define FAKE_MAX_TRANSPORTS 4

/* What became of one transport's deferred sends. */
struct fake_send_stats {
	atomic_uint deferred;      /* sends that returned 1 */
	atomic_uint done_ok;       /* on_send_done(0) */
	atomic_uint done_canceled; /* on_send_done(-ECANCELED): the sender closed first */
	atomic_uint done_reset;    /* on_send_done(-ECONNRESET): the other side went first */
	atomic_uint dropped;       /* dropped by transport_free(), no callback */
	atomic_uint buf_changed;   /* the data differed at completion or drop */
};

struct fake_net {
	struct fake_transport *t[FAKE_MAX_TRANSPORTS];
	unsigned n;
	atomic_uint sends;          /* every send so far */
	atomic_uint fail_send_at;
	atomic_uint duplicate_id;
	atomic_uint hold_id;
	atomic_bool refuse_connect;
	atomic_bool defer_send_done;
	atomic_uint defer_send_id;
	atomic_bool hold_send_done;
	atomic_uint delivered[8];   /* per message id */
	/* by the transport's place in t[] (the order of fake_transport_new) */
	struct fake_send_stats send[FAKE_MAX_TRANSPORTS];
};

/* The network the next fake_transport_new() joins (set before each). */
extern struct fake_net *fake_net_current;

int fake_transport_new(const struct transport_handlers *h, struct transport **ret, char *why,
		       size_t why_len);
/*
 * Cut @t off the network at once, as a crashed host: the other ends of its
 * connections fail with -ECONNRESET, and so do its own (the daemon that
 * lives on in the test sees on_conn_error on them, after its sends in
 * flight on them completed with -ECONNRESET); what it had not delivered yet
 * is lost, and nobody can connect to it any more.
 */
void fake_transport_crash(struct transport *t);
