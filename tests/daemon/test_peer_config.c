/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the peer settings (daemon/peers/peer_config): listen's
 * ADDR:PORT (numeric IPv4, bracketed IPv6, port 1..65535 at its edges), the
 * peers list (names, their charset and length, `self`, duplicates, at most
 * PEERS_MAX, empty and blank entries) and expert_hosts over a model whose
 * layers have different expert counts (an entry for every layer skips the
 * layers that lack the expert, a layer's entry overrides it and is refused
 * beyond the layer's count, the same expert twice at one level is refused,
 * unknown hosts, layers out of range, and n_layers 0 as the syntax-only
 * check). Every refusal's diag is checked to name the offending entry, and
 * hostile long inputs are refused without overrunning anything (the
 * sanitizer build runs these too).
 */
#include "test_assert.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "peers/peer_config.h"
#include "util/diag.h"

/* ---------------------------------------------------------------- helpers */

/* peer_addr_parse(@s) succeeds with exactly @addr and @port, and leaves no diag. */
static void expect_addr_at(const char *s, const char *addr, uint16_t port, int line)
{
	struct peer_addr at;
	struct diag d = { { 0 } };
	int r;

	memset(&at, 0xa5, sizeof(at));
	r = peer_addr_parse(s, &at, &d);
	if (r != 0)
		fail_msg("line %d: '%s' refused: %d (%s)", line, s, r, d.msg);
	if (strcmp(at.addr, addr) != 0 || at.port != port)
		fail_msg("line %d: '%s' parsed as '%s' port %u, expected '%s' port %u", line, s,
			 at.addr, at.port, addr, port);
	if (d.msg[0])
		fail_msg("line %d: '%s' accepted but left diag \"%s\"", line, s, d.msg);
}

#define EXPECT_ADDR(_s, _addr, _port) expect_addr_at(_s, _addr, _port, __LINE__)

/* peer_addr_parse(@s) is refused with -EINVAL and a diag that quotes @s and contains @what. */
static void expect_addr_refused_at(const char *s, const char *what, int line)
{
	struct peer_addr at;
	struct diag d = { { 0 } };
	char quoted[PEER_ADDR_MAX + 16];
	int r;

	r = peer_addr_parse(s, &at, &d);
	if (r != -EINVAL)
		fail_msg("line %d: '%s' returned %d, expected -EINVAL", line, s, r);
	snprintf(quoted, sizeof(quoted), "'%s'", s);
	if (!strstr(d.msg, quoted) || !strstr(d.msg, what))
		fail_msg("line %d: diag \"%s\" does not quote '%s' and say \"%s\"", line, d.msg, s,
			 what);
}

#define EXPECT_ADDR_REFUSED(_s, _what) expect_addr_refused_at(_s, _what, __LINE__)

/* peer_list_parse(@s) is refused with -EINVAL and a diag containing @what. */
static void expect_list_refused_at(const char *s, const char *what, int line)
{
	struct peer_list l;
	struct diag d = { { 0 } };
	int r;

	r = peer_list_parse(s, &l, &d);
	if (r != -EINVAL)
		fail_msg("line %d: peers '%s' returned %d, expected -EINVAL", line, s, r);
	if (!strstr(d.msg, what))
		fail_msg("line %d: peers '%s': diag \"%s\" does not contain \"%s\"", line, s, d.msg,
			 what);
}

#define EXPECT_LIST_REFUSED(_s, _what) expect_list_refused_at(_s, _what, __LINE__)

/*
 * The model of the expert_hosts tests: three layers of 8, 4 and 6 experts
 * (so that an entry for every layer meets layers that lack the expert), and
 * the peers a (host 1) and b (host 2).
 */
#define N_LAYERS 3
static const uint32_t n_experts[N_LAYERS] = { 8, 4, 6 };

struct hosts {
	uint16_t l0[8], l1[4], l2[6];
	uint16_t *row[N_LAYERS];
};

/* Every entry 0xeeee, so that a test sees what the parse wrote. */
static void hosts_init(struct hosts *h)
{
	memset(h, 0xee, sizeof(*h));
	h->row[0] = h->l0;
	h->row[1] = h->l1;
	h->row[2] = h->l2;
}

static void two_peers(struct peer_list *l)
{
	ASSERT_OK(peer_list_parse("a=10.0.0.2:7300,b=[fd00::3]:7300", l, NULL));
	ASSERT_EQ(l->n, 2);
}

/* Layer @layer's hosts equal @want (n_experts[layer] entries). */
static void expect_row_at(const struct hosts *h, uint32_t layer, const uint16_t *want, int line)
{
	for (uint32_t e = 0; e < n_experts[layer]; e++)
		if (h->row[layer][e] != want[e])
			fail_msg("line %d: layer %u expert %u on host %u, expected %u", line, layer,
				 e, h->row[layer][e], want[e]);
}

#define EXPECT_ROW(_h, _layer, ...)                                                           \
	expect_row_at(_h, _layer, (const uint16_t[]){ __VA_ARGS__ }, __LINE__)

