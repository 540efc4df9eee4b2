/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the checks of what arrives from another daemon
 * (daemon/peers/peer_proto): an expert request is refused for each field a
 * peer can get wrong (header length, bin count and the length it implies,
 * magic, layer, width, activation, experts out of order or range, a bin of
 * no rows, rows that do not sum to total_rows or exceed max_rows, data bytes
 * that do not match, including counts whose byte size would wrap 64 bits); a
 * reply for its length, magic, status range and, when it succeeded, its data
 * bytes; HELLO and its reply for length, magic and version, with their
 * strings NUL-ended even when the sender filled them. Every message is
 * decoded from a heap buffer of exactly its length at an odd address, so the
 * sanitizer build catches an over-read or an unaligned access.
 */
#include "test_assert.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "peers/peer_proto.h"
#include "router/router_config.h"
#include "util/diag.h"

/* The model on the receiving side: two layers of 8 and 128 experts, 16 wide. */
#define N_LAYERS 2
#define D_MODEL 16
#define MAX_ROWS 64
static const uint32_t n_experts[N_LAYERS] = { 8, 128 };

/* ---------------------------------------------------------------- helpers */

/*
 * @len bytes of @src copied to an odd address of a heap block that ends with
 * them; release with odd_free.
 */
static const void *odd_copy(const void *src, size_t len)
{
	unsigned char *p = malloc(len + 1);

	assert_non_null(p);
	memcpy(p + 1, src, len);
	return p + 1;
}

static void odd_free(const void *p)
{
	free((unsigned char *)(uintptr_t)p - 1);
}

static void expect_msg_at(const struct diag *d, const char *msg, int line)
{
	if (strcmp(d->msg, msg) != 0)
		fail_msg("line %d: diag\n  \"%s\"\nexpected\n  \"%s\"", line, d->msg, msg);
}

/* A valid request: layer 1, experts 1, 4 and 127 with 3, 2 and 5 rows. */
static void req_init(struct peer_expert_req *q)
{
	memset(q, 0, sizeof(*q));
	q->magic = PEER_PROTO_MAGIC;
	q->layer = 1;
	q->call = 0x1122334455667788ull;
	q->activation = ACT_SILU_GATED;
	q->d_model = D_MODEL;
	q->n_bins = 3;
	q->total_rows = 10;
	q->bin[0] = (struct peer_bin){ 1, 3 };
	q->bin[1] = (struct peer_bin){ 4, 2 };
	q->bin[2] = (struct peer_bin){ 127, 5 };
}

/* The data bytes of @q's rows. */
static size_t req_data(const struct peer_expert_req *q)
{
	return (size_t)q->total_rows * q->d_model * sizeof(float);
}

/* Decode the first @len bytes of @q against the model (width @d_model, @max_rows). */
static int req_decode(const struct peer_expert_req *q, size_t len, size_t data_len,
		      uint32_t d_model, uint32_t max_rows, struct peer_expert_req *ret,
		      struct diag *d)
{
	unsigned char bytes[sizeof(*q) + 16] = { 0 };
	const void *hdr;
	int r;

	assert_true(len <= sizeof(bytes));
	memcpy(bytes, q, sizeof(*q));
	hdr = odd_copy(bytes, len);
	memset(ret, 0xa5, sizeof(*ret));
	r = peer_expert_req_decode(hdr, len, data_len, N_LAYERS, d_model, n_experts, max_rows, ret,
				   d);
	odd_free(hdr);
	return r;
}

/* @q (its n_bins' bytes, its rows' data) decodes with MAX_ROWS. */
static void expect_req_ok_at(const struct peer_expert_req *q, int line)
{
	struct peer_expert_req ret;
	struct diag d = { { 0 } };
	int r = req_decode(q, peer_expert_req_size(q->n_bins), req_data(q), D_MODEL, MAX_ROWS,
			   &ret, &d);

	if (r != 0)
		fail_msg("line %d: request refused: %d (%s)", line, r, d.msg);
}

#define EXPECT_REQ_OK(_q) expect_req_ok_at(_q, __LINE__)

/* The first @len bytes of @q with @data_len data bytes are refused with exactly @msg. */
static void expect_req_refused_at(const struct peer_expert_req *q, size_t len, size_t data_len,
				  const char *msg, int line)
{
	struct peer_expert_req ret;
	struct diag d = { { 0 } };
	int r = req_decode(q, len, data_len, D_MODEL, MAX_ROWS, &ret, &d);

	if (r != -EPROTO)
		fail_msg("line %d: request returned %d (%s), expected -EPROTO", line, r, d.msg);
	expect_msg_at(&d, msg, line);
}

#define EXPECT_REQ_REFUSED_LEN(_q, _len, _data_len, _msg)                                     \
	expect_req_refused_at(_q, _len, _data_len, _msg, __LINE__)
/* Refused, its header and data of the sizes its fields imply. */
#define EXPECT_REQ_REFUSED(_q, _msg)                                                          \
	expect_req_refused_at(_q, peer_expert_req_size((_q)->n_bins), req_data(_q), _msg,     \
			      __LINE__)

