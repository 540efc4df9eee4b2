/* SPDX-License-Identifier: MIT */
/*
 * bench_store: the expert store (store/expert_store.h) against the plainest
 * way to get the same bytes, each figure a ratio against a baseline measured
 * in the same run, because absolute times drift on a shared machine:
 *
 * - load_vs_read = plain read() / store load: expert_store_open() of a
 *   generated model (keep = no) against read() of the same file into a
 *   fresh malloc'd buffer; both start with the file dropped from the page
 *   cache (fdatasync + POSIX_FADV_DONTNEED, checked with mincore: the output
 *   says cold or warm). F32, and BF16 (whose experts the store keeps in
 *   BF16: expert_dtype = checkpoint).
 * - attach_speedup = load / attach: open with keep = yes (a load), close,
 *   open again (a re-attach that reads no weight file).
 * - memory_ratio = the bytes the store's objects hold (st_blocks * 512 of
 *   its files) / the bytes of the weights in the dtype the store keeps them
 *   (the checkpoint's for the experts' matrices, F32 for routers and
 *   biases): for a BF16 model, near half of an F32 copy.
 *
 * Each pair runs in ABBA order (baseline, store, store, baseline), several
 * rounds; a round's ratio is the sum of its two baselines over the sum of its
 * two store runs (ABBA cancels a linear drift), and the figure is the median
 * over rounds. The model is written by the project's own generator
 * (synth_model_write, as `moectl gen-model`) into a private mkdtemp folder on
 * a disk-backed file system (tmpfs cannot be made cold); the store lives in
 * a private mkdtemp folder under /dev/shm. Both folders are removed at exit,
 * also on a fatal signal (not on SIGKILL). Not a test: it prints figures and
 * fails only when something cannot run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "bench_scratch.h"
#include "model/synth_model.h"
#include "numa/topology.h"
#include "store/expert_store.h"
#include "util/cpu_load.h"
#include "util/log.h"
#include "util/parse.h"

#ifndef MOE_BUILD_TYPE
#define MOE_BUILD_TYPE "unknown"
#endif

#define MAX_ROUNDS 50
/* A file counts as cold when at most this share of its pages is still cached. */
#define COLD_RESIDENT_MAX 0.01

static bool arg_json;
static bool arg_quick;
static uint32_t arg_rounds = 5;
static uint32_t arg_layers = 4; /* 4 x 8 experts of 3 x 1024 x 1024: 403 MB in F32 */
static const char *arg_model_dir = "/var/tmp";
static const char *arg_shm_dir = "/dev/shm";
static const char *arg_topology_file; /* NULL: detect */

/* ---- the private folders (bench_scratch.h) ---- */

static char model_dir[PATH_MAX];
static char shm_dir[PATH_MAX];

/* ---- time, statistics, the machine ---- */

static double min_of(const double *v, uint32_t n)
{
	double m = v[0];

	for (uint32_t i = 1; i < n; i++)
		m = fmin(m, v[i]);
	return m;
}

static double max_of(const double *v, uint32_t n)
{
	double m = v[0];

	for (uint32_t i = 1; i < n; i++)
		m = fmax(m, v[i]);
	return m;
}

/* A "Key:   N kB" line of /proc/meminfo, in bytes; 0 when absent. */
static uint64_t meminfo_bytes(const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			(void)sscanf(line + klen + 1, "%llu", &kb);
			break;
		}
	fclose(f);
	return (uint64_t)kb * 1024;
}

/* The selected word of a sysfs choice file ("always [madvise] never"), or "?". */
static void sysfs_choice(const char *path, char *buf, size_t len)
{
	char line[256], *a, *b;
	FILE *f = fopen(path, "re");

	snprintf(buf, len, "?");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f) && (a = strchr(line, '[')) && (b = strchr(a, ']'))) {
		*b = '\0';
		snprintf(buf, len, "%s", a + 1);
	}
	fclose(f);
}

/* ---- the page cache ---- */

/*
 * Drop @path from the page cache (dirty pages are written back first, or
 * POSIX_FADV_DONTNEED would keep them) and count what stayed: the share of
 * its pages mincore() still reports resident goes to *ret_resident (a
 * tmpfs file stays at 1.0: its pages are the file). 0 or -errno.
 */
