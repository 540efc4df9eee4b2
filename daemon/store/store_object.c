/* SPDX-License-Identifier: MIT */
/*
 * store_object: create, check, map and remove one object of the expert
 * store; see store_object.h.
 */
#include "store/store_object.h"

#include <errno.h>
#include <fcntl.h>
#include <numaif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <xxhash.h>

#define HUGETLBFS_MAGIC 0x958458f6
/* The spare space starts on a page of its own (store_space.c hands out pages). */
#define SPARE_ALIGN 4096u

static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

int store_object_path(const char *dir, const char *name, uint32_t node, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.node%u", dir, name, node);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static uint64_t header_checksum(const struct store_object *o)
{
	const struct store_header *h = store_object_header(o);
	struct store_header copy = *h;
	XXH64_state_t *st = XXH64_createState();
	uint64_t sum;

	if (!st)
		return 0; /* no memory: a checksum that will not verify */
	copy.checksum = 0;
	XXH64_reset(st, 0);
	XXH64_update(st, &copy, sizeof(copy));
	if (h->manifest_bytes)
		XXH64_update(st, o->base + h->manifest_offset, h->manifest_bytes);
	sum = XXH64_digest(st);
	XXH64_freeState(st);
	return sum;
}

/* The page size of the backing file system, and whether it is hugetlbfs. */
static void backing_page(int fd, size_t *page, bool *hugetlb)
{
	struct statfs sfs;

	*page = (size_t)sysconf(_SC_PAGESIZE);
	*hugetlb = false;
	if (fstatfs(fd, &sfs) == 0 && (unsigned long)sfs.f_type == HUGETLBFS_MAGIC) {
		*page = (size_t)sfs.f_bsize;
		*hugetlb = true;
	}
}

static int bind_to_node(struct store_object *o, const struct topology *topo, uint32_t node,
			struct diag *d)
{
	unsigned long mask[TOPOLOGY_MAX_NODES / (8 * sizeof(unsigned long)) + 1] = { 0 };
	uint32_t id = topo->nodes[node].id;

	if (topo->simulated)
		return 0; /* the node may not exist: placement is logical only */
	if (id >= 8 * sizeof(mask))
		return diag_set(d, -EINVAL, "node %u is beyond the mask moed builds", id);
	mask[id / (8 * sizeof(unsigned long))] |= 1ul << (id % (8 * sizeof(unsigned long)));
	if (mbind(o->base, o->bytes, MPOL_BIND, mask, 8 * sizeof(mask), 0) < 0)
		return diag_set(d, -errno, "%s: cannot bind to node %u: %m", o->path, id);
	return 0;
}

int store_object_create(const char *path, const struct topology *topo, uint32_t node,
			const uint8_t identity[16], uint64_t data_bytes, uint64_t manifest_bytes,
			uint64_t spare_bytes, struct store_object *o, struct diag *d)
{
	struct store_header *h;
	bool hugetlb;
	uint64_t total;
	int r;

	*o = (struct store_object){ .fd = -1 };
	if (strlen(path) >= sizeof(o->path))
		return diag_set(d, -ENAMETOOLONG, "%s: path too long", path);
	strcpy(o->path, path);
	if (unlink(path) < 0 && errno != ENOENT)
		return diag_set(d, -errno, "%s: cannot remove the stale object: %m", path);
	o->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (o->fd < 0)
		return diag_set(d, -errno, "%s: cannot create: %m", path);
	backing_page(o->fd, &o->page, &hugetlb);
	/* the spare space is sized, not touched: tmpfs allocates its pages on write */
	total = round_up(round_up(STORE_HEADER_BYTES + round_up(data_bytes, STORE_ALIGN) +
				  manifest_bytes, SPARE_ALIGN) + spare_bytes,
			 o->page);
	if (total > SIZE_MAX || ftruncate(o->fd, (off_t)total) < 0) {
		r = diag_set(d, total > SIZE_MAX ? -EFBIG : -errno, "%s: cannot size to %llu bytes: %m",
			     path, (unsigned long long)total);
		goto fail;
	}
	o->bytes = (size_t)total;
	o->base = mmap(NULL, o->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, o->fd, 0);
	if (o->base == MAP_FAILED) {
		o->base = NULL;
		r = diag_set(d, -errno, "%s: cannot map %zu bytes: %m", path, o->bytes);
		goto fail;
	}
	/*
	 * Ask tmpfs for transparent huge pages; whether it gives them is the
	 * mount's huge= option (store_object_huge_mapped() tells afterwards).
	 */
	o->huge = hugetlb;
	(void)madvise(o->base, o->bytes, MADV_HUGEPAGE);
	r = bind_to_node(o, topo, node, d);
	if (r < 0)
		goto fail;
	h = store_object_header(o);
	memcpy(h->magic, STORE_MAGIC, sizeof(h->magic));
	h->layout_version = STORE_LAYOUT_VERSION;
	h->state = STORE_FILLING;
	memcpy(h->identity, identity, sizeof(h->identity));
	h->node = node;
	h->node_id = topo->nodes[node].id;
	h->object_bytes = total;
	h->data_offset = STORE_HEADER_BYTES;
	h->data_bytes = data_bytes;
	h->manifest_offset = manifest_bytes ? STORE_HEADER_BYTES + round_up(data_bytes, STORE_ALIGN)
					    : 0;
	h->manifest_bytes = manifest_bytes;
	return 0;
fail:
	store_object_destroy(o);
	return r;
}

static int header_check(const struct store_object *o, struct diag *d)
{
	const struct store_header *h = store_object_header(o);
	uint64_t end;

	if (memcmp(h->magic, STORE_MAGIC, sizeof(h->magic)) != 0)
		return diag_set(d, -EBADMSG, "%s: not an expert store object", o->path);
	if (h->layout_version != STORE_LAYOUT_VERSION)
		return diag_set(d, -EBADMSG, "%s: layout version %u, this moed writes %u", o->path,
				h->layout_version, STORE_LAYOUT_VERSION);
	if (h->object_bytes != o->bytes)
		return diag_set(d, -EBADMSG, "%s: header says %llu bytes, the object has %zu",
				o->path, (unsigned long long)h->object_bytes, o->bytes);
	if (h->data_offset < STORE_HEADER_BYTES || h->data_offset % STORE_ALIGN ||
	    __builtin_add_overflow(h->data_offset, h->data_bytes, &end) || end > o->bytes)
		return diag_set(d, -EBADMSG, "%s: data range outside the object", o->path);
	if (h->manifest_bytes &&
	    (h->manifest_offset < end ||
	     __builtin_add_overflow(h->manifest_offset, h->manifest_bytes, &end) ||
	     end > o->bytes))
		return diag_set(d, -EBADMSG, "%s: manifest range outside the object", o->path);
	if (header_checksum(o) != h->checksum)
		return diag_set(d, -EBADMSG, "%s: header checksum does not match", o->path);
	if (h->state != STORE_COMPLETE)
		return diag_set(d, -EBADMSG, "%s: never completed (a load stopped half way)",
				o->path);
	return 0;
}

int store_object_attach(const char *path, struct store_object *o, struct diag *d)
{
	int fd;

	*o = (struct store_object){ .fd = -1 };
	if (strlen(path) >= sizeof(o->path))
		return diag_set(d, -ENAMETOOLONG, "%s: path too long", path);
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return diag_set(d, -errno, "%s: %m", path);
	return store_object_attach_fd(fd, path, o, d);
}

int store_object_attach_fd(int fd, const char *path, struct store_object *o, struct diag *d)
{
	struct stat st;
	bool hugetlb;
	int r;

	*o = (struct store_object){ .fd = fd };
	if (strlen(path) >= sizeof(o->path)) {
		r = diag_set(d, -ENAMETOOLONG, "%s: path too long", path);
		goto fail;
	}
	strcpy(o->path, path);
	if (fstat(o->fd, &st) < 0) {
		r = diag_set(d, -errno, "%s: cannot stat: %m", path);
		goto fail;
	}
	/* an object someone else could have written is not ours to trust */
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		r = diag_set(d, -EBADMSG, "%s: not a regular file of uid %u with mode 0600",
			     path, (unsigned)geteuid());
		goto fail;
	}
	if (st.st_size < (off_t)STORE_HEADER_BYTES || (uint64_t)st.st_size > SIZE_MAX) {
		r = diag_set(d, -EBADMSG, "%s: %lld bytes is no store object", path,
			     (long long)st.st_size);
		goto fail;
	}
	backing_page(o->fd, &o->page, &hugetlb);
	o->huge = hugetlb;
	o->bytes = (size_t)st.st_size;
	o->base = mmap(NULL, o->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, o->fd, 0);
	if (o->base == MAP_FAILED) {
		o->base = NULL;
		r = diag_set(d, -errno, "%s: cannot map: %m", path);
		goto fail;
	}
	r = header_check(o, d);
	if (r < 0)
		goto fail;
	return 0;
fail:
	store_object_close(o);
	return r;
}