static void reply_init(struct peer_expert_reply *rep)
{
	memset(rep, 0, sizeof(*rep));
	rep->magic = PEER_PROTO_MAGIC;
	rep->status = 0;
	rep->call = 0x8877665544332211ull;
	rep->total_rows = 10;
	rep->d_model = D_MODEL;
}

static int reply_decode(const struct peer_expert_reply *rep, size_t len, size_t data_len,
			struct peer_expert_reply *ret, struct diag *d)
{
	unsigned char bytes[sizeof(*rep) + 16] = { 0 };
	const void *hdr;
	int r;

	assert_true(len <= sizeof(bytes));
	memcpy(bytes, rep, sizeof(*rep));
	hdr = odd_copy(bytes, len);
	memset(ret, 0xa5, sizeof(*ret));
	r = peer_expert_reply_decode(hdr, len, data_len, ret, d);
	odd_free(hdr);
	return r;
}

static void expect_reply_refused_at(const struct peer_expert_reply *rep, size_t len,
				    size_t data_len, const char *msg, int line)
{
	struct peer_expert_reply ret;
	struct diag d = { { 0 } };
	int r = reply_decode(rep, len, data_len, &ret, &d);

	if (r != -EPROTO)
		fail_msg("line %d: reply returned %d (%s), expected -EPROTO", line, r, d.msg);
	expect_msg_at(&d, msg, line);
}

#define EXPECT_REPLY_REFUSED_LEN(_rep, _len, _data_len, _msg)                                 \
	expect_reply_refused_at(_rep, _len, _data_len, _msg, __LINE__)
#define EXPECT_REPLY_REFUSED(_rep, _data_len, _msg)                                           \
	expect_reply_refused_at(_rep, sizeof(*(_rep)), _data_len, _msg, __LINE__)

static void expect_reply_ok_at(const struct peer_expert_reply *rep, size_t data_len, int line)
{
	struct peer_expert_reply ret;
	struct diag d = { { 0 } };
	int r = reply_decode(rep, sizeof(*rep), data_len, &ret, &d);

	if (r != 0)
		fail_msg("line %d: reply (status %d, %zu data bytes) refused: %d (%s)", line,
			 rep->status, data_len, r, d.msg);
}

#define EXPECT_REPLY_OK(_rep, _data_len) expect_reply_ok_at(_rep, _data_len, __LINE__)

static void hello_init(struct peer_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->magic = PEER_PROTO_MAGIC;
	h->version = PEER_PROTO_VERSION;
	for (int i = 0; i < 16; i++)
		h->model.hash[i] = (uint8_t)(0xc0 + i);
	h->model.n_layers = N_LAYERS;
	h->model.d_model = D_MODEL;
	h->max_experts = 128;
	snprintf(h->name, sizeof(h->name), "host-a");
}

static int hello_decode(const struct peer_hello *h, size_t len, struct peer_hello *ret,
			struct diag *d)
{
	unsigned char bytes[sizeof(*h) + 16] = { 0 };
	const void *hdr;
	int r;

	assert_true(len <= sizeof(bytes));
	memcpy(bytes, h, sizeof(*h));
	hdr = odd_copy(bytes, len);
	memset(ret, 0xa5, sizeof(*ret));
	r = peer_hello_decode(hdr, len, ret, d);
	odd_free(hdr);
	return r;
}

static void expect_hello_refused_at(const struct peer_hello *h, size_t len, const char *msg,
				    int line)
{
	struct peer_hello ret;
	struct diag d = { { 0 } };
	int r = hello_decode(h, len, &ret, &d);

	if (r != -EPROTO)
		fail_msg("line %d: HELLO returned %d, expected -EPROTO", line, r);
	expect_msg_at(&d, msg, line);
}

#define EXPECT_HELLO_REFUSED(_h, _len, _msg) expect_hello_refused_at(_h, _len, _msg, __LINE__)

static void hello_reply_init(struct peer_hello_reply *h)
{
	memset(h, 0, sizeof(*h));
	h->magic = PEER_PROTO_MAGIC;
	h->version = PEER_PROTO_VERSION;
	h->status = 0;
	for (int i = 0; i < 16; i++)
		h->model.hash[i] = (uint8_t)(0x30 + i);
	h->model.n_layers = N_LAYERS;
	h->model.d_model = D_MODEL;
	snprintf(h->name, sizeof(h->name), "host-b");
}

static int hello_reply_decode(const struct peer_hello_reply *h, size_t len,
			      struct peer_hello_reply *ret, struct diag *d)
{
	unsigned char bytes[sizeof(*h) + 16] = { 0 };
	const void *hdr;
	int r;

	assert_true(len <= sizeof(bytes));
	memcpy(bytes, h, sizeof(*h));
	hdr = odd_copy(bytes, len);
	memset(ret, 0xa5, sizeof(*ret));
	r = peer_hello_reply_decode(hdr, len, ret, d);
	odd_free(hdr);
	return r;
}

