/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of libmoe's arena allocator (libclient/arena.c, built into this
 * test directly): alignment, first fit, coalescing in every order,
 * exhaustion, bad frees, the range-to-offset check libmoe uses for requests,
 * and that the bookkeeping ends as one free extent (nothing leaked).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "arena.h"
#include "test_assert.h"

#define ARENA_BYTES (64u * 1024)

struct fixture {
	void *mem;
	struct arena a;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->mem = aligned_alloc(4096, ARENA_BYTES);
	if (!f->mem || arena_init(&f->a, f->mem, ARENA_BYTES) < 0) {
		free(f->mem);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	arena_done(&f->a);
	arena_done(&f->a); /* idempotent */
	free(f->mem);
	free(f);
	return 0;
}

/* Every test ends with the arena whole again: one free extent of everything. */
static void assert_arena_whole(const struct arena *a)
{
	ASSERT_EQ(a->n_ext, 1);
	ASSERT_EQ(a->ext[0].off, 0);
	ASSERT_EQ(a->ext[0].len, a->usable);
	ASSERT_EQ(a->ext[0].used, false);
}

static void test_init_rejects(void **state)
{
	struct fixture *f = *state;
	struct arena a = {0};

	ASSERT_ERRNO(arena_init(&a, NULL, 4096), EINVAL);
	ASSERT_ERRNO(arena_init(&a, (uint8_t *)f->mem + 8, 4096), EINVAL);
	ASSERT_ERRNO(arena_init(&a, f->mem, ARENA_ALIGN - 1), EINVAL);
	/* Untouched on failure. */
	ASSERT_EQ(a.ext == NULL, true);
	/* A size that is not a multiple of the alignment is rounded down. */
	ASSERT_OK(arena_init(&a, f->mem, 1000));
	ASSERT_EQ(a.usable, 960);
	arena_done(&a);
}

static void test_alignment(void **state)
{
	struct fixture *f = *state;
	size_t sizes[] = {1, 3, 63, 64, 65, 100, 127, 128, 129, 1000};
	void *p[10];

	for (size_t i = 0; i < 10; i++) {
		ASSERT_OK(arena_buf_alloc(&f->a, sizes[i], &p[i]));
		ASSERT_EQ((uintptr_t)p[i] % ARENA_ALIGN, 0);
		ASSERT_EQ((uint8_t *)p[i] >= (uint8_t *)f->mem, true);
		if (i > 0) /* first fit in a fresh arena: consecutive, each rounded up */
			ASSERT_EQ((uint8_t *)p[i] - (uint8_t *)p[i - 1],
				  (sizes[i - 1] + 63) / 64 * 64);
	}
	for (size_t i = 0; i < 10; i++)
		ASSERT_OK(arena_buf_free(&f->a, p[i]));
	assert_arena_whole(&f->a);
}

static void test_zero_and_too_big(void **state)
{
	struct fixture *f = *state;
	void *p = (void *)0x1;

	ASSERT_ERRNO(arena_buf_alloc(&f->a, 0, &p), EINVAL);
	ASSERT_ERRNO(arena_buf_alloc(&f->a, ARENA_BYTES + 1, &p), ENOMEM);
	ASSERT_ERRNO(arena_buf_alloc(&f->a, SIZE_MAX, &p), ENOMEM);
	ASSERT_EQ((uintptr_t)p, 0x1); /* ret_ untouched on failure */
	assert_arena_whole(&f->a);
}

static void test_exhaustion(void **state)
{
	struct fixture *f = *state;
	void *p[ARENA_BYTES / 1024], *q;
	size_t n = 0;

	/* Exactly fills the arena, then nothing more fits. */
	while (arena_buf_alloc(&f->a, 1024, &p[n]) == 0)
		n++;
	ASSERT_EQ(n, ARENA_BYTES / 1024);
	ASSERT_ERRNO(arena_buf_alloc(&f->a, 1, &q), ENOMEM);

	/* One hole: a block of that size fits there again, a bigger one does not. */
	ASSERT_OK(arena_buf_free(&f->a, p[5]));
	ASSERT_ERRNO(arena_buf_alloc(&f->a, 1025, &q), ENOMEM);
	ASSERT_OK(arena_buf_alloc(&f->a, 1024, &q));
	ASSERT_EQ(q == p[5], true);

	for (size_t i = 0; i < n; i++)
		ASSERT_OK(arena_buf_free(&f->a, p[i]));
	assert_arena_whole(&f->a);

	/* The whole arena in one block. */
	ASSERT_OK(arena_buf_alloc(&f->a, ARENA_BYTES, &q));
	ASSERT_EQ(q == f->mem, true);
	ASSERT_OK(arena_buf_free(&f->a, q));
	assert_arena_whole(&f->a);
}

static void test_first_fit(void **state)
{
	struct fixture *f = *state;
	void *a, *b, *c, *d, *e, *x;

	ASSERT_OK(arena_buf_alloc(&f->a, 256, &a));
	ASSERT_OK(arena_buf_alloc(&f->a, 128, &b));
	ASSERT_OK(arena_buf_alloc(&f->a, 512, &c));
	ASSERT_OK(arena_buf_alloc(&f->a, 64, &d));
	/* Holes of 256 (a) and 512 (c); a 200-byte block takes the first that fits. */
	ASSERT_OK(arena_buf_free(&f->a, a));
	ASSERT_OK(arena_buf_free(&f->a, c));
	ASSERT_OK(arena_buf_alloc(&f->a, 200, &x));
	ASSERT_EQ(x == a, true);
	/* 300 does not fit a's remaining 0 bytes: it goes to c's hole. */
	ASSERT_OK(arena_buf_alloc(&f->a, 300, &e));
	ASSERT_EQ(e == c, true);

	ASSERT_OK(arena_buf_free(&f->a, x));
	ASSERT_OK(arena_buf_free(&f->a, e));
	ASSERT_OK(arena_buf_free(&f->a, b));
	ASSERT_OK(arena_buf_free(&f->a, d));
	assert_arena_whole(&f->a);
}

/* Free three neighbours in each of the six orders: always back to one extent. */
static void test_coalesce_orders(void **state)
{
	static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
					 {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
	struct fixture *f = *state;

	for (int o = 0; o < 6; o++) {
		void *p[3], *big;

		for (int i = 0; i < 3; i++)
			ASSERT_OK(arena_buf_alloc(&f->a, 4096, &p[i]));
		for (int i = 0; i < 3; i++)
			ASSERT_OK(arena_buf_free(&f->a, p[orders[o][i]]));
		assert_arena_whole(&f->a);
		/* The merged space is usable as one block again. */
		ASSERT_OK(arena_buf_alloc(&f->a, ARENA_BYTES, &big));
		ASSERT_OK(arena_buf_free(&f->a, big));
	}
}

static void test_coalesce_middle(void **state)
{
	struct fixture *f = *state;
	void *p[5], *x;

	for (int i = 0; i < 5; i++)
		ASSERT_OK(arena_buf_alloc(&f->a, 1024, &p[i]));
	/* Free 1 and 3, then 2 joins them into one 3 KiB hole between 0 and 4. */
	ASSERT_OK(arena_buf_free(&f->a, p[1]));
	ASSERT_OK(arena_buf_free(&f->a, p[3]));
	/* Two 1 KiB holes are no 3 KiB hole: that block goes after p[4]. */
	ASSERT_OK(arena_buf_alloc(&f->a, 3 * 1024, &x));
	ASSERT_EQ(x == (uint8_t *)p[4] + 1024, true);
	ASSERT_OK(arena_buf_free(&f->a, x));
	ASSERT_OK(arena_buf_free(&f->a, p[2]));
	ASSERT_OK(arena_buf_alloc(&f->a, 3 * 1024, &x));
	ASSERT_EQ(x == p[1], true);
	ASSERT_OK(arena_buf_free(&f->a, x));
	ASSERT_OK(arena_buf_free(&f->a, p[0]));
	ASSERT_OK(arena_buf_free(&f->a, p[4]));
	assert_arena_whole(&f->a);
}

static void test_bad_free(void **state)
{
	struct fixture *f = *state;
	uint8_t *p;
	int on_stack;

	ASSERT_OK(arena_buf_alloc(&f->a, 256, (void **)&p));
	ASSERT_ERRNO(arena_buf_free(&f->a, NULL), EINVAL);
	ASSERT_ERRNO(arena_buf_free(&f->a, &on_stack), EINVAL);
	ASSERT_ERRNO(arena_buf_free(&f->a, p + 64), EINVAL); /* inside, not a start */
	ASSERT_ERRNO(arena_buf_free(&f->a, p + 256), EINVAL); /* the free tail */
	ASSERT_ERRNO(arena_buf_free(&f->a, (uint8_t *)f->mem + ARENA_BYTES), EINVAL);
	ASSERT_OK(arena_buf_free(&f->a, p));
	ASSERT_ERRNO(arena_buf_free(&f->a, p), EINVAL); /* double free */
	assert_arena_whole(&f->a);
}

static void test_range_offset(void **state)
{
	struct fixture *f = *state;
	uint8_t *base = f->mem;
	uint64_t off = 12345;

	ASSERT_OK(arena_range_offset(&f->a, base, ARENA_BYTES, &off));
	ASSERT_EQ(off, 0);
	ASSERT_OK(arena_range_offset(&f->a, base + 128, 64, &off));
	ASSERT_EQ(off, 128);
	ASSERT_OK(arena_range_offset(&f->a, base + ARENA_BYTES, 0, &off));
	ASSERT_EQ(off, ARENA_BYTES);

	off = 777;
	ASSERT_ERRNO(arena_range_offset(&f->a, base, ARENA_BYTES + 1, &off), EINVAL);
	ASSERT_ERRNO(arena_range_offset(&f->a, base + ARENA_BYTES - 64, 65, &off), EINVAL);
	ASSERT_ERRNO(arena_range_offset(&f->a, base + ARENA_BYTES + 64, 0, &off), EINVAL);
	ASSERT_ERRNO(arena_range_offset(&f->a, base - 64, 64, &off), EINVAL);
	ASSERT_ERRNO(arena_range_offset(&f->a, NULL, 64, &off), EINVAL);
	/* A length that would wrap the sum must not pass as "small". */
	ASSERT_ERRNO(arena_range_offset(&f->a, base + 64, UINT64_MAX - 63, &off), EINVAL);
	ASSERT_ERRNO(arena_range_offset(&f->a, base + 64, UINT64_MAX, &off), EINVAL);
	ASSERT_EQ(off, 777);
}

/* Many small blocks freed in a scrambled order: the bookkeeping grows and shrinks back. */
static void test_many_blocks(void **state)
{
	struct fixture *f = *state;
	enum { N = ARENA_BYTES / ARENA_ALIGN };
	static void *p[N];
	size_t n = 0;

	while (n < N && arena_buf_alloc(&f->a, 1, &p[n]) == 0)
		n++;
	ASSERT_EQ(n, N);
	/* 37 is coprime with N (a power of two): visits every block once. */
	for (size_t i = 0; i < N; i++)
		ASSERT_OK(arena_buf_free(&f->a, p[(i * 37) % N]));
	assert_arena_whole(&f->a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alignment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_and_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exhaustion, setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_fit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_coalesce_orders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_coalesce_middle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_range_offset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_blocks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
