/* SPDX-License-Identifier: MIT */
/* service_notify: sd_notify(3) for moed's phases and watchdog; see service_notify.h. */
#include "service/service_notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

#define MSG_MAX   256
/*
 * READY, RELOADING, STOPPING and the fd store's puts (a few per NUMA node)
 * are a handful in a daemon's life; more waiting means no reader.
 */
#define QUEUE_MAX 64

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, quit, send_failed_logged;
	struct {
		char msg[MSG_MAX];
		int fd; /* sent along (FDSTORE=1) and closed after, or -1 */
	} queue[QUEUE_MAX]; /* in order */
	unsigned head, n;
	char status[MSG_MAX]; /* the newest STATUS= alone, sent after the queue */
	bool status_pending, watchdog_pending;
	uint64_t extend_usec; /* 0: none pending */
} nt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void send_now(const char *msg, int fd)
{
	int r = fd >= 0 ? sd_pid_notify_with_fds(0, 0, msg, &fd, 1) : sd_notify(0, msg);

	if (r < 0 && !nt.send_failed_logged) {
		nt.send_failed_logged = true; /* only this thread sends */
		log_warning("cannot notify the service manager (%s); going on without it",
			    strerror(-r));
	}
}

static bool pending(void)
{
	return nt.n || nt.status_pending || nt.watchdog_pending || nt.extend_usec;
}

/* Take the next message to send into @msg and its fd (under the lock); false when none. */
static bool take_next(char *msg, int *fd)
{
	*fd = -1;
	if (nt.n) {
		memcpy(msg, nt.queue[nt.head].msg, MSG_MAX);
		*fd = nt.queue[nt.head].fd;
		nt.head = (nt.head + 1) % QUEUE_MAX;
		nt.n--;
		return true;
	}
	if (nt.status_pending) {
		memcpy(msg, nt.status, MSG_MAX);
		nt.status_pending = false;
		return true;
	}
	if (nt.watchdog_pending || nt.extend_usec) {
		int len = 0;

		msg[0] = '\0';
		if (nt.watchdog_pending)
			len = snprintf(msg, MSG_MAX, "WATCHDOG=1\n");
		if (nt.extend_usec)
			snprintf(msg + len, MSG_MAX - (size_t)len, "EXTEND_TIMEOUT_USEC=%llu",
				 (unsigned long long)nt.extend_usec);
		nt.watchdog_pending = false;
		nt.extend_usec = 0;
		return true;
	}
	return false;
}

static void *sender_main(void *arg)
{
	char msg[MSG_MAX];
	int fd;

	(void)arg;
	pthread_mutex_lock(&nt.lock);
	for (;;) {
		while (!nt.quit && !pending())
			pthread_cond_wait(&nt.cond, &nt.lock);
		if (!take_next(msg, &fd)) {
			if (nt.quit)
				break;
			continue;
		}
		pthread_mutex_unlock(&nt.lock);
		send_now(msg, fd); /* may block while the manager's queue is full */
		if (fd >= 0)
			close(fd); /* systemd has its own copy now (or none: it refused) */
		pthread_mutex_lock(&nt.lock);
	}
	pthread_mutex_unlock(&nt.lock);
	return NULL;
}

int service_notify_start(void)
{
	const char *socket = getenv("NOTIFY_SOCKET");
	int r;

	if (!socket || !*socket || nt.running)
		return 0;
	r = -pthread_create(&nt.thread, NULL, sender_main, NULL);
	if (r < 0)
		return r;
	nt.running = true;
	return 0;
}