static void expect_hello_reply_refused_at(const struct peer_hello_reply *h, size_t len,
					  const char *msg, int line)
{
	struct peer_hello_reply ret;
	struct diag d = { { 0 } };
	int r = hello_reply_decode(h, len, &ret, &d);

	if (r != -EPROTO)
		fail_msg("line %d: HELLO reply returned %d, expected -EPROTO", line, r);
	expect_msg_at(&d, msg, line);
}

#define EXPECT_HELLO_REPLY_REFUSED(_h, _len, _msg)                                            \
	expect_hello_reply_refused_at(_h, _len, _msg, __LINE__)

/* --------------------------------------------------------- the layouts */

/* The sizes that travel: a change here is a protocol change (PEER_PROTO_VERSION). */
static void test_layouts(void **state)
{
	(void)state;
	ASSERT_EQ(sizeof(struct peer_hello), 68);
	ASSERT_EQ(sizeof(struct peer_hello_reply), 324);
	ASSERT_EQ(offsetof(struct peer_expert_req, bin), 32);
	ASSERT_EQ(sizeof(struct peer_expert_req), 32 + 8 * PEER_REQ_MAX_BINS);
	ASSERT_EQ(peer_expert_req_size(1), 40);
	ASSERT_EQ(peer_expert_req_size(PEER_REQ_MAX_BINS), sizeof(struct peer_expert_req));
	ASSERT_EQ(sizeof(struct peer_expert_reply), 184);
}

/* ------------------------------------------------------- expert request */

/* A valid request decodes field for field; the bins that did not travel are zero. */
static void test_req_valid(void **state)
{
	struct peer_expert_req q, ret;
	struct diag d = { { 0 } };

	(void)state;
	req_init(&q);
	ASSERT_OK(req_decode(&q, peer_expert_req_size(3), 640, D_MODEL, MAX_ROWS, &ret, &d));
	ASSERT_EQ(d.msg[0], '\0');
	ASSERT_EQ(ret.magic, PEER_PROTO_MAGIC);
	ASSERT_EQ(ret.layer, 1);
	ASSERT_EQ(ret.call, 0x1122334455667788ull);
	ASSERT_EQ(ret.activation, ACT_SILU_GATED);
	ASSERT_EQ(ret.d_model, D_MODEL);
	ASSERT_EQ(ret.n_bins, 3);
	ASSERT_EQ(ret.total_rows, 10);
	ASSERT_EQ(ret.bin[0].expert, 1);
	ASSERT_EQ(ret.bin[0].rows, 3);
	ASSERT_EQ(ret.bin[1].expert, 4);
	ASSERT_EQ(ret.bin[1].rows, 2);
	ASSERT_EQ(ret.bin[2].expert, 127);
	ASSERT_EQ(ret.bin[2].rows, 5);
	for (uint32_t i = 3; i < PEER_REQ_MAX_BINS; i++)
		if (ret.bin[i].expert || ret.bin[i].rows)
			fail_msg("bin %u is %u/%u, not zero", i, ret.bin[i].expert,
				 ret.bin[i].rows);
}

/* The edges that are valid: one bin, PEER_REQ_MAX_BINS bins, every activation, max_rows. */
static void test_req_valid_edges(void **state)
{
	struct peer_expert_req q, ret;

	(void)state;
	req_init(&q);
	q.n_bins = 1;
	q.bin[0] = (struct peer_bin){ 0, 1 };
	q.total_rows = 1;
	EXPECT_REQ_OK(&q);

	/* every expert of layer 0 */
	q.layer = 0;
	q.n_bins = 8;
	for (uint32_t i = 0; i < 8; i++)
		q.bin[i] = (struct peer_bin){ i, 8 };
	q.total_rows = MAX_ROWS;
	EXPECT_REQ_OK(&q);

	req_init(&q);
	q.n_bins = PEER_REQ_MAX_BINS;
	for (uint32_t i = 0; i < PEER_REQ_MAX_BINS; i++)
		q.bin[i] = (struct peer_bin){ 32 + i, 1 };
	q.total_rows = PEER_REQ_MAX_BINS;
	ASSERT_OK(req_decode(&q, sizeof(q), req_data(&q), D_MODEL, PEER_REQ_MAX_BINS, &ret, NULL));
	ASSERT_EQ(ret.bin[PEER_REQ_MAX_BINS - 1].expert, 127);

	for (uint32_t a = ACT_RELU; a <= ACT_GELU_GATED; a++) {
		req_init(&q);
		q.activation = a;
		EXPECT_REQ_OK(&q);
	}
}

