/* SPDX-License-Identifier: MIT */
/*
 * Tests of the expert store (daemon/store/) on real components: synthetic
 * checkpoints written by synth_model_write into a temporary folder, store
 * objects on tmpfs in a private mkdtemp folder under /dev/shm that the
 * group teardown removes, simulated topologies of 1, 2 and 4 nodes (no
 * mbind). Every weight the store serves is compared bitwise with an
 * independent moe_model_open of the same files.
 *
 * What is covered: a kept store re-attaches with no weight read and the
 * same weights and identity; every way an existing store can be unusable
 * (a flipped byte anywhere in a header or the manifest, a truncated or
 * missing object, a load that stopped half way, objects of another store
 * or node, an object others may write, rewritten weight files, another
 * model, changed placement settings) gives a reload with a reason and the
 * right weights, and the reload heals the store; keep=no and drop remove
 * every object; a store in use is never shared nor removed; interleave
 * puts expert e on node e % n, in that node's object.
 */
#include "test_assert.h"

#include <dirent.h>
#include <errno.h>
#include <numaif.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "test_fds.h"
#include "test_topo.h"

#include "model/model.h"
#include "model/synth_model.h"
#include "store/expert_store.h"
#include "store/store_internal.h"
#include "store/store_object.h"

/* ---------------------------------------------------------------- fixture */

#define N_EXPERTS 8
#define N_LAYERS 2

static char tmp_root[] = "/tmp/test_expert_store.XXXXXX";
static char shm_dir[] = "/dev/shm/test_expert_store.XXXXXX";
static char model_f32[256];  /* moed layout, F32, biases, gated, a shared expert */
static char model_bf16[256]; /* Qwen2-MoE names, BF16, two shards with an index */
static struct topology topo1, topo2, topo4;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void synth_base(struct synth_opts *o, const char *path, uint64_t seed)
{
	synth_opts_init(o);
	o->output = path;
	o->d_model = 16;
	o->d_ff = 24;
	o->n_experts = N_EXPERTS;
	o->n_layers = N_LAYERS;
	o->tokens = 3;
	o->seed = seed;
	o->settings[o->n_settings++] = "router=topk";
	o->settings[o->n_settings++] = "top_k=2";
	o->settings[o->n_settings++] = "activation=silu_gated";
}

static int write_f32(const char *path, uint64_t seed)
{
	struct synth_opts o;
	struct diag d = { { 0 } };
	int r;

	synth_base(&o, path, seed);
	o.bias = 1;
	o.shared_d_ff = 8;
	r = synth_model_write(&o, &d);
	if (r < 0)
		fprintf(stderr, "synth_model_write %s: %s\n", path, d.msg);
	return r;
}