void service_notify_stop(void)
{
	struct timespec deadline;

	if (!nt.running)
		return;
	pthread_mutex_lock(&nt.lock);
	nt.quit = true;
	pthread_cond_signal(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
	/* a manager that stopped reading must not hold moed's exit */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	if (pthread_timedjoin_np(nt.thread, NULL, &deadline) != 0) {
		log_warning("the service manager does not read its notifications; exiting without "
			    "sending the last ones");
		pthread_detach(nt.thread);
	}
	nt.running = false;
}

/*
 * Append @msg, with @fd (taken over; -1: none), to the ordered queue. A
 * message with its own STATUS= makes an older lone one needless.
 */
static void queue_ordered(const char *msg, int fd)
{
	bool queued = false;

	if (nt.running) {
		pthread_mutex_lock(&nt.lock);
		if (nt.n < QUEUE_MAX) {
			unsigned at = (nt.head + nt.n) % QUEUE_MAX;

			snprintf(nt.queue[at].msg, MSG_MAX, "%s", msg);
			nt.queue[at].fd = fd;
			nt.n++;
			if (strstr(msg, "STATUS="))
				nt.status_pending = false;
			pthread_cond_signal(&nt.cond);
			queued = true;
		}
		pthread_mutex_unlock(&nt.lock);
	}
	if (!queued && fd >= 0)
		close(fd);
}

void service_notify_status(const char *fmt, ...)
{
	char buf[MSG_MAX];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "STATUS=");

	if (!nt.running)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	/* STATUS= is one line: a newline would start another assignment */
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
	pthread_mutex_lock(&nt.lock);
	memcpy(nt.status, buf, sizeof(buf));
	nt.status_pending = true;
	pthread_cond_signal(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
}

void service_notify_ready(const char *status)
{
	char buf[MSG_MAX];

	snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%s", status);
	queue_ordered(buf, -1);
}

void service_notify_reloading(void)
{
	queue_ordered("RELOADING=1\nSTATUS=reloading the configuration", -1);
}

void service_notify_stopping(const char *status)
{
	char buf[MSG_MAX];

	snprintf(buf, sizeof(buf), "STOPPING=1\nSTATUS=%s", status);
	queue_ordered(buf, -1);
}

void service_notify_fdstore(const char *name, int fd)
{
	char buf[MSG_MAX];

	/* whatever the store kept under this name before is stale: only the new one stays */
	snprintf(buf, sizeof(buf), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	queue_ordered(buf, -1);
	snprintf(buf, sizeof(buf), "FDSTORE=1\nFDNAME=%s", name);
	queue_ordered(buf, fd);
}

void service_notify_fdstore_remove(const char *name)
{
	char buf[MSG_MAX];

	snprintf(buf, sizeof(buf), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	queue_ordered(buf, -1);
}

void service_notify_extend_timeout(uint64_t usec)
{
	if (!nt.running)
		return;
	pthread_mutex_lock(&nt.lock);
	nt.extend_usec = usec;
	pthread_cond_signal(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
}

static void queue_watchdog(void)
{
	if (!nt.running)
		return;
	pthread_mutex_lock(&nt.lock);
	nt.watchdog_pending = true;
	pthread_cond_signal(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
}

void service_watchdog_init(struct service_watchdog *w, uint64_t now_ns)
{
	uint64_t usec = 0;

	*w = (struct service_watchdog){ 0 };
	/* > 0: pings expected (WATCHDOG_PID, when set, is ours); unsets both either way */
	if (sd_watchdog_enabled(1, &usec) <= 0 || !usec)
		return;
	w->timeout_ns = usec * 1000;
	w->last_ns = now_ns;
	log_info("watchdog: systemd expects a sign of life every %.3f s; the reactor sends "
		 "one every %.3f s",
		 (double)usec / 1e6, (double)usec / 2e6);
}

void service_watchdog_kick(struct service_watchdog *w, uint64_t now_ns)
{
	if (!w->timeout_ns || now_ns - w->last_ns < w->timeout_ns / 2)
		return;
	w->last_ns = now_ns;
	queue_watchdog();
}

uint64_t service_watchdog_sleep_ns(const struct service_watchdog *w, uint64_t now_ns)
{
	uint64_t due;

	if (!w->timeout_ns)
		return UINT64_MAX;
	due = w->last_ns + w->timeout_ns / 2;
	return due > now_ns ? due - now_ns : 0;
}
