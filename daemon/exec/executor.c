/* SPDX-License-Identifier: MIT */
/*
 * executor: runner threads, a FIFO of submitted items and a list of
 * finished ones; see executor.h.
 *
 * Runners spin for a short while after an item before they sleep on the
 * condition variable, like the pool's workers: a client that streams small
 * batches hands over the next run within microseconds, and a futex wake-up
 * per run would be a visible share of a decode step. The eventfd is written
 * after every finished item: the reactor may be asleep in io_uring, and one
 * write(2) per run costs about a microsecond against runs of tens of
 * microseconds and more. A watcher that polls (the reactor between its
 * sleeps) says so, and while it does the runners skip the write: with a
 * system call at about 3 us on a paravirtualised machine, the write and the
 * io_uring read it completes were a third of a busy-polling round trip.
 *
 * Only as many sleeping runners are signalled as items wait beyond the
 * runners still spinning: with two runners, the idle one asleep and the
 * other spinning after its run, a submit would otherwise wake the sleeper
 * (a futex wake) for an item the spinner takes anyway.
 */
#include "exec/executor.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/spin.h"

#define SPIN_NS 50000
#define MAX_RUNNERS 64

struct executor {
	int event_fd;
	pthread_t threads[MAX_RUNNERS];
	uint32_t n_started;

	pthread_mutex_t lock;
	pthread_cond_t wake;          /* runners sleep here for an item */
	struct exec_item *queued_head, *queued_tail; /* under lock */
	struct exec_item *done_head, *done_tail;     /* under lock */
	uint32_t n_sleeping;                         /* under lock */
	atomic_uint n_queued;  /* what a spinning runner watches */
	atomic_uint n_spinning; /* runners between a run and their sleep */
	atomic_uint n_done;    /* what a polling reactor watches */
	atomic_bool watcher_polls; /* executor_watcher_polling(): skip the eventfd write */
	atomic_bool stopping;
};

/* Wait for an item or the stop; returns it (NULL: stopping). Called and returns under lock. */
static struct exec_item *runner_next(struct executor *ex)
{
	for (;;) {
		struct exec_item *it = ex->queued_head;
		uint64_t deadline;

		if (atomic_load_explicit(&ex->stopping, memory_order_relaxed))
			return NULL;
		if (it) {
			ex->queued_head = it->next;
			if (!ex->queued_head)
				ex->queued_tail = NULL;
			atomic_fetch_sub_explicit(&ex->n_queued, 1, memory_order_relaxed);
			return it;
		}
		atomic_fetch_add_explicit(&ex->n_spinning, 1, memory_order_relaxed);
		pthread_mutex_unlock(&ex->lock);
		deadline = spin_now_ns() + SPIN_NS;
		/*
		 * From 63: the first step yields, so that a reactor sharing
		 * this CPU collects the run that just finished at once rather
		 * than after 64 pauses (3 us and more on some CPUs).
		 */
		for (unsigned i = 63; !atomic_load_explicit(&ex->n_queued, memory_order_relaxed) &&
				      !atomic_load_explicit(&ex->stopping, memory_order_relaxed);
		     i++)
			if (!spin_step(i, deadline))
				break;
		/* before the lock: a submit that finds us not spinning signals (see there) */
		atomic_fetch_sub_explicit(&ex->n_spinning, 1, memory_order_relaxed);
		pthread_mutex_lock(&ex->lock);
		if (!ex->queued_head && !atomic_load_explicit(&ex->stopping, memory_order_relaxed)) {
			ex->n_sleeping++;
			pthread_cond_wait(&ex->wake, &ex->lock);
			ex->n_sleeping--;
		}
	}
}

