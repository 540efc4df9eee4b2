/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of ctl_request_parse(), the parser of the first message any
 * process connecting to moed's control socket sends. A valid HELLO and
 * STATUS are accepted (the client name comes back NUL-terminated even when
 * the client filled all its bytes, and escaped: printable ASCII only); every framing error (length, magic,
 * size field, type) is -EPROTO, an ABI major mismatch -EPROTONOSUPPORT, a
 * bad field -EINVAL and a request beyond the daemon's limits -E2BIG, each
 * with a reason, and a refused request leaves the output untouched. The
 * parser is pure: there is nothing to tear down.
 */
#include "test_assert.h"

#include <errno.h>
#include <stdint.h>

#include "moe_abi.h"
#include "session/hello.h"

/* ---------------------------------------------------------------- helpers */

#define T_MAX_SQ    4096u
#define T_MAX_ARENA (1ull << 30)

static const struct hello_limits t_lim = {
	.max_sq_entries = T_MAX_SQ,
	.max_arena_bytes = T_MAX_ARENA,
};

static struct moe_hello valid_hello(void)
{
	struct moe_hello h;

	memset(&h, 0, sizeof(h));
	h.hdr.magic = MOE_PROTO_MAGIC;
	h.hdr.type = MOE_MSG_HELLO;
	h.hdr.size = sizeof(h);
	h.abi_major = MOE_ABI_MAJOR;
	h.abi_minor = MOE_ABI_MINOR;
	h.sq_entries = 64;
	h.cq_entries = 128;
	h.arena_size = 1u << 20;
	snprintf(h.name, sizeof(h.name), "test-client");
	return h;
}

static struct moe_status_request valid_status(void)
{
	struct moe_status_request s;

	memset(&s, 0, sizeof(s));
	s.hdr.magic = MOE_PROTO_MAGIC;
	s.hdr.type = MOE_MSG_STATUS;
	s.hdr.size = sizeof(s);
	return s;
}

/*
 * Parse @len bytes at @buf and expect -@err with a reason containing @what;
 * the output must keep the pattern it was filled with.
 */
static void expect_refused_at(const void *buf, size_t len, const struct hello_limits *lim,
			      int err, const char *what, int line)
{
	struct ctl_request req, untouched;
	const char *why = NULL;
	int r;

	memset(&req, 0xa5, sizeof(req));
	memcpy(&untouched, &req, sizeof(req));
	r = ctl_request_parse(buf, len, lim, &req, &why);
	if (r != -err)
		fail_msg("line %d: ctl_request_parse returned %d (%s), expected %d (%s)", line, r,
			 r < 0 ? strerror(-r) : "accepted", -err, strerror(err));
	if (!why || !*why)
		fail_msg("line %d: refused without a reason", line);
	if (!strstr(why, what))
		fail_msg("line %d: refused for \"%s\", expected a reason containing \"%s\"", line,
			 why, what);
	if (memcmp(&req, &untouched, sizeof(req)) != 0)
		fail_msg("line %d: a refused request changed the output", line);
}

#define EXPECT_REFUSED(_msg, _err, _what) \
	expect_refused_at(&(_msg), sizeof(_msg), &t_lim, _err, _what, __LINE__)

static void expect_hello_ok_at(const struct moe_hello *h, int line)
{
	struct ctl_request req;
	const char *why = NULL;
	int r = ctl_request_parse(h, sizeof(*h), &t_lim, &req, &why);

	if (r != 0)
		fail_msg("line %d: ctl_request_parse returned %d (%s), expected 0; why: %s", line,
			 r, r < 0 ? strerror(-r) : "?", why ? why : "(null)");
	if (req.kind != CTL_REQUEST_HELLO)
		fail_msg("line %d: kind %d, expected CTL_REQUEST_HELLO", line, (int)req.kind);
}

#define EXPECT_HELLO_OK(_h) expect_hello_ok_at(&(_h), __LINE__)

/* --------------------------------------------------------------- accepted */

static void test_valid_hello_accepted_and_copied(void **state)
{
	struct moe_hello h = valid_hello();
	struct ctl_request req;
	const char *why = NULL;

	(void)state;
	memset(&req, 0xa5, sizeof(req));
	ASSERT_OK(ctl_request_parse(&h, sizeof(h), &t_lim, &req, &why));
	ASSERT_EQ(req.kind, CTL_REQUEST_HELLO);
	ASSERT_EQ(req.hello.hdr.magic, MOE_PROTO_MAGIC);
	ASSERT_EQ(req.hello.abi_major, MOE_ABI_MAJOR);
	ASSERT_EQ(req.hello.abi_minor, MOE_ABI_MINOR);
	ASSERT_EQ(req.hello.flags, 0);
	ASSERT_EQ(req.hello.sq_entries, 64);
	ASSERT_EQ(req.hello.cq_entries, 128);
	ASSERT_EQ(req.hello.arena_size, 1u << 20);
	assert_string_equal(req.hello.name, "test-client");
}

