/* SPDX-License-Identifier: MIT */
/*
 * store_object: one named shared-memory object of the expert store, the
 * memory of one NUMA node's experts.
 *
 * An object is a file in the store's folder (tmpfs such as /dev/shm, or a
 * hugetlbfs mount for huge pages) named NAME.nodeN, owned by moed's user
 * with mode 0600, so that it outlives moed and a restart re-attaches it
 * instead of reading the weight files again. It starts with a header page:
 *
 *   magic, layout version, state (filling / complete), the model identity,
 *   the node (index and kernel id), the sizes of the object, its data and
 *   its manifest (the home object's description of every tensor), and a
 *   checksum (XXH64) over the header and the manifest.
 *
 * The weights themselves carry no checksum (hashing hundreds of gigabytes
 * would cost what the re-attach saves): a header that does not verify, a
 * state other than complete (a load that died half way), another identity
 * or another node means the object is not used, and the store loads again.
 *
 * The home object holds an exclusive flock() while a moed uses it, so that
 * a second moed on the same store name is refused instead of sharing it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "numa/topology.h"
#include "util/diag.h"

#define STORE_MAGIC "MOEDSTOR"
#define STORE_LAYOUT_VERSION 1u
#define STORE_HEADER_BYTES 4096u
/* Every tensor starts on this boundary (cache lines; the kernels' vector loads). */
#define STORE_ALIGN 64u

enum store_state {
	STORE_FILLING = 1,
	STORE_COMPLETE = 2,
};

struct store_header {
	char magic[8];
	uint32_t layout_version;
	uint32_t state;           /* enum store_state */
	uint8_t identity[16];     /* the model's (model_identity.h) */
	uint32_t node;            /* index into the topology's nodes[] */
	uint32_t node_id;         /* the kernel's node number */
	uint64_t object_bytes;    /* the whole object */
	uint64_t data_offset;     /* where tensors start */
	uint64_t data_bytes;      /* bytes of tensors, from data_offset */
	uint64_t manifest_offset; /* home object only: the manifest's JSON; 0 elsewhere */
	uint64_t manifest_bytes;
	uint64_t checksum;        /* XXH64 of this header (checksum = 0) and the manifest */
};

struct store_object {
	char path[4096];
	int fd;
	uint8_t *base;   /* the whole object, shared, read-write */
	size_t bytes;
	size_t page;     /* the backing's page size (huge on hugetlbfs) */
	bool huge;       /* on hugetlbfs (tmpfs is asked for transparent huge pages) */
};

/* "DIR/NAME.nodeINDEX". -ENAMETOOLONG when it does not fit @len. */
int store_object_path(const char *dir, const char *name, uint32_t node, char *buf, size_t len);

/*
 * Create the object at @path afresh (a stale one of that name is removed
 * first), @data_bytes of tensors and @manifest_bytes of manifest after the
 * header, then @spare_bytes of spare space for copies made later (from
 * store_object_spare_begin(); on tmpfs it costs memory only as it is
 * written, on hugetlbfs the mapping reserves its huge pages), rounded up
 * to the backing's page size. Its memory is bound to
 * @node of @topo (mbind, MPOL_BIND) unless the topology is simulated; the
 * pages are not touched here, so the thread that fills them decides nothing
 * about where they go. The header is written with state FILLING.
 */
int store_object_create(const char *path, const struct topology *topo, uint32_t node,
			const uint8_t identity[16], uint64_t data_bytes, uint64_t manifest_bytes,
			uint64_t spare_bytes, struct store_object *o, struct diag *d);

/*
 * Where @o's spare space begins: the first page after its data and
 * manifest. It ends at the header's object_bytes.
 */
uint64_t store_object_spare_begin(const struct store_object *o);

/*
 * Map an existing object and check it: a regular file owned by this user
 * with no access for group or others, at least a header long, the header's
 * magic, version, checksum (manifest included), sizes within the object and
 * state COMPLETE. -ENOENT when there is none; -EBADMSG (with why in @d) for
 * one that cannot be used; -errno otherwise.
 */
int store_object_attach(const char *path, struct store_object *o, struct diag *d);

/*
 * The same for an object already open as @fd (taken over, closed on
 * failure), such as one systemd's fd store kept after its file was removed;
 * @path names it in messages and is where it lived.
 */
int store_object_attach_fd(int fd, const char *path, struct store_object *o, struct diag *d);

static inline struct store_header *store_object_header(const struct store_object *o)
{
	return (struct store_header *)(void *)o->base;
}

/*
 * Is @o really on huge pages: hugetlbfs, or tmpfs that gave transparent huge
 * pages for its mapping (ShmemPmdMapped in /proc/self/smaps; a tmpfs
 * mounted without huge= gives none, whatever madvise() was told)?
 */
bool store_object_huge_mapped(const struct store_object *o);

/* Finish a filled object: manifest bytes are in place; state COMPLETE and checksum. */
void store_object_seal(struct store_object *o);

/* Take the home object's exclusive lock; -EBUSY when another moed holds it. */
int store_object_lock(struct store_object *o, struct diag *d);

/* Unmap and close (the object stays); NULL-safe on a zeroed object. */
void store_object_close(struct store_object *o);

/* Close and remove. */
void store_object_destroy(struct store_object *o);

/*
 * The NUMA node (kernel id) of each of the object's pages in [off, off+len),
 * counted: ret_on_node gets the pages on @node_id, ret_pages all of them
 * (move_pages status query; pages not yet present count as elsewhere).
 */
int store_object_pages_on_node(const struct store_object *o, uint64_t off, uint64_t len,
			       int node_id, uint64_t *ret_on_node, uint64_t *ret_pages);
