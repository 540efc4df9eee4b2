/* SPDX-License-Identifier: MIT */
/* peer_proto: checks of the messages between daemons; see peer_proto.h. */
#include "peers/peer_proto.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "compute/activations.h"
#include "router/router_config.h"

/* A fixed-size header: exactly its size, copied out (the transport's buffer may be unaligned). */
static int fixed_copy(const void *hdr, size_t len, void *ret, size_t size, const char *what,
		      struct diag *d)
{
	if (len != size)
		return diag_set(d, -EPROTO, "%s of %zu bytes, not %zu", what, len, size);
	memcpy(ret, hdr, size);
	return 0;
}

/*
 * @rows (below 2^32) rows of @d_model floats are exactly @data_len bytes.
 * rows * d_model fits 64 bits; the bytes may not, and a wrapped size must
 * not pass for a peer's data length.
 */
static bool data_len_is(size_t data_len, uint64_t rows, uint32_t d_model)
{
	uint64_t floats = rows * d_model;

	return floats <= SIZE_MAX / sizeof(float) && data_len == floats * sizeof(float);
}

/*
 * A peer's text for our logs and the status JSON: NUL-ended within @n and
 * printable ASCII only (a control character could forge log lines, and
 * bytes that are not UTF-8 would make the status unprintable).
 */
static void keep_printable(char *s, size_t n)
{
	s[n - 1] = '\0';
	for (size_t i = 0; s[i]; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			s[i] = '?';
}

static int magic_version(uint32_t magic, uint16_t version, const char *what, struct diag *d)
{
	if (magic != PEER_PROTO_MAGIC)
		return diag_set(d, -EPROTO, "%s without moed's magic (0x%08x)", what, magic);
	if (version != PEER_PROTO_VERSION)
		return diag_set(d, -EPROTO, "%s of protocol version %u; this moed speaks %u", what,
				version, PEER_PROTO_VERSION);
	return 0;
}

int peer_hello_decode(const void *hdr, size_t len, struct peer_hello *ret, struct diag *d)
{
	int r = fixed_copy(hdr, len, ret, sizeof(*ret), "a HELLO", d);

	if (r < 0)
		return r;
	r = magic_version(ret->magic, ret->version, "a HELLO", d);
	if (r < 0)
		return r;
	keep_printable(ret->name, sizeof(ret->name));
	return 0;
}

int peer_hello_reply_decode(const void *hdr, size_t len, struct peer_hello_reply *ret,
			    struct diag *d)
{
	int r = fixed_copy(hdr, len, ret, sizeof(*ret), "a HELLO reply", d);

	if (r < 0)
		return r;
	r = magic_version(ret->magic, ret->version, "a HELLO reply", d);
	if (r < 0)
		return r;
	if (ret->status > 0 || ret->status < -4095)
		return diag_set(d, -EPROTO, "a HELLO reply with status %d", ret->status);
	keep_printable(ret->name, sizeof(ret->name));
	keep_printable(ret->why, sizeof(ret->why));
	return 0;
}

int peer_expert_req_decode(const void *hdr, size_t len, size_t data_len, uint32_t n_layers,
			   uint32_t d_model, const uint32_t *n_experts, uint32_t max_rows,
			   struct peer_expert_req *ret, struct diag *d)
{
	const size_t fixed = offsetof(struct peer_expert_req, bin);
	uint64_t sum = 0;

	if (len < fixed + sizeof(struct peer_bin) || len > sizeof(*ret))
		return diag_set(d, -EPROTO, "an expert request of %zu header bytes", len);
	memset(ret, 0, sizeof(*ret));
	memcpy(ret, hdr, len);
	if (ret->magic != PEER_PROTO_MAGIC)
		return diag_set(d, -EPROTO, "an expert request without moed's magic");
	if (ret->n_bins == 0 || ret->n_bins > PEER_REQ_MAX_BINS ||
	    len != peer_expert_req_size(ret->n_bins))
		return diag_set(d, -EPROTO, "an expert request of %u experts in %zu bytes",
				ret->n_bins, len);
	if (ret->layer >= n_layers)
		return diag_set(d, -EPROTO, "an expert request for layer %u of %u", ret->layer,
				n_layers);
	if (ret->d_model != d_model)
		return diag_set(d, -EPROTO, "an expert request of width %u; the model's is %u",
				ret->d_model, d_model);
	if (ret->activation > ACT_GELU_GATED)
		return diag_set(d, -EPROTO, "an expert request with activation %u",
				ret->activation);
	for (uint32_t i = 0; i < ret->n_bins; i++) {
		const struct peer_bin *b = &ret->bin[i];

		if (b->expert >= n_experts[ret->layer] || (i && b->expert <= ret->bin[i - 1].expert))
			return diag_set(d, -EPROTO, "an expert request whose experts are out of "
						    "range or order (%u in layer %u of %u experts)",
					b->expert, ret->layer, n_experts[ret->layer]);
		if (b->rows == 0)
			return diag_set(d, -EPROTO, "an expert request with no rows for expert %u",
					b->expert);
		sum += b->rows;
	}
	if (sum != ret->total_rows || sum > max_rows)
		return diag_set(d, -EPROTO, "an expert request of %llu rows (total %u, at most %u)",
				(unsigned long long)sum, ret->total_rows, max_rows);
	if (!data_len_is(data_len, sum, d_model)) /* sum <= max_rows: below 2^32 */
		return diag_set(d, -EPROTO, "an expert request with %zu data bytes for %llu rows",
				data_len, (unsigned long long)sum);
	return 0;
}

int peer_expert_reply_decode(const void *hdr, size_t len, size_t data_len,
			     struct peer_expert_reply *ret, struct diag *d)
{
	int r = fixed_copy(hdr, len, ret, sizeof(*ret), "an expert reply", d);

	if (r < 0)
		return r;
	if (ret->magic != PEER_PROTO_MAGIC)
		return diag_set(d, -EPROTO, "an expert reply without moed's magic");
	keep_printable(ret->why, sizeof(ret->why));
	if (ret->status > 0 || ret->status < -4095)
		return diag_set(d, -EPROTO, "an expert reply with status %d", ret->status);
	if (ret->status == 0 && !data_len_is(data_len, ret->total_rows, ret->d_model))
		return diag_set(d, -EPROTO, "an expert reply with %zu data bytes for %u rows of %u",
				data_len, ret->total_rows, ret->d_model);
	return 0;
}