static void test_hello_full_name_is_nul_terminated(void **state)
{
	struct moe_hello h = valid_hello();
	struct ctl_request req;

	(void)state;
	memset(h.name, 'A', sizeof(h.name)); /* no NUL anywhere */
	ASSERT_OK(ctl_request_parse(&h, sizeof(h), &t_lim, &req, NULL));
	ASSERT_EQ(req.hello.name[MOE_CLIENT_NAME_MAX - 1], '\0');
	ASSERT_EQ(strlen(req.hello.name), MOE_CLIENT_NAME_MAX - 1);
	ASSERT_EQ(req.hello.name[0], 'A');
}

/* The name as ctl_request_parse() stores it, from @raw_len raw bytes. */
static void expect_name_at(const char *raw, size_t raw_len, const char *want, int line)
{
	struct moe_hello h = valid_hello();
	struct ctl_request req;

	memset(h.name, 0, sizeof(h.name));
	memcpy(h.name, raw, raw_len);
	ASSERT_OK(ctl_request_parse(&h, sizeof(h), &t_lim, &req, NULL));
	if (strcmp(req.hello.name, want) != 0)
		fail_msg("line %d: name stored as \"%s\", expected \"%s\"", line, req.hello.name,
			 want);
}

#define EXPECT_NAME(_raw, _want) expect_name_at(_raw, sizeof(_raw) - 1, _want, __LINE__)

/*
 * Names reach the log, terminals and the status JSON: a newline and "<0>"
 * would forge a priority-0 journal line, an ESC would drive the operator's
 * terminal, invalid UTF-8 would make the client vanish from the JSON. Only
 * printable ASCII stays as it is.
 */
static void test_hello_name_escaped(void **state)
{
	(void)state;
	EXPECT_NAME("plain name-1.2_x", "plain name-1.2_x");
	EXPECT_NAME("ok\n<0>forged", "ok\\x0a<0>forged");
	EXPECT_NAME("\x1b[2J\x07", "\\x1b[2J\\x07");
	EXPECT_NAME("a\\b", "a\\\\b");
	EXPECT_NAME("\x7f\x80\xff", "\\x7f\\x80\\xff");
	/* valid UTF-8 is escaped byte by byte too; invalid UTF-8 all the more */
	EXPECT_NAME("caf\xc3\xa9", "caf\\xc3\\xa9");
	EXPECT_NAME("\xc3(", "\\xc3(");
	EXPECT_NAME("\r\t", "\\x0d\\x09");
}

/* Escapes are never cut in half: what does not fit whole is left out. */
static void test_hello_name_escape_truncated_whole(void **state)
{
	char raw[MOE_CLIENT_NAME_MAX], want[MOE_CLIENT_NAME_MAX];
	char out[8];

	(void)state;
	/* 29 letters then a newline: "\x0a" needs 4 of the 2 bytes left */
	memset(raw, 'a', 29);
	raw[29] = '\n';
	memset(want, 'a', 29);
	want[29] = '\0';
	expect_name_at(raw, 30, want, __LINE__);
	/* 30 letters and a backslash: "\\" needs 2 of the 1 byte left */
	memset(raw, 'a', 30);
	raw[30] = '\\';
	memset(want, 'a', 30);
	want[30] = '\0';
	expect_name_at(raw, 31, want, __LINE__);
	/* 27 letters and a control byte: "\x01" fits exactly */
	memset(raw, 'a', 27);
	raw[27] = 0x01;
	expect_name_at(raw, 28, "aaaaaaaaaaaaaaaaaaaaaaaaaaa\\x01", __LINE__);

	/* the function itself: a small buffer, and nothing at all */
	client_name_escape("ab\x01", 3, out, 5);
	assert_string_equal(out, "ab");
	client_name_escape("ab\x01", 3, out, 6);
	assert_string_equal(out, "ab");
	client_name_escape("ab\x01", 3, out, 7);
	assert_string_equal(out, "ab\\x01");
	client_name_escape("", 0, out, sizeof(out));
	assert_string_equal(out, "");
	out[0] = 'z';
	client_name_escape("ab", 2, out, 0);
	ASSERT_EQ(out[0], 'z');
}

