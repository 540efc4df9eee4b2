/* SPDX-License-Identifier: MIT */
/* peer_identity: the model identity peers compare; see peer_identity.h. */
#include "peers/peer_identity.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

#include "model/safetensors.h"
#include "store/model_identity.h"

#define SAMPLES 16
#define RUN 64 /* elements per sample */

/* The tensor's name, dtype, size and sampled runs of its bytes. */
static void hash_tensor(XXH3_state_t *st, const struct st_tensor *t)
{
	const size_t size = st_dtype_size(t->dtype);
	const uint64_t n = t->n_elements;

	model_identity_hash_u64(st, strlen(t->name));
	XXH3_128bits_update(st, t->name, strlen(t->name));
	model_identity_hash_u64(st, (uint64_t)t->dtype);
	model_identity_hash_u64(st, n);
	for (uint64_t i = 0; i < SAMPLES && n; i++) {
		uint64_t at = n <= RUN ? 0 : (n - RUN) * i / (SAMPLES - 1);
		uint64_t len = n < RUN ? n : RUN;

		XXH3_128bits_update(st, (const uint8_t *)t->data + at * size, len * size);
		if (n <= RUN)
			break;
	}
}

int peer_identity(const char *model_path, const char *store_identity, uint8_t out[16],
		  struct diag *d)
{
	XXH3_state_t *st;
	XXH128_canonical_t canon;
	struct st_set *set;
	size_t n;
	int r;

	r = st_set_open(model_path, &set, d);
	if (r < 0)
		return r;
	st = XXH3_createState();
	if (!st) {
		st_set_free(set);
		return diag_set(d, -ENOMEM, "out of memory");
	}
	XXH3_128bits_reset(st);
	XXH3_128bits_update(st, store_identity, strlen(store_identity));
	n = st_set_tensor_count(set);
	model_identity_hash_u64(st, n);
	for (size_t i = 0; i < n; i++)
		hash_tensor(st, st_set_tensor_at(set, i));
	XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
	memcpy(out, canon.digest, 16);
	XXH3_freeState(st);
	st_set_free(set);
	return 0;
}
