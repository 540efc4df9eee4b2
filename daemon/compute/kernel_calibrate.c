/* SPDX-License-Identifier: MIT */
/* kernel_calibrate: the matmul kernels' bounds measured here; see kernel_calibrate.h. */
#include "compute/kernel_calibrate.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "compute/matmul_bf16_dot.h"
#include "model/half.h"
#include "util/cpu_load.h"
#include "util/log.h"
#include "util/spin.h"

/* Larger than the last-level cache one thread sees: the weights come from memory. */
#define POOL_BYTES ((size_t)64 << 20)
/* The engine's column tile: an expert tile has at most this many weight rows. */
#define TILE_ROWS 512
#define REPS 5
/* Each timed batch of calls takes at least this long. */
#define BATCH_S 200e-6
/* Within this factor of sgemm, the small-m kernel counts as fast as it. */
#define TIE 1.03
/* Past this the measurement stops where it is: what was measured stands. */
#define BUDGET_S 2.0

static const uint32_t ms[] = { 1, 2, 4, 8, 16, 24, 32, 48, 64 };
#define N_M (sizeof(ms) / sizeof(ms[0]))
#define M_MAX 64

static struct calibrate_result last = { .source = CALIBRATE_BUILTIN };

const struct calibrate_result *kernel_calibration(void)
{
	return &last;
}

const char *calibrate_source_name(enum calibrate_source s)
{
	switch (s) {
	case CALIBRATE_MEASURED:
		return "measured";
	case CALIBRATE_CACHED:
		return "cached";
	case CALIBRATE_BUILTIN:
		break;
	}
	return "built-in";
}

static void add_ffn(struct calibrate_request *req, uint32_t d_model, const struct ffn_weights *f)
{
	const uint32_t d_ff = f->d_ff;
	const struct calibrate_shape tiles[2] = {
		{ d_model, d_ff < TILE_ROWS ? d_ff : TILE_ROWS },     /* up: W1, W3 [ff][d] */
		{ d_ff, d_model < TILE_ROWS ? d_model : TILE_ROWS },  /* down: W2 [d][ff] */
	};

	for (int i = 0; i < 2; i++) {
		bool known = false;

		for (unsigned j = 0; j < req->n_shapes; j++)
			known |= req->shapes[j].k == tiles[i].k && req->shapes[j].n == tiles[i].n;
		if (!known && req->n_shapes < CALIBRATE_MAX_SHAPES)
			req->shapes[req->n_shapes++] = tiles[i];
	}
	req->dtypes[f->dtype] = true;
}

void calibrate_add_model(struct calibrate_request *req, const struct moe_model *m)
{
	for (uint32_t l = 0; l < moe_model_n_layers(m); l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		if (!L)
			continue;
		/* BASE experts are float32 sublayers of the layer's width */
		if (L->router.kind == ROUTER_BASE) {
			add_ffn(req, L->d_model, &(struct ffn_weights){ .d_ff = L->d_ff });
			continue;
		}
		for (uint32_t e = 0; e < L->n_experts; e++)
			add_ffn(req, L->d_model, &L->experts[e].ffn);
		if (L->has_shared)
			add_ffn(req, L->d_model, &L->shared);
	}
}

static double now_s(void)
{
	return 1e-9 * (double)spin_now_ns();
}

/* ---- the cache ---- */

/*
 * What the bounds depend on: the CPU, OpenBLAS's core, our variant (and
 * whether BF16 weights go to the dot-product kernel: "+bf16dot", absent
 * when off so that caches from before it stay valid), the shapes, the dtypes.
 */
static void cache_key(const struct calibrate_request *req, char *buf, size_t size)
{
	char cpu[128] = "?", line[256];
	FILE *f = fopen("/proc/cpuinfo", "re");
	size_t at;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "model name : %127[^\n]", cpu) == 1)
			break;
	if (f)
		fclose(f);
	at = (size_t)snprintf(buf, size, "%s|%s|%s%s|", cpu, openblas_get_corename(),
			      matmul_small_m_variant(), matmul_bf16_dot_enabled() ? "+bf16dot" : "");
	for (unsigned i = 0; i < req->n_shapes && at < size; i++)
		at += (size_t)snprintf(buf + at, size - at, "%ux%u,", req->shapes[i].n,
				       req->shapes[i].k);
	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT && at < size; dt++)
		if (req->dtypes[dt])
			at += (size_t)snprintf(buf + at, size - at, "|%s",
					       weight_dtype_name((enum weight_dtype)dt));
}