static void test_hello_other_abi_minor_accepted(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.abi_minor = MOE_ABI_MINOR + 7; /* informational only */
	EXPECT_HELLO_OK(h);
	h.abi_minor = 0;
	EXPECT_HELLO_OK(h);
}

static void test_hello_at_the_limits_accepted(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.sq_entries = 1;
	h.cq_entries = 1; /* cq == sq is fine */
	EXPECT_HELLO_OK(h);
	h.sq_entries = T_MAX_SQ;
	h.cq_entries = 2 * T_MAX_SQ;
	h.arena_size = T_MAX_ARENA;
	EXPECT_HELLO_OK(h);
	h.arena_size = 1;
	EXPECT_HELLO_OK(h);
}

static void test_hello_in_unaligned_buffer_accepted(void **state)
{
	struct moe_hello h = valid_hello();
	uint8_t raw[sizeof(h) + 1];
	struct ctl_request req;

	(void)state;
	memcpy(raw + 1, &h, sizeof(h)); /* a message need not be aligned */
	ASSERT_OK(ctl_request_parse(raw + 1, sizeof(h), &t_lim, &req, NULL));
	ASSERT_EQ(req.hello.arena_size, h.arena_size);
}

static void test_valid_status_accepted(void **state)
{
	struct moe_status_request s = valid_status();
	struct ctl_request req;
	const char *why = NULL;

	(void)state;
	memset(&req, 0xa5, sizeof(req));
	ASSERT_OK(ctl_request_parse(&s, sizeof(s), &t_lim, &req, &why));
	ASSERT_EQ(req.kind, CTL_REQUEST_STATUS);
}

/* ---------------------------------------------------------------- framing */

static void test_message_shorter_than_header_refused(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	for (size_t len = 0; len < sizeof(struct moe_msg_header); len++)
		expect_refused_at(&h, len, &t_lim, EPROTO, "shorter", __LINE__);
}

static void test_bad_magic_refused(void **state)
{
	struct moe_hello h = valid_hello();
	struct moe_status_request s = valid_status();

	(void)state;
	h.hdr.magic = MOE_ABI_MAGIC; /* the region's magic, not the socket's */
	EXPECT_REFUSED(h, EPROTO, "magic");
	h.hdr.magic = 0;
	EXPECT_REFUSED(h, EPROTO, "magic");
	s.hdr.magic = __builtin_bswap32(MOE_PROTO_MAGIC);
	EXPECT_REFUSED(s, EPROTO, "magic");
}

static void test_size_field_differing_from_length_refused(void **state)
{
	struct moe_hello h = valid_hello();
	uint8_t longer[sizeof(h) + 8];

	(void)state;
	h.hdr.size = sizeof(h) - 1;
	EXPECT_REFUSED(h, EPROTO, "size field");
	h.hdr.size = 0;
	EXPECT_REFUSED(h, EPROTO, "size field");
	h.hdr.size = UINT16_MAX;
	EXPECT_REFUSED(h, EPROTO, "size field");

	/* a valid HELLO followed by trailing bytes the size field does not count */
	h = valid_hello();
	memset(longer, 0, sizeof(longer));
	memcpy(longer, &h, sizeof(h));
	EXPECT_REFUSED(longer, EPROTO, "size field");
	/* and a truncated one */
	expect_refused_at(&h, sizeof(h) - 8, &t_lim, EPROTO, "size field", __LINE__);
}

static void test_hello_of_wrong_size_refused(void **state)
{
	uint8_t buf[sizeof(struct moe_hello) + 16];
	struct moe_hello h = valid_hello();
	struct moe_msg_header hdr = h.hdr;

	(void)state;
	memset(buf, 0, sizeof(buf));
	memcpy(buf, &h, sizeof(h));
	/* size field and length agree, but are not sizeof(struct moe_hello) */
	hdr.size = sizeof(h) - 8;
	memcpy(buf, &hdr, sizeof(hdr));
	expect_refused_at(buf, hdr.size, &t_lim, EPROTO, "HELLO of the wrong size", __LINE__);
	hdr.size = sizeof(h) + 16;
	memcpy(buf, &hdr, sizeof(hdr));
	expect_refused_at(buf, hdr.size, &t_lim, EPROTO, "HELLO of the wrong size", __LINE__);
	hdr.size = sizeof(hdr); /* a bare header */
	memcpy(buf, &hdr, sizeof(hdr));
	expect_refused_at(buf, hdr.size, &t_lim, EPROTO, "HELLO of the wrong size", __LINE__);
}

