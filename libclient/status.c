/* SPDX-License-Identifier: MIT */
/*
 * status: moe_daemon_status(), the daemon's status as JSON. A connection of
 * its own: STATUS -> STATUS_REPLY with a sealed memfd holding the JSON
 * (moe_proto.h), so the JSON's size is not bounded by a socket message; the
 * client still bounds what it reads (CTL_STATUS_JSON_MAX) and never trusts
 * json_size beyond the memfd's real size.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_internal.h"

/* Read @size bytes of JSON from the start of @fd into a new NUL-terminated string. */
static int status_json_read(int fd, uint64_t size, char **ret_json)
{
	struct stat st;
	char *json;
	uint64_t done = 0;
	int r;

	if (size > CTL_STATUS_JSON_MAX)
		return -E2BIG;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < 0 || (uint64_t)st.st_size < size)
		return -EPROTO;
	json = malloc(size + 1);
	if (!json)
		return -ENOMEM;
	while (done < size) {
		ssize_t n = pread(fd, json + done, size - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto free_json;
		}
		if (n == 0) {
			r = -EPROTO; /* shorter than it said: not sealed against shrinking? */
			goto free_json;
		}
		done += (uint64_t)n;
	}
	json[size] = '\0';
	*ret_json = json;
	return 0;

free_json:
	free(json);
	return r;
}

MOE_API int moe_daemon_status(const char *socket_path, char **ret_json)
{
	const struct moe_status_request req = {
		.hdr = {.magic = MOE_PROTO_MAGIC, .type = MOE_MSG_STATUS, .size = sizeof(req)},
	};
	struct moe_status_reply reply;
	int fds[CTL_MAX_FDS];
	unsigned n_fds;
	int sock, r;

	if (!ret_json)
		return -EINVAL;
	r = ctl_socket_connect(ctl_socket_path_resolve(socket_path), &sock);
	if (r < 0)
		return r;
	r = ctl_call(sock, &req, sizeof(req), MOE_MSG_STATUS_REPLY, &reply, sizeof(reply), fds, 1,
		     &n_fds);
	if (r < 0)
		goto close_sock;
	if (n_fds != 1) {
		r = -EPROTO;
		goto close_fds;
	}
	r = status_json_read(fds[0], reply.json_size, ret_json);

close_fds:
	ctl_fds_close(fds, n_fds);
close_sock:
	close(sock);
	return r;
}