/* A header shorter than one bin, longer than PEER_REQ_MAX_BINS, or not of its n_bins. */
static void test_req_header_length_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	EXPECT_REQ_REFUSED_LEN(&q, 0, 640, "an expert request of 0 header bytes");
	EXPECT_REQ_REFUSED_LEN(&q, 32, 640, "an expert request of 32 header bytes");
	EXPECT_REQ_REFUSED_LEN(&q, 39, 640, "an expert request of 39 header bytes");
	EXPECT_REQ_REFUSED_LEN(&q, sizeof(q) + 1, 640, "an expert request of 801 header bytes");
	EXPECT_REQ_REFUSED_LEN(&q, sizeof(q) + 8, 640, "an expert request of 808 header bytes");
	/* n_bins 3 travels in 56 bytes, not 48, 52, 60, 64 or 800 */
	EXPECT_REQ_REFUSED_LEN(&q, 48, 640, "an expert request of 3 experts in 48 bytes");
	EXPECT_REQ_REFUSED_LEN(&q, 52, 640, "an expert request of 3 experts in 52 bytes");
	EXPECT_REQ_REFUSED_LEN(&q, 60, 640, "an expert request of 3 experts in 60 bytes");
	EXPECT_REQ_REFUSED_LEN(&q, 64, 640, "an expert request of 3 experts in 64 bytes");
	EXPECT_REQ_REFUSED_LEN(&q, sizeof(q), 640, "an expert request of 3 experts in 800 bytes");
}

/* n_bins 0 or beyond PEER_REQ_MAX_BINS, whatever the length. */
static void test_req_n_bins_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.n_bins = 0;
	EXPECT_REQ_REFUSED_LEN(&q, 40, 640, "an expert request of 0 experts in 40 bytes");
	q.n_bins = PEER_REQ_MAX_BINS + 1;
	EXPECT_REQ_REFUSED_LEN(&q, sizeof(q), 640, "an expert request of 97 experts in 800 bytes");
	q.n_bins = UINT32_MAX;
	EXPECT_REQ_REFUSED_LEN(&q, sizeof(q), 640,
			       "an expert request of 4294967295 experts in 800 bytes");
	/* 2^29 + 1 bins would be 40 bytes if the size were computed in 32 bits */
	q.n_bins = (1u << 29) + 1;
	EXPECT_REQ_REFUSED_LEN(&q, 40, 640, "an expert request of 536870913 experts in 40 bytes");
}

static void test_req_magic_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.magic = 0;
	EXPECT_REQ_REFUSED(&q, "an expert request without moed's magic");
	q.magic = __builtin_bswap32(PEER_PROTO_MAGIC);
	EXPECT_REQ_REFUSED(&q, "an expert request without moed's magic");
}

static void test_req_layer_out_of_range_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.layer = N_LAYERS;
	EXPECT_REQ_REFUSED(&q, "an expert request for layer 2 of 2");
	q.layer = UINT32_MAX;
	EXPECT_REQ_REFUSED(&q, "an expert request for layer 4294967295 of 2");
}

static void test_req_d_model_mismatch_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.d_model = D_MODEL + 1;
	EXPECT_REQ_REFUSED(&q, "an expert request of width 17; the model's is 16");
	q.d_model = D_MODEL - 1;
	EXPECT_REQ_REFUSED(&q, "an expert request of width 15; the model's is 16");
	q.d_model = 0;
	EXPECT_REQ_REFUSED(&q, "an expert request of width 0; the model's is 16");
}

static void test_req_activation_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.activation = ACT_GELU_GATED + 1;
	EXPECT_REQ_REFUSED(&q, "an expert request with activation 5");
	q.activation = UINT32_MAX;
	EXPECT_REQ_REFUSED(&q, "an expert request with activation 4294967295");
}

/* Experts must be distinct, ascending and below the layer's count (layer 0 has 8). */
static void test_req_experts_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.bin[1].expert = 1;
	EXPECT_REQ_REFUSED(&q, "an expert request whose experts are out of range or order (1 in "
			       "layer 1 of 128 experts)");
	req_init(&q);
	q.bin[1].expert = 0;
	EXPECT_REQ_REFUSED(&q, "an expert request whose experts are out of range or order (0 in "
			       "layer 1 of 128 experts)");
	req_init(&q);
	q.bin[2].expert = 128;
	EXPECT_REQ_REFUSED(&q, "an expert request whose experts are out of range or order (128 in "
			       "layer 1 of 128 experts)");
	q.bin[2].expert = UINT32_MAX;
	EXPECT_REQ_REFUSED(&q, "an expert request whose experts are out of range or order "
			       "(4294967295 in layer 1 of 128 experts)");
	/* 127 is valid in layer 1 and not in layer 0 */
	req_init(&q);
	q.layer = 0;
	EXPECT_REQ_REFUSED(&q, "an expert request whose experts are out of range or order (127 in "
			       "layer 0 of 8 experts)");
	q.bin[2].expert = 8;
	EXPECT_REQ_REFUSED(&q, "an expert request whose experts are out of range or order (8 in "
			       "layer 0 of 8 experts)");
	q.bin[2].expert = 7;
	EXPECT_REQ_OK(&q);
}

static void test_req_bin_without_rows_refused(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.bin[1].rows = 0;
	q.total_rows = 8;
	EXPECT_REQ_REFUSED(&q, "an expert request with no rows for expert 4");
	req_init(&q);
	q.n_bins = 1;
	q.bin[0].rows = 0;
	q.total_rows = 0;
	EXPECT_REQ_REFUSED(&q, "an expert request with no rows for expert 1");
}

