/* SPDX-License-Identifier: MIT */
/*
 * peer_proto: the messages between moed daemons (over transport/).
 *
 *   requester                                   server (the expert's host)
 *   HELLO {version, model, name} + [asks] --->  checks version, model, that
 *                                               it computes every expert asked
 *   <--- HELLO_REPLY {status, model, name, why}
 *   EXPERT_REQ {call, layer, act, bins: (expert, rows)...} + rows --->
 *                                               computes (engine_experts_scratch)
 *   <--- EXPERT_REPLY {call, status, rows} + result rows
 *
 * A request's header carries its token counts (the rows of each expert), so
 * the server knows the size and place of the rows before they move (UCX's
 * rendezvous for large ones). Everything is little-endian as on the hosts
 * moed runs on (x86-64, arm64); the version guards the layout. Every field a
 * peer sends is checked before use (peer_proto.c): peers are configured
 * hosts, but a bad message must cost an error reply, never memory safety.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "util/diag.h"

#define PEER_PROTO_MAGIC 0x50454f4du /* "MOEP" */
#define PEER_PROTO_VERSION 1

enum peer_msg_id {
	PEER_MSG_HELLO = 1,
	PEER_MSG_HELLO_REPLY = 2,
	PEER_MSG_EXPERT_REQ = 3,
	PEER_MSG_EXPERT_REPLY = 4,
};

/* The model both sides must serve: the store's identity and its shape. */
struct peer_model_id {
	uint8_t hash[16];   /* peer_identity(): headers and sampled values */
	uint32_t n_layers;
	uint32_t d_model;
};

/*
 * HELLO's data: [n_layers][max_experts] bytes, 1 where the sender will ask
 * the receiver to compute that expert of that layer.
 */
struct peer_hello {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	struct peer_model_id model;
	uint32_t max_experts;   /* the asks' row length */
	char name[32];          /* the sender's host name, for the receiver's log */
};

struct peer_hello_reply {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	int32_t status;         /* 0: accepted; -EPROTO, -ESTALE (model), -EINVAL (asks) */
	struct peer_model_id model;
	char name[32];
	char why[256];          /* the refusal, for the requester's log */
};

/* Experts per request, so that a request header fits TRANSPORT_MAX_HEADER. */
#define PEER_REQ_MAX_BINS 96

struct peer_bin {
	uint32_t expert;
	uint32_t rows;
};

struct peer_expert_req {
	uint32_t magic;
	uint32_t layer;
	uint64_t call;          /* the requester's id, echoed in the reply */
	uint32_t activation;    /* enum activation */
	uint32_t d_model;
	uint32_t n_bins;        /* 1..PEER_REQ_MAX_BINS, experts ascending */
	uint32_t total_rows;    /* the sum of bins' rows; data is [total_rows][d_model] floats */
	struct peer_bin bin[PEER_REQ_MAX_BINS]; /* only n_bins travel */
};

struct peer_expert_reply {
	uint32_t magic;
	int32_t status;         /* 0, or -errno with why */
	uint64_t call;
	uint32_t total_rows;    /* data is [total_rows][d_model] floats when status is 0 */
	uint32_t d_model;
	char why[160];
};

/* The bytes of a request header that travel (n_bins bins). */
static inline size_t peer_expert_req_size(uint32_t n_bins)
{
	return offsetof(struct peer_expert_req, bin) + sizeof(struct peer_bin) * n_bins;
}

/*
 * Checks of what arrives (header bytes as received). Each returns 0 and
 * fills @ret, or -EPROTO with the reason in @d.
 */
int peer_hello_decode(const void *hdr, size_t len, struct peer_hello *ret, struct diag *d);
int peer_hello_reply_decode(const void *hdr, size_t len, struct peer_hello_reply *ret,
			    struct diag *d);
/*
 * A request's header against the model's shape (@n_layers, @d_model,
 * n_experts[layer]) and @max_rows, the rows a request may carry. Bins must
 * name distinct experts in ascending order, each with rows > 0, summing to
 * total_rows, and @data_len must be total_rows * d_model floats.
 */
int peer_expert_req_decode(const void *hdr, size_t len, size_t data_len, uint32_t n_layers,
			   uint32_t d_model, const uint32_t *n_experts, uint32_t max_rows,
			   struct peer_expert_req *ret, struct diag *d);
int peer_expert_reply_decode(const void *hdr, size_t len, size_t data_len,
			     struct peer_expert_reply *ret, struct diag *d);
