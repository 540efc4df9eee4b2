/* SPDX-License-Identifier: MIT */
/* load_status: the control socket while the store opens; see load_status.h. */
#include "control/load_status.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "control/accept_wait.h"
#include "control/ctl_reply.h"
#include "moe_proto.h"
#include "service/service_notify.h"
#include "session/hello.h"

/* How long a connection may take to send its first message. */
#define FIRST_MESSAGE_TIMEOUT_MS 1000

/*
 * systemd hears the load's progress every second (STATUS=) and, while the
 * load moves, that it needs longer than TimeoutStartSec= (EXTEND_TIMEOUT_USEC):
 * a load that read nothing and changed phase for STALL_SECONDS gets no more
 * extensions, so systemd's own timeout ends a start that hangs.
 */
#define PROGRESS_INTERVAL_MS 1000
#define STALL_SECONDS        60

struct load_status {
	int listen_fd;
	int stop_fd; /* eventfd: written once to stop the thread */
	const struct store_progress *progress;
	struct timespec t_start;
	pthread_t thread;
	/* the progress systemd last heard of, when, and when it last moved */
	enum store_phase told_phase;
	uint64_t told_bytes;
	double told_s, moved_s;
};

static double seconds_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) * 1e-9;
}

static void answer_status(const struct load_status *ls, int fd)
{
	enum store_phase phase = atomic_load_explicit(&ls->progress->phase, memory_order_relaxed);
	uint64_t done = atomic_load_explicit(&ls->progress->bytes_done, memory_order_relaxed);
	uint64_t total = atomic_load_explicit(&ls->progress->bytes_total, memory_order_relaxed);
	json_t *root = json_pack("{s:{s:I, s:s, s:f}, s:{s:s, s:I, s:I, s:f}}", "daemon", "pid",
				 (json_int_t)getpid(), "phase", "loading", "uptime_s",
				 seconds_since(&ls->t_start), "load", "phase", store_phase_name(phase),
				 "bytes", (json_int_t)done, "total", (json_int_t)total, "percent",
				 total ? 100.0 * (double)done / (double)total : 0.0);
	char *json = root ? json_dumps(root, JSON_INDENT(2)) : NULL;

	(void)ctl_send_status(fd, json ? 0 : -ENOMEM, json, json ? strlen(json) : 0);
	free(json);
	json_decref(root);
}

/* HELLO and EXPERT_CHANGE while loading: "try again", in the reply type they expect. */
static void answer_again(int fd, const struct ctl_request *req)
{
	if (req->kind == CTL_REQUEST_HELLO) {
		struct moe_hello_reply rep = {
			.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_HELLO_REPLY,
				 .size = sizeof(rep) },
			.status = -EAGAIN,
		};

		(void)ctl_send_with_fds(fd, &rep, sizeof(rep), NULL, 0);
	} else {
		struct moe_expert_change_reply rep = {
			.hdr = { .magic = MOE_PROTO_MAGIC, .type = MOE_MSG_EXPERT_CHANGE_REPLY,
				 .size = sizeof(rep) },
			.status = -EAGAIN,
			.message = "moed is still loading its experts",
		};

		(void)ctl_send_with_fds(fd, &rep, sizeof(rep), NULL, 0);
	}
}

/*
 * One connection: its first message, answered; never trusted beyond
 * ctl_request_parse(). A stop ends the wait for a silent one at once.
 */
static void serve_conn(const struct load_status *ls, int fd)
{
	const struct hello_limits lim = { .max_sq_entries = UINT32_MAX,
					  .max_arena_bytes = UINT64_MAX };
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
			       { .fd = ls->stop_fd, .events = POLLIN } };
	struct ctl_request req;
	uint8_t buf[256];
	ssize_t n;

	if (poll(p, 2, FIRST_MESSAGE_TIMEOUT_MS) <= 0 || !(p[0].revents & POLLIN))
		return;
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC);
	if (n <= 0 || ctl_request_parse(buf, n > (ssize_t)sizeof(buf) ? (size_t)-1 : (size_t)n,
					&lim, &req, NULL) < 0)
		return;
	if (req.kind == CTL_REQUEST_STATUS)
		answer_status(ls, fd);
	else
		answer_again(fd, &req);
}

/* STATUS= with the phase and percent; EXTEND_TIMEOUT_USEC while the load moves. */
static void notify_progress(struct load_status *ls)
{
	enum store_phase phase = atomic_load_explicit(&ls->progress->phase, memory_order_relaxed);
	uint64_t done = atomic_load_explicit(&ls->progress->bytes_done, memory_order_relaxed);
	uint64_t total = atomic_load_explicit(&ls->progress->bytes_total, memory_order_relaxed);
	double now = seconds_since(&ls->t_start);

	if (ls->told_s > 0 && now - ls->told_s < PROGRESS_INTERVAL_MS / 1000.0)
		return; /* a connection woke the thread: systemd heard of us a moment ago */
	ls->told_s = now;
	if (phase != ls->told_phase || done != ls->told_bytes) {
		ls->told_phase = phase;
		ls->told_bytes = done;
		ls->moved_s = now;
	}
	if (phase == STORE_PHASE_LOADING && total)
		service_notify_status("loading the experts: %.0f%% (%.2f of %.2f GB)",
				      100.0 * (double)done / (double)total, (double)done / 1e9,
				      (double)total / 1e9);
	else
		service_notify_status("expert store: %s", store_phase_name(phase));
	if (now - ls->moved_s < STALL_SECONDS)
		service_notify_extend_timeout(2ull * PROGRESS_INTERVAL_MS * 1000);
}

static void *load_status_thread(void *arg)
{
	struct load_status *ls = arg;

	for (;;) {
		int fd;

		notify_progress(ls);
		fd = accept_wait(ls->listen_fd, ls->stop_fd, PROGRESS_INTERVAL_MS, SOCK_NONBLOCK);
		if (fd == -ECANCELED)
			break;
		if (fd < 0)
			continue;
		serve_conn(ls, fd);
		close(fd);
	}
	return NULL;
}

int load_status_start(int listen_fd, const struct store_progress *progress,
		      struct load_status **ret)
{
	struct load_status *ls = calloc(1, sizeof(*ls));
	int r;

	if (!ls)
		return -ENOMEM;
	ls->listen_fd = listen_fd;
	ls->progress = progress;
	clock_gettime(CLOCK_MONOTONIC, &ls->t_start);
	ls->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (ls->stop_fd < 0) {
		r = -errno;
		free(ls);
		return r;
	}
	r = -pthread_create(&ls->thread, NULL, load_status_thread, ls);
	if (r < 0) {
		close(ls->stop_fd);
		free(ls);
		return r;
	}
	*ret = ls;
	return 0;
}

struct load_status *load_status_stop(struct load_status *ls)
{
	uint64_t one = 1;

	if (!ls)
		return NULL;
	/* an eventfd write of 1 fails only when interrupted: the counter starts at 0 */
	while (write(ls->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(ls->thread, NULL);
	close(ls->stop_fd);
	free(ls);
	return NULL;
}