/* expert_hosts @s over the model parses; the hosts land in @h. */
static void hosts_parse_ok_at(const char *s, struct hosts *h, int line)
{
	struct peer_list l;
	struct diag d = { { 0 } };
	int r;

	two_peers(&l);
	hosts_init(h);
	r = expert_hosts_parse(s, &l, N_LAYERS, n_experts, h->row, &d);
	if (r != 0)
		fail_msg("line %d: expert_hosts '%s' refused: %d (%s)", line, s, r, d.msg);
	if (d.msg[0])
		fail_msg("line %d: '%s' accepted but left diag \"%s\"", line, s, d.msg);
}

#define HOSTS_PARSE_OK(_s, _h) hosts_parse_ok_at(_s, _h, __LINE__)

/*
 * expert_hosts @s is refused with -EINVAL over the model (@n_layers
 * N_LAYERS) or syntax-only (@n_layers 0), and the diag is exactly @msg.
 */
static void expect_hosts_refused_at(const char *s, uint32_t n_layers, const char *msg, int line)
{
	struct peer_list l;
	struct hosts h;
	struct diag d = { { 0 } };
	int r;

	two_peers(&l);
	hosts_init(&h);
	r = expert_hosts_parse(s, &l, n_layers, n_layers ? n_experts : NULL,
			       n_layers ? h.row : NULL, &d);
	if (r != -EINVAL)
		fail_msg("line %d: expert_hosts '%s' (n_layers %u) returned %d, expected -EINVAL",
			 line, s, n_layers, r);
	if (strcmp(d.msg, msg) != 0)
		fail_msg("line %d: expert_hosts '%s' (n_layers %u): diag\n  \"%s\"\nexpected\n  \"%s\"",
			 line, s, n_layers, d.msg, msg);
}

/* Refused the same way over the model and in the syntax-only check. */
#define EXPECT_HOSTS_REFUSED_BOTH(_s, _msg)                                                   \
	do {                                                                                  \
		expect_hosts_refused_at(_s, N_LAYERS, _msg, __LINE__);                        \
		expect_hosts_refused_at(_s, 0, _msg, __LINE__);                               \
	} while (0)
#define EXPECT_HOSTS_REFUSED(_s, _msg) expect_hosts_refused_at(_s, N_LAYERS, _msg, __LINE__)

/* expert_hosts @s passes the syntax-only check (n_layers 0, no host arrays). */
static void expect_syntax_ok_at(const char *s, int line)
{
	struct peer_list l;
	struct diag d = { { 0 } };
	int r;

	two_peers(&l);
	r = expert_hosts_parse(s, &l, 0, NULL, NULL, &d);
	if (r != 0)
		fail_msg("line %d: expert_hosts '%s' refused by the syntax check: %d (%s)", line, s,
			 r, d.msg);
}

#define EXPECT_SYNTAX_OK(_s) expect_syntax_ok_at(_s, __LINE__)

/* ------------------------------------------------------- peer_addr_parse */

/* Numeric IPv4 addresses parse into the address without the port. */
static void test_addr_ipv4(void **state)
{
	(void)state;
	EXPECT_ADDR("10.0.0.1:7300", "10.0.0.1", 7300);
	EXPECT_ADDR("0.0.0.0:7000", "0.0.0.0", 7000);
	EXPECT_ADDR("255.255.255.255:80", "255.255.255.255", 80);
	EXPECT_ADDR("127.0.0.1:007000", "127.0.0.1", 7000); /* decimal, leading zeros */
}

/* Bracketed IPv6 addresses parse into the address without the brackets. */
static void test_addr_ipv6_bracketed(void **state)
{
	(void)state;
	EXPECT_ADDR("[::1]:7000", "::1", 7000);
	EXPECT_ADDR("[fd00::3]:7300", "fd00::3", 7300);
	EXPECT_ADDR("[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1", 1);
	EXPECT_ADDR("[2001:db8:0:0:0:0:0:1]:65535", "2001:db8:0:0:0:0:0:1", 65535);
}