static void test_status_of_wrong_size_refused(void **state)
{
	struct moe_status_request s = valid_status();
	struct moe_hello h = valid_hello();

	(void)state;
	/* a STATUS header on a HELLO-sized message */
	h.hdr.type = MOE_MSG_STATUS;
	EXPECT_REFUSED(h, EPROTO, "STATUS of the wrong size");
	s.hdr.size = sizeof(s.hdr);
	expect_refused_at(&s, sizeof(s.hdr), &t_lim, EPROTO, "STATUS of the wrong size",
			  __LINE__);
}

static void test_unknown_type_refused(void **state)
{
	static const uint16_t types[] = { 0, MOE_MSG_HELLO_REPLY, MOE_MSG_STATUS_REPLY,
					  MOE_MSG_EXPERT_CHANGE_REPLY, 7, UINT16_MAX };

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct moe_hello h = valid_hello();

		h.hdr.type = types[i];
		EXPECT_REFUSED(h, EPROTO, "type");
	}
}

/* ------------------------------------------------------------ HELLO fields */

static void test_hello_abi_major_mismatch_refused(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.abi_major = MOE_ABI_MAJOR + 1;
	EXPECT_REFUSED(h, EPROTONOSUPPORT, "ABI");
	h.abi_major = 0;
	EXPECT_REFUSED(h, EPROTONOSUPPORT, "ABI");
	h.abi_major = UINT16_MAX;
	EXPECT_REFUSED(h, EPROTONOSUPPORT, "ABI");
}

/* A client of the previous major (libmoe 1: counters, no seq words) is told both versions. */
static void test_hello_old_major_named(void **state)
{
	struct moe_hello h = valid_hello();
	char line[128], want[128];

	(void)state;
	h.abi_major = MOE_ABI_MAJOR - 1;
	h.abi_minor = 3;
	EXPECT_REFUSED(h, EPROTONOSUPPORT, "ABI");
	hello_abi_refusal(&h, sizeof(h), line, sizeof(line));
	snprintf(want, sizeof(want), "the client speaks ABI %u.3, moed ABI %u.%u",
		 MOE_ABI_MAJOR - 1, MOE_ABI_MAJOR, MOE_ABI_MINOR);
	if (!strstr(line, want))
		fail_msg("refusal \"%s\" does not name both versions (\"%s\")", line, want);
	/* cut to the buffer, NUL-terminated */
	memset(line, 'x', sizeof(line));
	hello_abi_refusal(&h, sizeof(h), line, 12);
	ASSERT_EQ(strlen(line), 11);
	/* not a whole HELLO: the generic reason, no read past @len */
	hello_abi_refusal(&h, 3, line, sizeof(line));
	assert_string_equal(line, "ABI major version differs");
}

static void test_hello_flags_nonzero_refused(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.flags = 1;
	EXPECT_REFUSED(h, EINVAL, "flags");
	h.flags = 1u << 31;
	EXPECT_REFUSED(h, EINVAL, "flags");
}

static void test_hello_ring_sizes_not_power_of_two_refused(void **state)
{
	static const uint32_t bad[] = { 0, 3, 6, 100, 4095, UINT32_MAX };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct moe_hello h = valid_hello();

		h.sq_entries = bad[i];
		EXPECT_REFUSED(h, EINVAL, "powers of two");
		h = valid_hello();
		h.cq_entries = bad[i];
		EXPECT_REFUSED(h, EINVAL, "powers of two");
	}
}

static void test_hello_cq_below_sq_refused(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.sq_entries = 128;
	h.cq_entries = 64;
	EXPECT_REFUSED(h, EINVAL, "cq_entries");
	h.sq_entries = 2;
	h.cq_entries = 1;
	EXPECT_REFUSED(h, EINVAL, "cq_entries");
}

static void test_hello_empty_arena_refused(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.arena_size = 0;
	EXPECT_REFUSED(h, EINVAL, "arena");
}

static void test_hello_beyond_limits_refused(void **state)
{
	struct moe_hello h = valid_hello();

	(void)state;
	h.sq_entries = 2 * T_MAX_SQ;
	h.cq_entries = 2 * T_MAX_SQ;
	EXPECT_REFUSED(h, E2BIG, "rings");
	h.sq_entries = 1u << 31;
	h.cq_entries = 1u << 31;
	EXPECT_REFUSED(h, E2BIG, "rings");

	h = valid_hello();
	h.cq_entries = 4 * T_MAX_SQ;
	EXPECT_REFUSED(h, E2BIG, "rings");

	h = valid_hello();
	h.arena_size = T_MAX_ARENA + 1;
	EXPECT_REFUSED(h, E2BIG, "arena");
	h.arena_size = UINT64_MAX;
	EXPECT_REFUSED(h, E2BIG, "arena");
}

