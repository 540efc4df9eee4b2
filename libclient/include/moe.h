/* SPDX-License-Identifier: MIT */
/*
 * libmoe: the client library of moed, the Mixture-of-Experts expert daemon.
 *
 * A client connects to moed's control socket, receives a shared-memory
 * region, writes the hidden states of a batch of tokens into buffers of that
 * region's arena and submits them for one MoE layer; moed routes every token
 * to its experts, runs them and writes the combined result into the output
 * buffer. On the fast path a batch costs no copy and no system call: the
 * request and its completion travel through rings in the region, and either
 * side makes the wake-up system call only when the other has said it sleeps.
 *
 *   struct moe_client_opts o;
 *   moe_client_opts_init(&o);
 *   struct moe_client *c;
 *   int r = moe_connect(&o, &c);               // -errno on failure
 *   struct moe_model_info mi;
 *   moe_model_info_get(c, &mi);
 *   float *x, *y;
 *   moe_buf_alloc(c, T * mi.d_model * sizeof(float), (void **)&x);
 *   moe_buf_alloc(c, T * mi.d_model * sizeof(float), (void **)&y);
 *   ... fill x ...
 *   struct moe_request rq;
 *   moe_request_init(&rq);
 *   rq.layer = 0; rq.n_tokens = T; rq.input = x; rq.output = y;
 *   struct moe_completion done;
 *   r = moe_forward(c, &rq, &done);            // r: transport error; done.status: the batch's
 *   moe_close(c);
 *
 * Conventions: every function returning int returns 0 (or a count) on
 * success and a negative errno on failure; moe_strerror() describes one.
 * Out-parameters are written only on success. Options structs start with
 * their own size, so that later versions can grow them: always fill them
 * with the matching *_init() first.
 *
 * Thread-safety: a struct moe_client is used by one thread at a time (give
 * each thread its own client); different clients are independent. Functions
 * that take no client are thread-safe. A connection belongs to the process
 * that made it: moed ends it when that process exits, so a child of fork()
 * connects on its own.
 *
 * The daemon going away (crash, restart) turns every call that needs it into
 * -ECONNRESET, within a bounded time even while waiting; requests in flight
 * are lost. moe_reconnect() attaches to a new daemon and keeps the arena's
 * addresses valid (their contents are not kept).
 */
#ifndef MOE_H
#define MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MOE_API __attribute__((visibility("default")))
#else
#define MOE_API
#endif

#define MOE_VERSION_MAJOR 1
#define MOE_VERSION_MINOR 1
#define MOE_VERSION_PATCH 0
#define MOE_VERSION_NUMBER (MOE_VERSION_MAJOR * 10000 + MOE_VERSION_MINOR * 100 + MOE_VERSION_PATCH)

/* The library's MOE_VERSION_NUMBER, to compare with the header's. */
MOE_API unsigned moe_version_number(void);
/* "1.0.0": the library's version as a string. Never NULL. */
MOE_API const char *moe_version_string(void);

/* A description of @err (negative or positive errno, or a libmoe code). Never NULL. */
MOE_API const char *moe_strerror(int err);

/* The default control socket of moed. */
#define MOE_DEFAULT_SOCKET "/run/moed/moed.sock"

struct moe_client;

struct moe_client_opts {
	size_t size;             /* sizeof(struct moe_client_opts): set by _init */
	const char *socket_path; /* NULL: $MOED_SOCKET, else MOE_DEFAULT_SOCKET */
	const char *name;        /* shown by moectl status; NULL: the program name */
	uint32_t sq_entries;     /* submission ring slots (power of two); default 64 */
	uint32_t cq_entries;     /* completion ring slots (>= sq_entries); default 128 */
	uint64_t arena_size;     /* bytes of buffer arena; default 64 MiB */
	/*
	 * How long moe_wait() spins on the completion ring before it sleeps on
	 * the futex, in nanoseconds. 0: sleep at once (the least CPU); a large
	 * value is busy-poll mode (the least latency, one core busy).
	 * Default 20000.
	 */
	uint64_t spin_ns;
};

/* Fill @opts with the defaults (and its size). */
MOE_API void moe_client_opts_init(struct moe_client_opts *opts);

/*
 * Connect to moed and map the region it hands out (@opts NULL: the defaults).
 * -ENOENT/-ECONNREFUSED: no daemon at the socket; -EPROTONOSUPPORT: ABI
 * mismatch; -E2BIG: sizes beyond the daemon's limits; -EINVAL: bad opts.
 */
MOE_API int moe_connect(const struct moe_client_opts *opts, struct moe_client **ret_client);

/* Disconnect and free; requests in flight are abandoned. NULL-safe. */
MOE_API void moe_close(struct moe_client *client);

/*
 * After -ECONNRESET: connect again with the same options. The arena keeps
 * its addresses, so buffers from moe_buf_alloc() stay valid (their contents
 * are lost: rewrite inputs). Requests that were in flight are gone.
 * -EXDEV when the new daemon's region does not fit the old addresses (then
 * close the client and connect anew). Until a reconnect succeeds the
 * arena's addresses stay reserved but inaccessible: touching a buffer then
 * faults.
 */
MOE_API int moe_reconnect(struct moe_client *client);

struct moe_model_info {
	size_t size;          /* sizeof(struct moe_model_info): set by the caller */
	uint32_t d_model;     /* floats per token row */
	uint32_t n_layers;    /* layer indices are 0 .. n_layers - 1 */
	uint32_t max_experts; /* experts of the largest layer */
	uint32_t max_slots;   /* route_k that fits every layer's routing */
	uint32_t max_tokens;  /* per request */
	uint32_t client_id;
	uint64_t arena_size;
	char model_name[64];
};

