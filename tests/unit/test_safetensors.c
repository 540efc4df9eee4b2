/* SPDX-License-Identifier: MIT */
/*
 * Tests of the safetensors reader, writer and tensor sets: a writer->reader
 * round trip, the F16/BF16/F64/integer conversions at their edges, refusal (with
 * a diag naming the file and the tensor) of every kind of malformed header,
 * built as images in memory, real files through st_file_open, and sharded
 * checkpoints with an index in a temporary folder.
 */
#include "test_assert.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/safetensors.h"

/* ---------------------------------------------------------------- helpers */

static int fd_count(void)
{
	struct dirent *de;
	DIR *dir;
	int n = 0;

	dir = opendir("/proc/self/fd");
	if (!dir)
		return -1;
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.')
			n++;
	closedir(dir);
	return n - 1; /* the DIR's own fd */
}

static uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * A file image: the 8-byte header length @hlen (which may lie), @json, then
 * @data (or zeros when NULL) of @data_len bytes. Free with free().
 */
static uint8_t *image_raw(uint64_t hlen, const char *json, const void *data, size_t data_len,
			  size_t *ret_len)
{
	size_t jlen = strlen(json), len = 8 + jlen + data_len;
	uint8_t *img = calloc(1, len);

	assert_non_null(img);
	put_le64(img, hlen);
	memcpy(img + 8, json, jlen);
	if (data)
		memcpy(img + 8 + jlen, data, data_len);
	*ret_len = len;
	return img;
}

/* A well-formed image: the true header length. */
static uint8_t *image_new(const char *json, const void *data, size_t data_len, size_t *ret_len)
{
	return image_raw(strlen(json), json, data, data_len, ret_len);
}

static struct st_file *open_image(const char *json, const void *data, size_t data_len)
{
	struct diag d = { 0 };
	struct st_file *f = NULL;
	size_t len;
	uint8_t *img = image_new(json, data, data_len, &len);
	int r;

	r = st_file_open_memory(img, len, "good.safetensors", &f, &d);
	free(img);
	if (r < 0)
		fail_msg("st_file_open_memory: %d (%s): %s", r, strerror(-r), d.msg);
	assert_non_null(f);
	return f;
}

/*
 * Feed @img to the reader and check it is refused with -@err, that the out
 * parameter is untouched, and that the diag names the file and holds @needle
 * (if not NULL) and @needle2 (if not NULL).
 */
static void expect_refused_img(const uint8_t *img, size_t len, int err, const char *needle,
			       const char *needle2)
{
	struct diag d = { 0 };
	struct st_file *const sentinel = (struct st_file *)(uintptr_t)0x5eed;
	struct st_file *f = sentinel;
	int r;

	r = st_file_open_memory(img, len, "bad.safetensors", &f, &d);
	if (r != -err)
		fail_msg("expected -%d (%s), got %d (%s); diag: %s", err, strerror(err), r,
			 r < 0 ? strerror(-r) : "success", d.msg);
	assert_ptr_equal(f, sentinel);
	if (!strstr(d.msg, "bad.safetensors"))
		fail_msg("diag does not name the file: '%s'", d.msg);
	if (needle && !strstr(d.msg, needle))
		fail_msg("diag does not mention '%s': '%s'", needle, d.msg);
	if (needle2 && !strstr(d.msg, needle2))
		fail_msg("diag does not mention '%s': '%s'", needle2, d.msg);
}

static void expect_refused(const char *json, size_t data_len, int err, const char *needle)
{
	size_t len;
	uint8_t *img = image_new(json, NULL, data_len, &len);

	expect_refused_img(img, len, err, needle, NULL);
	free(img);
}

/* A fresh folder under $TMPDIR (or /tmp). */
static char *tmpdir_new(void)
{
	const char *base = getenv("TMPDIR");
	char *path;

	if (!base || !base[0])
		base = "/tmp";
	path = malloc(strlen(base) + sizeof("/test_safetensors.XXXXXX"));
	assert_non_null(path);
	strcpy(path, base);
	strcat(path, "/test_safetensors.XXXXXX");
	if (!mkdtemp(path))
		fail_msg("mkdtemp %s: %s", path, strerror(errno));
	return path;
}

/* Remove the (flat) folder made by tmpdir_new() and everything in it. */
static void tmpdir_free(char *path)
{
	struct dirent *de;
	DIR *dir;
	char buf[4096];

	dir = opendir(path);
	assert_non_null(dir);
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(buf, sizeof(buf), "%s/%s", path, de->d_name);
		assert_int_equal(unlink(buf), 0);
	}
	closedir(dir);
	assert_int_equal(rmdir(path), 0);
	free(path);
}