/* The bins' rows must sum to total_rows exactly, in 64 bits (no 32-bit wrap to match). */
static void test_req_total_rows_mismatch_refused(void **state)
{
	struct peer_expert_req q, ret;
	struct diag d = { { 0 } };

	(void)state;
	req_init(&q);
	q.total_rows = 11;
	EXPECT_REQ_REFUSED(&q, "an expert request of 10 rows (total 11, at most 64)");
	q.total_rows = 9;
	EXPECT_REQ_REFUSED(&q, "an expert request of 10 rows (total 9, at most 64)");
	q.total_rows = 0;
	EXPECT_REQ_REFUSED(&q, "an expert request of 10 rows (total 0, at most 64)");

	/* 2^31 + 2^31 + 10 rows are 10 in 32 bits */
	req_init(&q);
	q.bin[0].rows = 0x80000000u;
	q.bin[1].rows = 0x80000000u;
	q.bin[2].rows = 10;
	q.total_rows = 10;
	ASSERT_ERRNO(req_decode(&q, peer_expert_req_size(3), 640, D_MODEL, UINT32_MAX, &ret, &d),
		     EPROTO);
	expect_msg_at(&d, "an expert request of 4294967306 rows (total 10, at most 4294967295)",
		      __LINE__);

	/* PEER_REQ_MAX_BINS bins of 2^32 - 1 rows: the sum does not wrap 64 bits either */
	req_init(&q);
	q.n_bins = PEER_REQ_MAX_BINS;
	for (uint32_t i = 0; i < PEER_REQ_MAX_BINS; i++)
		q.bin[i] = (struct peer_bin){ i, UINT32_MAX };
	q.total_rows = UINT32_MAX;
	memset(&d, 0, sizeof(d));
	ASSERT_ERRNO(req_decode(&q, sizeof(q), 0, D_MODEL, UINT32_MAX, &ret, &d), EPROTO);
	expect_msg_at(&d, "an expert request of 412316860320 rows (total 4294967295, at most "
			  "4294967295)",
		      __LINE__);
}

static void test_req_rows_over_max_refused(void **state)
{
	struct peer_expert_req q, ret;
	struct diag d = { { 0 } };

	(void)state;
	req_init(&q);
	ASSERT_OK(req_decode(&q, peer_expert_req_size(3), 640, D_MODEL, 10, &ret, NULL));
	ASSERT_ERRNO(req_decode(&q, peer_expert_req_size(3), 640, D_MODEL, 9, &ret, &d), EPROTO);
	expect_msg_at(&d, "an expert request of 10 rows (total 10, at most 9)", __LINE__);
	memset(&d, 0, sizeof(d));
	ASSERT_ERRNO(req_decode(&q, peer_expert_req_size(3), 640, D_MODEL, 0, &ret, &d), EPROTO);
	expect_msg_at(&d, "an expert request of 10 rows (total 10, at most 0)", __LINE__);
}

/* The data must be total_rows * d_model floats, to the byte. */
static void test_req_data_len_mismatch_refused(void **state)
{
	struct peer_expert_req q;
	size_t len = peer_expert_req_size(3);

	(void)state;
	req_init(&q);
	EXPECT_REQ_REFUSED_LEN(&q, len, 0, "an expert request with 0 data bytes for 10 rows");
	EXPECT_REQ_REFUSED_LEN(&q, len, 636, "an expert request with 636 data bytes for 10 rows");
	EXPECT_REQ_REFUSED_LEN(&q, len, 639, "an expert request with 639 data bytes for 10 rows");
	EXPECT_REQ_REFUSED_LEN(&q, len, 641, "an expert request with 641 data bytes for 10 rows");
	EXPECT_REQ_REFUSED_LEN(&q, len, 644, "an expert request with 644 data bytes for 10 rows");
	EXPECT_REQ_REFUSED_LEN(&q, len, 160, "an expert request with 160 data bytes for 10 rows");
	EXPECT_REQ_REFUSED_LEN(&q, len, SIZE_MAX, "an expert request with 18446744073709551615 "
						  "data bytes for 10 rows");
}

/*
 * On a daemon whose width and max_rows are large enough, rows * d_model *
 * sizeof(float) can exceed 64 bits: the wrapped size must not pass for the
 * data's length (the server would then read total_rows * d_model floats
 * from a buffer of data_len bytes). A size that fits is still accepted.
 */
static void test_req_data_size_cannot_wrap(void **state)
{
	const uint32_t wide = 0x80000000u;
	struct peer_expert_req q, ret;
	struct diag d = { { 0 } };

	(void)state;
	/* 2^31 rows of 2^31 floats: 2^64 bytes, 0 in 64 bits */
	req_init(&q);
	q.d_model = wide;
	q.n_bins = 1;
	q.bin[0] = (struct peer_bin){ 0, 0x80000000u };
	q.total_rows = 0x80000000u;
	ASSERT_ERRNO(req_decode(&q, peer_expert_req_size(1), 0, wide, UINT32_MAX, &ret, &d), EPROTO);
	expect_msg_at(&d, "an expert request with 0 data bytes for 2147483648 rows", __LINE__);

	/* (2^32 - 1)^2 floats: 4 (2^32 - 1)^2 mod 2^64 bytes */
	q.d_model = UINT32_MAX;
	q.bin[0].rows = UINT32_MAX;
	q.total_rows = UINT32_MAX;
	ASSERT_ERRNO(req_decode(&q, peer_expert_req_size(1), (size_t)0xfffffff800000004ull,
				UINT32_MAX, UINT32_MAX, &ret, NULL),
		     EPROTO);

	/* 2^31 - 1 rows of 2^31 floats are 2^64 - 2^33 bytes: fits, accepted at that size */
	q.d_model = wide;
	q.bin[0].rows = 0x7fffffffu;
	q.total_rows = 0x7fffffffu;
	ASSERT_OK(req_decode(&q, peer_expert_req_size(1), (size_t)0xfffffffe00000000ull, wide,
			     UINT32_MAX, &ret, NULL));
	ASSERT_EQ(ret.total_rows, 0x7fffffffu);
}

