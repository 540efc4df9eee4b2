/* SPDX-License-Identifier: MIT */
/* store_fill: io_uring reads into the expert store; see store_fill.h. */
#include "store/store_fill.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One read in flight: a chunk of an item, into the store or a bounce buffer. */
struct fill_slot {
	bool busy;
	size_t item;
	uint64_t src_off;  /* the chunk's offset within the item's bytes */
	uint32_t len;      /* the chunk's length */
	uint32_t done;     /* bytes read so far (a short read continues) */
	uint8_t *buf;      /* where the bytes go */
	uint8_t *bounce;   /* FILL_CHUNK bytes, for items that need conversion */
};

struct fill_state {
	struct fill_job *job;
	struct io_uring ring;
	int *fds;
	struct fill_slot slots[FILL_DEPTH];
	size_t next_item;
	uint64_t next_off;  /* within the next item's bytes */
};

static uint64_t item_bytes(const struct fill_item *it)
{
	return it->n_elements * st_dtype_size(it->dtype);
}

static int open_files(struct fill_state *s)
{
	struct fill_job *j = s->job;

	s->fds = calloc(j->n_paths ?: 1, sizeof(*s->fds));
	if (!s->fds)
		return diag_set(&j->diag, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < j->n_paths; i++)
		s->fds[i] = -1;
	for (uint32_t i = 0; i < j->n_paths; i++) {
		s->fds[i] = open(j->paths[i], O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (s->fds[i] < 0)
			return diag_set(&j->diag, -errno, "%s: cannot open: %m", j->paths[i]);
	}
	return 0;
}

static void submit_read(struct fill_state *s, struct fill_slot *sl)
{
	const struct fill_item *it = &s->job->items[sl->item];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

	/* never NULL: at most FILL_DEPTH reads are in flight on a ring that deep */
	io_uring_prep_read(sqe, s->fds[it->file], sl->buf + sl->done, sl->len - sl->done,
			   it->file_offset + sl->src_off + sl->done);
	io_uring_sqe_set_data(sqe, sl);
}

/* Start the next chunk in @sl; false when every chunk has been started. */
static bool start_chunk(struct fill_state *s, struct fill_slot *sl)
{
	const struct fill_job *j = s->job;

	while (s->next_item < j->n_items && s->next_off >= item_bytes(&j->items[s->next_item])) {
		s->next_item++;
		s->next_off = 0;
	}
	if (s->next_item >= j->n_items)
		return false;
	{
		const struct fill_item *it = &j->items[s->next_item];
		uint64_t left = item_bytes(it) - s->next_off;

		sl->busy = true;
		sl->item = s->next_item;
		sl->src_off = s->next_off;
		sl->len = (uint32_t)(left < FILL_CHUNK ? left : FILL_CHUNK);
		sl->done = 0;
		sl->buf = it->dtype == it->store_dtype ? (uint8_t *)it->dst + s->next_off
						       : sl->bounce;
		s->next_off += sl->len;
	}
	submit_read(s, sl);
	return true;
}

/* A chunk has all its bytes: convert it into the store if it went to the bounce buffer. */
static int finish_chunk(struct fill_state *s, struct fill_slot *sl)
{
	const struct fill_item *it = &s->job->items[sl->item];
	size_t size = st_dtype_size(it->dtype);
	struct st_tensor chunk = {
		.name = "(store fill)",
		.dtype = it->dtype,
		.n_elements = sl->len / size,
		.data = sl->bounce,
	};

	atomic_fetch_add_explicit(s->job->bytes_read, sl->len, memory_order_relaxed);
	sl->busy = false;
	if (it->dtype == it->store_dtype)
		return 0;
	return st_tensor_to_f32(&chunk, (float *)it->dst + sl->src_off / size, &s->job->diag);
}

/*
 * Reads until every chunk is in. After an error no new chunk starts, but the
 * reads in flight are still reaped: they write into the store and the bounce
 * buffers, which must not go away under them.
 */
static int fill_loop(struct fill_state *s)
{
	struct fill_job *j = s->job;
	unsigned in_flight = 0;
	int err = 0, r;

	for (unsigned i = 0; i < FILL_DEPTH; i++)
		in_flight += start_chunk(s, &s->slots[i]);
	while (in_flight) {
		struct io_uring_cqe *cqe;
		struct fill_slot *sl;
		int res;

		r = io_uring_submit_and_wait(&s->ring, 1);
		if (r < 0 && r != -EINTR) {
			/* cannot reap: nothing in flight can be accounted for, so wait
			 * for the ring's teardown to cancel them (io_uring_queue_exit) */
			return diag_set(&j->diag, r, "io_uring: %s", strerror(-r));
		}
		while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
			sl = io_uring_cqe_get_data(cqe);
			res = cqe->res;
			io_uring_cqe_seen(&s->ring, cqe);
			if (res > 0)
				sl->done += (uint32_t)res;
			if (!err && res < 0 && res != -EINTR && res != -EAGAIN)
				err = diag_set(&j->diag, res, "%s: read failed: %s",
					       j->paths[j->items[sl->item].file], strerror(-res));
			else if (!err && res == 0)
				err = diag_set(&j->diag, -EIO, "%s: shorter than its header says",
					       j->paths[j->items[sl->item].file]);
			if (!err && sl->done < sl->len) {
				submit_read(s, sl); /* a short read (or EINTR): the rest */
				continue;
			}
			in_flight--;
			if (!err)
				err = finish_chunk(s, sl);
			if (!err)
				in_flight += start_chunk(s, sl);
		}
	}
	return err;
}