static char *path_in(const char *dir, const char *name)
{
	char *p = malloc(strlen(dir) + 1 + strlen(name) + 1);

	assert_non_null(p);
	strcpy(p, dir);
	strcat(p, "/");
	strcat(p, name);
	return p;
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	if (len)
		assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void write_text(const char *dir, const char *name, const char *text)
{
	char *p = path_in(dir, name);

	write_bytes(p, text, strlen(text));
	free(p);
}

/* ---------------------------------------------------------------- dtypes */

static void test_dtype_table(void **state)
{
	enum st_dtype dt = ST_U8;

	(void)state;
	for (unsigned i = 0; i < ST_DTYPE_COUNT; i++) {
		const char *name = st_dtype_name((enum st_dtype)i);

		assert_non_null(name);
		assert_true(st_dtype_size((enum st_dtype)i) > 0);
		ASSERT_OK(st_dtype_from_name(name, &dt));
		ASSERT_EQ(dt, i);
	}
	ASSERT_EQ(st_dtype_size(ST_BF16), 2);
	ASSERT_EQ(st_dtype_size(ST_F64), 8);
	assert_string_equal(st_dtype_name(ST_BF16), "BF16");
	assert_null(st_dtype_name(ST_DTYPE_COUNT));
	assert_null(st_dtype_name((enum st_dtype)-1));
	ASSERT_EQ(st_dtype_size(ST_DTYPE_COUNT), 0);
	dt = ST_I8;
	ASSERT_ERRNO(st_dtype_from_name("F8_E4M3", &dt), EINVAL);
	ASSERT_ERRNO(st_dtype_from_name("f32", &dt), EINVAL);
	ASSERT_ERRNO(st_dtype_from_name(NULL, &dt), EINVAL);
	ASSERT_EQ(dt, ST_I8); /* untouched on failure */
}

/* ---------------------------------------------------------------- round trip */

static void test_roundtrip(void **state)
{
	const float w32[6] = { 1.5f, -2.25f, 0.0f, 3.0e-39f, 1e30f, -0.0f };
	const uint16_t wbf16[4] = { 0x3f80, 0xc000, 0x7f80, 0x0001 }; /* 1, -2, inf, 2^-133 */
	const uint16_t wf16[4] = { 0x3c00, 0x0001, 0xfc00, 0x7bff };  /* 1, 2^-24, -inf, 65504 */
	const int32_t idx[3] = { -1, 0, INT32_MAX };
	const uint64_t s23[2] = { 2, 3 }, s4[1] = { 4 }, s22[2] = { 2, 2 }, s3[1] = { 3 };
	const uint64_t s05[2] = { 0, 5 };
	const float one = 42.0f;
	const char *names[] = { "empty", "idx", "scalar", "w.bf16", "w.f16", "w.f32" };
	struct st_writer *w = NULL;
	struct st_file *f = NULL;
	struct diag d = { 0 };
	const struct st_tensor *t;
	const char *key, *value;
	char *dir = tmpdir_new(), *path = path_in(dir, "rt.safetensors");
	char *tmp = path_in(dir, "rt.safetensors.tmp");
	float out[6];
	int32_t iout[3];
	uint8_t head[8];
	uint64_t hlen;
	struct stat st;
	int fds = fd_count();
	FILE *fp;

	(void)state;
	ASSERT_OK(st_writer_new(&w));
	ASSERT_OK(st_writer_add(w, "w.f32", ST_F32, 2, s23, w32));
	ASSERT_OK(st_writer_add(w, "w.bf16", ST_BF16, 1, s4, wbf16));
	ASSERT_OK(st_writer_add(w, "w.f16", ST_F16, 2, s22, wf16));
	ASSERT_OK(st_writer_add(w, "idx", ST_I32, 1, s3, idx));
	ASSERT_OK(st_writer_add(w, "empty", ST_F32, 2, s05, NULL));
	ASSERT_OK(st_writer_add(w, "scalar", ST_F32, 0, NULL, &one));
	ASSERT_ERRNO(st_writer_add(w, "idx", ST_I32, 1, s3, idx), EEXIST);
	ASSERT_ERRNO(st_writer_add(w, "", ST_I32, 1, s3, idx), EINVAL);
	ASSERT_ERRNO(st_writer_add(w, "__metadata__", ST_I32, 1, s3, idx), EINVAL);
	ASSERT_ERRNO(st_writer_add(w, "x", ST_DTYPE_COUNT, 1, s3, idx), EINVAL);
	ASSERT_ERRNO(st_writer_add(w, "x", ST_I32, ST_MAX_DIMS + 1, s3, idx), EINVAL);
	ASSERT_ERRNO(st_writer_add(w, "x", ST_I32, 1, s3, NULL), EINVAL);
	ASSERT_OK(st_writer_set_metadata(w, "format", "pt"));
	ASSERT_OK(st_writer_set_metadata(w, "moed.router", "tmp"));
	ASSERT_OK(st_writer_set_metadata(w, "moed.router", "topk")); /* replaces */
	ASSERT_OK(st_writer_write(w, path, &d));
	w = st_writer_free(w);
	assert_null(w);
	assert_int_equal(stat(tmp, &st), -1); /* renamed away */

	/* The header length is a multiple of 8 and the file holds exactly the data. */
	fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(head, 1, 8, fp), 8);
	fclose(fp);
	hlen = 0;
	for (unsigned i = 0; i < 8; i++)
		hlen |= (uint64_t)head[i] << (8 * i);
	ASSERT_EQ(hlen % 8, 0);
	assert_int_equal(stat(path, &st), 0);
	ASSERT_EQ(st.st_size, 8 + hlen + sizeof(w32) + sizeof(wbf16) + sizeof(wf16) +
				      sizeof(idx) + sizeof(one));

	ASSERT_OK(st_file_open(path, &f, &d));
	assert_string_equal(st_file_path(f), path);
	ASSERT_EQ(st_file_tensor_count(f), 6);
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(st_file_tensor_at(f, i)->name, names[i]);
	assert_null(st_file_tensor_at(f, 6));
	assert_null(st_file_find(f, "nope"));
	assert_null(st_file_find(f, ""));

	t = st_file_find(f, "w.f32");
	assert_non_null(t);
	ASSERT_EQ(t->dtype, ST_F32);
	ASSERT_EQ(t->ndim, 2);
	ASSERT_EQ(t->shape[0], 2);
	ASSERT_EQ(t->shape[1], 3);
	ASSERT_EQ(t->n_elements, 6);
	ASSERT_EQ(t->n_bytes, sizeof(w32));
	assert_memory_equal(t->data, w32, sizeof(w32));
	ASSERT_OK(st_tensor_to_f32(t, out, &d));
	for (size_t i = 0; i < 6; i++)
		ASSERT_EQ(f32_bits(out[i]), f32_bits(w32[i]));

	t = st_file_find(f, "w.bf16");
	assert_non_null(t);
	ASSERT_EQ(t->dtype, ST_BF16);
	ASSERT_EQ(t->n_bytes, 8);
	ASSERT_OK(st_tensor_to_f32(t, out, &d));
	ASSERT_EQ(f32_bits(out[0]), f32_bits(1.0f));
	ASSERT_EQ(f32_bits(out[1]), f32_bits(-2.0f));
	assert_true(isinf(out[2]) && out[2] > 0);
	ASSERT_EQ(f32_bits(out[3]), f32_bits(0x1p-133f));

	t = st_file_find(f, "w.f16");
	assert_non_null(t);
	ASSERT_EQ(t->dtype, ST_F16);
	ASSERT_OK(st_tensor_to_f32(t, out, &d));
	ASSERT_EQ(f32_bits(out[0]), f32_bits(1.0f));
	ASSERT_EQ(f32_bits(out[1]), f32_bits(0x1p-24f));
	assert_true(isinf(out[2]) && out[2] < 0);
	ASSERT_EQ(f32_bits(out[3]), f32_bits(65504.0f));

	t = st_file_find(f, "idx");
	assert_non_null(t);
	ASSERT_OK(st_tensor_to_i32(t, iout, &d));
	assert_memory_equal(iout, idx, sizeof(idx));

	t = st_file_find(f, "empty");
	assert_non_null(t);
	ASSERT_EQ(t->n_elements, 0);
	ASSERT_EQ(t->n_bytes, 0);
	ASSERT_OK(st_tensor_to_f32(t, out, &d));

	t = st_file_find(f, "scalar");
	assert_non_null(t);
	ASSERT_EQ(t->ndim, 0);
	ASSERT_EQ(t->n_elements, 1);
	ASSERT_OK(st_tensor_to_f32(t, out, &d));
	ASSERT_EQ(f32_bits(out[0]), f32_bits(42.0f));

	ASSERT_EQ(st_file_metadata_count(f), 2);
	assert_string_equal(st_file_metadata(f, "format"), "pt");
	assert_string_equal(st_file_metadata(f, "moed.router"), "topk");
	assert_null(st_file_metadata(f, "moed.top_k"));
	st_file_metadata_at(f, 0, &key, &value);
	assert_string_equal(key, "format");
	assert_string_equal(value, "pt");
	key = value = NULL;
	st_file_metadata_at(f, 2, &key, &value); /* out of range: untouched */
	assert_null(key);
	assert_null(value);
	assert_string_equal(d.msg, "");

	assert_null(st_file_free(f));
	assert_null(st_file_free(NULL));
	assert_null(st_writer_free(NULL));
	free(tmp);
	free(path);
	tmpdir_free(dir);
	ASSERT_EQ(fd_count(), fds);
}

