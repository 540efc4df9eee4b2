/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the safetensors reader: every input is a file image fed
 * to st_file_open_memory(). An accepted image must honour what the reader
 * promises (tensors sorted by name, findable, every byte range inside the
 * image, element counts consistent with the dtype) and convert without faults;
 * a refused one must come with a diag. Build with
 * clang -fsanitize=fuzzer,address,undefined.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Convert at most this many elements per tensor, to keep each run fast. */
#define FUZZ_CONVERT_MAX 4096

static void fuzz_check(const struct st_file *f, size_t size)
{
	static float fbuf[FUZZ_CONVERT_MAX];
	static int32_t ibuf[FUZZ_CONVERT_MAX];
	const char *key, *value;
	size_t n = st_file_tensor_count(f);

	for (size_t i = 0; i < n; i++) {
		const struct st_tensor *t = st_file_tensor_at(f, i);
		struct st_tensor head;

		if (!t || !t->name[0] || st_file_find(f, t->name) != t)
			abort();
		if (i && strcmp(st_file_tensor_at(f, i - 1)->name, t->name) >= 0)
			abort();
		if (t->ndim > ST_MAX_DIMS || t->n_bytes > size ||
		    t->n_bytes != t->n_elements * st_dtype_size(t->dtype))
			abort();
		/* The range lies inside the copy; compare sizes, not foreign pointers. */
		if (t->n_bytes)
			(void)((const volatile uint8_t *)t->data)[t->n_bytes - 1];
		head = *t;
		if (head.n_elements > FUZZ_CONVERT_MAX)
			head.n_elements = FUZZ_CONVERT_MAX;
		(void)st_tensor_to_f32(&head, fbuf, NULL);
		(void)st_tensor_to_i32(&head, ibuf, NULL);
	}
	for (size_t i = 0; i < st_file_metadata_count(f); i++) {
		key = value = NULL;
		st_file_metadata_at(f, i, &key, &value);
		if (!key || !value || st_file_metadata(f, key) != value)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct diag d = { 0 };
	struct st_file *f = NULL;
	int r;

	r = st_file_open_memory(data, size, "fuzz", &f, &d);
	if (r < 0) {
		if (f || !d.msg[0])
			abort();
		return 0;
	}
	fuzz_check(f, size);
	st_file_free(f);
	return 0;
}
