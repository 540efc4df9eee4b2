/* SPDX-License-Identifier: MIT */
/* thread_buf: per-thread scratch buffers kept between calls; see thread_buf.h. */
#include "compute/thread_buf.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define THREAD_BUF_ALIGN 64

/* One thread's buffers, made at its first call. */
struct thread_bufs {
	void *p[THREAD_BUF_USES];
	size_t size[THREAD_BUF_USES];
};

static pthread_key_t bufs_key;
static pthread_once_t bufs_once = PTHREAD_ONCE_INIT;
static int bufs_key_err;

/* The key's destructor: a worker's buffers go when its thread ends. */
static void thread_bufs_free(void *v)
{
	struct thread_bufs *b = v;

	for (int u = 0; u < THREAD_BUF_USES; u++)
		free(b->p[u]);
	free(b);
}

static void bufs_key_create(void)
{
	bufs_key_err = pthread_key_create(&bufs_key, thread_bufs_free);
}

/* This thread's set of buffers; NULL without memory. */
static struct thread_bufs *thread_bufs_get(void)
{
	struct thread_bufs *b;

	pthread_once(&bufs_once, bufs_key_create);
	if (bufs_key_err)
		return NULL;
	b = pthread_getspecific(bufs_key);
	if (b)
		return b;
	b = calloc(1, sizeof(*b));
	if (b && pthread_setspecific(bufs_key, b) != 0) {
		free(b);
		b = NULL;
	}
	return b;
}

void *thread_buf_get(enum thread_buf_use use, size_t bytes)
{
	struct thread_bufs *b = thread_bufs_get();
	size_t size;
	void *p;

	if (!b)
		return NULL;
	if (b->p[use] && b->size[use] >= bytes)
		return b->p[use];
	if (bytes > SIZE_MAX - THREAD_BUF_ALIGN)
		return NULL;
	/* aligned_alloc wants a multiple of the alignment */
	size = (bytes + THREAD_BUF_ALIGN - 1) & ~(size_t)(THREAD_BUF_ALIGN - 1);
	p = aligned_alloc(THREAD_BUF_ALIGN, size ? size : THREAD_BUF_ALIGN);
	if (!p)
		return NULL; /* the old buffer stays for calls that fit it */
	free(b->p[use]);
	b->p[use] = p;
	b->size[use] = size ? size : THREAD_BUF_ALIGN;
	return p;
}