static int file_cache_drop(const char *path, double *ret_resident)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *vec;
	size_t n_pages, resident = 0;
	struct stat st;
	void *map;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || fdatasync(fd) < 0) {
		r = -errno;
		goto out_close;
	}
	r = -posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (r < 0)
		goto out_close;
	if (st.st_size == 0) {
		*ret_resident = 0;
		goto out_close;
	}
	n_pages = ((size_t)st.st_size + page - 1) / page;
	/* a mapping that is never touched: mincore reads the cache, faults nothing in */
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		r = -errno;
		goto out_close;
	}
	vec = malloc(n_pages);
	if (!vec) {
		r = -ENOMEM;
		goto out_unmap;
	}
	if (mincore(map, (size_t)st.st_size, vec) < 0) {
		r = -errno;
		goto out_free;
	}
	for (size_t i = 0; i < n_pages; i++)
		resident += vec[i] & 1;
	*ret_resident = (double)resident / (double)n_pages;
out_free:
	free(vec);
out_unmap:
	munmap(map, (size_t)st.st_size);
out_close:
	close(fd);
	return r;
}

/* ---- the two sides ---- */

/* The baseline: the whole file into a fresh malloc'd buffer with plain read()s. */
static int plain_read(const char *path, double *ret_s)
{
	double t0 = bench_now_s(), t;
	size_t size, done = 0;
	struct stat st;
	char *buf;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out_close;
	}
	size = (size_t)st.st_size;
	buf = malloc(size ?: 1);
	if (!buf) {
		r = -ENOMEM;
		goto out_close;
	}
	while (done < size) {
		ssize_t n = read(fd, buf + done, size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)n;
	}
	close(fd);
	t = bench_now_s() - t0;
	free(buf);
	if (r == 0)
		*ret_s = t;
	return r;
out_close:
	close(fd);
	return r;
}

/*
 * Two calibrations for the log, not figures: a cold read of @path into a
 * buffer whose pages are already there (the file system alone), and the
 * first touch of @store_bytes of fresh memory (what the read and the store
 * pay on top of it: on a VM whose guest memory is backed lazily, most).
 */
static void calibrate(const char *path, uint64_t store_bytes, const char *tag)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	double t_read = -1, t_touch = -1, resident, t0;
	size_t size = (size_t)store_bytes, done = 0;
	char *buf = malloc(size ?: 1);
	ssize_t n = 0;
	int fd;

	if (!buf)
		return;
	t0 = bench_now_s();
	for (size_t i = 0; i < size; i += page)
		((volatile char *)buf)[i] = 1;
	t_touch = bench_now_s() - t0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && file_cache_drop(path, &resident) == 0) {
		t0 = bench_now_s();
		while (done < size && ((n = read(fd, buf + done, size - done)) > 0 ||
				       (n < 0 && errno == EINTR)))
			done += n > 0 ? (size_t)n : 0;
		t_read = bench_now_s() - t0;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	fprintf(stderr, "# %s calibration: cold read into touched memory %.1f ms (%.2f GB/s); "
		"first touch of %.1f MB fresh memory %.1f ms (%.2f GB/s)\n",
		tag, t_read * 1e3, (double)done / t_read / 1e9, (double)store_bytes / 1e6,
		t_touch * 1e3, (double)store_bytes / t_touch / 1e9);
}

/* What one expert_store_open() took and made. */
struct store_sample {
	double seconds;            /* expert_store_open() alone: close is not timed */
	enum store_source source;
	char reload_reason[256];
	uint64_t weight_bytes;     /* bytes of every tensor as the store keeps it */
	uint64_t read_bytes;
	uint64_t object_blocks;    /* st_blocks * 512 of the store's files, while open */
	uint64_t object_size;      /* their st_size */
	uint64_t shmem_huge;       /* ShmemHugePages while open (machine-wide) */
	bool huge_asked;           /* info.huge_pages */
};