/* The model's shape and this connection's limits. */
MOE_API int moe_model_info_get(const struct moe_client *client, struct moe_model_info *ret_info);

/*
 * Buffers in the shared arena: every pointer in a request must point into
 * one (they are named to moed by offset) and be 64-byte aligned, as these
 * buffers are (so `x + t * d_model` is a valid input only when d_model is a
 * multiple of 16). -ENOMEM when the arena is full. Freeing a buffer a
 * request still uses is the caller's bug.
 */
MOE_API int moe_buf_alloc(struct moe_client *client, size_t bytes, void **ret_ptr);
MOE_API void moe_buf_free(struct moe_client *client, void *ptr);

/* moe_request.flags */
#define MOE_REQ_ROUTE_GIVEN (1u << 0)  /* use route_expert/route_weight as the routing */
#define MOE_REQ_ROUTE_RETURN (1u << 1) /* fill route_expert/route_weight with moed's routing */
#define MOE_REQ_NO_MERGE (1u << 2)     /* never merge with other clients' batches */
/* fill expert_counts with the tokens routed to each expert (implies NO_MERGE) */
#define MOE_REQ_COUNTS_RETURN (1u << 3)

struct moe_request {
	size_t size;          /* sizeof(struct moe_request): set by _init */
	uint64_t user_data;   /* returned in the completion */
	uint32_t layer;
	uint32_t n_tokens;
	uint32_t flags;       /* MOE_REQ_* */
	uint32_t route_k;     /* slots per token of the routing buffers (<= 65535) */
	const float *input;   /* arena: [n_tokens][d_model] */
	float *output;        /* arena: [n_tokens][d_model] */
	int32_t *route_expert; /* arena: [n_tokens][route_k] (ROUTE_* only) */
	float *route_weight;   /* arena: [n_tokens][route_k] (ROUTE_* only) */
	int32_t *expert_counts; /* arena: [max_experts] (COUNTS_RETURN only) */
};

MOE_API void moe_request_init(struct moe_request *req);

struct moe_completion {
	uint64_t user_data;
	int32_t status;       /* 0, or -errno: -EINVAL bad request, -EDOM NaN input, -ESHUTDOWN
	                       * submitted while moed drains (not run), ... */
	uint32_t flags;       /* MOE_COMPLETION_* */
	uint32_t n_dropped;   /* token slots over an expert's capacity */
	uint32_t n_sanitized; /* non-finite inputs replaced by the daemon's policy */
	uint32_t route_k;     /* slots written with MOE_REQ_ROUTE_RETURN */
	float aux_loss;       /* load-balancing loss of the batch's own tokens, merged or not */
	float z_loss;         /* router z-loss (MOE_COMPLETION_Z_LOSS) */
};

#define MOE_COMPLETION_MERGED (1u << 0) /* ran merged; the statistics are still this batch's own */
#define MOE_COMPLETION_Z_LOSS (1u << 1)

/*
 * Queue @req without waiting. 0, -EAGAIN (submission ring full: reap first),
 * -EINVAL (a pointer outside the arena, sizes, a layer or route_k above
 * 65535: the ring holds them in 16 bits), -ECONNRESET.
 *
 * Completion order: a client's valid requests complete in the order they
 * were submitted (moed runs one batch of a client at a time). A request moed
 * refuses (its completion's status is -EINVAL) completes as soon as moed
 * reads it, which may be before earlier requests.
 */
MOE_API int moe_submit(struct moe_client *client, const struct moe_request *req);

/* Take up to @max completions that are ready, without waiting: the count (0..max). */
MOE_API int moe_reap(struct moe_client *client, struct moe_completion *ret, unsigned max);

/*
 * As moe_reap() but waits up to @timeout_ns (< 0: no limit) for at least one
 * completion: the count (>= 1), -ETIMEDOUT, or -ECONNRESET (daemon gone).
 */
MOE_API int moe_wait(struct moe_client *client, struct moe_completion *ret, unsigned max,
		     int64_t timeout_ns);

/*
 * Submit @req and wait for its completion into @ret. Needs no other request
 * in flight (-EBUSY otherwise). Returns 0 when the completion arrived (its
 * status says how the batch went), or -errno as moe_submit()/moe_wait().
 */
MOE_API int moe_forward(struct moe_client *client, const struct moe_request *req,
			struct moe_completion *ret);

/*
 * The daemon's status as JSON (what `moectl status --json` prints), from the
 * socket @socket_path (NULL: as moe_client_opts). *@ret_json is
 * NUL-terminated and freed with free().
 */
MOE_API int moe_daemon_status(const char *socket_path, char **ret_json);

/* What moe_daemon_expert_change() asks for (the values of moe_proto.h's ops). */
enum moe_expert_change_op {
	MOE_EXPERT_CHANGE_REPLICATE = 1, /* a copy more, on the node */
	MOE_EXPERT_CHANGE_MOVE = 2,      /* the primary copy to the node */
	MOE_EXPERT_CHANGE_DROP = 3,      /* the copy on the node goes; never the last */
};

/*
 * Ask moed at @socket_path to change where expert @expert of @layer has its
 * copies (root and moed's own user only): @op on NUMA node @node (an id as
 * `moectl experts` shows it). 0 when queued, with *@ret_epoch the map epoch
 * that will hold the change (the status's "store"."epoch" reaches it once
 * the copy is made); -errno when refused (-EPERM, -EINVAL, -EEXIST, -ENOENT,
 * -ENOSPC, -EAGAIN), with moed's reason in @msg (NULL: not wanted).
 */
MOE_API int moe_daemon_expert_change(const char *socket_path, enum moe_expert_change_op op,
				     uint32_t layer, uint32_t expert, uint32_t node,
				     uint64_t *ret_epoch, char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif

#endif /* MOE_H */