/* A writer with nothing in it writes a valid file with an empty data section. */
static void test_write_empty(void **state)
{
	struct st_writer *w = NULL;
	struct st_file *f = NULL;
	struct diag d = { 0 };
	char *dir = tmpdir_new(), *path = path_in(dir, "empty.safetensors");
	char *bad = path_in(dir, "no/such/folder.safetensors");
	char *badtmp = path_in(dir, "no/such/folder.safetensors.tmp");
	struct stat st;
	int fds = fd_count();

	(void)state;
	ASSERT_OK(st_writer_new(&w));
	ASSERT_OK(st_writer_write(w, path, &d));
	ASSERT_ERRNO(st_writer_write(w, bad, &d), ENOENT);
	assert_non_null(strstr(d.msg, "no/such/folder"));
	assert_int_equal(stat(badtmp, &st), -1);
	st_writer_free(w);

	diag_clear(&d);
	ASSERT_OK(st_file_open(path, &f, &d));
	ASSERT_EQ(st_file_tensor_count(f), 0);
	ASSERT_EQ(st_file_metadata_count(f), 0);
	assert_null(st_file_find(f, "x"));
	st_file_free(f);
	free(badtmp);
	free(bad);
	free(path);
	tmpdir_free(dir);
	ASSERT_EQ(fd_count(), fds);
}

/* ---------------------------------------------------------------- conversions */

static void test_f16_conversions(void **state)
{
	static const struct {
		uint16_t h;
		float f;
	} cases[] = {
		{ 0x0000, 0.0f },	   { 0x8000, -0.0f },	     { 0x3c00, 1.0f },
		{ 0xc000, -2.0f },	   { 0x3555, 0x1.554p-2f },  { 0x0001, 0x1p-24f },
		{ 0x8001, -0x1p-24f },	   { 0x03ff, 0x1.ff8p-15f }, { 0x0400, 0x1p-14f },
		{ 0x7bff, 65504.0f },	   { 0xfbff, -65504.0f },    { 0x7c00, INFINITY },
		{ 0xfc00, -INFINITY },	   { 0x0200, 0x1p-15f },
	};
	const size_t n = sizeof(cases) / sizeof(cases[0]);
	uint8_t data[2 * 32];
	char json[128];
	float out[32];
	struct st_file *f;

	(void)state;
	for (size_t i = 0; i < n; i++) {
		data[2 * i] = (uint8_t)cases[i].h;
		data[2 * i + 1] = (uint8_t)(cases[i].h >> 8);
	}
	/* Two NaNs after the table: quiet and signalling, either sign. */
	data[2 * n] = 0x00, data[2 * n + 1] = 0x7e;
	data[2 * n + 2] = 0x01, data[2 * n + 3] = 0xfc;
	snprintf(json, sizeof(json), "{\"h\":{\"dtype\":\"F16\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}",
		 n + 2, 2 * (n + 2));
	f = open_image(json, data, 2 * (n + 2));
	ASSERT_OK(st_tensor_to_f32(st_file_find(f, "h"), out, NULL));
	for (size_t i = 0; i < n; i++)
		if (f32_bits(out[i]) != f32_bits(cases[i].f))
			fail_msg("f16 0x%04x -> %a (0x%08x), expected %a", cases[i].h, (double)out[i],
				 f32_bits(out[i]), (double)cases[i].f);
	assert_true(isnan(out[n]));
	ASSERT_EQ(f32_bits(out[n]), 0x7fc00000); /* quiet NaN stays quiet */
	assert_true(isnan(out[n + 1]));
	assert_true(signbit(out[n + 1]));
	st_file_free(f);
}