/* The port is 1..65535: 0 and 65536 are refused, as is anything not a bare number. */
static void test_addr_port_bounds(void **state)
{
	(void)state;
	EXPECT_ADDR("10.0.0.1:1", "10.0.0.1", 1);
	EXPECT_ADDR("10.0.0.1:65535", "10.0.0.1", 65535);
	EXPECT_ADDR("[::1]:65535", "::1", 65535);
	EXPECT_ADDR_REFUSED("10.0.0.1:0", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("[::1]:0", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:65536", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:4294967297", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:99999999999999999999999",
			    "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:-1", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:+7000", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1: 7000", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:7000 ", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:7000x", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:0x1b58", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("10.0.0.1:", "the port is not a number in 1..65535");
	EXPECT_ADDR_REFUSED("[::1]:", "the port is not a number in 1..65535");
}

/* Without a port, an address or brackets where they belong, the input is refused. */
static void test_addr_malformed_refused(void **state)
{
	(void)state;
	EXPECT_ADDR_REFUSED("", "expected ADDR:PORT");
	EXPECT_ADDR_REFUSED("10.0.0.1", "expected ADDR:PORT");
	EXPECT_ADDR_REFUSED(":7000", "the address is empty or too long");
	EXPECT_ADDR_REFUSED("[]:7000", "the address is empty or too long");
	EXPECT_ADDR_REFUSED("[::1]", "expected [IPV6]:PORT");
	EXPECT_ADDR_REFUSED("[::1]7000", "expected [IPV6]:PORT");
	EXPECT_ADDR_REFUSED("[::1:7000", "expected [IPV6]:PORT");
	EXPECT_ADDR_REFUSED("localhost:7000", "'localhost' is not a numeric");
	EXPECT_ADDR_REFUSED("10.0.0:7000", "'10.0.0' is not a numeric");
	EXPECT_ADDR_REFUSED("10.0.0.256:7000", "'10.0.0.256' is not a numeric");
	EXPECT_ADDR_REFUSED(" 10.0.0.1:7000", "' 10.0.0.1' is not a numeric");
	EXPECT_ADDR_REFUSED("10.0.0.1 :7000", "'10.0.0.1 ' is not a numeric");
	EXPECT_ADDR_REFUSED("[fe80::1%eth0]:7000", "'fe80::1%eth0' is not a numeric");
	EXPECT_ADDR_REFUSED("[::1]:70:00", "the port is not a number");
}

/*
 * IPv6 goes in brackets, IPv4 does not (the header's contract): without
 * them "2001:db8::1:7000" would silently be 2001:db8::1 port 7000 when the
 * port was forgotten.
 */
static void test_addr_family_matches_brackets(void **state)
{
	(void)state;
	EXPECT_ADDR_REFUSED("::1:7000", "'::1' is not a numeric IPv4 address");
	EXPECT_ADDR_REFUSED("2001:db8::1:7000", "'2001:db8::1' is not a numeric IPv4 address");
	EXPECT_ADDR_REFUSED("[10.0.0.1]:7000", "'10.0.0.1' is not a numeric IPv6 address");
}

/* An address of PEER_ADDR_MAX bytes or more, or a hostile long input, is refused. */
static void test_addr_too_long_refused(void **state)
{
	char s[PEER_ADDR_MAX + 16], *big;
	struct peer_addr at;
	struct diag d = { { 0 } };
	size_t n = 100000;

	(void)state;
	memset(s, '1', PEER_ADDR_MAX);
	strcpy(s + PEER_ADDR_MAX, ":7000");
	EXPECT_ADDR_REFUSED(s, "the address is empty or too long");
	/* PEER_ADDR_MAX - 1 bytes fit (and are then not an address) */
	strcpy(s + PEER_ADDR_MAX - 1, ":7000");
	EXPECT_ADDR_REFUSED(s, "is not a numeric");
	s[0] = '[';
	memset(s + 1, ':', PEER_ADDR_MAX);
	strcpy(s + PEER_ADDR_MAX + 1, "]:1");
	EXPECT_ADDR_REFUSED(s, "the address is empty or too long");

	/* 100 kB of digits and colons: refused, the diag cut at its size */
	big = malloc(n + 1);
	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = i % 7 == 6 ? ':' : '9';
	big[n] = '\0';
	ASSERT_ERRNO(peer_addr_parse(big, &at, &d), EINVAL);
	ASSERT_EQ(strlen(d.msg), sizeof(d.msg) - 1);
	ASSERT_EQ(strncmp(d.msg, "'999999:", 8), 0);
	big[0] = '[';
	memset(&d, 0, sizeof(d));
	ASSERT_ERRNO(peer_addr_parse(big, &at, &d), EINVAL);
	ASSERT_EQ(strncmp(d.msg, "'[99999:", 8), 0);
	free(big);
}

/* A NULL diag is allowed: the refusal is the same, the message dropped. */
static void test_addr_null_diag(void **state)
{
	struct peer_addr at;

	(void)state;
	ASSERT_ERRNO(peer_addr_parse("10.0.0.1:0", &at, NULL), EINVAL);
	ASSERT_OK(peer_addr_parse("10.0.0.1:1", &at, NULL));
	ASSERT_EQ(at.port, 1);
}

/* ------------------------------------------------------- peer_list_parse */

/* An empty or blank `peers` is no peers. */
static void test_list_empty_is_none(void **state)
{
	struct peer_list l;

	(void)state;
	l.n = 99;
	ASSERT_OK(peer_list_parse("", &l, NULL));
	ASSERT_EQ(l.n, 0);
	l.n = 99;
	ASSERT_OK(peer_list_parse(" \t ", &l, NULL));
	ASSERT_EQ(l.n, 0);
}

/* Entries parse in order, the blanks around each ignored. */
static void test_list_entries(void **state)
{
	struct peer_list l;
	struct diag d = { { 0 } };

	(void)state;
	ASSERT_OK(peer_list_parse(" b=10.0.0.2:7300 ,\tc=[fd00::3]:7301\t, d.e-f_9=1.2.3.4:1 ", &l,
				  &d));
	ASSERT_EQ(d.msg[0], '\0');
	ASSERT_EQ(l.n, 3);
	assert_string_equal(l.peer[0].name, "b");
	assert_string_equal(l.peer[0].at.addr, "10.0.0.2");
	ASSERT_EQ(l.peer[0].at.port, 7300);
	assert_string_equal(l.peer[1].name, "c");
	assert_string_equal(l.peer[1].at.addr, "fd00::3");
	ASSERT_EQ(l.peer[1].at.port, 7301);
	assert_string_equal(l.peer[2].name, "d.e-f_9");
	assert_string_equal(l.peer[2].at.addr, "1.2.3.4");
	ASSERT_EQ(l.peer[2].at.port, 1);
}

/* Names are 1..31 of [A-Za-z0-9_.-] and not `self` (case-sensitive, as HOST is). */
static void test_list_names(void **state)
{
	char s[128];
	struct peer_list l;

	(void)state;
	ASSERT_OK(peer_list_parse("AZaz09_.-=1.2.3.4:1", &l, NULL));
	assert_string_equal(l.peer[0].name, "AZaz09_.-");
	ASSERT_OK(peer_list_parse("SELF=1.2.3.4:1,selfish=1.2.3.4:2", &l, NULL));
	ASSERT_EQ(l.n, 2);

	snprintf(s, sizeof(s), "%.31s=1.2.3.4:1", "abcdefghijklmnopqrstuvwxyz0123456789");
	ASSERT_OK(peer_list_parse(s, &l, NULL));
	ASSERT_EQ(strlen(l.peer[0].name), 31);
	snprintf(s, sizeof(s), "%.32s=1.2.3.4:1", "abcdefghijklmnopqrstuvwxyz0123456789");
	EXPECT_LIST_REFUSED(s, "peers entry 'abcdefghijklmnopqrstuvwxyz012345=1.2.3.4:1': NAME "
			       "must be 1..31 of A-Z a-z 0-9 _ . - and not 'self'");

	EXPECT_LIST_REFUSED("self=1.2.3.4:1", "peers entry 'self=1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("=1.2.3.4:1", "peers entry '=1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("a b=1.2.3.4:1", "peers entry 'a b=1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("a =1.2.3.4:1", "peers entry 'a =1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("a/b=1.2.3.4:1", "peers entry 'a/b=1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("a:b=1.2.3.4:1", "peers entry 'a:b=1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("a@b=1.2.3.4:1", "peers entry 'a@b=1.2.3.4:1': NAME must be");
	EXPECT_LIST_REFUSED("\xc3\xa9=1.2.3.4:1", "NAME must be");
	EXPECT_LIST_REFUSED("a", "peers entry 'a': expected NAME=ADDR:PORT");
	EXPECT_LIST_REFUSED("a=1.2.3.4:1,b", "peers entry 'b': expected NAME=ADDR:PORT");
}

/* The same name twice is refused, the diag naming it. */
static void test_list_duplicate_refused(void **state)
{
	struct diag d = { { 0 } };
	struct peer_list l;

	(void)state;
	ASSERT_ERRNO(peer_list_parse("a=1.2.3.4:1,b=1.2.3.5:1,a=1.2.3.6:1", &l, &d), EINVAL);
	assert_string_equal(d.msg, "peers: 'a' is named twice");
	ASSERT_OK(peer_list_parse("a=1.2.3.4:1,A=1.2.3.4:1", &l, NULL)); /* names are case-sensitive */
}

/* PEERS_MAX peers are accepted, the one more refused; the last is host PEERS_MAX. */
static void test_list_at_most_peers_max(void **state)
{
	char s[PEERS_MAX * 32 + 64];
	size_t len = 0;
	struct peer_list l;
	struct diag d = { { 0 } };
	uint16_t h0[1], *row[1] = { h0 };
	const uint32_t one = 1;

	(void)state;
	for (int i = 0; i < PEERS_MAX; i++)
		len += (size_t)snprintf(s + len, sizeof(s) - len, "%sp%d=10.0.0.%d:%d",
					i ? "," : "", i, i + 1, 7000 + i);
	ASSERT_OK(peer_list_parse(s, &l, &d));
	ASSERT_EQ(l.n, PEERS_MAX);
	assert_string_equal(l.peer[PEERS_MAX - 1].name, "p31");
	assert_string_equal(l.peer[PEERS_MAX - 1].at.addr, "10.0.0.32");
	ASSERT_EQ(l.peer[PEERS_MAX - 1].at.port, 7031);
	ASSERT_OK(expert_hosts_parse("0@p31", &l, 1, &one, row, NULL));
	ASSERT_EQ(h0[0], PEERS_MAX);

	snprintf(s + len, sizeof(s) - len, ",p32=10.0.0.33:7032");
	ASSERT_ERRNO(peer_list_parse(s, &l, &d), EINVAL);
	assert_string_equal(d.msg, "peers: more than 32 peers");
}

/* An empty or blank entry (leading, trailing or doubled ',') is refused. */
static void test_list_empty_entry_refused(void **state)
{
	(void)state;
	EXPECT_LIST_REFUSED(",a=1.2.3.4:1", "peers: an empty or overlong entry near ',a=1.2.3.4:1'");
	EXPECT_LIST_REFUSED("a=1.2.3.4:1,", "peers: an empty or overlong entry near ''");
	EXPECT_LIST_REFUSED("a=1.2.3.4:1, ", "peers: an empty or overlong entry near ' '");
	EXPECT_LIST_REFUSED("a=1.2.3.4:1,,b=1.2.3.5:1",
			    "peers: an empty or overlong entry near ',b=1.2.3.5:1'");
	EXPECT_LIST_REFUSED("a=1.2.3.4:1, \t,b=1.2.3.5:1",
			    "peers: an empty or overlong entry near ' \t,b=1.2.3.5:1'");
	EXPECT_LIST_REFUSED(",", "peers: an empty or overlong entry near ','");
}

/* A bad address is reported with its entry in front of the address's own reason. */
static void test_list_bad_address_names_entry(void **state)
{
	struct diag d = { { 0 } };
	struct peer_list l;

	(void)state;
	ASSERT_ERRNO(peer_list_parse("a=10.0.0.2:7300, b=10.0.0.3:0", &l, &d), EINVAL);
	assert_string_equal(d.msg, "peers entry 'b=10.0.0.3:0': '10.0.0.3:0': the port is not a "
				   "number in 1..65535");
	memset(&d, 0, sizeof(d));
	ASSERT_ERRNO(peer_list_parse("a=host.example:7300", &l, &d), EINVAL);
	assert_string_equal(d.msg, "peers entry 'a=host.example:7300': 'host.example:7300': "
				   "'host.example' is not a numeric IPv4 address (IPv6 goes in "
				   "brackets)");
	EXPECT_LIST_REFUSED("a=", "peers entry 'a=': '': expected ADDR:PORT");
	EXPECT_LIST_REFUSED("a=[::1]", "peers entry 'a=[::1]': '[::1]': expected [IPV6]:PORT");
	EXPECT_LIST_REFUSED("a==1.2.3.4:1", "peers entry 'a==1.2.3.4:1'");
}

/* Hostile long inputs are refused as overlong entries, the diag quoting their start. */
static void test_list_hostile_long_refused(void **state)
{
	size_t n = 100000, len;
	char *s = malloc(n + 1), msg[512];
	struct peer_list l;

	(void)state;
	assert_non_null(s);
	memset(s, 'a', n);
	s[n] = '\0';
	EXPECT_LIST_REFUSED(s, "peers: an empty or overlong entry near "
			       "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'");

	/* after a valid entry, one of 199 bytes (the limit) is read whole: its name is too long */
	strcpy(s, "a=1.2.3.4:1,");
	memset(s + 12, 'b', 199 - 10);
	strcpy(s + 12 + 199 - 10, "=1.2.3.4:1");
	snprintf(msg, sizeof(msg), "peers entry '%s': NAME must be", s + 12);
	EXPECT_LIST_REFUSED(s, msg);
	/* one byte more is overlong */
	memset(s + 12, 'b', 200 - 10);
	strcpy(s + 12 + 200 - 10, "=1.2.3.4:1");
	snprintf(msg, sizeof(msg), "peers: an empty or overlong entry near '%.40s'", s + 12);
	EXPECT_LIST_REFUSED(s, msg);

	/* 100 kB of commas */
	memset(s, ',', n);
	s[n] = '\0';
	snprintf(msg, sizeof(msg), "peers: an empty or overlong entry near '%.40s'", s);
	EXPECT_LIST_REFUSED(s, msg);

	/* thousands of valid entries: refused at the 33rd */
	len = 0;
	for (int i = 0; len + 32 < n; i++)
		len += (size_t)snprintf(s + len, n + 1 - len, "%sp%d=1.2.3.4:1", i ? "," : "", i);
	EXPECT_LIST_REFUSED(s, "peers: more than 32 peers");
	ASSERT_ERRNO(peer_list_parse(s, &l, NULL), EINVAL);
	free(s);
}

/* ----------------------------------------------------- expert_hosts_parse */

/* Empty or blank expert_hosts: every expert of every layer computes here. */
static void test_hosts_empty_all_here(void **state)
{
	struct hosts h;

	(void)state;
	HOSTS_PARSE_OK("", &h);
	EXPECT_ROW(&h, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	EXPECT_ROW(&h, 1, 0, 0, 0, 0);
	EXPECT_ROW(&h, 2, 0, 0, 0, 0, 0, 0);
	HOSTS_PARSE_OK(" \t", &h);
	EXPECT_ROW(&h, 1, 0, 0, 0, 0);
	EXPECT_SYNTAX_OK("");
}

/*
 * An entry for every layer applies to each layer that has the expert: 6 and
 * 7 exist only in layer 0 (and 4, 5 in layers 0 and 2); experts no entry
 * names compute here. Blanks around entries are ignored.
 */
static void test_hosts_every_layer_entry(void **state)
{
	struct hosts h;

	(void)state;
	HOSTS_PARSE_OK(" 0-1@a ;\t3,5-7@b\t; 2@self ", &h);
	EXPECT_ROW(&h, 0, 1, 1, 0, 2, 0, 2, 2, 2);
	EXPECT_ROW(&h, 1, 1, 1, 0, 2);
	EXPECT_ROW(&h, 2, 1, 1, 0, 2, 0, 2);
	/* an expert beyond every layer's count applies nowhere */
	HOSTS_PARSE_OK("100@b;0-7@a", &h);
	EXPECT_ROW(&h, 0, 1, 1, 1, 1, 1, 1, 1, 1);
	EXPECT_ROW(&h, 1, 1, 1, 1, 1);
	EXPECT_ROW(&h, 2, 1, 1, 1, 1, 1, 1);
}

/* A layer's entry overrides the every-layer entries there, wherever it is written. */
static void test_hosts_layer_entry_overrides(void **state)
{
	struct hosts h;

	(void)state;
	HOSTS_PARSE_OK("1:2@b;0-3@a;1:3@self;2:5@a", &h);
	EXPECT_ROW(&h, 0, 1, 1, 1, 1, 0, 0, 0, 0);
	EXPECT_ROW(&h, 1, 1, 1, 2, 0);
	EXPECT_ROW(&h, 2, 1, 1, 1, 1, 0, 1);
	/* only layer entries; the same expert in two layers is not a duplicate */
	HOSTS_PARSE_OK("0:7@b;2:0@a;1:0@b", &h);
	EXPECT_ROW(&h, 0, 0, 0, 0, 0, 0, 0, 0, 2);
	EXPECT_ROW(&h, 1, 2, 0, 0, 0);
	EXPECT_ROW(&h, 2, 1, 0, 0, 0, 0, 0);
}

/*
 * A layer's entry beyond that layer's expert count is refused (it names one
 * layer, so it is a mistake), an every-layer entry is not (it skips layers
 * that lack the expert).
 */
static void test_hosts_layer_entry_beyond_count_refused(void **state)
{
	struct hosts h;

	(void)state;
	HOSTS_PARSE_OK("1:3@a;4-7@b", &h);
	EXPECT_ROW(&h, 1, 0, 0, 0, 1);
	EXPECT_HOSTS_REFUSED("1:4@a", "expert_hosts entry '1:4@a': expert 4 beyond layer 1's 4 "
				      "experts");
	EXPECT_HOSTS_REFUSED("0-1@a; 1:2-5@b",
			     "expert_hosts entry '1:2-5@b': expert 5 beyond layer 1's 4 experts");
	EXPECT_HOSTS_REFUSED("2:0,6@a", "expert_hosts entry '2:0,6@a': expert 6 beyond layer 2's "
					"6 experts");
	EXPECT_HOSTS_REFUSED("0:0-4294967295@a", "expert_hosts entry '0:0-4294967295@a': expert "
						 "4294967295 beyond layer 0's 8 experts");
	/* the syntax-only check cannot know the counts */
	EXPECT_SYNTAX_OK("1:4@a");
}

/* A layer beyond the model's is refused once the model is known, not before. */
static void test_hosts_layer_out_of_range_refused(void **state)
{
	struct hosts h;

	(void)state;
	HOSTS_PARSE_OK("2:0@a", &h);
	EXPECT_ROW(&h, 2, 1, 0, 0, 0, 0, 0);
	EXPECT_HOSTS_REFUSED("0@b;3:0@a", "expert_hosts entry '3:0@a': layer 3 beyond the "
					  "model's 3 layers");
	EXPECT_HOSTS_REFUSED("4294967295:0@a", "expert_hosts entry '4294967295:0@a': layer "
					       "4294967295 beyond the model's 3 layers");
	EXPECT_SYNTAX_OK("3:0@a");
	EXPECT_SYNTAX_OK("4294967295:0-4294967295@self");
	EXPECT_HOSTS_REFUSED_BOTH("4294967296:0@a", "expert_hosts entry '4294967296:0@a': LAYER "
						    "is not a number");
	EXPECT_HOSTS_REFUSED_BOTH("-1:0@a", "expert_hosts entry '-1:0@a': LAYER is not a number");
	EXPECT_HOSTS_REFUSED_BOTH("x:0@a", "expert_hosts entry 'x:0@a': LAYER is not a number");
	EXPECT_HOSTS_REFUSED_BOTH(":0@a", "expert_hosts entry ':0@a': LAYER is not a number");
	EXPECT_HOSTS_REFUSED_BOTH("1 :0@a", "expert_hosts entry '1 :0@a': LAYER is not a number");
}

/* The same expert twice at one level (every layer, or one layer) is refused. */
static void test_hosts_duplicates_refused(void **state)
{
	struct hosts h;

	(void)state;
	EXPECT_HOSTS_REFUSED("0-3@a;3@b", "expert_hosts entry '3@b': expert 3 is named twice");
	EXPECT_HOSTS_REFUSED("0@a;0@a", "expert_hosts entry '0@a': expert 0 is named twice");
	EXPECT_HOSTS_REFUSED("0,0@a", "expert_hosts entry '0,0@a': expert 0 is named twice");
	EXPECT_HOSTS_REFUSED("0-3,2@a", "expert_hosts entry '0-3,2@a': expert 2 is named twice");
	EXPECT_HOSTS_REFUSED("0@self;1:1@a;0@b",
			     "expert_hosts entry '0@b': expert 0 is named twice");
	EXPECT_HOSTS_REFUSED("1:1@a;0@a;1:0-1@b",
			     "expert_hosts entry '1:0-1@b': expert 1 is named twice");
	EXPECT_HOSTS_REFUSED("2:5@a;2:5@self", "expert_hosts entry '2:5@self': expert 5 is named "
					       "twice");
	/* layer 0 alone has expert 7: named twice there, at the every-layer level */
	EXPECT_HOSTS_REFUSED("7@a;6-7@b", "expert_hosts entry '6-7@b': expert 7 is named twice");
	/* at different levels or in different layers it is an override, not a duplicate */
	HOSTS_PARSE_OK("0@a;0:0@b;1:0@self;2:0@b", &h);
	EXPECT_ROW(&h, 0, 2, 0, 0, 0, 0, 0, 0, 0);
	EXPECT_ROW(&h, 1, 0, 0, 0, 0);
	EXPECT_ROW(&h, 2, 2, 0, 0, 0, 0, 0);
}

/* HOST is `self` or a listed peer, exactly: the syntax-only check knows the peers too. */
static void test_hosts_unknown_host_refused(void **state)
{
	struct diag d = { { 0 } };
	struct peer_list none = { .n = 0 };

	(void)state;
	EXPECT_HOSTS_REFUSED_BOTH("0@a;1@c", "expert_hosts entry '1@c': 'c' is neither self nor a "
					     "peer");
	EXPECT_HOSTS_REFUSED_BOTH("0@Self", "expert_hosts entry '0@Self': 'Self' is neither self "
					    "nor a peer");
	EXPECT_HOSTS_REFUSED_BOTH("0@", "expert_hosts entry '0@': '' is neither self nor a peer");
	EXPECT_HOSTS_REFUSED_BOTH("1:0@ab", "expert_hosts entry '1:0@ab': 'ab' is neither self nor "
					    "a peer");
	EXPECT_HOSTS_REFUSED_BOTH("0@a b", "expert_hosts entry '0@a b': 'a b' is neither self nor "
					   "a peer");
	ASSERT_ERRNO(expert_hosts_parse("0@a", &none, 0, NULL, NULL, &d), EINVAL);
	assert_string_equal(d.msg, "expert_hosts entry '0@a': 'a' is neither self nor a peer");
	ASSERT_OK(expert_hosts_parse("0@self", &none, 0, NULL, NULL, NULL));
}

/* Entries that are not [LAYER:]EXPERTS@HOST are refused, with the entry in the diag. */
static void test_hosts_syntax_refused(void **state)
{
	(void)state;
	EXPECT_HOSTS_REFUSED_BOTH("0", "expert_hosts entry '0': expected [LAYER:]EXPERTS@HOST");
	EXPECT_HOSTS_REFUSED_BOTH("0@a@b", "expert_hosts entry '0@a@b': expected "
					   "[LAYER:]EXPERTS@HOST");
	EXPECT_HOSTS_REFUSED_BOTH("0:1:2@a", "expert_hosts entry '0:1:2@a': expected "
					     "[LAYER:]EXPERTS@HOST");
	EXPECT_HOSTS_REFUSED_BOTH("0@a:1", "expert_hosts entry '0@a:1': expected "
					   "[LAYER:]EXPERTS@HOST");
	EXPECT_HOSTS_REFUSED_BOTH("0@a,1@b", "expert_hosts entry '0@a,1@b': expected "
					     "[LAYER:]EXPERTS@HOST");
	EXPECT_HOSTS_REFUSED_BOTH("@a", "expert_hosts entry '@a': EXPERTS is not a list such as "
					"0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("1:@a", "expert_hosts entry '1:@a': EXPERTS is not a list such "
					  "as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("3-1@a", "expert_hosts entry '3-1@a': EXPERTS is not a list such "
					   "as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("0-@a", "expert_hosts entry '0-@a': EXPERTS is not a list such "
					  "as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("0,@a", "expert_hosts entry '0,@a': EXPERTS is not a list such "
					  "as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("0 ,1@a", "expert_hosts entry '0 ,1@a': EXPERTS is not a list "
					    "such as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("0 @a", "expert_hosts entry '0 @a': EXPERTS is not a list such "
					  "as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("-1@a", "expert_hosts entry '-1@a': EXPERTS is not a list such "
					  "as 0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("x@a", "expert_hosts entry 'x@a': EXPERTS is not a list such as "
					 "0-3,6");
	EXPECT_HOSTS_REFUSED_BOTH("4294967296@a", "expert_hosts entry '4294967296@a': EXPERTS is "
						  "not a list such as 0-3,6");
	/* an entry that does not apply to the layer being filled is still checked */
	EXPECT_HOSTS_REFUSED("1:0@a;2:3-1@b", "expert_hosts entry '2:3-1@b': EXPERTS is not a list "
					      "such as 0-3,6");
}

/* An empty or blank entry (leading, trailing or doubled ';') is refused. */
static void test_hosts_empty_entry_refused(void **state)
{
	(void)state;
#define EMPTY_ENTRY "expert_hosts: empty entry (two ';' in a row, or one at an end)"
	EXPECT_HOSTS_REFUSED_BOTH("0@a;", EMPTY_ENTRY);
	EXPECT_HOSTS_REFUSED_BOTH("0@a; ", EMPTY_ENTRY);
	EXPECT_HOSTS_REFUSED_BOTH(";0@a", EMPTY_ENTRY);
	EXPECT_HOSTS_REFUSED_BOTH("0@a;;1@b", EMPTY_ENTRY);
	EXPECT_HOSTS_REFUSED_BOTH("0@a;\t;1@b", EMPTY_ENTRY);
#undef EMPTY_ENTRY
}

/* Hostile long inputs: refused or bounded, the diag quoting their start. */
static void test_hosts_hostile_long(void **state)
{
	size_t n = 100000, len = 0;
	char *s = malloc(n + 1), msg[512];
	struct hosts h;

	(void)state;
	assert_non_null(s);
	memset(s, '9', n);
	s[n] = '\0';
	snprintf(msg, sizeof(msg), "expert_hosts: entry '%.40s...' too long", s);
	EXPECT_HOSTS_REFUSED_BOTH(s, msg);
	memset(s, ';', n);
	EXPECT_HOSTS_REFUSED_BOTH(s, "expert_hosts: empty entry (two ';' in a row, or one at an "
				     "end)");

	/* a 199-byte entry (the limit) is read whole; one more byte is overlong */
	strcpy(s, "0");
	for (len = 1; len < 199 - 2; len += 2)
		memcpy(s + len, ",0", 2);
	strcpy(s + len, "@a");
	ASSERT_EQ(strlen(s), 199);
	snprintf(msg, sizeof(msg), "expert_hosts entry '%s': expert 0 is named twice", s);
	EXPECT_HOSTS_REFUSED(s, msg);
	EXPECT_SYNTAX_OK(s);
	strcpy(s + 197, "@ab");
	ASSERT_EQ(strlen(s), 200);
	snprintf(msg, sizeof(msg), "expert_hosts: entry '%.40s...' too long", s);
	EXPECT_HOSTS_REFUSED_BOTH(s, msg);

	/* thousands of distinct layer entries beyond the layers' counts: every one is read */
	len = 0;
	for (uint32_t i = 0; len + 32 < n; i++)
		len += (size_t)snprintf(s + len, n + 1 - len, "%s%u:%u@self", i ? ";" : "", i % 3,
					1000000 + i);
	EXPECT_SYNTAX_OK(s);
	EXPECT_HOSTS_REFUSED(s, "expert_hosts entry '0:1000000@self': expert 1000000 beyond layer "
				"0's 8 experts");
	/* the widest range, for every layer: only the experts that exist */
	HOSTS_PARSE_OK("0-4294967295@b", &h);
	EXPECT_ROW(&h, 0, 2, 2, 2, 2, 2, 2, 2, 2);
	EXPECT_ROW(&h, 1, 2, 2, 2, 2);
	EXPECT_ROW(&h, 2, 2, 2, 2, 2, 2, 2);
	free(s);
}

/* A refusal's diag is the first, precise one, not the generic message written after it. */
static void test_hosts_diag_keeps_first(void **state)
{
	struct peer_list l;
	struct hosts h;
	struct diag d;

	(void)state;
	two_peers(&l);
	hosts_init(&h);
	/* a diag already set by the caller is kept as it is */
	snprintf(d.msg, sizeof(d.msg), "earlier");
	ASSERT_ERRNO(expert_hosts_parse("0@a;0@b", &l, N_LAYERS, n_experts, h.row, &d), EINVAL);
	assert_string_equal(d.msg, "earlier");
	/* a NULL diag is allowed */
	ASSERT_ERRNO(expert_hosts_parse("0@a;0@b", &l, N_LAYERS, n_experts, h.row, NULL), EINVAL);
	ASSERT_ERRNO(expert_hosts_parse("0@c", &l, 0, NULL, NULL, NULL), EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_ipv4),
		cmocka_unit_test(test_addr_ipv6_bracketed),
		cmocka_unit_test(test_addr_port_bounds),
		cmocka_unit_test(test_addr_malformed_refused),
		cmocka_unit_test(test_addr_family_matches_brackets),
		cmocka_unit_test(test_addr_too_long_refused),
		cmocka_unit_test(test_addr_null_diag),
		cmocka_unit_test(test_list_empty_is_none),
		cmocka_unit_test(test_list_entries),
		cmocka_unit_test(test_list_names),
		cmocka_unit_test(test_list_duplicate_refused),
		cmocka_unit_test(test_list_at_most_peers_max),
		cmocka_unit_test(test_list_empty_entry_refused),
		cmocka_unit_test(test_list_bad_address_names_entry),
		cmocka_unit_test(test_list_hostile_long_refused),
		cmocka_unit_test(test_hosts_empty_all_here),
		cmocka_unit_test(test_hosts_every_layer_entry),
		cmocka_unit_test(test_hosts_layer_entry_overrides),
		cmocka_unit_test(test_hosts_layer_entry_beyond_count_refused),
		cmocka_unit_test(test_hosts_layer_out_of_range_refused),
		cmocka_unit_test(test_hosts_duplicates_refused),
		cmocka_unit_test(test_hosts_unknown_host_refused),
		cmocka_unit_test(test_hosts_syntax_refused),
		cmocka_unit_test(test_hosts_empty_entry_refused),
		cmocka_unit_test(test_hosts_hostile_long),
		cmocka_unit_test(test_hosts_diag_keeps_first),
	};

	return cmocka_run_group_tests_name("peer_config", tests, NULL, NULL);
}