/* The store's files in @dir (NAME.node*): allocated bytes and apparent size. */
static int store_files_bytes(const char *dir, const char *name, uint64_t *ret_blocks,
			     uint64_t *ret_size)
{
	char prefix[256];
	uint64_t blocks = 0, size = 0;
	struct dirent *e;
	DIR *dp;
	int n;

	n = snprintf(prefix, sizeof(prefix), "%s.node", name);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		return -ENAMETOOLONG;
	dp = opendir(dir);
	if (!dp)
		return -errno;
	while ((e = readdir(dp))) {
		struct stat st;

		if (strncmp(e->d_name, prefix, (size_t)n) != 0 ||
		    fstatat(dirfd(dp), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		blocks += (uint64_t)st.st_blocks * 512;
		size += (uint64_t)st.st_size;
	}
	closedir(dp);
	*ret_blocks = blocks;
	*ret_size = size;
	return 0;
}

static int store_run(const char *model, const struct expert_store_opts *o,
		     struct store_sample *ret, struct diag *d)
{
	const struct expert_store_info *info;
	struct store_sample s = { 0 };
	struct expert_store *store;
	double t0 = bench_now_s();
	int r;

	diag_clear(d);
	r = expert_store_open(model, o, &store, d);
	if (r < 0)
		return r;
	s.seconds = bench_now_s() - t0;
	info = expert_store_info(store);
	s.source = info->source;
	snprintf(s.reload_reason, sizeof(s.reload_reason), "%s", info->reload_reason);
	s.weight_bytes = info->weight_bytes;
	s.read_bytes = info->read_bytes;
	s.huge_asked = info->huge_pages;
	s.shmem_huge = meminfo_bytes("ShmemHugePages");
	r = store_files_bytes(o->dir, o->name, &s.object_blocks, &s.object_size);
	expert_store_close(store);
	if (r < 0)
		return diag_set(d, r, "%s: cannot list the store's objects: %s", o->dir,
				strerror(-r));
	*ret = s;
	return 0;
}

/* ---- figures ---- */

struct figure {
	const char *name;       /* load_vs_read, attach_speedup, memory_ratio */
	const char *model;      /* f32, bf16 */
	double file_mb;
	double resident_max;    /* the most of the file any timed run found cached; < 0: n/a */
	const char *base_what, *meas_what, *unit;
	double base, meas;      /* medians, in unit */
	double ratio, ratio_min, ratio_max; /* median and range over rounds */
	double target;
	bool target_is_min;     /* ratio >= target, else ratio <= target */
	uint32_t rounds;
	double background;      /* cores other processes used meanwhile; < 0: unknown */
};

static bool figure_met(const struct figure *f)
{
	return f->target_is_min ? f->ratio >= f->target : f->ratio <= f->target;
}

struct model_file {
	const char *tag;        /* f32, bf16 */
	enum st_dtype dtype;
	char path[PATH_MAX];
	uint64_t bytes;         /* the file's */
};

struct bench_ctx {
	const struct topology *topo;
	uint32_t seq;           /* store names: one per store, never reused */
	struct diag d;
};

static void store_opts(struct bench_ctx *c, bool keep, char *name, size_t len,
		       struct expert_store_opts *o)
{
	snprintf(name, len, "bench%u", c->seq++);
	*o = (struct expert_store_opts){ .dir = shm_dir, .name = name, .keep = keep,
					 .topo = c->topo, .policy = PLACEMENT_BALANCED };
}

/* Drop the model from the cache and note the worst residency seen. */
static int cache_drop(struct bench_ctx *c, const struct model_file *m, double *worst)
{
	double resident = 1.0;
	int r = file_cache_drop(m->path, &resident);

	if (r < 0)
		return diag_set(&c->d, r, "%s: cannot drop from the page cache: %s", m->path,
				strerror(-r));
	*worst = fmax(*worst, resident);
	return 0;
}

static int expect_source(struct bench_ctx *c, const struct store_sample *s,
			 enum store_source want)
{
	if (s->source == want)
		return 0;
	return diag_set(&c->d, -EPROTO, "the store %s where it should have %s%s%s",
			s->source == STORE_LOADED ? "loaded" : "re-attached",
			want == STORE_LOADED ? "loaded" : "re-attached",
			s->reload_reason[0] ? ": " : "", s->reload_reason);
}

/*
 * Figure 1 and 3 for @m: per round, read / load / load / read, each cold;
 * the memory ratio from every load (the same every time: its median).
 */
static int measure_load(struct bench_ctx *c, const struct model_file *m, struct figure *load,
			struct figure *mem)
{
	const uint32_t R = arg_rounds;
	double reads[2 * MAX_ROUNDS], loads[2 * MAX_ROUNDS], ratio[MAX_ROUNDS];
	double mem_ratio[2 * MAX_ROUNDS], obj_mb[2 * MAX_ROUNDS], weight_mb[2 * MAX_ROUNDS];
	struct cpu_load_mark machine;
	struct expert_store_opts o;
	struct store_sample s;
	double worst = 0, unused = 0;
	uint64_t shmem_huge = 0;
	char name[64];
	int r;

	cpu_load_mark_take(&machine);
	/* warm-up, untimed: the first open pays for libnuma, io_uring and the allocator */
	r = cache_drop(c, m, &unused);
	store_opts(c, false, name, sizeof(name), &o);
	if (r == 0)
		r = store_run(m->path, &o, &s, &c->d);
	if (r < 0)
		return r;
	calibrate(m->path, s.weight_bytes, m->tag);
	for (uint32_t round = 0; round < R; round++) {
		for (uint32_t pos = 0; pos < 4; pos++) {
			const uint32_t i = 2 * round + (pos >= 2);

			r = cache_drop(c, m, &worst);
			if (r < 0)
				return r;
			if (pos == 0 || pos == 3) {
				r = plain_read(m->path, &reads[i]);
				if (r < 0)
					return diag_set(&c->d, r, "%s: read: %s", m->path,
							strerror(-r));
				continue;
			}
			store_opts(c, false, name, sizeof(name), &o);
			r = store_run(m->path, &o, &s, &c->d);
			if (r == 0)
				r = expect_source(c, &s, STORE_LOADED);
			if (r < 0)
				return r;
			loads[i] = s.seconds;
			mem_ratio[i] = (double)s.object_blocks / (double)s.weight_bytes;
			obj_mb[i] = (double)s.object_blocks / 1e6;
			weight_mb[i] = (double)s.weight_bytes / 1e6;
			shmem_huge = s.shmem_huge > shmem_huge ? s.shmem_huge : shmem_huge;
			fprintf(stderr, "# %s round %u: load %.1f ms (%.2f GB/s from the file), "
				"objects %.1f MB allocated of %.1f MB apparent\n",
				m->tag, round, s.seconds * 1e3,
				(double)s.read_bytes / s.seconds / 1e9, obj_mb[i],
				(double)s.object_size / 1e6);
		}
		ratio[round] = (reads[2 * round] + reads[2 * round + 1]) /
			       (loads[2 * round] + loads[2 * round + 1]);
		fprintf(stderr, "# %s round %u: read %.1f + %.1f ms, load %.1f + %.1f ms: %.3f\n",
			m->tag, round, reads[2 * round] * 1e3, reads[2 * round + 1] * 1e3,
			loads[2 * round] * 1e3, loads[2 * round + 1] * 1e3, ratio[round]);
	}
	*load = (struct figure){
		.name = "load_vs_read", .model = m->tag, .file_mb = (double)m->bytes / 1e6,
		.resident_max = worst, .base_what = "read", .meas_what = "load", .unit = "ms",
		.base = bench_median(reads, 2 * R) * 1e3, .meas = bench_median(loads, 2 * R) * 1e3,
		.ratio = bench_median(ratio, R), .ratio_min = min_of(ratio, R),
		.ratio_max = max_of(ratio, R), .target = 0.8, .target_is_min = true, .rounds = R,
		.background = cpu_load_others(&machine),
	};
	*mem = (struct figure){
		.name = "memory_ratio", .model = m->tag, .file_mb = (double)m->bytes / 1e6,
		.resident_max = -1, .base_what = "f32", .meas_what = "objects", .unit = "MB",
		.base = bench_median(weight_mb, 2 * R), .meas = bench_median(obj_mb, 2 * R),
		.ratio = bench_median(mem_ratio, 2 * R), .ratio_min = min_of(mem_ratio, 2 * R),
		.ratio_max = max_of(mem_ratio, 2 * R), .target = 1.05, .target_is_min = false,
		.rounds = R, .background = -1,
	};
	fprintf(stderr, "# %s: store asked for huge pages: %s; ShmemHugePages while open: %.1f MB; "
		"other processes used %.2f cores\n",
		m->tag, s.huge_asked ? "yes" : "no", (double)shmem_huge / 1e6, load->background);
	return 0;
}

/*
 * Figure 2: per round, load (keep = yes) / attach / attach / load, the
 * store dropped before the second load so that it loads again.
 */
static int measure_restart(struct bench_ctx *c, const struct model_file *m, struct figure *f)
{
	const uint32_t R = arg_rounds;
	double loads[2 * MAX_ROUNDS], attaches[2 * MAX_ROUNDS], ratio[MAX_ROUNDS];
	struct cpu_load_mark machine;
	struct expert_store_opts o;
	struct store_sample s;
	double worst = 0;
	char name[64];
	int r;

	cpu_load_mark_take(&machine);
	for (uint32_t round = 0; round < R; round++) {
		store_opts(c, true, name, sizeof(name), &o);
		for (uint32_t pos = 0; pos < 4; pos++) {
			const uint32_t i = 2 * round + (pos >= 2);
			const bool is_load = pos == 0 || pos == 3;

			r = cache_drop(c, m, &worst);
			if (r == 0)
				r = store_run(m->path, &o, &s, &c->d);
			if (r == 0)
				r = expect_source(c, &s, is_load ? STORE_LOADED : STORE_ATTACHED);
			if (r < 0)
				return r;
			*(is_load ? &loads[i] : &attaches[i]) = s.seconds;
			/* after the second attach, and after the last load: no store left */
			if (pos == 2 || pos == 3) {
				diag_clear(&c->d);
				r = expert_store_drop(o.dir, o.name, &c->d);
				if (r < 0)
					return r;
			}
		}
		ratio[round] = (loads[2 * round] + loads[2 * round + 1]) /
			       (attaches[2 * round] + attaches[2 * round + 1]);
		fprintf(stderr, "# %s restart round %u: load %.1f + %.1f ms, attach %.2f + %.2f ms: "
			"%.1f\n",
			m->tag, round, loads[2 * round] * 1e3, loads[2 * round + 1] * 1e3,
			attaches[2 * round] * 1e3, attaches[2 * round + 1] * 1e3, ratio[round]);
	}
	*f = (struct figure){
		.name = "attach_speedup", .model = m->tag, .file_mb = (double)m->bytes / 1e6,
		.resident_max = worst, .base_what = "load", .meas_what = "attach", .unit = "ms",
		.base = bench_median(loads, 2 * R) * 1e3, .meas = bench_median(attaches, 2 * R) * 1e3,
		.ratio = bench_median(ratio, R), .ratio_min = min_of(ratio, R),
		.ratio_max = max_of(ratio, R), .target = 20, .target_is_min = true, .rounds = R,
		.background = cpu_load_others(&machine),
	};
	fprintf(stderr, "# %s restart: other processes used %.2f cores\n", m->tag, f->background);
	return 0;
}

/* ---- the model ---- */

/*
 * A Mixtral-shaped model in @dtype: arg_layers layers of 8 experts, d_model
 * and d_ff 1024, no input batch (only weights in the file), as the embedded
 * default model's router settings.
 */
static int model_generate(struct model_file *m, struct diag *d)
{
	struct synth_opts o;
	struct stat st;
	int r;

	if ((size_t)snprintf(m->path, sizeof(m->path), "%s/model-%s.safetensors", model_dir,
			     m->tag) >= sizeof(m->path))
		return diag_set(d, -ENAMETOOLONG, "%s: path too long", model_dir);
	synth_opts_default_model(&o);
	o.output = m->path;
	o.dtype = m->dtype;
	o.d_model = 1024;
	o.d_ff = 1024;
	o.n_experts = 8;
	o.n_layers = arg_layers;
	o.tokens = 0;
	r = synth_model_write(&o, d);
	if (r < 0)
		return r;
	if (stat(m->path, &st) < 0)
		return diag_set(d, -errno, "%s: %m", m->path);
	m->bytes = (uint64_t)st.st_size;
	return 0;
}

/* ---- output ---- */

static void cache_word(const struct figure *f, char *buf, size_t len)
{
	if (f->resident_max < 0)
		snprintf(buf, len, "-");
	else if (f->resident_max <= COLD_RESIDENT_MAX)
		snprintf(buf, len, "cold");
	else
		snprintf(buf, len, "warm%.0f%%", f->resident_max * 100);
}

static void print_header(const struct topology *t)
{
	char thp[32], shmem[32];

	sysfs_choice("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof(thp));
	sysfs_choice("/sys/kernel/mm/transparent_hugepage/shmem_enabled", shmem, sizeof(shmem));
	printf("moed expert store benchmark (%s build): %u node(s) (%s), %u CPUs; model in %s, "
	       "store in %s; THP anon %s, shmem %s\n",
	       MOE_BUILD_TYPE, t->n_nodes, t->source, topology_n_cpus(t), model_dir, shm_dir,
	       thp, shmem);
	printf("load_vs_read = read() / store load (target >= 0.8); attach_speedup = load / "
	       "attach (target >= 20);\nmemory_ratio = store objects' allocated bytes / the "
	       "weights' bytes as kept (target <= 1.05); medians over %u ABBA rounds\n"
	       "cache: the model file before every timed run (cold: <= %.0f%% of it cached)\n\n",
	       arg_rounds, COLD_RESIDENT_MAX * 100);
	printf("%-15s %-5s %8s %-7s %19s %19s %8s %17s %7s\n", "figure", "model", "file_MB",
	       "cache", "baseline", "measured", "ratio", "min..max", "target");
}

static void print_row(const struct figure *f)
{
	char cache[16], base[32], meas[32], range[40], target[16];

	cache_word(f, cache, sizeof(cache));
	snprintf(base, sizeof(base), "%s %.2f %s", f->base_what, f->base, f->unit);
	snprintf(meas, sizeof(meas), "%s %.2f %s", f->meas_what, f->meas, f->unit);
	snprintf(range, sizeof(range), "%.3f..%.3f", f->ratio_min, f->ratio_max);
	snprintf(target, sizeof(target), "%s%g", f->target_is_min ? ">=" : "<=", f->target);
	printf("%-15s %-5s %8.1f %-7s %19s %19s %8.3f %17s %7s %s\n", f->name, f->model,
	       f->file_mb, cache, base, meas, f->ratio, range, target,
	       figure_met(f) ? "ok" : "MISSED");
	fflush(stdout);
}

static void print_json(const struct topology *t, const struct figure *f, uint32_t n)
{
	printf("{\"benchmark\":\"store\",\"build_type\":\"%s\",\"nodes\":%u,\"topology\":\"%s\","
	       "\"rounds\":%u,\"figures\":[",
	       MOE_BUILD_TYPE, t->n_nodes, t->source, arg_rounds);
	for (uint32_t i = 0; i < n; i++) {
		printf("%s{\"figure\":\"%s\",\"model\":\"%s\",\"file_mb\":%.1f,\"baseline_%s\":%.4f,"
		       "\"measured_%s\":%.4f,\"ratio\":%.4f,\"ratio_min\":%.4f,\"ratio_max\":%.4f,"
		       "\"target\":%g,\"met\":%s",
		       i ? "," : "", f[i].name, f[i].model, f[i].file_mb, f[i].unit, f[i].base,
		       f[i].unit, f[i].meas, f[i].ratio, f[i].ratio_min, f[i].ratio_max,
		       f[i].target, figure_met(&f[i]) ? "true" : "false");
		if (f[i].resident_max >= 0)
			printf(",\"cache_resident_max\":%.4f,\"cold\":%s", f[i].resident_max,
			       f[i].resident_max <= COLD_RESIDENT_MAX ? "true" : "false");
		if (f[i].background >= 0)
			printf(",\"background_cores\":%.3f", f[i].background);
		printf("}");
	}
	printf("]}\n");
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: bench_store [--json] [--quick] [--rounds N] [--layers L]\n"
		"                   [--model-dir DIR] [--shm-dir DIR] [--topology-file PATH]\n"
		"  --json               one JSON object instead of the table\n"
		"  --quick              2 rounds, 2 layers (smoke run)\n"
		"  --rounds N           ABBA rounds per figure (default 5, at most %d)\n"
		"  --layers L           model layers of 8 x 12.6 MB F32 experts (default 4: 403 MB)\n"
		"  --model-dir DIR      where the generated model's private folder goes (default\n"
		"                       /var/tmp; on tmpfs the file cannot be cold)\n"
		"  --shm-dir DIR        where the store's private folder goes (default /dev/shm)\n"
		"  --topology-file PATH a simulated topology (numa/topology.h) instead of the machine's\n",
		MAX_ROUNDS);
}

static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "quick", no_argument, NULL, 'q' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "layers", required_argument, NULL, 'l' },
		{ "model-dir", required_argument, NULL, 'm' },
		{ "shm-dir", required_argument, NULL, 's' },
		{ "topology-file", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool rounds_set = false, layers_set = false;
	int c;

	while ((c = getopt_long(argc, argv, "jqr:l:m:s:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			arg_json = true;
			break;
		case 'q':
			arg_quick = true;
			break;
		case 'r':
			if (parse_u32(optarg, 1, MAX_ROUNDS, &arg_rounds) < 0) {
				fprintf(stderr, "--rounds: 1..%d, not '%s'\n", MAX_ROUNDS, optarg);
				return -EINVAL;
			}
			rounds_set = true;
			break;
		case 'l':
			if (parse_u32(optarg, 1, 256, &arg_layers) < 0) {
				fprintf(stderr, "--layers: 1..256, not '%s'\n", optarg);
				return -EINVAL;
			}
			layers_set = true;
			break;
		case 'm':
			arg_model_dir = optarg;
			break;
		case 's':
			arg_shm_dir = optarg;
			break;
		case 't':
			arg_topology_file = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -EINVAL;
	}
	if (arg_quick) {
		arg_rounds = rounds_set ? arg_rounds : 2;
		arg_layers = layers_set ? arg_layers : 2;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct topology topo; /* large; the stores keep a pointer */
	struct model_file models[] = { { .tag = "f32", .dtype = ST_F32 },
				       { .tag = "bf16", .dtype = ST_BF16 } };
	struct bench_ctx c = { .topo = &topo };
	const size_t n_models = sizeof(models) / sizeof(models[0]);
	struct figure loads[2], mems[2], figs[5];
	uint32_t n_figs = 0;
	int r;

	if (parse_args(argc, argv) < 0)
		return 2;
	log_set_program("bench_store");
	/* the store's progress lines every second would bury the figures */
	log_set_max_level(LOG_LEVEL_WARNING);
	r = arg_topology_file ? topology_load(arg_topology_file, &topo, &c.d)
			      : topology_detect(&topo, &c.d);
	if (r < 0) {
		fprintf(stderr, "topology: %s\n", c.d.msg);
		return 1;
	}
	r = bench_scratch_dir(arg_model_dir, "bench_store", model_dir, sizeof(model_dir));
	if (r == 0)
		r = bench_scratch_dir(arg_shm_dir, "bench_store", shm_dir, sizeof(shm_dir));
	if (r < 0) {
		fprintf(stderr, "cannot make a private folder in %s or %s: %s\n", arg_model_dir,
			arg_shm_dir, strerror(-r));
		return 1;
	}
	for (size_t i = 0; i < n_models; i++) {
		double t0 = bench_now_s();

		diag_clear(&c.d);
		r = model_generate(&models[i], &c.d);
		if (r < 0) {
			fprintf(stderr, "gen-model %s: %s\n", models[i].tag, c.d.msg);
			return 1;
		}
		fprintf(stderr, "# %s: %.1f MB generated in %.2f s\n", models[i].path,
			(double)models[i].bytes / 1e6, bench_now_s() - t0);
	}
	if (!arg_json)
		print_header(&topo);
	/* the load figures, the restart, then memory (measured with the loads) */
	for (size_t i = 0; i < n_models; i++) {
		r = measure_load(&c, &models[i], &loads[i], &mems[i]);
		if (r < 0)
			goto fail;
		if (!arg_json)
			print_row(&loads[i]);
		figs[n_figs++] = loads[i];
	}
	r = measure_restart(&c, &models[0], &figs[n_figs]);
	if (r < 0)
		goto fail;
	if (!arg_json)
		print_row(&figs[n_figs]);
	n_figs++;
	for (size_t i = 0; i < n_models; i++) {
		if (!arg_json)
			print_row(&mems[i]);
		figs[n_figs++] = mems[i];
	}
	if (arg_json)
		print_json(&topo, figs, n_figs);
	return 0;
fail:
	fprintf(stderr, "%s\n", c.d.msg);
	return 1;
}