static void test_bf16_conversions(void **state)
{
	static const uint16_t in[] = { 0x0000, 0x8000, 0x3f80, 0xbfc0, 0x0001, 0x007f, 0x0080,
				       0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0x4049 };
	const size_t n = sizeof(in) / sizeof(in[0]);
	uint8_t data[2 * 16];
	char json[128];
	float out[16];
	struct st_file *f;

	(void)state;
	for (size_t i = 0; i < n; i++) {
		data[2 * i] = (uint8_t)in[i];
		data[2 * i + 1] = (uint8_t)(in[i] >> 8);
	}
	snprintf(json, sizeof(json), "{\"b\":{\"dtype\":\"BF16\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}",
		 n, 2 * n);
	f = open_image(json, data, 2 * n);
	ASSERT_OK(st_tensor_to_f32(st_file_find(f, "b"), out, NULL));
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ(f32_bits(out[i]), (uint32_t)in[i] << 16);
	ASSERT_EQ(f32_bits(out[2]), f32_bits(1.0f));
	ASSERT_EQ(f32_bits(out[3]), f32_bits(-1.5f));
	ASSERT_EQ(f32_bits(out[4]), f32_bits(0x1p-133f)); /* subnormal */
	assert_true(fpclassify(out[5]) == FP_SUBNORMAL);
	assert_true(isinf(out[8]) && !signbit(out[8]));
	assert_true(isinf(out[9]) && signbit(out[9]));
	assert_true(isnan(out[10]));
	st_file_free(f);
}

static void test_other_conversions(void **state)
{
	/* Tensors at odd offsets: the loads must not assume alignment. */
	const char *json = "{"
			   "\"d\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[1,25]},"
			   "\"q\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[25,41]},"
			   "\"big\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[41,57]},"
			   "\"s\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[57,61]},"
			   "\"b\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[61,63]},"
			   "\"u\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[63,65]},"
			   "\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[65,69]}"
			   "}";
	const double dv[3] = { 0.1, -1e300, 1e-310 };
	const int64_t qv[2] = { INT32_MIN, INT32_MAX };
	const int64_t bigv[2] = { 7, (int64_t)INT32_MAX + 1 };
	const int16_t sv[2] = { -32768, 32767 };
	const int8_t bv[2] = { -128, 127 };
	const uint8_t uv[2] = { 0, 255 };
	const int32_t iv = -7;
	uint8_t data[69] = { 0 };
	struct diag d = { 0 };
	struct st_file *f;
	float out[3];
	int32_t iout[2] = { 99, 99 };

	(void)state;
	memcpy(data + 1, dv, sizeof(dv));
	memcpy(data + 25, qv, sizeof(qv));
	memcpy(data + 41, bigv, sizeof(bigv));
	memcpy(data + 57, sv, sizeof(sv));
	memcpy(data + 61, bv, sizeof(bv));
	memcpy(data + 63, uv, sizeof(uv));
	memcpy(data + 65, &iv, sizeof(iv));
	f = open_image(json, data, sizeof(data));

	ASSERT_OK(st_tensor_to_f32(st_file_find(f, "d"), out, &d));
	ASSERT_EQ(f32_bits(out[0]), f32_bits(0.1f));
	assert_true(isinf(out[1]) && out[1] < 0);
	ASSERT_EQ(f32_bits(out[2]), 0);

	ASSERT_OK(st_tensor_to_i32(st_file_find(f, "q"), iout, &d));
	ASSERT_EQ(iout[0], INT32_MIN);
	ASSERT_EQ(iout[1], INT32_MAX);
	iout[0] = iout[1] = 99;
	ASSERT_ERRNO(st_tensor_to_i32(st_file_find(f, "big"), iout, &d), EINVAL);
	assert_non_null(strstr(d.msg, "'big'"));
	assert_non_null(strstr(d.msg, "2147483648"));
	ASSERT_EQ(iout[0], 99); /* nothing written on failure */
	diag_clear(&d);

	ASSERT_OK(st_tensor_to_i32(st_file_find(f, "s"), iout, &d));
	ASSERT_EQ(iout[0], -32768);
	ASSERT_EQ(iout[1], 32767);
	ASSERT_OK(st_tensor_to_i32(st_file_find(f, "b"), iout, &d));
	ASSERT_EQ(iout[0], -128);
	ASSERT_EQ(iout[1], 127);
	ASSERT_OK(st_tensor_to_i32(st_file_find(f, "u"), iout, &d));
	ASSERT_EQ(iout[0], 0);
	ASSERT_EQ(iout[1], 255);
	ASSERT_OK(st_tensor_to_i32(st_file_find(f, "i"), iout, &d));
	ASSERT_EQ(iout[0], -7);

	/* The wrong family is refused, naming the tensor. */
	ASSERT_ERRNO(st_tensor_to_f32(st_file_find(f, "i"), out, &d), EINVAL);
	assert_non_null(strstr(d.msg, "'i'"));
	diag_clear(&d);
	ASSERT_ERRNO(st_tensor_to_i32(st_file_find(f, "d"), iout, &d), EINVAL);
	assert_non_null(strstr(d.msg, "'d'"));
	st_file_free(f);
}

