/* SPDX-License-Identifier: MIT */
/* model_identity: checkpoint identities and file fingerprints; see model_identity.h. */
#include "store/model_identity.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

void model_identity_hash_u64(XXH3_state_t *st, uint64_t v)
{
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	XXH3_128bits_update(st, le, sizeof(le));
}

void model_identity(const struct st_set *s, uint8_t out[MODEL_IDENTITY_BYTES])
{
	XXH3_state_t *st = XXH3_createState();
	XXH128_canonical_t canon;
	XXH128_hash_t h;

	memset(out, 0, MODEL_IDENTITY_BYTES);
	if (!st)
		return; /* all zeroes: matches no store, so the weights are read */
	XXH3_128bits_reset(st);
	model_identity_hash_u64(st, st_set_file_count(s));
	for (size_t i = 0; i < st_set_file_count(s); i++) {
		const struct st_file *f = st_set_file_at(s, i);
		const void *json;
		size_t len;

		st_file_header(f, &json, &len);
		model_identity_hash_u64(st, st_file_size(f));
		model_identity_hash_u64(st, len);
		XXH3_128bits_update(st, json, len);
	}
	h = XXH3_128bits_digest(st);
	XXH3_freeState(st);
	XXH128_canonicalFromHash(&canon, h);
	memcpy(out, canon.digest, MODEL_IDENTITY_BYTES);
}

void model_identity_hex(const uint8_t id[MODEL_IDENTITY_BYTES], char *buf)
{
	for (int i = 0; i < MODEL_IDENTITY_BYTES; i++)
		sprintf(buf + 2 * i, "%02x", id[i]);
}

int file_print_of(const char *path, struct file_print *p)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	*p = (struct file_print){
		.dev = st.st_dev,
		.ino = st.st_ino,
		.size = (uint64_t)st.st_size,
		.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
	};
	return 0;
}
