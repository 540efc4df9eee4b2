/* SPDX-License-Identifier: MIT */
/* hello: strict parsing of HELLO and STATUS requests; see hello.h. */
#include "session/hello.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "moe_abi.h"

static int reject(int r, const char **ret_why, const char *why)
{
	if (ret_why)
		*ret_why = why;
	return r;
}

/* Append @piece to @out (holding *@len chars) only if all of it and a NUL fit. */
static bool name_append(char *out, size_t out_size, size_t *len, const char *piece, size_t n)
{
	if (*len + n >= out_size)
		return false;
	memcpy(out + *len, piece, n);
	*len += n;
	return true;
}

void client_name_escape(const char *raw, size_t raw_len, char *out, size_t out_size)
{
	static const char hex[] = "0123456789abcdef";
	size_t len = 0;

	if (out_size == 0)
		return;
	for (size_t i = 0; i < raw_len && raw[i]; i++) {
		unsigned char c = (unsigned char)raw[i];
		char piece[4];
		size_t n;

		if (c == '\\') {
			piece[0] = piece[1] = '\\';
			n = 2;
		} else if (c >= 0x20 && c < 0x7f) {
			piece[0] = (char)c;
			n = 1;
		} else {
			piece[0] = '\\';
			piece[1] = 'x';
			piece[2] = hex[c >> 4];
			piece[3] = hex[c & 0xf];
			n = 4;
		}
		if (!name_append(out, out_size, &len, piece, n))
			break;
	}
	out[len] = '\0';
}

static int is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

static int hello_check(const struct moe_hello *h, const struct hello_limits *lim,
		       const char **ret_why)
{
	if (h->abi_major != MOE_ABI_MAJOR)
		return reject(-EPROTONOSUPPORT, ret_why, "ABI major version differs");
	if (h->flags)
		return reject(-EINVAL, ret_why, "unknown HELLO flags");
	if (!is_pow2(h->sq_entries) || !is_pow2(h->cq_entries))
		return reject(-EINVAL, ret_why, "ring sizes must be powers of two");
	if (h->cq_entries < h->sq_entries)
		return reject(-EINVAL, ret_why, "cq_entries below sq_entries");
	if (h->arena_size == 0)
		return reject(-EINVAL, ret_why, "empty arena");
	if (h->sq_entries > lim->max_sq_entries || h->cq_entries > 2ull * lim->max_sq_entries)
		return reject(-E2BIG, ret_why, "rings larger than the daemon allows");
	if (h->arena_size > lim->max_arena_bytes)
		return reject(-E2BIG, ret_why, "arena larger than the daemon allows");
	return 0;
}

void hello_abi_refusal(const void *buf, size_t len, char *out, size_t out_size)
{
	struct moe_hello h;

	if (out_size == 0)
		return;
	if (len != sizeof(h)) {
		snprintf(out, out_size, "ABI major version differs");
		return;
	}
	memcpy(&h, buf, sizeof(h));
	snprintf(out, out_size,
		 "the client speaks ABI %u.%u, moed ABI %u.%u (a libmoe of another major version)",
		 (unsigned)h.abi_major, (unsigned)h.abi_minor, (unsigned)MOE_ABI_MAJOR,
		 (unsigned)MOE_ABI_MINOR);
}

int ctl_request_parse(const void *buf, size_t len, const struct hello_limits *lim,
		      struct ctl_request *ret, const char **ret_why)
{
	struct moe_msg_header hdr;
	struct ctl_request req;
	char raw_name[MOE_CLIENT_NAME_MAX];
	int r;

	if (len < sizeof(hdr))
		return reject(-EPROTO, ret_why, "message shorter than its header");
	memcpy(&hdr, buf, sizeof(hdr));
	if (hdr.magic != MOE_PROTO_MAGIC)
		return reject(-EPROTO, ret_why, "bad magic");
	if (hdr.size != len)
		return reject(-EPROTO, ret_why, "size field differs from the message length");
	memset(&req, 0, sizeof(req));
	switch (hdr.type) {
	case MOE_MSG_HELLO:
		if (len != sizeof(struct moe_hello))
			return reject(-EPROTO, ret_why, "HELLO of the wrong size");
		memcpy(&req.hello, buf, sizeof(req.hello));
		r = hello_check(&req.hello, lim, ret_why);
		if (r < 0)
			return r;
		/*
		 * The name reaches moed's log (a newline and "<0>" would forge
		 * a journal line), terminals through moectl, and the status
		 * JSON (which cannot hold invalid UTF-8): keep it escaped.
		 */
		memcpy(raw_name, req.hello.name, sizeof(raw_name));
		client_name_escape(raw_name, sizeof(raw_name), req.hello.name,
				   sizeof(req.hello.name));
		req.kind = CTL_REQUEST_HELLO;
		break;
	case MOE_MSG_STATUS: {
		struct moe_status_request s;

		if (len != sizeof(s))
			return reject(-EPROTO, ret_why, "STATUS of the wrong size");
		memcpy(&s, buf, sizeof(s));
		if (s.flags || s.reserved)
			return reject(-EINVAL, ret_why, "unknown STATUS flags");
		req.kind = CTL_REQUEST_STATUS;
		break;
	}
	case MOE_MSG_EXPERT_CHANGE:
		if (len != sizeof(req.change))
			return reject(-EPROTO, ret_why, "EXPERT_CHANGE of the wrong size");
		memcpy(&req.change, buf, sizeof(req.change));
		if (req.change.flags || req.change.reserved)
			return reject(-EINVAL, ret_why, "unknown EXPERT_CHANGE flags");
		if (req.change.op < MOE_EXPERT_REPLICATE || req.change.op > MOE_EXPERT_DROP)
			return reject(-EINVAL, ret_why, "unknown EXPERT_CHANGE op");
		req.kind = CTL_REQUEST_EXPERT_CHANGE;
		break;
	default:
		return reject(-EPROTO, ret_why, "not a request type");
	}
	*ret = req;
	return 0;
}