/* ---------------------------------------------------------------- refusals */

#define T_OK(_name, _dtype, _shape, _b, _e)                                                   \
	"\"" _name "\":{\"dtype\":\"" _dtype "\",\"shape\":" _shape ",\"data_offsets\":[" #_b \
	"," #_e "]}"

static void test_refuse_short_file(void **state)
{
	const uint8_t img[5] = { 2, 0, 0, 0, 0 };

	(void)state;
	expect_refused_img(img, sizeof(img), EINVAL, "too short", NULL);
	expect_refused_img(img, 0, EINVAL, "too short", NULL);
	expect_refused_img(NULL, 0, EINVAL, NULL, NULL);
}

static void test_refuse_header_past_end(void **state)
{
	const char *json = "{}";
	size_t len;
	uint8_t *img = image_raw(100, json, NULL, 10, &len);

	(void)state;
	expect_refused_img(img, len, EINVAL, "past the end", NULL);
	free(img);
	img = image_raw(UINT64_MAX, json, NULL, 0, &len);
	expect_refused_img(img, len, EFBIG, NULL, NULL);
	free(img);
}

static void test_refuse_header_too_big(void **state)
{
	size_t len;
	uint8_t *img = image_raw((uint64_t)ST_HEADER_MAX + 1, "{}", NULL, 0, &len);

	(void)state;
	expect_refused_img(img, len, EFBIG, "header length", NULL);
	free(img);
}

static void test_refuse_not_json(void **state)
{
	(void)state;
	expect_refused("not json at all", 0, EINVAL, "JSON");
	expect_refused("", 0, EINVAL, "JSON");
	expect_refused("{\"a\":", 0, EINVAL, "JSON");
	expect_refused("{} trailing", 0, EINVAL, "JSON");
	expect_refused("{\"a\\u0000b\":{}}", 0, EINVAL, "JSON");
	expect_refused("{\"\xff\":{}}", 0, EINVAL, "JSON");
}

static void test_refuse_top_level_array(void **state)
{
	(void)state;
	expect_refused("[{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}]", 4, EINVAL,
		       "not a JSON object");
	expect_refused("\"str\"", 0, EINVAL, NULL);
	expect_refused("null", 0, EINVAL, NULL);
}

static void test_refuse_duplicate_keys(void **state)
{
	(void)state;
	expect_refused("{" T_OK("a", "F32", "[1]", 0, 4) "," T_OK("a", "F32", "[1]", 4, 8) "}", 8,
		       EINVAL, "duplicate");
	/* Inside an entry as well. */
	expect_refused("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],"
		       "\"data_offsets\":[0,4]}}",
		       4, EINVAL, "duplicate");
}

static void test_refuse_unknown_dtype(void **state)
{
	(void)state;
	expect_refused("{" T_OK("w.x", "F8_E4M3", "[4]", 0, 4) "}", 4, EINVAL, "'w.x'");
	expect_refused("{\"w.x\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, EINVAL,
		       "'w.x'");
}

static void test_refuse_negative_shape(void **state)
{
	(void)state;
	expect_refused("{" T_OK("neg", "F32", "[-1]", 0, 4) "}", 4, EINVAL, "'neg'");
	expect_refused("{" T_OK("neg", "F32", "[2,-2]", 0, 16) "}", 16, EINVAL, "'neg'");
}