static void *runner_main(void *arg)
{
	struct executor *ex = arg;
	struct exec_item *it;
	const uint64_t one = 1;

	pthread_mutex_lock(&ex->lock);
	while ((it = runner_next(ex))) {
		pthread_mutex_unlock(&ex->lock);
		it->run(it);
		pthread_mutex_lock(&ex->lock);
		it->next = NULL;
		if (ex->done_tail)
			ex->done_tail->next = it;
		else
			ex->done_head = it;
		ex->done_tail = it;
		/*
		 * R1: the item's results before the count; pairs with A1 in
		 * executor_take_done() (the list itself is under the lock).
		 * Sequentially consistent as well: the first half of the
		 * watcher handshake (D1 below against W1/W2 in
		 * executor_watcher_sleep()).
		 */
		atomic_fetch_add_explicit(&ex->n_done, 1, memory_order_seq_cst);
		pthread_mutex_unlock(&ex->lock);
		/*
		 * D1: after R1 in the single seq_cst order; pairs with W1.
		 * Either the watcher's W2 sees our count (it does not sleep)
		 * or we see it no longer polls and write.
		 */
		if (!atomic_load_explicit(&ex->watcher_polls, memory_order_seq_cst) &&
		    write(ex->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			abort(); /* EBADF/EINVAL: the executor's own fd is broken (EAGAIN:
				    the counter is about to overflow, already readable) */
		pthread_mutex_lock(&ex->lock);
	}
	pthread_mutex_unlock(&ex->lock);
	return NULL;
}

int executor_new(uint32_t n_runners, struct executor **ret_executor)
{
	struct executor *ex;
	int r;

	if (n_runners == 0 || n_runners > MAX_RUNNERS)
		return -EINVAL;
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	pthread_mutex_init(&ex->lock, NULL);
	pthread_cond_init(&ex->wake, NULL);
	ex->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ex->event_fd < 0) {
		r = -errno;
		goto fail;
	}
	for (uint32_t i = 0; i < n_runners; i++) {
		r = -pthread_create(&ex->threads[i], NULL, runner_main, ex);
		if (r < 0)
			goto fail;
		ex->n_started++;
	}
	*ret_executor = ex;
	return 0;
fail:
	executor_free(ex);
	return r;
}

struct executor *executor_free(struct executor *ex)
{
	if (!ex)
		return NULL;
	pthread_mutex_lock(&ex->lock);
	atomic_store_explicit(&ex->stopping, true, memory_order_relaxed);
	pthread_cond_broadcast(&ex->wake);
	pthread_mutex_unlock(&ex->lock);
	for (uint32_t i = 0; i < ex->n_started; i++)
		pthread_join(ex->threads[i], NULL);
	if (ex->event_fd >= 0)
		close(ex->event_fd);
	pthread_cond_destroy(&ex->wake);
	pthread_mutex_destroy(&ex->lock);
	free(ex);
	return NULL;
}

int executor_event_fd(const struct executor *ex)
{
	return ex->event_fd;
}

void executor_submit(struct executor *ex, struct exec_item *item)
{
	unsigned queued;

	pthread_mutex_lock(&ex->lock);
	item->next = NULL;
	if (ex->queued_tail)
		ex->queued_tail->next = item;
	else
		ex->queued_head = item;
	ex->queued_tail = item;
	/*
	 * A spinning runner sees n_queued; a sleeping one is signalled only
	 * for the items beyond the spinners. A runner leaves the spinners
	 * before it takes the lock to look at the queue and sleep, so one
	 * that we count as spinning still finds this item under the lock.
	 */
	queued = atomic_fetch_add_explicit(&ex->n_queued, 1, memory_order_relaxed) + 1;
	if (ex->n_sleeping && queued > atomic_load_explicit(&ex->n_spinning, memory_order_relaxed))
		pthread_cond_signal(&ex->wake);
	pthread_mutex_unlock(&ex->lock);
}

struct exec_item *executor_take_done(struct executor *ex)
{
	struct exec_item *list;

	/* A1: pairs with R1 in runner_main() */
	if (!atomic_load_explicit(&ex->n_done, memory_order_acquire))
		return NULL;
	pthread_mutex_lock(&ex->lock);
	list = ex->done_head;
	ex->done_head = ex->done_tail = NULL;
	atomic_store_explicit(&ex->n_done, 0, memory_order_relaxed);
	pthread_mutex_unlock(&ex->lock);
	return list;
}

void executor_watcher_polling(struct executor *ex)
{
	atomic_store_explicit(&ex->watcher_polls, true, memory_order_relaxed);
}

bool executor_watcher_sleep(struct executor *ex)
{
	/* W1: pairs with D1 in runner_main() (Dekker) */
	atomic_store_explicit(&ex->watcher_polls, false, memory_order_seq_cst);
	/* W2: after W1 in the single seq_cst order; pairs with R1 */
	return atomic_load_explicit(&ex->n_done, memory_order_seq_cst) == 0;
}

void executor_ack_event(struct executor *ex)
{
	uint64_t v;

	/* EAGAIN: a take_done already emptied the list and nothing new came */
	(void)!read(ex->event_fd, &v, sizeof(v));
}