static int group_setup(void **state)
{
	struct synth_opts o;
	struct diag d = { { 0 } };

	(void)state;
	if (!mkdtemp(tmp_root) || !mkdtemp(shm_dir))
		return -1;
	snprintf(model_f32, sizeof(model_f32), "%s/f32.safetensors", tmp_root);
	snprintf(model_bf16, sizeof(model_bf16), "%s/qwen", tmp_root);
	if (write_f32(model_f32, 11) < 0)
		return -1;
	synth_base(&o, model_bf16, 12);
	o.layout = LAYOUT_QWEN2;
	o.dtype = ST_BF16;
	o.shards = 2;
	o.shared_d_ff = 8;
	if (synth_model_write(&o, &d) < 0) {
		fprintf(stderr, "synth_model_write %s: %s\n", model_bf16, d.msg);
		return -1;
	}
	test_topo_make(&topo1, 1);
	test_topo_make(&topo2, 2);
	test_topo_make(&topo4, 4);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	nftw(shm_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* The number of entries in the store folder. */
static int shm_entries(void)
{
	DIR *dir = opendir(shm_dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(dir);
	return n;
}

/* Every test starts and ends with an empty store folder and no fd left open. */
static int test_setup(void **state)
{
	if (shm_entries() != 0) {
		print_error("%s is not empty before the test\n", shm_dir);
		return -1;
	}
	return fd_check_setup(state);
}

static int test_teardown(void **state)
{
	int n = shm_entries();

	if (n != 0) {
		print_error("%d objects left in %s after the test\n", n, shm_dir);
		nftw(shm_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		mkdir(shm_dir, 0700);
		return -1;
	}
	return fd_check_teardown(state);
}

/* ---------------------------------------------------------------- helpers */

/* A libc call that returns -1 and sets errno on failure. */
#define SYS_OK(_expr)                                                                         \
	do {                                                                                  \
		if ((_expr) < 0)                                                              \
			fail_msg("%s failed: %s", #_expr, strerror(errno));                   \
	} while (0)

static void opts_init(struct expert_store_opts *o, const struct topology *t, const char *name,
		      bool keep)
{
	*o = (struct expert_store_opts){
		.dir = shm_dir,
		.name = name,
		.keep = keep,
		.topo = t,
		.policy = PLACEMENT_INTERLEAVE,
	};
}

static struct expert_store *store_open_ok(const char *model, const struct expert_store_opts *o)
{
	struct expert_store *s = NULL;
	struct diag d = { { 0 } };
	int r = expert_store_open(model, o, &s, &d);

	if (r < 0)
		fail_msg("expert_store_open %s (%s/%s): %s (%s)", model, o->dir, o->name, d.msg,
			 strerror(-r));
	assert_non_null(s);
	return s;
}

static void expect_source(const struct expert_store *s, enum store_source want,
			  const char *reason_needle)
{
	const struct expert_store_info *i = expert_store_info(s);

	if (i->source != want)
		fail_msg("source %s, expected %s (reload reason '%s')",
			 i->source == STORE_ATTACHED ? "attached" : "loaded",
			 want == STORE_ATTACHED ? "attached" : "loaded", i->reload_reason);
	if (want == STORE_ATTACHED) {
		ASSERT_EQ(i->read_bytes, 0);
		if (i->reload_reason[0])
			fail_msg("attached, yet a reload reason: '%s'", i->reload_reason);
	} else {
		assert_true(i->read_bytes > 0);
	}
	if (reason_needle && !strstr(i->reload_reason, reason_needle))
		fail_msg("reload reason '%s' does not mention '%s'", i->reload_reason,
			 reason_needle);
}

/* @n elements of @size bytes each, bitwise equal (or both absent). */
static void expect_values(const char *what, uint32_t l, int64_t e, const void *got,
			  const void *want, uint64_t n, size_t size)
{
	if (!got != !want)
		fail_msg("layer %u expert %lld %s: %s in the store, %s in the file", l,
			 (long long)e, what, got ? "present" : "absent", want ? "present" : "absent");
	if (got && memcmp(got, want, n * size) != 0)
		fail_msg("layer %u expert %lld %s: the store's values differ from the file's", l,
			 (long long)e, what);
}

static void expect_floats(const char *what, uint32_t l, int64_t e, const float *got,
			  const float *want, uint64_t n)
{
	expect_values(what, l, e, got, want, n, sizeof(float));
}

/* The same values in the same dtype: the store keeps what the model keeps. */
static void expect_ffn(const char *what, uint32_t l, int64_t e, const struct ffn_weights *got,
		       const struct ffn_weights *want, uint32_t dm)
{
	size_t size = weight_dtype_size(want->dtype);
	char w[64];

	ASSERT_EQ(got->d_ff, want->d_ff);
	ASSERT_EQ(got->dtype, want->dtype);
	snprintf(w, sizeof(w), "%s.w1", what);
	expect_values(w, l, e, got->w1, want->w1, (uint64_t)want->d_ff * dm, size);
	snprintf(w, sizeof(w), "%s.w2", what);
	expect_values(w, l, e, got->w2, want->w2, (uint64_t)want->d_ff * dm, size);
	snprintf(w, sizeof(w), "%s.w3", what);
	expect_values(w, l, e, got->w3, want->w3, (uint64_t)want->d_ff * dm, size);
	snprintf(w, sizeof(w), "%s.b1", what);
	expect_floats(w, l, e, got->b1, want->b1, want->d_ff);
	snprintf(w, sizeof(w), "%s.b2", what);
	expect_floats(w, l, e, got->b2, want->b2, dm);
}

/* Every weight of @got bitwise equal to the same weight of @want, settings equal. */
static void expect_model_equal(const struct moe_model *got, const struct moe_model *want)
{
	uint32_t moe_layers = 0;

	ASSERT_EQ(moe_model_n_layers(got), moe_model_n_layers(want));
	for (uint32_t l = 0; l < moe_model_n_layers(want); l++) {
		const struct moe_layer *G = moe_model_layer(got, l), *W = moe_model_layer(want, l);
		uint32_t dm;

		assert_true(!G == !W);
		if (!W)
			continue;
		moe_layers++;
		dm = W->d_model;
		ASSERT_EQ(G->d_model, W->d_model);
		ASSERT_EQ(G->d_ff, W->d_ff);
		ASSERT_EQ(G->n_experts, W->n_experts);
		ASSERT_EQ(G->router.kind, W->router.kind);
		ASSERT_EQ(G->router.top_k, W->router.top_k);
		ASSERT_EQ(G->router.activation, W->router.activation);
		ASSERT_EQ(G->router.normalize, W->router.normalize);
		expect_floats("router_w", l, -1, G->router_w, W->router_w,
			      (uint64_t)W->n_experts * dm);
		expect_floats("router_b", l, -1, G->router_b, W->router_b, W->n_experts);
		expect_floats("selection_bias", l, -1, G->selection_bias, W->selection_bias,
			      W->n_experts);
		for (uint32_t e = 0; e < W->n_experts; e++)
			expect_ffn("ffn", l, e, &G->experts[e].ffn, &W->experts[e].ffn, dm);
		ASSERT_EQ(G->has_shared, W->has_shared);
		if (W->has_shared)
			expect_ffn("shared", l, -1, &G->shared, &W->shared, dm);
		expect_floats("shared_gate", l, -1, G->shared_gate, W->shared_gate, dm);
	}
	ASSERT_EQ(moe_layers, N_LAYERS);
}

/* The store serves exactly the weights moe_model_open reads from @model now. */
static void expect_weights(const struct expert_store *s, const char *model)
{
	struct moe_model *want = NULL;
	struct diag d = { { 0 } };
	int r = moe_model_open(model, NULL, 0, &want, &d);

	if (r < 0)
		fail_msg("moe_model_open %s: %s (%s)", model, d.msg, strerror(-r));
	expect_model_equal(expert_store_model(s), want);
	moe_model_free(want);
}

/* Is [p, p + bytes) inside object @node of @s? (white box: the objects' mappings) */
static bool in_object(const struct expert_store *s, uint32_t node, const void *p, uint64_t bytes)
{
	const struct store_object *o = &s->objects[node];
	const uint8_t *b = p;

	return node < s->n_objects && o->base && b >= o->base + STORE_HEADER_BYTES &&
	       b + bytes <= o->base + o->bytes;
}

/*
 * Expert e of every layer is on node e % n in the map, counted in the info,
 * and its weights lie in that node's object; the layers' own weights lie in
 * the home object: the model reads the objects, not a file.
 */
static void expect_interleaved(struct expert_store *s, uint32_t n)
{
	const struct expert_store_info *info = expert_store_info(s);
	const struct moe_model *m = expert_store_model(s);
	struct expert_map *map = expert_store_map_get(s);
	const struct placement *p = expert_map_placement(map);
	uint32_t sum = 0;

	ASSERT_EQ(info->n_nodes, n);
	ASSERT_EQ(p->n_nodes, n);
	for (uint32_t i = 0; i < n; i++) {
		ASSERT_EQ(info->node_experts[i], N_LAYERS * N_EXPERTS / n);
		assert_true(info->node_bytes[i] > 0);
		sum += info->node_experts[i];
	}
	ASSERT_EQ(sum, N_LAYERS * N_EXPERTS);
	for (uint32_t l = 0; l < moe_model_n_layers(m); l++) {
		const struct moe_layer *L = moe_model_layer(m, l);

		if (!L)
			continue;
		assert_true(in_object(s, 0, L->router_w,
				      sizeof(float) * L->n_experts * L->d_model));
		ASSERT_EQ(p->layers[l].n_experts, L->n_experts);
		for (uint32_t e = 0; e < L->n_experts; e++) {
			const struct ffn_weights *f = &L->experts[e].ffn;
			uint64_t wn = (uint64_t)f->d_ff * L->d_model * weight_dtype_size(f->dtype);

			ASSERT_EQ(p->layers[l].experts[e].n_copies, 1);
			if (p->layers[l].experts[e].node[0] != e % n)
				fail_msg("layer %u expert %u on node %u, expected %u", l, e,
					 p->layers[l].experts[e].node[0], e % n);
			if (!in_object(s, e % n, f->w1, wn) || !in_object(s, e % n, f->w2, wn) ||
			    !in_object(s, e % n, f->w3, wn))
				fail_msg("layer %u expert %u: weights outside node %u's object", l,
					 e, e % n);
		}
	}
	expert_map_put(map);
}

static void object_path(const char *name, uint32_t node, char *buf, size_t len)
{
	ASSERT_OK(store_object_path(shm_dir, name, node, buf, len));
}

static bool object_exists(const char *name, uint32_t node)
{
	char path[4096];
	struct stat st;

	object_path(name, node, path, sizeof(path));
	return stat(path, &st) == 0;
}

static void drop_ok(const char *name)
{
	struct diag d = { { 0 } };
	int r = expert_store_drop(shm_dir, name, &d);

	if (r < 0)
		fail_msg("expert_store_drop %s: %s (%s)", name, d.msg, strerror(-r));
}

/* XOR byte @off of object @node of store @name with 0xff. */
static void flip_byte(const char *name, uint32_t node, uint64_t off)
{
	char path[4096];
	uint8_t b;
	int fd;

	object_path(name, node, path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	ASSERT_EQ(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0xff;
	ASSERT_EQ(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

/*
 * Let @edit change object @node's header, then write a checksum that
 * verifies (computed here as store_object.h specifies it: XXH64, seed 0,
 * of the header with checksum 0 and then the manifest), so that only the
 * check of the edited field can refuse the object.
 */
static void edit_header(const char *name, uint32_t node, void (*edit)(struct store_header *))
{
	char path[4096];
	struct store_header h;
	XXH64_state_t *st = XXH64_createState();
	char *manifest = NULL;
	int fd;

	object_path(name, node, path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_non_null(st);
	ASSERT_EQ(pread(fd, &h, sizeof(h), 0), sizeof(h));
	edit(&h);
	h.checksum = 0;
	XXH64_reset(st, 0);
	XXH64_update(st, &h, sizeof(h));
	if (h.manifest_bytes) {
		manifest = malloc(h.manifest_bytes);
		assert_non_null(manifest);
		ASSERT_EQ(pread(fd, manifest, h.manifest_bytes, (off_t)h.manifest_offset),
			  (long long)h.manifest_bytes);
		XXH64_update(st, manifest, h.manifest_bytes);
	}
	h.checksum = XXH64_digest(st);
	ASSERT_EQ(pwrite(fd, &h, sizeof(h), 0), sizeof(h));
	free(manifest);
	XXH64_freeState(st);
	close(fd);
}

static void header_read(const char *name, uint32_t node, struct store_header *h)
{
	char path[4096];
	int fd;

	object_path(name, node, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	ASSERT_EQ(pread(fd, h, sizeof(*h), 0), sizeof(*h));
	close(fd);
}

/* Keep a kept store made by @o on @model, then let @damage spoil it; the next
 * open must reload with a reason mentioning @needle (NULL: any), serve the
 * file's weights, and leave a store that attaches again. */
static void expect_reload_after(const char *model, const struct expert_store_opts *o,
				void (*damage)(const char *name), const char *needle)
{
	struct expert_store *s = store_open_ok(model, o);

	s = expert_store_close(s);
	damage(o->name);
	s = store_open_ok(model, o);
	expect_source(s, STORE_LOADED, needle);
	assert_true(expert_store_info(s)->reload_reason[0] != '\0');
	expect_weights(s, model);
	s = expert_store_close(s);
	s = store_open_ok(model, o);
	expect_source(s, STORE_ATTACHED, NULL);
	expect_weights(s, model);
	expert_store_close(s);
}

/* ---------------------------------------------------------------- tests */

/* Catches: a re-attach that reads the files, serves other bytes, or changes the identity. */
static void test_attach_same_weights(void **state)
{
	const char *models[] = { model_f32, model_bf16 };

	(void)state;
	for (unsigned i = 0; i < 2; i++) {
		struct expert_store_opts o;
		struct expert_store *s;
		char identity[sizeof(s->info.identity)];

		opts_init(&o, &topo2, "attach", true);
		s = store_open_ok(models[i], &o);
		expect_source(s, STORE_LOADED, NULL);
		ASSERT_EQ(expert_store_info(s)->reload_reason[0], '\0'); /* nothing was there */
		ASSERT_EQ(strlen(expert_store_info(s)->identity), 32);
		if (i == 0) /* F32: every byte of the weights read once, no more */
			ASSERT_EQ(expert_store_info(s)->read_bytes,
				  expert_store_info(s)->weight_bytes);
		expect_weights(s, models[i]);
		expect_interleaved(s, 2);
		strcpy(identity, expert_store_info(s)->identity);
		s = expert_store_close(s);
		assert_true(object_exists("attach", 0) && object_exists("attach", 1));

		s = store_open_ok(models[i], &o);
		expect_source(s, STORE_ATTACHED, NULL);
		assert_string_equal(expert_store_info(s)->identity, identity);
		expect_weights(s, models[i]);
		expect_interleaved(s, 2);
		expert_store_close(s);
		drop_ok("attach");
	}
}

/* Was /dev/shm mounted with a huge= option other than never (grep /proc/mounts)? */
static bool shm_mount_has_huge(void)
{
	FILE *f = fopen("/proc/mounts", "re");
	char dev[256], dir[256], type[64], opts[512];
	bool huge = false;

	assert_non_null(f);
	while (fscanf(f, "%255s %255s %63s %511s %*d %*d", dev, dir, type, opts) == 4)
		if (strcmp(dir, "/dev/shm") == 0)
			huge = strcmp(type, "hugetlbfs") == 0 ||
			       (strstr(opts, "huge=") && !strstr(opts, "huge=never"));
	fclose(f);
	return huge;
}

/*
 * Catches: huge pages claimed because madvise(MADV_HUGEPAGE) succeeded, on
 * a tmpfs whose mount gives none (Debian's /dev/shm): only pages really
 * mapped huge count.
 */
static void test_huge_pages_claimed_only_when_mapped(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;

	(void)state;
	if (shm_mount_has_huge()) {
		/* skip() fails under CI=true (test_assert.h): CI's /dev/shm must be plain */
		print_message("/dev/shm gives huge pages here: nothing to check, skipped\n");
		skip();
	}
	opts_init(&o, &topo2, "huge", false);
	s = store_open_ok(model_f32, &o);
	assert_false(expert_store_info(s)->huge_pages);
	expert_store_close(s);
}

static void damage_home_manifest(const char *name)
{
	struct store_header h;

	header_read(name, 0, &h);
	assert_true(h.manifest_bytes > 0);
	flip_byte(name, 0, h.manifest_offset + h.manifest_bytes / 2);
}

/* Catches: a header field or manifest byte the checksum or checks leave out. */
static void test_flipped_header_bytes(void **state)
{
	struct expert_store_opts o;

	(void)state;
	opts_init(&o, &topo2, "flip", true);
	for (uint32_t node = 0; node < 2; node++)
		for (uint64_t off = 0; off < sizeof(struct store_header); off++) {
			struct expert_store *s = store_open_ok(model_f32, &o);

			expect_source(s, off == 0 && node == 0 ? STORE_LOADED : STORE_ATTACHED,
				      NULL);
			expert_store_close(s);
			flip_byte("flip", node, off);
			s = store_open_ok(model_f32, &o);
			if (expert_store_info(s)->source != STORE_LOADED)
				fail_msg("byte %llu of node %u's header flipped, yet attached",
					 (unsigned long long)off, node);
			assert_true(expert_store_info(s)->reload_reason[0] != '\0');
			expect_weights(s, model_f32);
			expert_store_close(s);
		}
	expect_reload_after(model_f32, &o, damage_home_manifest, "checksum");
	drop_ok("flip");
}

static void set_filling(struct store_header *h)
{
	h->state = STORE_FILLING;
}

static void damage_home_filling(const char *name)
{
	edit_header(name, 0, set_filling);
}

static void damage_node_filling(const char *name)
{
	edit_header(name, 1, set_filling);
}

static void other_identity(struct store_header *h)
{
	h->identity[3] ^= 1;
}

static void damage_node_identity(const char *name)
{
	edit_header(name, 1, other_identity);
}

static void damage_home_truncated(const char *name)
{
	char path[4096];
	struct stat st;

	object_path(name, 0, path, sizeof(path));
	SYS_OK(stat(path, &st));
	SYS_OK(truncate(path, st.st_size - 4096));
}

static void damage_node_truncated(const char *name)
{
	char path[4096];

	object_path(name, 1, path, sizeof(path));
	SYS_OK(truncate(path, 100));
}

static void damage_node_missing(const char *name)
{
	char path[4096];

	object_path(name, 1, path, sizeof(path));
	SYS_OK(unlink(path));
}

static void damage_node_mode(const char *name)
{
	char path[4096];

	object_path(name, 1, path, sizeof(path));
	SYS_OK(chmod(path, 0644));
}

/* Catches: the state, identity, size and presence checks of home and node objects. */
static void test_damaged_objects(void **state)
{
	struct expert_store_opts o;

	(void)state;
	opts_init(&o, &topo2, "damaged", true);
	expect_reload_after(model_f32, &o, damage_home_filling, "completed");
	expect_reload_after(model_f32, &o, damage_node_filling, "completed");
	expect_reload_after(model_f32, &o, damage_node_identity, "another store");
	expect_reload_after(model_f32, &o, damage_home_truncated, "bytes");
	expect_reload_after(model_f32, &o, damage_node_truncated, "no store object");
	expect_reload_after(model_f32, &o, damage_node_missing, NULL);
	expect_reload_after(model_f32, &o, damage_node_mode, "mode 0600");
	drop_ok("damaged");
}

/*
 * Two node objects swapped: both complete, same identity and (interleave,
 * equal experts) the same sizes; only the node index in the header tells
 * them apart. Catches: serving node 1's experts as node 2's.
 */
static void swap_nodes(const char *name)
{
	char a[4096], b[4096], t[4200];

	object_path(name, 1, a, sizeof(a));
	object_path(name, 2, b, sizeof(b));
	snprintf(t, sizeof(t), "%s.tmp", a);
	SYS_OK(rename(a, t));
	SYS_OK(rename(b, a));
	SYS_OK(rename(t, b));
}

static void test_swapped_nodes(void **state)
{
	struct expert_store_opts o;
	struct store_header h1, h2;
	struct expert_store *s;

	(void)state;
	opts_init(&o, &topo4, "swapped", true);
	s = store_open_ok(model_f32, &o);
	expert_store_close(s);
	header_read("swapped", 1, &h1);
	header_read("swapped", 2, &h2);
	ASSERT_EQ(h1.data_bytes, h2.data_bytes); /* else the sizes alone would tell */
	expect_reload_after(model_f32, &o, swap_nodes, "another store");
	drop_ok("swapped");
}

/* Catches: re-attaching after the weights changed under the same names and shapes. */
static void test_rewritten_weights(void **state)
{
	char path[300];
	struct expert_store_opts o;
	struct expert_store *s;
	char identity[sizeof(s->info.identity)];
	struct moe_model *old = NULL;
	struct diag d = { { 0 } };

	(void)state;
	snprintf(path, sizeof(path), "%s/rewritten.safetensors", tmp_root);
	ASSERT_OK(write_f32(path, 21));
	ASSERT_OK(moe_model_open(path, NULL, 0, &old, &d));
	opts_init(&o, &topo2, "rewritten", true);
	s = store_open_ok(path, &o);
	strcpy(identity, expert_store_info(s)->identity);
	expert_store_close(s);

	/* a new file renamed over the old one: the same header, other values */
	ASSERT_OK(write_f32(path, 22));
	s = store_open_ok(path, &o);
	expect_source(s, STORE_LOADED, "changed");
	/* the identity is of the layout: the same; the values are the new ones */
	assert_string_equal(expert_store_info(s)->identity, identity);
	expect_weights(s, path);
	if (memcmp(moe_model_layer(expert_store_model(s), 0)->experts[0].ffn.w1,
		   moe_model_layer(old, 0)->experts[0].ffn.w1, 16 * 24 * sizeof(float)) == 0)
		fail_msg("the rewritten file holds the old values: the test proves nothing");
	expert_store_close(s);

	/*
	 * The same file written in place (same inode and size): negate every
	 * float after the header. The pause keeps the new mtime off the old
	 * one on file systems with coarse timestamps.
	 */
	{
		int fd = open(path, O_RDWR | O_CLOEXEC);
		uint64_t hlen;
		struct stat st;

		assert_true(fd >= 0);
		SYS_OK(fstat(fd, &st));
		ASSERT_EQ(pread(fd, &hlen, 8, 0), 8);
		usleep(20000);
		for (off_t off = 8 + (off_t)hlen; off + 4 <= st.st_size; off += 4) {
			uint8_t b[4];

			ASSERT_EQ(pread(fd, b, 4, off), 4);
			b[3] ^= 0x80; /* little-endian float32: the sign bit */
			ASSERT_EQ(pwrite(fd, b, 4, off), 4);
		}
		close(fd);
	}
	s = store_open_ok(path, &o);
	expect_source(s, STORE_LOADED, "changed");
	expect_weights(s, path);
	ASSERT_EQ(((const float *)moe_model_layer(expert_store_model(s), 0)->experts[0].ffn.w1)[0],
		  -((const float *)moe_model_layer(old, 0)->experts[0].ffn.w1)[0]);
	expert_store_close(s);
	moe_model_free(old);
	drop_ok("rewritten");
}

/* Catches: a store of one model re-attached for another. */
static void test_other_model(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;

	(void)state;
	opts_init(&o, &topo2, "other", true);
	s = store_open_ok(model_f32, &o);
	expert_store_close(s);
	s = store_open_ok(model_bf16, &o);
	expect_source(s, STORE_LOADED, "another model");
	expect_weights(s, model_bf16);
	expert_store_close(s);
	drop_ok("other");
}

/* Catches: a layout made for other placement settings re-attached. */
static void test_placement_changes(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;
	struct expert_map *map;

	(void)state;
	opts_init(&o, &topo2, "placement", true);
	s = store_open_ok(model_f32, &o);
	expert_store_close(s);

	o.policy = PLACEMENT_BALANCED;
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	expect_weights(s, model_f32);
	expert_store_close(s);

	o.policy = PLACEMENT_EXPLICIT;
	o.expert_nodes = "0-3@0;4-7@1";
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	expert_store_close(s);
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_ATTACHED, NULL);
	expert_store_close(s);

	o.expert_nodes = "0-3@1;4-7@0";
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	map = expert_store_map_get(s);
	ASSERT_EQ(expert_map_placement(map)->layers[0].experts[0].node[0], 1);
	ASSERT_EQ(expert_map_placement(map)->layers[1].experts[7].node[0], 0);
	expert_map_put(map);
	expect_weights(s, model_f32);
	expert_store_close(s);
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_ATTACHED, NULL);
	map = expert_store_map_get(s);
	ASSERT_EQ(expert_map_placement(map)->layers[0].experts[0].node[0], 1);
	expert_map_put(map);
	expert_store_close(s);

	o.replica_budget = 1u << 20;
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	expert_store_close(s);

	/* another topology: the same policy, one node more */
	o = (struct expert_store_opts){ 0 };
	opts_init(&o, &topo2, "placement", true);
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	expert_store_close(s);
	opts_init(&o, &topo4, "placement", true);
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	expect_interleaved(s, 4);
	expert_store_close(s);
	drop_ok("placement");
}

/* Catches: objects left behind by a store that is not kept. */
static void test_keep_no(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;

	(void)state;
	opts_init(&o, &topo4, "unkept", false);
	s = store_open_ok(model_f32, &o);
	ASSERT_EQ(shm_entries(), 4);
	expert_store_close(s);
	ASSERT_EQ(shm_entries(), 0);

	/* a kept store attached by a moed that does not keep it: gone at close too */
	o.keep = true;
	expert_store_close(store_open_ok(model_f32, &o));
	o.keep = false;
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_ATTACHED, NULL);
	expert_store_close(s);
	ASSERT_EQ(shm_entries(), 0);
}

/*
 * A store kept on 4 nodes, then loaded on 2 (the topology changed): the
 * objects of nodes 2 and 3 belong to no store any more. Catches: memory
 * of the old layout left in tmpfs for good.
 */
static void test_fewer_nodes(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;

	(void)state;
	opts_init(&o, &topo4, "shrunk", true);
	expert_store_close(store_open_ok(model_f32, &o));
	ASSERT_EQ(shm_entries(), 4);
	opts_init(&o, &topo2, "shrunk", true);
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement");
	if (object_exists("shrunk", 2) || object_exists("shrunk", 3))
		fail_msg("the 4-node store's objects of nodes 2 and 3 outlive its reload on 2");
	expert_store_close(s);
	drop_ok("shrunk");
}

/* Catches: a drop that removes the objects under a running store, or misreports. */
static void test_drop(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;
	struct diag d = { { 0 } };

	(void)state;
	ASSERT_ERRNO(expert_store_drop(shm_dir, "dropped", &d), ENOENT);
	assert_true(d.msg[0] != '\0');

	opts_init(&o, &topo2, "dropped", true);
	s = store_open_ok(model_f32, &o);
	diag_clear(&d);
	ASSERT_ERRNO(expert_store_drop(shm_dir, "dropped", &d), EBUSY);
	assert_true(object_exists("dropped", 0) && object_exists("dropped", 1));
	expect_weights(s, model_f32);
	expert_store_close(s);

	ASSERT_OK(expert_store_drop(shm_dir, "dropped", NULL));
	ASSERT_EQ(shm_entries(), 0);
	ASSERT_ERRNO(expert_store_drop(shm_dir, "dropped", NULL), ENOENT);

	/* a store that attached holds its lock as one that loaded does */
	expert_store_close(store_open_ok(model_f32, &o));
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_ATTACHED, NULL);
	ASSERT_ERRNO(expert_store_drop(shm_dir, "dropped", NULL), EBUSY);
	expert_store_close(s);
	drop_ok("dropped");
}

static void damage_home_header(const char *name)
{
	flip_byte(name, 0, offsetof(struct store_header, data_bytes));
}

/*
 * A second open of a store in use: refused, whether its home verifies or
 * not (a moed still loading has a home in state FILLING). Catches: a
 * second moed that reloads over the first one's objects, after which the
 * first one's close (keep=no) removes the second one's.
 */
static void test_in_use(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s, *s2 = NULL;
	struct diag d = { { 0 } };
	struct stat before, after;
	char home[4096];

	(void)state;
	opts_init(&o, &topo2, "inuse", false);
	s = store_open_ok(model_f32, &o);
	ASSERT_ERRNO(expert_store_open(model_f32, &o, &s2, &d), EBUSY);
	assert_null(s2);

	object_path("inuse", 0, home, sizeof(home));
	SYS_OK(stat(home, &before));
	damage_home_filling("inuse");
	diag_clear(&d);
	ASSERT_ERRNO(expert_store_open(model_f32, &o, &s2, &d), EBUSY);
	assert_null(s2);
	damage_home_header("inuse");
	ASSERT_ERRNO(expert_store_open(model_f32, &o, &s2, NULL), EBUSY);
	assert_null(s2);
	SYS_OK(stat(home, &after));
	ASSERT_EQ(after.st_ino, before.st_ino); /* nobody made a new home */
	expect_weights(s, model_f32);
	expert_store_close(s);
	ASSERT_EQ(shm_entries(), 0);
}

/* Catches: objects that others could read or write, or owned by someone else. */
static void test_object_mode(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;
	struct stat st;

	(void)state;
	opts_init(&o, &topo4, "mode", true);
	s = store_open_ok(model_f32, &o);
	for (uint32_t n = 0; n < 4; n++) {
		char path[4096];

		object_path("mode", n, path, sizeof(path));
		SYS_OK(lstat(path, &st));
		assert_true(S_ISREG(st.st_mode));
		if ((st.st_mode & 07777) != 0600)
			fail_msg("%s: mode %o, expected 0600", path, st.st_mode & 07777);
		ASSERT_EQ(st.st_uid, geteuid());
	}
	expert_store_close(s);
	drop_ok("mode");
}

/*
 * Catches: experts whose pages are not where the store says, or memory not
 * bound. On this machine's real topology (detected, not simulated), every
 * page of every expert's weights is on its node (move_pages query), and
 * the memory policy of each expert's first byte is MPOL_BIND to that node
 * (get_mempolicy), both as loaded and as re-attached.
 */
static void test_real_placement(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s;
	struct topology real;
	struct diag d = { { 0 } };

	(void)state;
	ASSERT_OK(topology_detect(&real, &d));
	opts_init(&o, &real, "real", true);
	for (int round = 0; round < 2; round++) {
		const struct moe_model *m;
		struct expert_map *map;
		const struct placement *p;

		s = store_open_ok(model_f32, &o);
		expect_source(s, round ? STORE_ATTACHED : STORE_LOADED, NULL);
		m = expert_store_model(s);
		map = expert_store_map_get(s);
		p = expert_map_placement(map);
		for (uint32_t l = 0; l < p->n_layers; l++) {
			const struct moe_layer *L = moe_model_layer(m, l);

			for (uint32_t e = 0; L && e < L->n_experts; e++) {
				uint32_t node = p->layers[l].experts[e].node[0];
				const struct store_object *obj = &s->objects[node];
				const uint8_t *w1 = (const uint8_t *)L->experts[e].ffn.w1;
				uint64_t len = (uint64_t)L->experts[e].ffn.d_ff * L->d_model * 4;
				uint64_t on_node = 0, pages = 0;
				unsigned long mask[16] = { 0 };
				volatile uint8_t sink = 0;
				int policy = -1;

				/* map every page here first: an attached object's pages are
				 * in tmpfs, but a query counts unmapped ones as elsewhere */
				for (uint64_t at = 0; at < len; at += 4096)
					sink ^= w1[at];
				sink ^= w1[len - 1]; /* the last page, when w1 starts mid-page */
				(void)sink;
				ASSERT_OK(store_object_pages_on_node(obj, (uint64_t)(w1 - obj->base),
								     len, (int)real.nodes[node].id,
								     &on_node, &pages));
				assert_true(pages > 0);
				if (on_node != pages)
					fail_msg("layer %u expert %u: %llu of %llu pages on node %u", l,
						 e, (unsigned long long)on_node,
						 (unsigned long long)pages, real.nodes[node].id);
				SYS_OK(get_mempolicy(&policy, mask, sizeof(mask) * 8, (void *)(uintptr_t)w1,
						     MPOL_F_ADDR));
				ASSERT_EQ(policy, MPOL_BIND);
				assert_true(mask[real.nodes[node].id / 64] &
					    (1ul << (real.nodes[node].id % 64)));
			}
		}
		expert_map_put(map);
		expert_store_close(s);
	}
	drop_ok("real");
}

/* 1, 2 and 4 simulated nodes, loaded and then attached. */
static void test_interleave_nodes(void **state)
{
	const struct topology *topos[] = { &topo1, &topo2, &topo4 };

	(void)state;
	for (unsigned i = 0; i < 3; i++) {
		uint32_t n = topos[i]->n_nodes;
		struct expert_store_opts o;
		struct expert_store *s;

		opts_init(&o, topos[i], "nodes", true);
		s = store_open_ok(model_f32, &o);
		ASSERT_EQ(shm_entries(), n);
		for (uint32_t k = 0; k < n; k++)
			assert_true(object_exists("nodes", k));
		expect_interleaved(s, n);
		expect_weights(s, model_f32);
		expert_store_close(s);
		s = store_open_ok(model_f32, &o);
		expect_source(s, STORE_ATTACHED, NULL);
		expect_interleaved(s, n);
		expect_weights(s, model_f32);
		expert_store_close(s);
		drop_ok("nodes");
	}
}

/* ---------------------------------------------------------------- remote experts */

/* opts.remote_experts: layer 0's experts 2-7 and layer 1's expert 5 are other hosts'. */
static int remote_split(const void *ctx, uint32_t n_layers, const uint32_t *n_experts,
			bool *const *remote, struct diag *d)
{
	int *calls = (int *)(uintptr_t)ctx;

	(*calls)++;
	if (n_layers != N_LAYERS || n_experts[0] != N_EXPERTS || n_experts[1] != N_EXPERTS)
		return diag_set(d, -EINVAL, "asked for %u layers", n_layers);
	for (uint32_t e = 2; e < N_EXPERTS; e++)
		remote[0][e] = true;
	remote[1][5] = true;
	return 0;
}

static int remote_refused(const void *ctx, uint32_t n_layers, const uint32_t *n_experts,
			  bool *const *remote, struct diag *d)
{
	(void)ctx;
	(void)n_layers;
	(void)n_experts;
	(void)remote;
	return diag_set(d, -EINVAL, "expert_hosts: no such host");
}

static bool split_is_remote(uint32_t l, uint32_t e)
{
	return (l == 0 && e >= 2) || (l == 1 && e == 5);
}

/* The bytes of expert @e of @L's matrices and biases. */
static uint64_t expert_bytes(const struct moe_layer *L, uint32_t e)
{
	const struct ffn_weights *f = &L->experts[e].ffn;
	uint64_t dm = L->d_model, ff = f->d_ff;

	return weight_dtype_size(f->dtype) * dm * ff * (f->w3 ? 3 : 2) +
	       sizeof(float) * ((f->b1 ? ff : 0) + (f->b2 ? dm : 0));
}

/*
 * An engine given the store's model, without the peers that would take
 * the remote experts' rows, refuses a batch that routes to one (six of
 * layer 0's eight experts are remote: 16 tokens reach one), rather than
 * read their NULL matrices.
 */
static void expect_remote_never_computed(struct expert_store *s)
{
	const struct moe_layer *L = moe_model_layer(expert_store_model(s), 0);
	struct engine_opts eo;
	struct engine *e = NULL;
	struct diag d = { { 0 } };
	float x[16 * 64], y[16 * 64];
	struct engine_batch b = { .x = x, .n_tokens = 16, .output = y };

	assert_true(L->d_model <= 64);
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = (float)((int)(i * 7919 % 23) - 11) * 0.1f;
	engine_opts_init(&eo);
	eo.n_workers = 1;
	ASSERT_OK(engine_new(&eo, &e, &d));
	ASSERT_ERRNO(engine_forward(e, L, NULL, &b, &d), EINVAL);
	assert_non_null(strstr(d.msg, "another host holds its weights"));
	engine_free(e);
}

/*
 * The experts other hosts compute are neither read nor held: their
 * matrices are NULL, the store's bytes shrink by exactly theirs, the others
 * are bitwise the checkpoint's; a change to one is refused with -EREMOTE; a
 * restart with the same split (remote_key) re-attaches without asking the
 * callback, another split loads again, and a split the callback refuses
 * fails the open with its message.
 */
static void test_remote_experts(void **state)
{
	struct expert_store_opts o;
	struct expert_store *s, *full;
	struct moe_model *want = NULL;
	struct diag d = { { 0 } };
	uint64_t remote_bytes = 0;
	int calls = 0;

	(void)state;
	ASSERT_OK(moe_model_open(model_f32, NULL, 0, &want, &d));
	opts_init(&o, &topo2, "full", false);
	full = store_open_ok(model_f32, &o);

	opts_init(&o, &topo2, "remote", true);
	o.remote_experts = remote_split;
	o.remote_ctx = &calls;
	o.remote_key = "2-7@b;1:5@c";
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, NULL);
	ASSERT_EQ(calls, 1);
	ASSERT_EQ(expert_store_info(s)->remote_experts, 7);
	for (uint32_t l = 0; l < N_LAYERS; l++) {
		const struct moe_layer *L = moe_model_layer(expert_store_model(s), l);
		const struct moe_layer *W = moe_model_layer(want, l);

		for (uint32_t e = 0; e < N_EXPERTS; e++) {
			const struct ffn_weights *f = &L->experts[e].ffn;
			const struct ffn_weights *g = &W->experts[e].ffn;
			size_t n = sizeof(float) * (size_t)f->d_ff * L->d_model;

			ASSERT_EQ(expert_store_is_remote(s, l, e), split_is_remote(l, e));
			ASSERT_EQ(moe_expert_held_elsewhere(&L->experts[e]), split_is_remote(l, e));
			ASSERT_EQ(f->d_ff, g->d_ff); /* the shape stays known */
			if (split_is_remote(l, e)) {
				assert_null(f->w1);
				assert_null(f->w2);
				assert_null(f->w3);
				remote_bytes += expert_bytes(W, e);
				continue;
			}
			assert_memory_equal(f->w1, g->w1, n);
			assert_memory_equal(f->w2, g->w2, n);
			assert_memory_equal(f->w3, g->w3, n);
		}
	}
	ASSERT_EQ(expert_store_info(s)->weight_bytes + remote_bytes,
		  expert_store_info(full)->weight_bytes);
	{
		struct expert_change c = { .op = EXPERT_REPLICATE, .layer = 0, .expert = 3,
					   .node = 1 };

		ASSERT_ERRNO(expert_store_change(s, &c, &d), EREMOTE);
		assert_non_null(strstr(d.msg, "another host"));
	}
	expect_remote_never_computed(s);
	s = expert_store_close(s);

	s = store_open_ok(model_f32, &o); /* the same split: nothing read */
	expect_source(s, STORE_ATTACHED, NULL);
	ASSERT_EQ(expert_store_info(s)->remote_experts, 7);
	assert_true(expert_store_is_remote(s, 1, 5) && !expert_store_is_remote(s, 1, 4));
	s = expert_store_close(s);

	o.remote_key = "2-7@b"; /* another split: loaded again */
	s = store_open_ok(model_f32, &o);
	expect_source(s, STORE_LOADED, "placement settings changed");
	s = expert_store_close(s);

	o.remote_experts = remote_refused; /* a new split: the callback is asked */
	o.remote_key = "0@x";
	ASSERT_ERRNO(expert_store_open(model_f32, &o, &s, &d), EINVAL);
	assert_non_null(strstr(d.msg, "no such host"));
	drop_ok("remote");
	expert_store_close(full);
	moe_model_free(want);
}

int main(void)
{
#define T(_t) cmocka_unit_test_setup_teardown(_t, test_setup, test_teardown)
	const struct CMUnitTest tests[] = {
		T(test_attach_same_weights), T(test_huge_pages_claimed_only_when_mapped),
		T(test_real_placement),
		T(test_flipped_header_bytes),
		T(test_damaged_objects),     T(test_swapped_nodes),
		T(test_rewritten_weights),   T(test_other_model),
		T(test_placement_changes),   T(test_keep_no),
		T(test_fewer_nodes),         T(test_drop),
		T(test_in_use),              T(test_object_mode),
		T(test_interleave_nodes),    T(test_remote_experts),
	};
#undef T
	struct stat st;

	if (!test_topo_cpus_allowed()) {
		fprintf(stderr, "test_expert_store: needs CPUs 0 and 1 (the simulated topologies "
				"use them), skipping\n");
		return 77;
	}
	if (stat("/dev/shm", &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "test_expert_store: no /dev/shm, skipping\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