/* ----------------------------------------------------------- STATUS fields */

static void test_status_with_flags_refused(void **state)
{
	struct moe_status_request s = valid_status();

	(void)state;
	s.flags = 1;
	EXPECT_REFUSED(s, EINVAL, "STATUS");
	s = valid_status();
	s.reserved = 1;
	EXPECT_REFUSED(s, EINVAL, "STATUS");
}

/* ---------------------------------------------------- EXPERT_CHANGE fields */

static struct moe_expert_change valid_change(void)
{
	struct moe_expert_change c;

	memset(&c, 0, sizeof(c));
	c.hdr.magic = MOE_PROTO_MAGIC;
	c.hdr.type = MOE_MSG_EXPERT_CHANGE;
	c.hdr.size = sizeof(c);
	c.op = MOE_EXPERT_MOVE;
	c.layer = 1;
	c.expert = 2;
	c.node = 3;
	return c;
}

static void test_valid_expert_change_accepted_and_copied(void **state)
{
	struct moe_expert_change c = valid_change();
	struct ctl_request req;

	(void)state;
	memset(&req, 0xa5, sizeof(req));
	ASSERT_OK(ctl_request_parse(&c, sizeof(c), &t_lim, &req, NULL));
	ASSERT_EQ(req.kind, CTL_REQUEST_EXPERT_CHANGE);
	assert_memory_equal(&req.change, &c, sizeof(c));
}

static void test_expert_change_refused(void **state)
{
	struct moe_expert_change c = valid_change();

	(void)state;
	c.hdr.size = sizeof(c) - 4;
	expect_refused_at(&c, sizeof(c) - 4, &t_lim, EPROTO, "EXPERT_CHANGE of the wrong size",
			  __LINE__);
	c = valid_change();
	c.flags = 1;
	EXPECT_REFUSED(c, EINVAL, "flags");
	c = valid_change();
	c.reserved = 1;
	EXPECT_REFUSED(c, EINVAL, "flags");
	c = valid_change();
	c.op = 0;
	EXPECT_REFUSED(c, EINVAL, "op");
	c.op = MOE_EXPERT_DROP + 1;
	EXPECT_REFUSED(c, EINVAL, "op");
	c.op = UINT32_MAX;
	EXPECT_REFUSED(c, EINVAL, "op");
}

static void test_null_why_allowed(void **state)
{
	struct moe_hello h = valid_hello();
	struct ctl_request req;

	(void)state;
	h.flags = 1;
	ASSERT_ERRNO(ctl_request_parse(&h, sizeof(h), &t_lim, &req, NULL), EINVAL);
	ASSERT_ERRNO(ctl_request_parse(&h, 3, &t_lim, &req, NULL), EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_hello_accepted_and_copied),
		cmocka_unit_test(test_hello_full_name_is_nul_terminated),
		cmocka_unit_test(test_hello_name_escaped),
		cmocka_unit_test(test_hello_name_escape_truncated_whole),
		cmocka_unit_test(test_hello_other_abi_minor_accepted),
		cmocka_unit_test(test_hello_at_the_limits_accepted),
		cmocka_unit_test(test_hello_in_unaligned_buffer_accepted),
		cmocka_unit_test(test_valid_status_accepted),
		cmocka_unit_test(test_message_shorter_than_header_refused),
		cmocka_unit_test(test_bad_magic_refused),
		cmocka_unit_test(test_size_field_differing_from_length_refused),
		cmocka_unit_test(test_hello_of_wrong_size_refused),
		cmocka_unit_test(test_status_of_wrong_size_refused),
		cmocka_unit_test(test_unknown_type_refused),
		cmocka_unit_test(test_hello_abi_major_mismatch_refused),
		cmocka_unit_test(test_hello_old_major_named),
		cmocka_unit_test(test_hello_flags_nonzero_refused),
		cmocka_unit_test(test_hello_ring_sizes_not_power_of_two_refused),
		cmocka_unit_test(test_hello_cq_below_sq_refused),
		cmocka_unit_test(test_hello_empty_arena_refused),
		cmocka_unit_test(test_hello_beyond_limits_refused),
		cmocka_unit_test(test_status_with_flags_refused),
		cmocka_unit_test(test_valid_expert_change_accepted_and_copied),
		cmocka_unit_test(test_expert_change_refused),
		cmocka_unit_test(test_null_why_allowed),
	};

	return cmocka_run_group_tests_name("hello", tests, NULL, NULL);
}