/* The cached bounds for @key into @res: true when the file has them. */
static bool cache_read(const char *path, const char *key, struct calibrate_result *res)
{
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, NULL), *max;
	bool ok = false;

	if (!root)
		return false;
	max = json_object_get(root, "small_m_max");
	if (json_is_string(json_object_get(root, "key")) &&
	    strcmp(json_string_value(json_object_get(root, "key")), key) == 0 &&
	    json_is_array(max) && json_array_size(max) == WEIGHT_DTYPE_COUNT &&
	    json_is_boolean(json_object_get(root, "small_m_at_1"))) {
		ok = true;
		for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++) {
			json_t *v = json_array_get(max, (size_t)dt);

			/* a bound the kernels never see measured is refused, not trusted */
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > M_MAX) {
				ok = false;
				break;
			}
			res->bounds.small_m_max[dt] = (uint32_t)json_integer_value(v);
			res->measured[dt] = res->bounds.small_m_max[dt] != 0;
		}
		res->bounds.small_m_at_1 = json_is_true(json_object_get(root, "small_m_at_1"));
	}
	json_decref(root);
	return ok;
}

/* Whether the file now holds @res. */
static bool cache_write(const char *path, const char *key, const struct calibrate_result *res)
{
	json_t *max = json_array(), *root;
	char tmp[4200];
	bool ok = true;

	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++)
		json_array_append_new(max, json_integer(res->measured[dt]
								? res->bounds.small_m_max[dt]
								: 0));
	root = json_pack("{s:s, s:o, s:b, s:f}", "key", key, "small_m_max", max, "small_m_at_1",
			 res->bounds.small_m_at_1, "seconds", res->seconds);
	/* written aside and renamed: a reader never sees half a file */
	if (!root || (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp) ||
	    json_dump_file(root, tmp, JSON_INDENT(2)) < 0 || rename(tmp, path) < 0) {
		log_warning("kernel bounds: cannot keep them in %s (%m); measured again at the "
			    "next start",
			    path);
		ok = false;
	}
	json_decref(root);
	return ok;
}

/* ---- the measurement ---- */

struct pool {
	uint8_t *w;        /* POOL_BYTES of weights, in the dtype being measured */
	size_t tile_bytes; /* one [n][k] tile */
	uint32_t copies, next;
	float *x, *y;      /* [M_MAX][k], [M_MAX][n] */
	struct calibrate_shape shape;
	enum weight_dtype dtype;
};

/* Small uniform values (as nn.Linear's), in @dt: no NaN or subnormal to slow a kernel. */
static void pool_fill(struct pool *p, enum weight_dtype dt)
{
	const size_t n = POOL_BYTES / weight_dtype_size(dt);
	uint64_t s = 0x9e3779b97f4a7c15ull;

	p->dtype = dt;
	for (size_t i = 0; i < n; i++) {
		float v;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		v = (float)(int32_t)(uint32_t)s * 0x1p-36f;
		if (dt == WEIGHT_F32)
			((float *)(void *)p->w)[i] = v;
		else
			((uint16_t *)(void *)p->w)[i] = dt == WEIGHT_BF16 ? f32_to_bf16(v)
									  : f32_to_f16(v);
	}
}

/* One call of @kernel at @m on the next copy of the tile; its seconds. */
static double one_call(struct pool *p, enum matmul_kernel kernel, uint32_t m)
{
	const uint8_t *w = p->w + (size_t)p->next * p->tile_bytes;
	double t0 = now_s();

	p->next = (p->next + 1) % p->copies;
	matmul_xwt(kernel, p->x, p->shape.k, m, p->shape.k, w, p->dtype, p->shape.k, p->shape.n,
		   p->y, p->shape.n);
	return now_s() - t0;
}

/* Seconds per call of @kernel at @m over one batch of @calls calls. */
static double batch(struct pool *p, enum matmul_kernel kernel, uint32_t m, uint32_t calls)
{
	double t0 = now_s();

	for (uint32_t c = 0; c < calls; c++)
		(void)one_call(p, kernel, m);
	return (now_s() - t0) / calls;
}

/* Calls of @kernel at @m that take about BATCH_S (at least one). */
static uint32_t batch_calls(struct pool *p, enum matmul_kernel kernel, uint32_t m)
{
	double one = one_call(p, kernel, m);

	return one >= BATCH_S ? 1 : (uint32_t)(BATCH_S / (one > 1e-7 ? one : 1e-7)) + 1;
}

/*
 * Is kernel @a at least as fast as @b at @m (within TIE)? Each is timed in
 * REPS batches of about BATCH_S (a small tile's single call takes
 * microseconds, where one timing would measure the clock), the two
 * alternating so that a disturbance from another process hits both, and
 * each kernel's least batch counts.
 */