static void test_refuse_shape_overflow(void **state)
{
	(void)state;
	/* 2^32 * 2^32 * 2 overflows uint64 although every factor fits. */
	expect_refused("{" T_OK("ovf", "F32", "[4294967296,4294967296,2]", 0, 0) "}", 0, EINVAL,
		       "'ovf'");
	/* 2^62 elements fit, their bytes do not. */
	expect_refused("{" T_OK("ovf", "F32", "[4611686018427387904]", 0, 0) "}", 0, EINVAL,
		       "'ovf'");
	/* A dimension jansson cannot hold at all. */
	expect_refused("{" T_OK("ovf", "F32", "[18446744073709551616]", 0, 0) "}", 0, EINVAL,
		       NULL);
	expect_refused("{" T_OK("dims", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, EINVAL,
		       "'dims'");
}

static void test_refuse_size_mismatch(void **state)
{
	(void)state;
	expect_refused("{" T_OK("mm", "F32", "[2,3]", 0, 20) "}", 24, EINVAL, "'mm'");
	expect_refused("{" T_OK("mm", "BF16", "[4]", 0, 16) "}", 16, EINVAL, "'mm'");
	expect_refused("{" T_OK("mm", "F32", "[]", 0, 0) "}", 0, EINVAL, "'mm'");
}

static void test_refuse_offsets_past_end(void **state)
{
	(void)state;
	expect_refused("{" T_OK("ok", "F32", "[1]", 0, 4) "," T_OK("far", "F32", "[2]", 4, 12) "}",
		       8, EINVAL, "'far'");
	expect_refused("{" T_OK("far", "F32", "[0]", 9, 9) "}", 8, EINVAL, "'far'");
}

static void test_refuse_begin_after_end(void **state)
{
	(void)state;
	expect_refused("{" T_OK("rev", "F32", "[1]", 8, 4) "}", 8, EINVAL, "'rev'");
	expect_refused("{" T_OK("neg", "F32", "[1]", -4, 0) "}", 8, EINVAL, "'neg'");
	expect_refused("{\"one\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 8,
		       EINVAL, "'one'");
}

static void test_refuse_overlap(void **state)
{
	size_t len;
	uint8_t *img;

	(void)state;
	img = image_new("{" T_OK("a", "F32", "[2]", 0, 8) "," T_OK("b", "F32", "[2]", 4, 12) "}",
			NULL, 12, &len);
	expect_refused_img(img, len, EINVAL, "'a'", "'b'");
	free(img);
	/* Same range twice, and one range inside another. */
	expect_refused("{" T_OK("a", "F32", "[1]", 0, 4) "," T_OK("b", "F32", "[1]", 0, 4) "}", 4,
		       EINVAL, "overlap");
	expect_refused("{" T_OK("a", "F32", "[4]", 0, 16) "," T_OK("c", "F32", "[1]", 12, 16) ","
		       T_OK("b", "U8", "[1]", 4, 5) "}",
		       16, EINVAL, "overlap");
}

static void test_refuse_bad_metadata(void **state)
{
	(void)state;
	expect_refused("{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0, EINVAL, "'n'");
	expect_refused("{\"__metadata__\":{\"n\":null}}", 0, EINVAL, "'n'");
	expect_refused("{\"__metadata__\":{\"n\":{\"x\":\"y\"}}}", 0, EINVAL, "'n'");
	expect_refused("{\"__metadata__\":[\"a\"]}", 0, EINVAL, "__metadata__");
	expect_refused("{\"__metadata__\":\"a\"}", 0, EINVAL, "__metadata__");
}

static void test_refuse_truncated(void **state)
{
	const char *json = "{" T_OK("first", "F32", "[2]", 0, 8) "," T_OK("cut", "F32", "[4]", 8,
									    24) "}";
	size_t len;
	uint8_t *img = image_new(json, NULL, 24, &len);

	(void)state;
	/* The whole file is fine; every cut into the second tensor is refused. */
	{
		struct st_file *f = NULL;

		ASSERT_OK(st_file_open_memory(img, len, "whole", &f, NULL));
		st_file_free(f);
	}
	for (size_t cut = 1; cut <= 16; cut++)
		expect_refused_img(img, len - cut, EINVAL, "'cut'", NULL);
	/* Cut into the header. */
	expect_refused_img(img, 8 + strlen(json) - 1, EINVAL, "past the end", NULL);
	free(img);
}

static void test_refuse_bad_entries(void **state)
{
	(void)state;
	expect_refused("{" T_OK("", "F32", "[1]", 0, 4) "}", 4, EINVAL, "empty name");
	expect_refused("{\"x\":[1,2]}", 0, EINVAL, "'x'");
	expect_refused("{\"x\":null}", 0, EINVAL, "'x'");
	expect_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, EINVAL, "data_offsets");
	expect_refused("{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, EINVAL, "shape");
	expect_refused("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, EINVAL, "dtype");
	expect_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
		       "\"extra\":1}}",
		       4, EINVAL, "'extra'");
	expect_refused("{" T_OK("x", "F32", "[1.0]", 0, 4) "}", 4, EINVAL, "'x'");
	expect_refused("{" T_OK("x", "F32", "[\"1\"]", 0, 4) "}", 4, EINVAL, "'x'");
	expect_refused("{" T_OK("x", "F32", "1", 0, 4) "}", 4, EINVAL, "'x'");
	expect_refused("{" T_OK("x", "F32", "[1]", 0, 4.0) "}", 4, EINVAL, "'x'");
	expect_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
		       EINVAL, "'x'");
	expect_refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, EINVAL,
		       "'x'");
	expect_refused("{" T_OK("x", "F32", "[1]", 0, 99999999999999999999) "}", 4, EINVAL, NULL);
}

/* ---------------------------------------------------------------- accepted edge cases */

static void test_accept_edges(void **state)
{
	struct st_file *f;
	const struct st_tensor *t;

	(void)state;
	/* No tensors, no data. */
	f = open_image("{}", NULL, 0);
	ASSERT_EQ(st_file_tensor_count(f), 0);
	st_file_free(f);
	/* Only metadata, header padded with spaces, data section unused. */
	f = open_image("  {\"__metadata__\":{\"\":\"\",\"k\":\"v\"}}      ", NULL, 3);
	ASSERT_EQ(st_file_tensor_count(f), 0);
	ASSERT_EQ(st_file_metadata_count(f), 2);
	assert_string_equal(st_file_metadata(f, ""), "");
	assert_string_equal(st_file_metadata(f, "k"), "v");
	st_file_free(f);
	/* Zero-length tensors anywhere, even inside another's range or at the very end. */
	f = open_image("{" T_OK("z1", "F32", "[0]", 0, 0) "," T_OK("a", "F32", "[2]", 0, 8) ","
		       T_OK("z2", "I64", "[3,0]", 4, 4) "," T_OK("z3", "U8", "[0]", 8, 8) ","
		       T_OK("b", "U8", "[2]", 10, 12) "}",
		       NULL, 12);
	ASSERT_EQ(st_file_tensor_count(f), 5);
	t = st_file_find(f, "z2");
	assert_non_null(t);
	ASSERT_EQ(t->ndim, 2);
	ASSERT_EQ(t->n_elements, 0);
	t = st_file_find(f, "b"); /* after a gap */
	assert_non_null(t);
	ASSERT_EQ(t->n_bytes, 2);
	st_file_free(f);
	/* Unicode names sort bytewise. */
	f = open_image("{" T_OK("\xc3\xa9", "U8", "[1]", 0, 1) "," T_OK("z", "U8", "[1]", 1, 2) "}",
		       NULL, 2);
	assert_string_equal(st_file_tensor_at(f, 0)->name, "z");
	assert_non_null(st_file_find(f, "\xc3\xa9"));
	st_file_free(f);
}