static void *fill_thread(void *arg)
{
	struct fill_state s = { .job = arg };
	struct fill_job *j = s.job;
	int r;

	/* first: every page this thread touches from now on is faulted in here */
	if (j->cpus) {
		r = -pthread_setaffinity_np(pthread_self(), sizeof(*j->cpus), j->cpus);
		if (r < 0) {
			j->result = diag_set(&j->diag, r, "cannot run on the node's CPUs: %s",
					     strerror(-r));
			return NULL;
		}
	}
	r = open_files(&s);
	if (r < 0)
		goto out;
	r = io_uring_queue_init(FILL_DEPTH, &s.ring, 0);
	if (r < 0) {
		r = diag_set(&j->diag, r, "io_uring_queue_init: %s", strerror(-r));
		goto out;
	}
	for (unsigned i = 0; i < FILL_DEPTH; i++) {
		s.slots[i].bounce = malloc(FILL_CHUNK);
		if (!s.slots[i].bounce) {
			r = diag_set(&j->diag, -ENOMEM, "out of memory");
			goto out_ring;
		}
	}
	r = fill_loop(&s);
out_ring:
	io_uring_queue_exit(&s.ring);
	for (unsigned i = 0; i < FILL_DEPTH; i++)
		free(s.slots[i].bounce);
out:
	for (uint32_t i = 0; s.fds && i < j->n_paths; i++)
		if (s.fds[i] >= 0)
			close(s.fds[i]);
	free(s.fds);
	j->result = r;
	return NULL;
}

int store_fill_run(struct fill_job *jobs, size_t n_jobs, void (*progress)(void *ctx),
		   void *ctx)
{
	pthread_t *threads = calloc(n_jobs ?: 1, sizeof(*threads));
	size_t started = 0, joined = 0;
	int r = 0;

	if (!threads)
		return -ENOMEM;
	for (; started < n_jobs; started++) {
		jobs[started].result = 0;
		r = -pthread_create(&threads[started], NULL, fill_thread, &jobs[started]);
		if (r < 0) {
			diag_set(&jobs[started].diag, r, "cannot start a fill thread");
			jobs[started].result = r;
			break;
		}
	}
	/*
	 * In order, each join waiting at most a second (then the progress
	 * line): a thread's end is seen at once, never a poll interval later.
	 */
	while (joined < started) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until); /* timedjoin's clock */
		until.tv_sec += 1;
		if (pthread_timedjoin_np(threads[joined], NULL, &until) == 0) {
			joined++;
			continue;
		}
		if (progress)
			progress(ctx);
	}
	free(threads);
	for (size_t i = 0; i < n_jobs; i++)
		if (jobs[i].result < 0)
			return jobs[i].result;
	return r;
}
