/* SPDX-License-Identifier: MIT */
/* peer_identity: the model identity peers compare; see peer_identity.h. */
#include "peers/peer_identity.h"

#include <string.h>
#include <xxhash.h>

#include "compute/matmul.h"
#include "store/model_identity.h"

#define SAMPLES 16
#define RUN 64 /* floats per sample */

/*
 * @n values of dtype @dt at @p (NULL: absent, which is hashed too) by their
 * sampled runs, as float32: a host that keeps an expert in BF16 and one that
 * widened it (expert_dtype = f32) hold the same values and agree.
 */
static void hash_values(XXH3_state_t *st, const void *p, enum weight_dtype dt, uint64_t n)
{
	float run[RUN];

	model_identity_hash_u64(st, p ? n : UINT64_MAX);
	if (!p || !n)
		return;
	for (uint64_t i = 0; i < SAMPLES; i++) {
		uint64_t at = n <= RUN ? 0 : (n - RUN) * i / (SAMPLES - 1);
		uint64_t len = n < RUN ? n : RUN;

		matmul_widen((const uint8_t *)p + at * weight_dtype_size(dt), dt, len, run);
		XXH3_128bits_update(st, run, sizeof(float) * len);
		if (n <= RUN)
			break;
	}
}

static void hash_floats(XXH3_state_t *st, const float *p, uint64_t n)
{
	hash_values(st, p, WEIGHT_F32, n);
}

static void hash_ffn(XXH3_state_t *st, const struct ffn_weights *f, uint32_t d)
{
	model_identity_hash_u64(st, f->d_ff);
	hash_values(st, f->w1, f->dtype, (uint64_t)f->d_ff * d);
	hash_values(st, f->w2, f->dtype, (uint64_t)f->d_ff * d);
	hash_values(st, f->w3, f->dtype, (uint64_t)f->d_ff * d);
	hash_floats(st, f->b1, f->d_ff);
	hash_floats(st, f->b2, d);
}

void peer_identity(const struct moe_model *m, const char *store_identity, uint8_t out[16])
{
	XXH3_state_t *st = XXH3_createState();
	XXH128_canonical_t canon;

	if (!st) {
		/* no memory for 600 bytes: an identity nobody shares, so no peer accepts us */
		memset(out, 0xff, 16);
		return;
	}
	XXH3_128bits_reset(st);
	XXH3_128bits_update(st, store_identity, strlen(store_identity));
	model_identity_hash_u64(st, moe_model_n_layers(m));
	for (uint32_t l = 0; l < moe_model_n_layers(m); l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		model_identity_hash_u64(st, L->d_model);
		model_identity_hash_u64(st, L->n_experts);
		hash_floats(st, L->router_w, (uint64_t)L->n_experts * L->d_model);
		for (uint32_t e = 0; e < L->n_experts; e++)
			hash_ffn(st, &L->experts[e].ffn, L->d_model);
		if (L->has_shared) {
			hash_ffn(st, &L->shared, L->d_model);
			hash_floats(st, L->shared_gate, L->d_model);
		}
	}
	XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
	memcpy(out, canon.digest, 16);
	XXH3_freeState(st);
}
