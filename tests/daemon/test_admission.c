/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of moed's admission decisions (daemon/reactor/admission.c) and
 * of the log rate limit they come with (daemon/util/ratelimit.c), driven
 * step by step over plain tables, as the reactor would: a process at its
 * pending limit loses its own oldest silent connection, so does a uid at
 * its limit; the reserved entries of a full table admit only root and
 * moed's uid, and an unprivileged newcomer then evicts the oldest
 * unprivileged connection (never a privileged one); root and moed's uid
 * are exempt from the per-uid limits, not the per-process ones; the
 * session limits refuse with -EUSERS and name the limit; the rate limit
 * passes 5 lines per window and reports the rest once. Pure: nothing to
 * tear down.
 */
#include "test_assert.h"

#include <errno.h>
#include <stdint.h>

#include "reactor/admission.h"
#include "util/ratelimit.h"

#define T_SELF_UID 990u /* moed's uid in these tests */
#define T_N        64u

static struct adm_peer t_table[T_N];
static uint64_t t_clock;

static void t_setup_limits(struct adm_limits *l, uint32_t n)
{
	adm_limits_init(l, n, 16, 32, T_SELF_UID);
	memset(t_table, 0, sizeof(t_table));
	t_clock = 1000;
}

/* Admit (@pid, @uid) as the reactor does: place, evict if told, occupy. */
static int t_admit(const struct adm_limits *l, uint32_t n, pid_t pid, uid_t uid,
		   enum adm_place *ret_how)
{
	int slot = adm_pending_place(l, t_table, n, pid, uid, ret_how);

	if (slot < 0)
		return slot;
	assert_true((uint32_t)slot < n);
	if (*ret_how == ADM_PLACE_FREE)
		assert_false(t_table[slot].used);
	else
		assert_true(t_table[slot].used);
	t_table[slot] = (struct adm_peer){ .used = true, .pid = pid, .uid = uid,
					   .t_ns = ++t_clock };
	return slot;
}

static unsigned t_count(uint32_t n, pid_t pid, uid_t uid)
{
	unsigned c = 0;

	for (uint32_t i = 0; i < n; i++)
		c += t_table[i].used && (pid < 0 || t_table[i].pid == pid) &&
		     (uid == (uid_t)-1 || t_table[i].uid == uid);
	return c;
}

/* ---------------------------------------------------------------- pending */

