/* SPDX-License-Identifier: MIT */
/*
 * service_notify: what moed tells systemd about itself (sd_notify(3)),
 * as a Type=notify service:
 *
 *   STATUS=...             at every phase: loading 37%, serving 3 clients, draining
 *   EXTEND_TIMEOUT_USEC=   while the experts load and the load makes progress,
 *                          so that a large model is not killed by TimeoutStartSec=
 *                          while a stalled load still is
 *   READY=1                once the control socket listens and the experts are
 *                          resident (the reactor is about to serve)
 *   WATCHDOG=1             from the reactor's own loop (service_watchdog below),
 *                          so that a stalled reactor is what systemd catches
 *   RELOADING=1, READY=1   around a reload (SIGHUP)
 *   STOPPING=1             when a stop signal starts the drain
 *   FDSTORE=1              the expert store's objects, so that a restarted moed
 *                          has them even when their files were removed
 *
 * sd_notify() blocks while the manager's socket queue is full, and the
 * reactor must never block: the calls below only queue the message, and a
 * thread of its own (started by service_notify_start) sends it. The queue
 * keeps the order of READY, RELOADING and STOPPING; a newer STATUS= replaces
 * one not yet sent, and pending pings and extensions merge into one.
 *
 * Without NOTIFY_SOCKET in the environment (moed started by hand, or by the
 * tests without one) there is no thread and every call does nothing. A
 * message that cannot be sent is not an error of moed's: it is logged once,
 * and moed goes on.
 *
 * Thread-safety: any thread may call the notify functions (a mutex, never
 * held across a send); start and stop on the main thread. A struct
 * service_watchdog belongs to one thread (the reactor's).
 */
#pragma once

#include <stdint.h>

/* Start the sending thread when NOTIFY_SOCKET is set. 0 or -errno (logged by the caller). */
int service_notify_start(void);
/* Send what is queued (waiting at most a second for the manager) and end the thread. */
void service_notify_stop(void);

void service_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void service_notify_ready(const char *status);
void service_notify_reloading(void);
void service_notify_stopping(const char *status);
/*
 * Give @fd (taken over) to systemd's fd store under @name (FDSTORE=1,
 * after an FDSTOREREMOVE=1 of what it kept under that name): a restarted
 * moed gets it back in LISTEN_FDS (service_socket.h). The unit must allow it
 * (FileDescriptorStoreMax=). Without a manager the fd is closed.
 */
void service_notify_fdstore(const char *name, int fd);
/* Let systemd drop what its fd store keeps under @name. */
void service_notify_fdstore_remove(const char *name);

/* Push the start (or stop) timeout @usec past now; repeat before it runs out. */
void service_notify_extend_timeout(uint64_t usec);

struct service_watchdog {
	uint64_t timeout_ns; /* WATCHDOG_USEC; 0: systemd expects no pings */
	uint64_t last_ns;    /* when the last WATCHDOG=1 went out (CLOCK_MONOTONIC) */
};

/*
 * Read WATCHDOG_USEC (and WATCHDOG_PID, which must be ours when set) and
 * remove both from the environment, so that nothing moed starts inherits
 * them. Zeroes @w when systemd expects no pings.
 */
void service_watchdog_init(struct service_watchdog *w, uint64_t now_ns);

/*
 * WATCHDOG=1 when half the timeout has passed since the last one, as
 * sd_watchdog_enabled(3) advises; cheap otherwise (a comparison). Call it
 * from every pass of the loop whose liveness it stands for.
 */
void service_watchdog_kick(struct service_watchdog *w, uint64_t now_ns);

/*
 * The longest the loop may sleep from @now_ns on and still kick in time;
 * UINT64_MAX without a watchdog.
 */
uint64_t service_watchdog_sleep_ns(const struct service_watchdog *w, uint64_t now_ns);
