/* SPDX-License-Identifier: MIT */
/*
 * bench_daemon_victim: what a client streaming large batches does to the
 * latency of another client's small ones (head-of-line blocking), through
 * a real moed. One client process streams T = big_tokens batches back to
 * back with STREAM_DEPTH of them always in flight (MOE_REQ_NO_MERGE); this
 * process, the victim, meanwhile submits T = 1 batches one at a time with a
 * 1 ms pause between them and times each. The yardstick is one T =
 * big_tokens batch through the same moed with nothing else running, timed
 * before and after the stream (half each, so a drift of the machine falls
 * on both sides).
 *
 * The victim's batches carry no flags, as a decoding client's would: they
 * may each wait up to moed's merge_window_us for a partner that the
 * stream's NO_MERGE batches never are.
 */
#pragma once

#include <stdint.h>

#include "bench_daemon_proc.h"

struct victim_params {
	const char *moed_path;  /* the moed binary */
	const char *dir;        /* moed's socket and log go here (daemon_proc_start) */
	const char *model_path; /* a one-layer model; layer 0 is used */
	uint32_t d_model;       /* the model's */
	uint32_t big_tokens;    /* T of the stream's batches (and of the yardstick) */
	double seconds;         /* how long the victim samples under the stream */
	uint32_t alone_reps;    /* timed yardstick batches (>= 2), half before, half after */
	uint32_t victim_alone_n; /* timed T = 1 batches with nothing else running */
};

struct victim_result {
	struct sample_stats big_alone;    /* one T = big_tokens batch, nothing else running */
	struct sample_stats victim_alone; /* T = 1, nothing else running */
	struct sample_stats victim;       /* T = 1 under the stream */
	uint32_t runs_in_flight;          /* moed's setting, from its status */
	uint32_t stream_depth;            /* the stream's batches in flight */
	uint64_t stream_batches;          /* the stream's batches completed meanwhile */
	double stream_batch_ms;           /* the sampling time over stream_batches */
	double ratio;                     /* victim.p99_us / big_alone.median_us */
};

/*
 * Start a moed (workers=2, its other settings default) on @p->model_path,
 * measure, stop it. 0, or -errno after printing the reason to stderr;
 * *@ret filled on success.
 */
int victim_bench_run(const struct victim_params *p, struct victim_result *ret);