/* ---------------------------------------------------------------- real files */

static void test_open_file(void **state)
{
	const char *json = "{" T_OK("t", "F32", "[2]", 0, 8) ",\"__metadata__\":{\"a\":\"b\"}}";
	const float v[2] = { 3.0f, -4.0f };
	struct st_file *f = NULL;
	struct diag d = { 0 };
	char *dir = tmpdir_new(), *path = path_in(dir, "file.safetensors");
	char *missing = path_in(dir, "missing.safetensors");
	char *empty = path_in(dir, "empty.safetensors");
	char *hdr = path_in(dir, "header_only.safetensors");
	float out[2];
	size_t len;
	uint8_t *img = image_new(json, v, sizeof(v), &len);
	int fds = fd_count();

	(void)state;
	write_bytes(path, img, len);
	ASSERT_OK(st_file_open(path, &f, &d));
	ASSERT_OK(st_tensor_to_f32(st_file_find(f, "t"), out, &d));
	ASSERT_EQ(f32_bits(out[0]), f32_bits(3.0f));
	ASSERT_EQ(f32_bits(out[1]), f32_bits(-4.0f));
	assert_string_equal(st_file_metadata(f, "a"), "b");
	f = st_file_free(f);
	free(img);

	/* The same through a cut file: refused, naming the file and the tensor. */
	img = image_new(json, v, sizeof(v), &len);
	write_bytes(path, img, len - 1);
	free(img);
	ASSERT_ERRNO(st_file_open(path, &f, &d), EINVAL);
	assert_null(f);
	assert_non_null(strstr(d.msg, path));
	assert_non_null(strstr(d.msg, "'t'"));

	diag_clear(&d);
	ASSERT_ERRNO(st_file_open(missing, &f, &d), ENOENT);
	assert_non_null(strstr(d.msg, missing));
	diag_clear(&d);
	ASSERT_ERRNO(st_file_open(dir, &f, &d), EISDIR);
	diag_clear(&d);
	write_bytes(empty, "", 0);
	ASSERT_ERRNO(st_file_open(empty, &f, &d), EINVAL);
	assert_non_null(strstr(d.msg, empty));
	assert_null(f);

	/* An empty data section maps fine. */
	img = image_new("{\"__metadata__\":{}}", NULL, 0, &len);
	write_bytes(hdr, img, len);
	free(img);
	diag_clear(&d);
	ASSERT_OK(st_file_open(hdr, &f, &d));
	ASSERT_EQ(st_file_tensor_count(f), 0);
	st_file_free(f);

	free(hdr);
	free(empty);
	free(missing);
	free(path);
	tmpdir_free(dir);
	ASSERT_EQ(fd_count(), fds);
}

/* ---------------------------------------------------------------- tensor sets */