/* Each check runs before anything after it: the first fault found is the one reported. */
static void test_req_first_fault_reported(void **state)
{
	struct peer_expert_req q;

	(void)state;
	req_init(&q);
	q.layer = 7;
	q.d_model = 3;
	q.activation = 99;
	q.bin[0].rows = 0;
	EXPECT_REQ_REFUSED_LEN(&q, peer_expert_req_size(3), 1,
			       "an expert request for layer 7 of 2");
	q.layer = 0;
	EXPECT_REQ_REFUSED_LEN(&q, peer_expert_req_size(3), 1,
			       "an expert request of width 3; the model's is 16");
}

/* -------------------------------------------------------- expert reply */

/* A reply decodes field for field. */
static void test_reply_valid(void **state)
{
	struct peer_expert_reply rep, ret;

	(void)state;
	reply_init(&rep);
	snprintf(rep.why, sizeof(rep.why), "fine");
	ASSERT_OK(reply_decode(&rep, sizeof(rep), 640, &ret, NULL));
	ASSERT_EQ(ret.magic, PEER_PROTO_MAGIC);
	ASSERT_EQ(ret.status, 0);
	ASSERT_EQ(ret.call, 0x8877665544332211ull);
	ASSERT_EQ(ret.total_rows, 10);
	ASSERT_EQ(ret.d_model, D_MODEL);
	assert_string_equal(ret.why, "fine");
	/* a reply of no rows has no data */
	rep.total_rows = 0;
	EXPECT_REPLY_OK(&rep, 0);
}

static void test_reply_length_refused(void **state)
{
	struct peer_expert_reply rep;

	(void)state;
	reply_init(&rep);
	EXPECT_REPLY_REFUSED_LEN(&rep, 0, 640, "an expert reply of 0 bytes, not 184");
	EXPECT_REPLY_REFUSED_LEN(&rep, sizeof(rep) - 1, 640, "an expert reply of 183 bytes, not 184");
	EXPECT_REPLY_REFUSED_LEN(&rep, sizeof(rep) + 1, 640, "an expert reply of 185 bytes, not 184");
	EXPECT_REPLY_REFUSED_LEN(&rep, 24, 640, "an expert reply of 24 bytes, not 184");
}

static void test_reply_magic_refused(void **state)
{
	struct peer_expert_reply rep;

	(void)state;
	reply_init(&rep);
	rep.magic = PEER_PROTO_MAGIC + 1;
	EXPECT_REPLY_REFUSED(&rep, 640, "an expert reply without moed's magic");
	rep.status = -EIO;
	EXPECT_REPLY_REFUSED(&rep, 0, "an expert reply without moed's magic");
}

/* status is 0 or a -errno (-1..-4095); anything else is refused. */
static void test_reply_status_range(void **state)
{
	struct peer_expert_reply rep;

	(void)state;
	reply_init(&rep);
	rep.status = 1;
	EXPECT_REPLY_REFUSED(&rep, 640, "an expert reply with status 1");
	rep.status = INT32_MAX;
	EXPECT_REPLY_REFUSED(&rep, 640, "an expert reply with status 2147483647");
	rep.status = -4096;
	EXPECT_REPLY_REFUSED(&rep, 0, "an expert reply with status -4096");
	rep.status = INT32_MIN;
	EXPECT_REPLY_REFUSED(&rep, 0, "an expert reply with status -2147483648");
	rep.status = -4095;
	EXPECT_REPLY_OK(&rep, 0);
	rep.status = -1;
	EXPECT_REPLY_OK(&rep, 0);
	rep.status = -ENOMEM;
	EXPECT_REPLY_OK(&rep, 0);
}

/* A success carries exactly its rows' bytes; a failure may carry anything (it is not read). */
static void test_reply_data_len(void **state)
{
	struct peer_expert_reply rep;

	(void)state;
	reply_init(&rep);
	EXPECT_REPLY_OK(&rep, 640);
	EXPECT_REPLY_REFUSED(&rep, 0, "an expert reply with 0 data bytes for 10 rows of 16");
	EXPECT_REPLY_REFUSED(&rep, 636, "an expert reply with 636 data bytes for 10 rows of 16");
	EXPECT_REPLY_REFUSED(&rep, 644, "an expert reply with 644 data bytes for 10 rows of 16");
	EXPECT_REPLY_REFUSED(&rep, SIZE_MAX, "an expert reply with 18446744073709551615 data bytes "
					     "for 10 rows of 16");
	rep.status = -EIO;
	EXPECT_REPLY_OK(&rep, 0);
	EXPECT_REPLY_OK(&rep, 640);
	EXPECT_REPLY_OK(&rep, 12345);
	EXPECT_REPLY_OK(&rep, SIZE_MAX);
}