static bool as_fast(struct pool *p, enum matmul_kernel a, enum matmul_kernel b, uint32_t m)
{
	uint32_t calls_a = batch_calls(p, a, m), calls_b = batch_calls(p, b, m);
	double ta = 1e30, tb = 1e30;

	for (int r = 0; r < REPS; r++) {
		double t = batch(p, a, m, calls_a);

		ta = t < ta ? t : ta;
		t = batch(p, b, m, calls_b);
		tb = t < tb ? t : tb;
	}
	return ta <= TIE * tb;
}

/*
 * The bound for one shape in the pool's dtype: the largest measured m (from
 * 2) up to which the small-m kernel is never slower than sgemm (1: slower
 * already at 2); and, for float32, whether it beats sgemv at m = 1.
 */
static uint32_t measure_shape(struct pool *p, double deadline, bool *small_m_at_1)
{
	uint32_t bound = 1;

	if (p->dtype == WEIGHT_F32)
		*small_m_at_1 = as_fast(p, MATMUL_SMALLM, MATMUL_SGEMV, 1);
	/* past the deadline the bound stays where it is, but m = 2 is always measured */
	for (size_t i = 1; i < N_M && (i == 1 || now_s() < deadline); i++) {
		/* a tie goes to the small-m kernel: it reads the weights once */
		if (!as_fast(p, MATMUL_SMALLM, MATMUL_SGEMM, ms[i]))
			break;
		bound = ms[i];
	}
	return bound;
}

static int measure(const struct calibrate_request *req, struct calibrate_result *res,
		   struct diag *d)
{
	const double deadline = now_s() + BUDGET_S;
	struct pool p = { 0 };
	uint32_t max_k = 1, max_n = 1;
	bool at_1 = true;
	int r = 0;

	for (unsigned i = 0; i < req->n_shapes; i++) {
		max_k = req->shapes[i].k > max_k ? req->shapes[i].k : max_k;
		max_n = req->shapes[i].n > max_n ? req->shapes[i].n : max_n;
	}
	p.w = mmap(NULL, POOL_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	p.x = malloc(sizeof(float) * M_MAX * max_k);
	p.y = malloc(sizeof(float) * M_MAX * max_n);
	if (p.w == MAP_FAILED || !p.x || !p.y) {
		r = diag_set(d, -ENOMEM, "kernel bounds: out of memory for the measurement");
		goto out;
	}
	for (size_t i = 0; i < (size_t)M_MAX * max_k; i++)
		p.x[i] = (float)((int)(i % 17) - 8) * 0.125f;
	for (int dt = 0; dt < WEIGHT_DTYPE_COUNT; dt++) {
		uint32_t bound = M_MAX;

		if (!req->dtypes[dt])
			continue;
		pool_fill(&p, (enum weight_dtype)dt);
		for (unsigned i = 0; i < req->n_shapes; i++) {
			bool shape_at_1 = true;
			uint32_t b;

			p.shape = req->shapes[i];
			p.tile_bytes = (size_t)p.shape.n * p.shape.k * weight_dtype_size(p.dtype);
			if (p.tile_bytes > POOL_BYTES)
				continue; /* a tile larger than the pool: nothing to learn here */
			p.copies = (uint32_t)(POOL_BYTES / p.tile_bytes);
			p.next = 0;
			b = measure_shape(&p, deadline, &shape_at_1);
			bound = b < bound ? b : bound;
			if (dt == WEIGHT_F32)
				at_1 = at_1 && shape_at_1;
			res->measured[dt] = true;
		}
		if (res->measured[dt])
			res->bounds.small_m_max[dt] = bound;
	}
	res->bounds.small_m_at_1 = res->measured[WEIGHT_F32] && at_1;
out:
	if (p.w != MAP_FAILED && p.w)
		munmap(p.w, POOL_BYTES);
	free(p.x);
	free(p.y);
	return r;
}

int kernel_calibrate(const struct calibrate_request *req, struct diag *d)
{
	struct calibrate_result res = { .source = CALIBRATE_MEASURED, .others_cores = -1 };
	struct cpu_load_mark load;
	char key[2048];
	double t0 = now_s();
	int r;

	cache_key(req, key, sizeof(key));
	if (req->cache_path && cache_read(req->cache_path, key, &res)) {
		res.source = CALIBRATE_CACHED;
	} else {
		matmul_bounds_set(NULL); /* measure the kernels, not a previous choice */
		cpu_load_mark_take(&load);
		r = measure(req, &res, d);
		if (r < 0)
			return r;
		res.others_cores = cpu_load_others(&load);
	}
	res.seconds = now_s() - t0;
	if (res.source == CALIBRATE_MEASURED && req->cache_path &&
	    res.others_cores <= (req->others_max > 0 ? req->others_max : CALIBRATE_OTHERS_MAX))
		res.cached_now = cache_write(req->cache_path, key, &res);
	matmul_bounds_set(&res.bounds);
	last = res;
	return 0;
}
