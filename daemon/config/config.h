/* SPDX-License-Identifier: MIT */
/*
 * config: moed's settings, one table (config.c) that parses, validates,
 * prints (`moed --dump-config`) and documents them; systemd/moed.conf lists
 * every key, and a test checks that it does.
 *
 * File format: `key = value` lines; lines whose first non-blank character
 * is `#` are comments (a `#` inside a value, such as a path, is kept); blank
 * lines are ignored. Values lose surrounding blanks. A bad line is a fatal
 * error that names file:line and the line. Drop-ins (FILE.d/NAME.conf) apply
 * on top of the file; command-line options (--model, --socket, --set)
 * override both.
 *
 * Every row of the table has its default (moed_config_init applies them)
 * and says whether it can change live: a reload (SIGHUP, moectl reload)
 * parses everything again and swaps in what validates and may change live
 * (moed_config_apply_live); the rest waits for a restart, and the log says so.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "placement/placement.h"
#include "util/diag.h"

enum doorbell_mode {
	DOORBELL_AUTO,    /* io_uring futex wait when the probe says yes, else eventfd */
	DOORBELL_FUTEX,   /* require IORING_OP_FUTEX_WAIT */
	DOORBELL_EVENTFD, /* always the eventfd fallback */
};

/* What a batch gets when a host that computes some of its experts fails. */
enum peer_failure {
	PEER_FAILURE_ERROR, /* the batch fails with -EHOSTUNREACH */
	PEER_FAILURE_DROP,  /* the host's slots are dropped, as capacity drops are */
};

/* The dtype the store keeps an expert's matrices in. */
enum expert_dtype {
	EXPERT_DTYPE_CHECKPOINT, /* the checkpoint's: F32, BF16 or F16 */
	EXPERT_DTYPE_F32,        /* widened to float32 at load */
};

#define CONFIG_PATH_MAX 4096

struct moed_config {
	char socket[CONFIG_PATH_MAX];
	char model[CONFIG_PATH_MAX];     /* empty: the embedded default model */
	char state_dir[CONFIG_PATH_MAX]; /* where the default model is generated */
	uint32_t socket_mode;            /* permission bits of the control socket */
	uint32_t workers;                /* engine workers; 0: one per allowed CPU */
	bool kernel_calibration;         /* measure the matmul kernels' bounds at start */
	bool bf16_dot;                   /* BF16 experts by vdpbf16ps, activations in BF16 */
	uint32_t runs_in_flight;         /* executor runner threads */
	uint32_t merge_window_us;        /* 0: never merge batches of several clients */
	uint64_t inline_run_bytes;       /* runs reading at most this compute on the reactor */
	uint32_t poll_us;                /* adaptive polling window after the last work */
	uint32_t max_clients;
	uint32_t max_clients_per_process; /* 0: derived, see moed_config_clients_per_process() */
	uint32_t max_clients_per_uid;     /* 0: derived, see moed_config_clients_per_uid() */
	uint64_t max_arena_bytes;        /* per client */
	uint32_t max_sq_entries;
	uint32_t max_tokens;             /* per batch */
	uint32_t max_merged_tokens;      /* per merged engine run */
	uint32_t hello_timeout_ms;       /* a connection must say HELLO/STATUS by then */
	enum doorbell_mode doorbell;
	char topology_file[CONFIG_PATH_MAX]; /* empty: detect the machine's */
	enum placement_policy placement;
	char expert_nodes[CONFIG_PATH_MAX];  /* placement = explicit */
	bool node_steal;                     /* idle workers take other nodes' tasks */
	char store_dir[CONFIG_PATH_MAX];     /* where the expert store's objects live */
	char store_name[CONFIG_PATH_MAX];    /* empty: derived from the socket path */
	bool store_keep;                     /* the store outlives moed */
	enum expert_dtype expert_dtype;
	uint64_t replica_budget;             /* per node: room for copies made while serving */
	uint32_t rebalance_interval_ms;      /* automatic replicas from measured load; 0: off */
	uint32_t rebalance_hot_percent;      /* of the layer's mean tokens: an expert above gets a copy */
	/* other hosts (daemon/peers/peer_config.h has the syntax) */
	char listen[CONFIG_PATH_MAX];        /* ADDR:PORT for peers; empty: none */
	char peers[CONFIG_PATH_MAX];         /* NAME=ADDR:PORT[,...] */
	char expert_hosts[CONFIG_PATH_MAX];  /* [L:]EXPERTS@HOST[;...] */
	uint32_t peer_deadline_ms;           /* the longest a remote transfer may take */
	enum peer_failure peer_failure;
	uint32_t max_hosts_per_token;        /* top-k layers: hosts one token may visit; 0: any */
	char metrics_listen[CONFIG_PATH_MAX]; /* ADDR:PORT of the Prometheus endpoint; empty: off */
};

void moed_config_init(struct moed_config *c);

/* Set one key from its string value. 0, or -EINVAL/-ERANGE with a diag. */
int moed_config_set(struct moed_config *c, const char *key, const char *value, struct diag *d);

/* Parse the file at @path into @c (on top of what it holds). 0 or -errno + diag. */
int moed_config_load(struct moed_config *c, const char *path, struct diag *d);

/*
 * The file at @path, then its drop-ins: PATH.d/NAME.conf in the byte order
 * of NAME (as systemd orders drop-ins: 10-a.conf before 20-b.conf), each
 * on top of what came before. A missing PATH.d is fine; a missing @path is
 * not. Stops at the first bad file (its file:line in @d).
 */
int moed_config_load_all(struct moed_config *c, const char *path, struct diag *d);

/* Cross-key checks (after all sources are applied). */
int moed_config_validate(const struct moed_config *c, struct diag *d);

/*
 * Every key in table order as [{"key", "value" (as the file writes it),
 * "default", "live" (changes on reload)}], for the status and `moectl
 * config`. A new reference, or NULL when out of memory.
 */
struct json_t;
struct json_t *moed_config_to_json(const struct moed_config *c);

/* Every key with its current value and its documentation, as a config file. */
void moed_config_dump(const struct moed_config *c, FILE *f);

/*
 * The session limits in force: the configured value, or when it is 0
 * max(1, max_clients / 4) per process and max(1, max_clients / 2) per uid.
 */
uint32_t moed_config_clients_per_process(const struct moed_config *c);
uint32_t moed_config_clients_per_uid(const struct moed_config *c);

/* The name of key @i (0, 1, ...), NULL past the last. */
const char *moed_config_key(unsigned i);

/* Whether key @i changes in a running moed on reload (false past the last). */
bool moed_config_key_live(unsigned i);

/* One setting that differs between two configurations: its old and new value as text. */
typedef void (*moed_config_change_fn)(const char *key, const char *was, const char *now,
				      bool live, void *arg);

/*
 * A reload: for every setting whose value differs between @dst (in force)
 * and @src (just parsed and validated), call @report (NULL: none); a live
 * setting is then copied into @dst, any other stays as it was until a
 * restart. Only changed live fields of @dst are written, so threads that
 * read its other fields meanwhile are undisturbed. Returns how many were
 * applied.
 */
unsigned moed_config_apply_live(struct moed_config *dst, const struct moed_config *src,
				moed_config_change_fn report, void *arg);