/* Write @dir/@file holding F32 [1] tensors named in @names (value = index) and metadata. */
static void write_shard(const char *dir, const char *file, const char *const *names,
			const char *meta_key, const char *meta_value)
{
	static const float values[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	const uint64_t shape[1] = { 1 };
	struct st_writer *w;
	struct diag d = { 0 };
	char *path = path_in(dir, file);

	ASSERT_OK(st_writer_new(&w));
	for (size_t i = 0; names[i]; i++)
		ASSERT_OK(st_writer_add(w, names[i], ST_F32, 1, shape, &values[i]));
	if (meta_key)
		ASSERT_OK(st_writer_set_metadata(w, meta_key, meta_value));
	if (st_writer_write(w, path, &d) < 0)
		fail_msg("write %s: %s", path, d.msg);
	st_writer_free(w);
	free(path);
}

static float set_value(const struct st_set *s, const char *name)
{
	const struct st_tensor *t = st_set_find(s, name);
	float v;

	if (!t)
		fail_msg("tensor '%s' not in the set", name);
	ASSERT_OK(st_tensor_to_f32(t, &v, NULL));
	return v;
}

static void test_set_index_two_shards(void **state)
{
	static const char *const shard1[] = { "a", "b", NULL };
	static const char *const shard2[] = { "c", "d", "e", NULL };
	struct st_set *s = NULL;
	struct diag d = { 0 };
	char *dir = tmpdir_new(), *index = path_in(dir, "model.safetensors.index.json");
	int fds = fd_count();

	(void)state;
	write_shard(dir, "model-00001-of-00002.safetensors", shard1, "format", "pt");
	write_shard(dir, "model-00002-of-00002.safetensors", shard2, "format", "other");
	write_text(dir, "model.safetensors.index.json",
		   "{\"metadata\":{\"total_size\":20},\"weight_map\":{"
		   "\"a\":\"model-00001-of-00002.safetensors\","
		   "\"c\":\"model-00002-of-00002.safetensors\","
		   "\"b\":\"model-00001-of-00002.safetensors\","
		   "\"d\":\"model-00002-of-00002.safetensors\","
		   "\"e\":\"model-00002-of-00002.safetensors\"}}");

	/* Through the folder and through the index itself. */
	for (int pass = 0; pass < 2; pass++) {
		const char *path = pass ? index : dir;

		if (st_set_open(path, &s, &d) < 0)
			fail_msg("st_set_open %s: %s", path, d.msg);
		ASSERT_EQ(st_set_file_count(s), 2);
		assert_non_null(strstr(st_file_path(st_set_file_at(s, 0)), "00001"));
		assert_non_null(strstr(st_file_path(st_set_file_at(s, 1)), "00002"));
		assert_null(st_set_file_at(s, 2));
		assert_string_equal(st_set_dir(s), dir);
		ASSERT_EQ(set_value(s, "a"), 0);
		ASSERT_EQ(set_value(s, "b"), 1);
		ASSERT_EQ(set_value(s, "c"), 0);
		ASSERT_EQ(set_value(s, "e"), 2);
		assert_null(st_set_find(s, "f"));
		assert_string_equal(st_set_metadata(s, "format"), "pt"); /* first shard wins */
		assert_null(st_set_metadata(s, "total_size"));
		s = st_set_free(s);
	}
	assert_null(st_set_free(NULL));

	/* A folder with only model.safetensors, and a single file. */
	{
		char *single = path_in(dir, "model.safetensors");
		char *sub = tmpdir_new();
		char *in_sub = path_in(sub, "model.safetensors");

		write_shard(sub, "model.safetensors", shard2, NULL, NULL);
		ASSERT_OK(st_set_open(sub, &s, &d));
		ASSERT_EQ(st_set_file_count(s), 1);
		assert_string_equal(st_set_dir(s), sub);
		ASSERT_EQ(set_value(s, "d"), 1);
		assert_null(st_set_metadata(s, "format"));
		s = st_set_free(s);
		ASSERT_OK(st_set_open(in_sub, &s, &d));
		assert_string_equal(st_set_dir(s), sub);
		s = st_set_free(s);
		ASSERT_ERRNO(st_set_open(single, &s, &d), ENOENT);
		assert_null(s);
		free(in_sub);
		tmpdir_free(sub);
		free(single);
	}
	free(index);
	tmpdir_free(dir);
	ASSERT_EQ(fd_count(), fds);
}

static void expect_set_refused(const char *index_json, int err, const char *needle)
{
	static const char *const shard[] = { "a", "b", NULL };
	static const char *const other[] = { "b", "c", NULL };
	struct st_set *s = NULL;
	struct diag d = { 0 };
	char *dir = tmpdir_new();
	int fds = fd_count(), r;

	write_shard(dir, "s1.safetensors", shard, NULL, NULL);
	write_shard(dir, "s2.safetensors", other, NULL, NULL);
	write_text(dir, "model.safetensors.index.json", index_json);
	r = st_set_open(dir, &s, &d);
	if (r != -err)
		fail_msg("expected -%d, got %d; diag: %s", err, r, d.msg);
	assert_null(s);
	if (needle && !strstr(d.msg, needle))
		fail_msg("diag does not mention '%s': '%s'", needle, d.msg);
	tmpdir_free(dir);
	ASSERT_EQ(fd_count(), fds);
}

static void test_set_refuse_escaping_shard(void **state)
{
	(void)state;
	expect_set_refused("{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", EINVAL, "'a'");
	expect_set_refused("{\"weight_map\":{\"a\":\"..\"}}", EINVAL, "'a'");
	expect_set_refused("{\"weight_map\":{\"a\":\"/etc/passwd\"}}", EINVAL, "'a'");
	expect_set_refused("{\"weight_map\":{\"a\":\"sub/s1.safetensors\"}}", EINVAL, "'a'");
	expect_set_refused("{\"weight_map\":{\"a\":\"\"}}", EINVAL, "'a'");
	expect_set_refused("{\"weight_map\":{\"a\":1}}", EINVAL, "'a'");
}

static void test_set_refuse_missing_tensor(void **state)
{
	(void)state;
	/* "c" is in s2, not in s1 where the index puts it. */
	expect_set_refused("{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s1.safetensors\"}}",
			   EINVAL, "'c'");
	expect_set_refused("{\"weight_map\":{\"a\":\"s1.safetensors\",\"x\":\"nope.safetensors\"}}",
			   ENOENT, "nope.safetensors");
}

static void test_set_refuse_bad_index(void **state)
{
	(void)state;
	/* "b" is in both shards. */
	expect_set_refused("{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}",
			   EINVAL, "'b'");
	expect_set_refused("{\"weight_map\":[]}", EINVAL, "weight_map");
	expect_set_refused("{}", EINVAL, "weight_map");
	expect_set_refused("[]", EINVAL, "weight_map");
	expect_set_refused("{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}",
			   EINVAL, "duplicate");
	expect_set_refused("not json", EINVAL, "JSON");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dtype_table),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_write_empty),
		cmocka_unit_test(test_f16_conversions),
		cmocka_unit_test(test_bf16_conversions),
		cmocka_unit_test(test_other_conversions),
		cmocka_unit_test(test_refuse_short_file),
		cmocka_unit_test(test_refuse_header_past_end),
		cmocka_unit_test(test_refuse_header_too_big),
		cmocka_unit_test(test_refuse_not_json),
		cmocka_unit_test(test_refuse_top_level_array),
		cmocka_unit_test(test_refuse_duplicate_keys),
		cmocka_unit_test(test_refuse_unknown_dtype),
		cmocka_unit_test(test_refuse_negative_shape),
		cmocka_unit_test(test_refuse_shape_overflow),
		cmocka_unit_test(test_refuse_size_mismatch),
		cmocka_unit_test(test_refuse_offsets_past_end),
		cmocka_unit_test(test_refuse_begin_after_end),
		cmocka_unit_test(test_refuse_overlap),
		cmocka_unit_test(test_refuse_bad_metadata),
		cmocka_unit_test(test_refuse_truncated),
		cmocka_unit_test(test_refuse_bad_entries),
		cmocka_unit_test(test_accept_edges),
		cmocka_unit_test(test_open_file),
		cmocka_unit_test(test_set_index_two_shards),
		cmocka_unit_test(test_set_refuse_escaping_shard),
		cmocka_unit_test(test_set_refuse_missing_tensor),
		cmocka_unit_test(test_set_refuse_bad_index),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