/*
 * total_rows and d_model of a reply are the peer's: their byte size can
 * exceed 64 bits, and the wrapped size must not pass for the data's length.
 */
static void test_reply_data_size_cannot_wrap(void **state)
{
	struct peer_expert_reply rep;

	(void)state;
	reply_init(&rep);
	rep.total_rows = 0x80000000u;
	rep.d_model = 0x80000000u;
	EXPECT_REPLY_REFUSED(&rep, 0, "an expert reply with 0 data bytes for 2147483648 rows of "
				      "2147483648");
	rep.total_rows = UINT32_MAX;
	rep.d_model = UINT32_MAX;
	EXPECT_REPLY_REFUSED(&rep, (size_t)0xfffffff800000004ull,
			     "an expert reply with 18446744039349813252 data bytes for 4294967295 "
			     "rows of 4294967295");
	rep.total_rows = 0x7fffffffu;
	rep.d_model = 0x80000000u;
	EXPECT_REPLY_OK(&rep, (size_t)0xfffffffe00000000ull);
}

/* why arrives NUL-ended even when the sender filled all of it, on success and failure. */
static void test_reply_why_nul_ended(void **state)
{
	struct peer_expert_reply rep, ret;

	(void)state;
	reply_init(&rep);
	memset(rep.why, 'x', sizeof(rep.why));
	ASSERT_OK(reply_decode(&rep, sizeof(rep), 640, &ret, NULL));
	ASSERT_EQ(strlen(ret.why), sizeof(ret.why) - 1);
	rep.status = -EINVAL;
	ASSERT_OK(reply_decode(&rep, sizeof(rep), 0, &ret, NULL));
	ASSERT_EQ(strlen(ret.why), sizeof(ret.why) - 1);
	ASSERT_EQ(ret.why[0], 'x');
	ASSERT_EQ(ret.status, -EINVAL);
}

/* ------------------------------------------------------------------ HELLO */

static void test_hello_valid(void **state)
{
	struct peer_hello h, ret;

	(void)state;
	hello_init(&h);
	ASSERT_OK(hello_decode(&h, sizeof(h), &ret, NULL));
	ASSERT_EQ(memcmp(&ret, &h, sizeof(h)), 0);
	assert_string_equal(ret.name, "host-a");
	ASSERT_EQ(ret.model.n_layers, N_LAYERS);
	ASSERT_EQ(ret.model.d_model, D_MODEL);
	ASSERT_EQ(ret.max_experts, 128);
	ASSERT_EQ(ret.model.hash[15], 0xcf);
}

static void test_hello_refused(void **state)
{
	struct peer_hello h;

	(void)state;
	hello_init(&h);
	EXPECT_HELLO_REFUSED(&h, 0, "a HELLO of 0 bytes, not 68");
	EXPECT_HELLO_REFUSED(&h, sizeof(h) - 1, "a HELLO of 67 bytes, not 68");
	EXPECT_HELLO_REFUSED(&h, sizeof(h) + 1, "a HELLO of 69 bytes, not 68");
	h.magic = 0x12345678;
	EXPECT_HELLO_REFUSED(&h, sizeof(h), "a HELLO without moed's magic (0x12345678)");
	hello_init(&h);
	h.version = 0;
	EXPECT_HELLO_REFUSED(&h, sizeof(h), "a HELLO of protocol version 0; this moed speaks 1");
	h.version = PEER_PROTO_VERSION + 1;
	EXPECT_HELLO_REFUSED(&h, sizeof(h), "a HELLO of protocol version 2; this moed speaks 1");
	h.version = UINT16_MAX;
	EXPECT_HELLO_REFUSED(&h, sizeof(h), "a HELLO of protocol version 65535; this moed speaks 1");
	/* the magic is checked before the version */
	h.magic = 0;
	EXPECT_HELLO_REFUSED(&h, sizeof(h), "a HELLO without moed's magic (0x00000000)");
}

/* name arrives NUL-ended when the sender filled all 32 bytes; the rest is untouched. */
static void test_hello_name_nul_ended(void **state)
{
	struct peer_hello h, ret;

	(void)state;
	hello_init(&h);
	memset(h.name, 'n', sizeof(h.name));
	ASSERT_OK(hello_decode(&h, sizeof(h), &ret, NULL));
	ASSERT_EQ(strlen(ret.name), sizeof(ret.name) - 1);
	ASSERT_EQ(ret.name[30], 'n');
	ASSERT_EQ(ret.max_experts, 128);
}