uint64_t store_object_spare_begin(const struct store_object *o)
{
	const struct store_header *h = store_object_header(o);
	uint64_t end = h->data_offset + h->data_bytes;

	if (h->manifest_bytes && h->manifest_offset + h->manifest_bytes > end)
		end = h->manifest_offset + h->manifest_bytes;
	return round_up(end, SPARE_ALIGN);
}

void store_object_seal(struct store_object *o)
{
	struct store_header *h = store_object_header(o);

	h->state = STORE_COMPLETE;
	h->checksum = header_checksum(o);
}

int store_object_lock(struct store_object *o, struct diag *d)
{
	if (flock(o->fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return diag_set(d, -EBUSY, "%s: in use by another moed", o->path);
	return diag_set(d, -errno, "%s: cannot lock: %m", o->path);
}

void store_object_close(struct store_object *o)
{
	if (o->base)
		munmap(o->base, o->bytes);
	if (o->fd >= 0)
		close(o->fd);
	o->base = NULL;
	o->fd = -1;
}

void store_object_destroy(struct store_object *o)
{
	if (o->path[0])
		unlink(o->path);
	store_object_close(o);
}

int store_object_pages_on_node(const struct store_object *o, uint64_t off, uint64_t len,
			       int node_id, uint64_t *ret_on_node, uint64_t *ret_pages)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uint64_t first = off / page, last = (off + len + page - 1) / page, n = last - first;
	void **pages;
	int *status;
	uint64_t on = 0;

	if (off + len > o->bytes || len == 0)
		return -EINVAL;
	pages = calloc(n, sizeof(*pages));
	status = calloc(n, sizeof(*status));
	if (!pages || !status) {
		free(pages);
		free(status);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < n; i++)
		pages[i] = o->base + (first + i) * page;
	if (move_pages(0, n, pages, NULL, status, 0) < 0) {
		int r = -errno;

		free(pages);
		free(status);
		return r;
	}
	for (uint64_t i = 0; i < n; i++)
		on += status[i] == node_id;
	free(pages);
	free(status);
	*ret_on_node = on;
	*ret_pages = n;
	return 0;
}

/*
 * The value of @field ("ShmemPmdMapped:", in kB) in /proc/self/smaps for the
 * mapping that starts at @base; 0 when it cannot be read.
 */
static uint64_t smaps_field_kb(const void *base, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in_mapping = false;
	uint64_t kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;

		/* a mapping's first line: "start-end perms offset dev inode path" */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, ' ')) {
			if (in_mapping)
				break;
			in_mapping = start == (unsigned long)(uintptr_t)base;
			continue;
		}
		if (in_mapping && strncmp(line, field, strlen(field)) == 0) {
			kb = strtoull(line + strlen(field), NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

bool store_object_huge_mapped(const struct store_object *o)
{
	return o->huge || smaps_field_kb(o->base, "ShmemPmdMapped:") > 0;
}