static void test_pending_per_pid_evicts_oldest(void **state)
{
	struct adm_limits l;
	enum adm_place how;
	int slots[ADM_PENDING_PER_PID + 2];

	(void)state;
	t_setup_limits(&l, T_N);
	ASSERT_EQ(l.pending_per_pid, 4);
	for (unsigned i = 0; i < ADM_PENDING_PER_PID; i++) {
		slots[i] = t_admit(&l, T_N, 100, 1000, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
	}
	/* the 5th: the process's oldest goes, then the next oldest */
	slots[4] = t_admit(&l, T_N, 100, 1000, &how);
	ASSERT_EQ(how, ADM_PLACE_EVICT_PID);
	ASSERT_EQ(slots[4], slots[0]);
	slots[5] = t_admit(&l, T_N, 100, 1000, &how);
	ASSERT_EQ(how, ADM_PLACE_EVICT_PID);
	ASSERT_EQ(slots[5], slots[1]);
	ASSERT_EQ(t_count(T_N, 100, (uid_t)-1), ADM_PENDING_PER_PID);
	/* another process of the same uid still gets a free slot */
	t_admit(&l, T_N, 101, 1000, &how);
	ASSERT_EQ(how, ADM_PLACE_FREE);
	/* root is limited per process too: 64 silent root connections keep 4 */
	for (unsigned i = 0; i < 64; i++)
		t_admit(&l, T_N, 200, 0, &how);
	ASSERT_EQ(t_count(T_N, 200, 0), ADM_PENDING_PER_PID);
	/* and then the operator (root, another process) gets in */
	t_admit(&l, T_N, 201, 0, &how);
	ASSERT_EQ(how, ADM_PLACE_FREE);
}

static void test_pending_per_uid_evicts_oldest(void **state)
{
	struct adm_limits l;
	enum adm_place how;
	int first = -1, s;

	(void)state;
	t_setup_limits(&l, T_N);
	/* one process per connection: only the uid limit can hold them */
	for (unsigned i = 0; i < ADM_PENDING_PER_UID; i++) {
		s = t_admit(&l, T_N, (pid_t)(300 + i), 1000, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
		if (first < 0)
			first = s;
	}
	s = t_admit(&l, T_N, 400, 1000, &how);
	ASSERT_EQ(how, ADM_PLACE_EVICT_UID);
	ASSERT_EQ(s, first);
	ASSERT_EQ(t_count(T_N, -1, 1000), ADM_PENDING_PER_UID);
	/* another uid is not affected */
	t_admit(&l, T_N, 500, 1001, &how);
	ASSERT_EQ(how, ADM_PLACE_FREE);
	/* root and moed's uid are exempt from the per-uid limit */
	for (unsigned i = 0; i < ADM_PENDING_PER_UID + 4; i++) {
		t_admit(&l, T_N, (pid_t)(600 + i), 0, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
	}
	for (unsigned i = 0; i < ADM_PENDING_PER_UID + 2; i++) {
		t_admit(&l, T_N, (pid_t)(700 + i), T_SELF_UID, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
	}
}

static void test_pending_reserved_for_privileged(void **state)
{
	const uint32_t n = 16;
	struct adm_limits l;
	enum adm_place how;
	int oldest = -1, s;

	(void)state;
	t_setup_limits(&l, n);
	ASSERT_EQ(l.pending_reserved, ADM_PENDING_RESERVED);
	/* unprivileged peers (one each, all within their limits) fill n - reserved */
	for (unsigned i = 0; i < n - ADM_PENDING_RESERVED; i++) {
		s = t_admit(&l, n, (pid_t)(100 + i), 1000 + i, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
		if (oldest < 0)
			oldest = s;
	}
	/* the next unprivileged one evicts the oldest unprivileged: the reserve stays free */
	s = t_admit(&l, n, 200, 2000, &how);
	ASSERT_EQ(how, ADM_PLACE_EVICT_OLDEST);
	ASSERT_EQ(s, oldest);
	ASSERT_EQ(t_count(n, -1, (uid_t)-1), n - ADM_PENDING_RESERVED);
	/* root and moed's uid take the reserve */
	for (unsigned i = 0; i < ADM_PENDING_RESERVED; i++) {
		t_admit(&l, n, (pid_t)(300 + i), i % 2 ? 0 : T_SELF_UID, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
	}
	ASSERT_EQ(t_count(n, -1, (uid_t)-1), n);
	/* full: a privileged newcomer evicts an unprivileged connection, not a privileged one */
	s = t_admit(&l, n, 400, 0, &how);
	ASSERT_EQ(how, ADM_PLACE_EVICT_OLDEST);
	ASSERT_EQ(t_count(n, -1, 0) + t_count(n, -1, T_SELF_UID), ADM_PENDING_RESERVED + 1);
}

static void test_pending_all_privileged(void **state)
{
	const uint32_t n = 8;
	struct adm_limits l;
	enum adm_place how;

	(void)state;
	t_setup_limits(&l, n);
	ASSERT_EQ(l.pending_reserved, 4); /* capped at half of a small table */
	for (unsigned i = 0; i < n; i++) {
		t_admit(&l, n, (pid_t)(100 + i), 0, &how);
		ASSERT_EQ(how, ADM_PLACE_FREE);
	}
	/* an unprivileged peer cannot evict privileged ones */
	ASSERT_ERRNO(t_admit(&l, n, 200, 1000, &how), EUSERS);
	/* a privileged one takes the oldest */
	ASSERT_EQ(t_admit(&l, n, 201, 0, &how), 0);
	ASSERT_EQ(how, ADM_PLACE_EVICT_OLDEST);
}

/* ---------------------------------------------------------------- sessions */

static void test_client_limits(void **state)
{
	struct adm_limits l;
	const char *why = NULL;

	(void)state;
	adm_limits_init(&l, T_N, 16, 32, T_SELF_UID);
	ASSERT_OK(adm_client_check(&l, 1000, 15, 15, &why));
	ASSERT_ERRNO(adm_client_check(&l, 1000, 16, 16, &why), EUSERS);
	assert_string_equal(why, "max_clients_per_process");
	ASSERT_OK(adm_client_check(&l, 1000, 0, 31, &why));
	ASSERT_ERRNO(adm_client_check(&l, 1000, 0, 32, &why), EUSERS);
	assert_string_equal(why, "max_clients_per_uid");
	/* root and moed's uid: exempt per uid, not per process */
	ASSERT_OK(adm_client_check(&l, 0, 0, 60, &why));
	ASSERT_OK(adm_client_check(&l, T_SELF_UID, 15, 60, &why));
	ASSERT_ERRNO(adm_client_check(&l, 0, 16, 16, &why), EUSERS);
	assert_string_equal(why, "max_clients_per_process");
	assert_true(adm_privileged(&l, 0));
	assert_true(adm_privileged(&l, T_SELF_UID));
	assert_false(adm_privileged(&l, 1000));
}

/* ---------------------------------------------------------------- rate limit */

static void test_ratelimit(void **state)
{
	struct ratelimit rl = RATELIMIT_INIT(10000, 5);
	unsigned sup = 99, allowed = 0;

	(void)state;
	for (unsigned i = 0; i < 100; i++) {
		allowed += ratelimit_below(&rl, 5 + i, &sup);
		ASSERT_EQ(sup, 0);
	}
	ASSERT_EQ(allowed, 5);
	/* the window has not closed: nothing to report yet */
	ASSERT_EQ(ratelimit_take_suppressed(&rl, 9000), 0);
	/* the next window's first event reports the 95 refused, once */
	assert_true(ratelimit_below(&rl, 10005, &sup));
	ASSERT_EQ(sup, 95);
	assert_true(ratelimit_below(&rl, 10006, &sup));
	ASSERT_EQ(sup, 0);
	/* a flood that stops: the timer reports it */
	for (unsigned i = 0; i < 10; i++)
		ratelimit_below(&rl, 10007 + i, NULL);
	ASSERT_EQ(ratelimit_take_suppressed(&rl, 20004), 0);
	ASSERT_EQ(ratelimit_take_suppressed(&rl, 20005), 7);
	ASSERT_EQ(ratelimit_take_suppressed(&rl, 20006), 0);
	assert_true(ratelimit_below(&rl, 20007, &sup));
	ASSERT_EQ(sup, 0); /* already reported */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pending_per_pid_evicts_oldest),
		cmocka_unit_test(test_pending_per_uid_evicts_oldest),
		cmocka_unit_test(test_pending_reserved_for_privileged),
		cmocka_unit_test(test_pending_all_privileged),
		cmocka_unit_test(test_client_limits),
		cmocka_unit_test(test_ratelimit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