/* a peer's text reaches logs and JSON: control bytes and non-ASCII become '?' */
static void test_hello_name_printable(void **state)
{
	struct peer_hello h, ret;

	(void)state;
	hello_init(&h);
	memcpy(h.name, "a\nb\x1b[31m\xff", 10);
	ASSERT_OK(hello_decode(&h, sizeof(h), &ret, NULL));
	assert_string_equal(ret.name, "a?b?[31m?");
}

static void test_hello_reply_valid(void **state)
{
	struct peer_hello_reply h, ret;

	(void)state;
	hello_reply_init(&h);
	ASSERT_OK(hello_reply_decode(&h, sizeof(h), &ret, NULL));
	ASSERT_EQ(memcmp(&ret, &h, sizeof(h)), 0);
	ASSERT_EQ(ret.status, 0);
	assert_string_equal(ret.name, "host-b");
	assert_string_equal(ret.why, "");
	/* a refusal is a valid reply */
	h.status = -ESTALE;
	snprintf(h.why, sizeof(h.why), "it serves another model");
	ASSERT_OK(hello_reply_decode(&h, sizeof(h), &ret, NULL));
	ASSERT_EQ(ret.status, -ESTALE);
	assert_string_equal(ret.why, "it serves another model");
	h.status = -4095;
	ASSERT_OK(hello_reply_decode(&h, sizeof(h), &ret, NULL));
}

static void test_hello_reply_refused(void **state)
{
	struct peer_hello_reply h;

	(void)state;
	hello_reply_init(&h);
	EXPECT_HELLO_REPLY_REFUSED(&h, 0, "a HELLO reply of 0 bytes, not 324");
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h) - 1, "a HELLO reply of 323 bytes, not 324");
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h) + 1, "a HELLO reply of 325 bytes, not 324");
	/* a HELLO where its reply is due */
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(struct peer_hello), "a HELLO reply of 68 bytes, not 324");
	h.magic = __builtin_bswap32(PEER_PROTO_MAGIC);
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h), "a HELLO reply without moed's magic (0x4d4f4550)");
	hello_reply_init(&h);
	h.version = 2;
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h),
				   "a HELLO reply of protocol version 2; this moed speaks 1");
	hello_reply_init(&h);
	h.status = 1;
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h), "a HELLO reply with status 1");
	h.status = -4096;
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h), "a HELLO reply with status -4096");
	h.status = INT32_MIN;
	EXPECT_HELLO_REPLY_REFUSED(&h, sizeof(h), "a HELLO reply with status -2147483648");
}

/* name and why arrive NUL-ended when the sender filled them. */
static void test_hello_reply_strings_nul_ended(void **state)
{
	struct peer_hello_reply h, ret;

	(void)state;
	hello_reply_init(&h);
	h.status = -EINVAL;
	memset(h.name, 'n', sizeof(h.name));
	memset(h.why, 'w', sizeof(h.why));
	ASSERT_OK(hello_reply_decode(&h, sizeof(h), &ret, NULL));
	ASSERT_EQ(strlen(ret.name), sizeof(ret.name) - 1);
	ASSERT_EQ(strlen(ret.why), sizeof(ret.why) - 1);
	ASSERT_EQ(ret.why[0], 'w');
	ASSERT_EQ(ret.status, -EINVAL);
	ASSERT_EQ(ret.model.n_layers, N_LAYERS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layouts),
		cmocka_unit_test(test_req_valid),
		cmocka_unit_test(test_req_valid_edges),
		cmocka_unit_test(test_req_header_length_refused),
		cmocka_unit_test(test_req_n_bins_refused),
		cmocka_unit_test(test_req_magic_refused),
		cmocka_unit_test(test_req_layer_out_of_range_refused),
		cmocka_unit_test(test_req_d_model_mismatch_refused),
		cmocka_unit_test(test_req_activation_refused),
		cmocka_unit_test(test_req_experts_refused),
		cmocka_unit_test(test_req_bin_without_rows_refused),
		cmocka_unit_test(test_req_total_rows_mismatch_refused),
		cmocka_unit_test(test_req_rows_over_max_refused),
		cmocka_unit_test(test_req_data_len_mismatch_refused),
		cmocka_unit_test(test_req_data_size_cannot_wrap),
		cmocka_unit_test(test_req_first_fault_reported),
		cmocka_unit_test(test_reply_valid),
		cmocka_unit_test(test_reply_length_refused),
		cmocka_unit_test(test_reply_magic_refused),
		cmocka_unit_test(test_reply_status_range),
		cmocka_unit_test(test_reply_data_len),
		cmocka_unit_test(test_reply_data_size_cannot_wrap),
		cmocka_unit_test(test_reply_why_nul_ended),
		cmocka_unit_test(test_hello_valid),
		cmocka_unit_test(test_hello_refused),
		cmocka_unit_test(test_hello_name_nul_ended),
		cmocka_unit_test(test_hello_name_printable),
		cmocka_unit_test(test_hello_reply_valid),
		cmocka_unit_test(test_hello_reply_refused),
		cmocka_unit_test(test_hello_reply_strings_nul_ended),
	};

	return cmocka_run_group_tests_name("peer_proto", tests, NULL, NULL);
}
