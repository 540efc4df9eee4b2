/* SPDX-License-Identifier: MIT */
/* metrics_http: the Prometheus endpoint; see metrics_http.h. */
#include "control/metrics_http.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <moe.h>

#include "control/accept_wait.h"
#include "control/metrics_text.h"
#include "peers/peer_config.h"
#include "transport_addr.h"

#define REQUEST_TIMEOUT_MS 2000
#define REQUEST_MAX        8192

struct metrics_http {
	int listen_fd;
	int stop_fd; /* eventfd: written once to stop the thread */
	char socket_path[4096];
	pthread_t thread;
};

static int listen_tcp(const char *addr_port, struct diag *d)
{
	struct sockaddr_storage ss;
	struct peer_addr at;
	socklen_t len;
	int fd, one = 1, r;

	r = peer_addr_parse(addr_port, &at, d);
	if (r < 0)
		return diag_prefix(d, r, "metrics_listen");
	if (transport_sockaddr(at.addr, at.port, &ss, &len) < 0) /* checked: cannot fail */
		return diag_set(d, -EINVAL, "metrics_listen: %s is no address", at.addr);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return diag_set(d, -errno, "metrics_listen: socket: %s", strerror(errno));
	/* a restarted moed must listen again while its old connections sit in TIME_WAIT */
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
		r = diag_set(d, -errno, "metrics_listen %s: %s", addr_port, strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

/* Read the request head (up to the blank line) into @buf; its length, or -1. */
static ssize_t read_request(const struct metrics_http *m, int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
				       { .fd = m->stop_fd, .events = POLLIN } };
		ssize_t got;

		if (poll(p, 2, REQUEST_TIMEOUT_MS) <= 0 || p[1].revents || !(p[0].revents & POLLIN))
			return -1;
		got = recv(fd, buf + n, size - 1 - n, MSG_DONTWAIT);
		if (got <= 0)
			return -1;
		n += (size_t)got;
		buf[n] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return (ssize_t)n;
	}
	return -1; /* too large: not a scrape */
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return; /* the scraper left; nothing to tell it */
		p += w;
		n -= (size_t)w;
	}
}

static void respond(int fd, const char *status, const char *type, const char *body, size_t len,
		    bool head_only)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n",
			 status, type, len);

	send_all(fd, head, (size_t)n);
	if (!head_only)
		send_all(fd, body, len);
}

static void respond_text(int fd, const char *status, const char *msg)
{
	respond(fd, status, "text/plain; charset=utf-8", msg, strlen(msg), false);
}

/* The metrics text of the moed at the control socket, malloc'd; NULL when it cannot be had. */
static char *metrics_now(const struct metrics_http *m, size_t *ret_len)
{
	char *json = NULL, *text = NULL;
	json_t *status;
	FILE *f;

	if (moe_daemon_status(m->socket_path, &json) < 0)
		return NULL;
	status = json_loads(json, 0, NULL);
	free(json);
	if (!status)
		return NULL;
	f = open_memstream(&text, ret_len);
	if (f && metrics_text_write(status, f) < 0) {
		fclose(f);
		free(text);
		text = NULL;
		f = NULL;
	}
	if (f && fclose(f) != 0) {
		free(text);
		text = NULL;
	}
	json_decref(status);
	return text;
}

/*
 * "METHOD PATH HTTP/1.x" as the request's first line: METHOD in capitals
 * (at most 7), PATH starting with '/' (at most 255 bytes), into @method and
 * @path. False for anything else.
 */
static bool parse_request_line(const char *req, char method[8], char path[256])
{
	size_t m = strspn(req, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), p;

	if (m == 0 || m > 7 || req[m] != ' ' || req[m + 1] != '/')
		return false;
	p = strcspn(req + m + 1, " \r\n");
	if (p > 255 || strncmp(req + m + 1 + p, " HTTP/1.", 8) != 0)
		return false;
	memcpy(method, req, m);
	method[m] = '\0';
	memcpy(path, req + m + 1, p);
	path[p] = '\0';
	return true;
}

static void serve(const struct metrics_http *m, int fd)
{
	char req[REQUEST_MAX], method[8], path[256];
	size_t len = 0;
	char *body;
	bool head;

	if (read_request(m, fd, req, sizeof(req)) < 0 || !parse_request_line(req, method, path)) {
		respond_text(fd, "400 Bad Request", "not an HTTP request\n");
		return;
	}
	head = strcmp(method, "HEAD") == 0;
	if (!head && strcmp(method, "GET") != 0) {
		respond_text(fd, "405 Method Not Allowed", "GET /metrics\n");
		return;
	}
	path[strcspn(path, "?")] = '\0';
	if (strcmp(path, "/metrics") != 0) {
		respond_text(fd, "404 Not Found", "moed serves /metrics only\n");
		return;
	}
	body = metrics_now(m, &len);
	if (!body) {
		respond_text(fd, "503 Service Unavailable", "moed's status cannot be had now\n");
		return;
	}
	respond(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
	free(body);
}

static void *metrics_thread(void *arg)
{
	struct metrics_http *m = arg;

	for (;;) {
		int fd = accept_wait(m->listen_fd, m->stop_fd, -1, 0);

		if (fd == -ECANCELED)
			break;
		if (fd < 0)
			continue;
		serve(m, fd);
		close(fd);
	}
	return NULL;
}

int metrics_http_start(const char *addr_port, const char *control_socket,
		       struct metrics_http **ret, struct diag *d)
{
	struct metrics_http *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return diag_set(d, -ENOMEM, "out of memory");
	m->stop_fd = -1;
	snprintf(m->socket_path, sizeof(m->socket_path), "%s", control_socket);
	m->listen_fd = listen_tcp(addr_port, d);
	if (m->listen_fd < 0) {
		r = m->listen_fd;
		free(m);
		return r;
	}
	m->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (m->stop_fd < 0) {
		r = diag_set(d, -errno, "eventfd: %s", strerror(errno));
		goto err;
	}
	r = -pthread_create(&m->thread, NULL, metrics_thread, m);
	if (r < 0) {
		diag_set(d, r, "cannot start the metrics thread: %s", strerror(-r));
		goto err;
	}
	*ret = m;
	return 0;
err:
	if (m->stop_fd >= 0)
		close(m->stop_fd);
	close(m->listen_fd);
	free(m);
	return r;
}

struct metrics_http *metrics_http_stop(struct metrics_http *m)
{
	uint64_t one = 1;

	if (!m)
		return NULL;
	while (write(m->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(m->thread, NULL);
	close(m->stop_fd);
	close(m->listen_fd);
	free(m);
	return NULL;
}
