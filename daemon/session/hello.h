/* SPDX-License-Identifier: MIT */
/*
 * hello: parsing of the first message on a control connection (moe_proto.h).
 * Pure, so the fuzzer (fuzz_hello) drives it with arbitrary bytes.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "moe_proto.h"

struct hello_limits {
	uint32_t max_sq_entries;
	uint64_t max_arena_bytes;
};

enum ctl_request_kind {
	CTL_REQUEST_HELLO,
	CTL_REQUEST_STATUS,
	CTL_REQUEST_EXPERT_CHANGE,
};

struct ctl_request {
	enum ctl_request_kind kind;
	struct moe_hello hello; /* CTL_REQUEST_HELLO: checked, name escaped (below) */
	struct moe_expert_change change; /* CTL_REQUEST_EXPERT_CHANGE: op, flags checked */
};

/*
 * Write the client name @raw (at most @raw_len bytes, up to its first NUL)
 * into @out (@out_size bytes, always NUL-terminated when @out_size > 0) in a
 * form safe for logs, terminals and JSON: printable ASCII stays, a backslash
 * becomes "\\", every other byte (control characters, DEL, anything >= 0x80,
 * so also all UTF-8) becomes "\xNN" (lowercase hex). What does not fit is
 * cut before the escape that would not fit, never inside one. Pure.
 */
void client_name_escape(const char *raw, size_t raw_len, char *out, size_t out_size);

/*
 * Parse the @len bytes at @buf. 0 with @ret filled; -EPROTO (not a moed
 * message: magic, type, size), -EPROTONOSUPPORT (ABI major differs),
 * -EINVAL (flags, ring sizes not powers of two, cq < sq), -E2BIG (beyond
 * @lim). @ret_why (static string) says which check failed.
 */
int ctl_request_parse(const void *buf, size_t len, const struct hello_limits *lim,
		      struct ctl_request *ret, const char **ret_why);

/*
 * For a HELLO that ctl_request_parse() refused with -EPROTONOSUPPORT (@buf,
 * @len as given to it): the reason, naming the client's ABI version and
 * moed's, e.g. "the client speaks ABI 1.0, moed ABI 2.0 (a libmoe of
 * another major version)", NUL-terminated in @out (cut to @out_size).
 * Anything else in @buf gives the parser's generic reason. Pure; any thread.
 */
void hello_abi_refusal(const void *buf, size_t len, char *out, size_t out_size);
