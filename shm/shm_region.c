/* SPDX-License-Identifier: MIT */
/*
 * shm_region: the two memfds of one connection (moe_abi.h). moed lays the
 * region out, creates and seals both memfds and maps the ring memfd; libmoe
 * receives the fds, copies the info page into private memory, checks every
 * offset and size against the ring memfd's real size before it trusts one,
 * and maps the ring memfd. The layout:
 *
 *   0                      SQ struct moe_ring_ctl (256 bytes)
 *   256                    CQ struct moe_ring_ctl (256 bytes)
 *   512                    sq_entries x struct moe_sqe (64 bytes)
 *   512 + 64 * sq_entries  cq_entries x struct moe_cqe (32 bytes)
 *   page-aligned           arena, arena_size rounded up to the page size
 *   ring_size = arena_off + arena_size
 *
 * Seals: the info memfd is sealed against every write and size change before
 * it leaves moed, so the client can map it PROT_READ only and its contents
 * are fixed; the ring memfd against shrink and grow (so no mapping of it can
 * ever fault with SIGBUS) and against further seals (so nobody can add
 * F_SEAL_WRITE and freeze the rings).
 */
#include "shm_region.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define REGION_CTL_SIZE ((uint64_t)sizeof(struct moe_ring_ctl))

/* The seals the attaching side requires (create adds F_SEAL_SEAL to both). */
#define SHM_REGION_INFO_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
#define SHM_REGION_RING_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

static uint64_t region_page_size(void)
{
	long page = sysconf(_SC_PAGESIZE);

	return page > 0 ? (uint64_t)page : 4096;
}

static bool region_entries_valid(uint32_t n)
{
	return n >= 1 && n <= SHM_REGION_MAX_ENTRIES && (n & (n - 1)) == 0;
}

/* *ret = v rounded up to @align (a power of two); false on overflow. */
static bool u64_align_up(uint64_t v, uint64_t align, uint64_t *ret)
{
	uint64_t sum;

	if (__builtin_add_overflow(v, align - 1, &sum))
		return false;
	*ret = sum & ~(align - 1);
	return true;
}

int shm_region_layout(uint32_t sq_entries, uint32_t cq_entries, uint64_t arena_size,
		      struct moe_region_info *info)
{
	uint64_t page = region_page_size();
	uint64_t sqes_off, cqes_off, cqes_end, arena_off, arena_len, ring_size;

	if (!info)
		return -EINVAL;
	if (!region_entries_valid(sq_entries) || !region_entries_valid(cq_entries) ||
	    cq_entries < sq_entries)
		return -EINVAL;
	if (arena_size == 0 || arena_size > SHM_REGION_MAX_ARENA)
		return -EINVAL;

	/*
	 * With the limits above nothing below can overflow (2^16 entries, a
	 * 2^40-byte arena), but the checks stay so that raising a limit
	 * cannot silently wrap an offset.
	 */
	sqes_off = 2 * REGION_CTL_SIZE;
	cqes_off = sqes_off + (uint64_t)sq_entries * sizeof(struct moe_sqe);
	cqes_end = cqes_off + (uint64_t)cq_entries * sizeof(struct moe_cqe);
	if (!u64_align_up(cqes_end, page, &arena_off) ||
	    !u64_align_up(arena_size, page, &arena_len) ||
	    __builtin_add_overflow(arena_off, arena_len, &ring_size) || ring_size > SIZE_MAX ||
	    ring_size > (uint64_t)INT64_MAX)
		return -EINVAL;

	info->magic = MOE_ABI_MAGIC;
	info->abi_major = MOE_ABI_MAJOR;
	info->abi_minor = MOE_ABI_MINOR;
	info->info_size = sizeof(*info);
	info->ring_size = ring_size;
	info->sq_ctl_off = 0;
	info->cq_ctl_off = REGION_CTL_SIZE;
	info->sqes_off = sqes_off;
	info->cqes_off = cqes_off;
	info->arena_off = arena_off;
	info->arena_size = arena_len;
	info->sq_entries = sq_entries;
	info->cq_entries = cq_entries;
	return 0;
}

struct region_range {
	uint64_t off;
	uint64_t len;
};

/*
 * Is @info a region we can map and use, with a ring memfd of @file_size
 * bytes? Every check is overflow-safe: the values come from another process.
 * It does not insist on shm_region_layout()'s exact offsets (a later minor
 * version may move them), only on what the ring code relies on: parts that
 * are inside the file, aligned and disjoint. 0 or -EPROTO.
 */
static int region_info_check(const struct moe_region_info *info, uint64_t file_size)
{
	uint64_t page = region_page_size();
	struct region_range parts[5];

	if (info->magic != MOE_ABI_MAGIC || info->abi_major != MOE_ABI_MAJOR ||
	    info->info_size < sizeof(*info))
		return -EPROTO;
	if (!region_entries_valid(info->sq_entries) || !region_entries_valid(info->cq_entries) ||
	    info->cq_entries < info->sq_entries)
		return -EPROTO;
	if (info->ring_size == 0 || info->ring_size > file_size || info->ring_size > SIZE_MAX)
		return -EPROTO;
	if (info->arena_size == 0 || info->arena_size > SHM_REGION_MAX_ARENA)
		return -EPROTO;
	/* A string the client may print. */
	if (!memchr(info->model_name, '\0', sizeof(info->model_name)))
		return -EPROTO;

	/*
	 * Cache-line aligned control blocks and entries; a page-aligned arena,
	 * so that offsets that are multiples of MOE_ARENA_ALIGN stay aligned
	 * in memory.
	 */
	if (info->sq_ctl_off % MOE_ABI_CACHELINE || info->cq_ctl_off % MOE_ABI_CACHELINE ||
	    info->sqes_off % MOE_ABI_CACHELINE || info->cqes_off % MOE_ABI_CACHELINE ||
	    info->arena_off % page)
		return -EPROTO;

	parts[0] = (struct region_range){ info->sq_ctl_off, REGION_CTL_SIZE };
	parts[1] = (struct region_range){ info->cq_ctl_off, REGION_CTL_SIZE };
	parts[2] = (struct region_range){ info->sqes_off,
					  (uint64_t)info->sq_entries * sizeof(struct moe_sqe) };
	parts[3] = (struct region_range){ info->cqes_off,
					  (uint64_t)info->cq_entries * sizeof(struct moe_cqe) };
	parts[4] = (struct region_range){ info->arena_off, info->arena_size };
	for (size_t i = 0; i < 5; i++) {
		/* off + len <= ring_size, written so that it cannot wrap */
		if (parts[i].off > info->ring_size ||
		    parts[i].len > info->ring_size - parts[i].off)
			return -EPROTO;
		for (size_t j = 0; j < i; j++) {
			/* both ends are in range now, so the sums cannot wrap */
			if (parts[i].off < parts[j].off + parts[j].len &&
			    parts[j].off < parts[i].off + parts[i].len)
				return -EPROTO;
		}
	}
	return 0;
}

static void region_fill(struct shm_region *reg, const struct moe_region_info *info, int info_fd,
			int ring_fd, uint8_t *ring)
{
	*reg = (struct shm_region){
		.info = *info,
		.info_fd = info_fd,
		.ring_fd = ring_fd,
		.ring = ring,
		.sq_ctl = (struct moe_ring_ctl *)(ring + info->sq_ctl_off),
		.cq_ctl = (struct moe_ring_ctl *)(ring + info->cq_ctl_off),
		.sqes = (struct moe_sqe *)(ring + info->sqes_off),
		.cqes = (struct moe_cqe *)(ring + info->cqes_off),
		.arena = ring + info->arena_off,
	};
}

int shm_region_create(const struct moe_region_info *info, struct shm_region *ret_region)
{
	uint64_t page = region_page_size();
	struct shm_region reg;
	int info_fd, ring_fd, r;
	ssize_t n;
	void *ring;

	if (!info || !ret_region)
		return -EINVAL;
	/* moed checks what it publishes with the client's own rules. */
	if (region_info_check(info, info->ring_size) < 0 || info->info_size > page)
		return -EINVAL;

	info_fd = memfd_create("moe-region-info", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (info_fd < 0)
		return -errno;
	if (ftruncate(info_fd, (off_t)page) < 0) {
		r = -errno;
		goto close_info;
	}
	n = pwrite(info_fd, info, sizeof(*info), 0);
	if (n < 0) {
		r = -errno;
		goto close_info;
	}
	if ((size_t)n != sizeof(*info)) {
		r = -EIO;
		goto close_info;
	}
	/* Never mapped writable here, so F_SEAL_WRITE cannot fail with EBUSY. */
	if (fcntl(info_fd, F_ADD_SEALS, SHM_REGION_INFO_SEALS | F_SEAL_SEAL) <
	    0) {
		r = -errno;
		goto close_info;
	}

	ring_fd = memfd_create("moe-region-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (ring_fd < 0) {
		r = -errno;
		goto close_info;
	}
	/* The new pages read as zero: both rings start empty at position 0 (zero seq words). */
	if (ftruncate(ring_fd, (off_t)info->ring_size) < 0) {
		r = -errno;
		goto close_ring;
	}
	/* Sealed before it is mapped: the same result, one cleanup step less. */
	if (fcntl(ring_fd, F_ADD_SEALS, SHM_REGION_RING_SEALS | F_SEAL_SEAL) < 0) {
		r = -errno;
		goto close_ring;
	}
	ring = mmap(NULL, (size_t)info->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, ring_fd, 0);
	if (ring == MAP_FAILED) {
		r = -errno;
		goto close_ring;
	}

	region_fill(&reg, info, info_fd, ring_fd, ring);
	*ret_region = reg;
	return 0;

close_ring:
	close(ring_fd);
close_info:
	close(info_fd);
	return r;
}

/*
 * With a fixed address the ring replaces whatever is mapped there (MAP_FIXED),
 * so make sure that is all reservation: every page of the new ring's range
 * must be mapped, else the new ring is larger than the old one and would
 * land on a neighbour. mincore() fails with ENOMEM on any unmapped page; it is
 * asked in chunks so that its vector stays on the stack. (A reservation larger
 * than the new ring cannot be told apart from a neighbouring mapping; its
 * tail stays reserved.)
 */
static int region_range_reserved(uint8_t *addr, uint64_t len, uint64_t page)
{
	unsigned char vec[4096];
	uint64_t chunk = sizeof(vec) * page;

	for (uint64_t off = 0; off < len; off += chunk) {
		uint64_t n = len - off < chunk ? len - off : chunk;

		if (mincore(addr + off, (size_t)n, vec) < 0)
			return errno == ENOMEM ? -EXDEV : -errno;
	}
	return 0;
}

int shm_region_attach(int info_fd, int ring_fd, void *fixed_addr,
		      struct shm_region *ret_region)
{
	uint64_t page = region_page_size();
	struct moe_region_info info;
	struct shm_region reg;
	struct stat info_st, ring_st;
	uint64_t ring_len;
	void *info_map, *ring;
	int seals, r;

	if (info_fd < 0 || ring_fd < 0 || !ret_region)
		return -EINVAL;
	if ((uintptr_t)fixed_addr % page)
		return -EINVAL;

	if (fstat(info_fd, &info_st) < 0 || fstat(ring_fd, &ring_st) < 0)
		return -errno;
	if (!S_ISREG(info_st.st_mode) || !S_ISREG(ring_st.st_mode) ||
	    info_st.st_size < (off_t)sizeof(info) || ring_st.st_size <= 0)
		return -EPROTO;
	/*
	 * Only memfds that can never shrink are safe to map: a shrink would
	 * turn our next access into SIGBUS, the info page's while we copy it
	 * out. So we insist on the seals shm_region_create() sets: the info
	 * memfd's fixed size and contents (what we check is what stays), the
	 * ring memfd's fixed size. Seals cannot be removed, so checking them
	 * once is enough; with them, the fstat sizes above stay true.
	 */
	seals = fcntl(info_fd, F_GET_SEALS);
	if (seals < 0)
		return errno == EINVAL ? -EPROTO : -errno; /* EINVAL: not a memfd */
	if ((seals & SHM_REGION_INFO_SEALS) != SHM_REGION_INFO_SEALS)
		return -EPROTO;
	seals = fcntl(ring_fd, F_GET_SEALS);
	if (seals < 0)
		return errno == EINVAL ? -EPROTO : -errno;
	if ((seals & SHM_REGION_RING_SEALS) != SHM_REGION_RING_SEALS)
		return -EPROTO;

	/* Read once, into private memory: everything below uses the copy. */
	info_map = mmap(NULL, sizeof(info), PROT_READ, MAP_SHARED, info_fd, 0);
	if (info_map == MAP_FAILED)
		return -errno;
	memcpy(&info, info_map, sizeof(info));
	munmap(info_map, sizeof(info));

	if (info.info_size > (uint64_t)info_st.st_size)
		return -EPROTO;
	r = region_info_check(&info, (uint64_t)ring_st.st_size);
	if (r < 0)
		return r;

	if (fixed_addr) {
		if (!u64_align_up(info.ring_size, page, &ring_len))
			return -EPROTO; /* not reached: ring_size <= st_size */
		r = region_range_reserved(fixed_addr, ring_len, page);
		if (r < 0)
			return r;
	}
	/*
	 * Should a MAP_FIXED mmap fail (ENOMEM), what the range holds is up to
	 * the kernel; the caller still owns it and releases it with munmap().
	 */
	ring = mmap(fixed_addr, (size_t)info.ring_size, PROT_READ | PROT_WRITE,
		    MAP_SHARED | (fixed_addr ? MAP_FIXED : 0), ring_fd, 0);
	if (ring == MAP_FAILED)
		return -errno;

	region_fill(&reg, &info, info_fd, ring_fd, ring);
	*ret_region = reg;
	return 0;
}

/*
 * A region owns its mapping and fds exactly while sq_ctl is set: create and
 * attach set it, done and detach_keep_range clear it. So both are idempotent,
 * and neither closes fd 0 of a zero-filled struct that was never attached.
 */
void shm_region_done(struct shm_region *r)
{
	if (!r || !r->sq_ctl)
		return;
	munmap(r->ring, (size_t)r->info.ring_size);
	close(r->info_fd);
	close(r->ring_fd);
	r->info_fd = r->ring_fd = -1;
	r->ring = NULL;
	r->sq_ctl = r->cq_ctl = NULL;
	r->sqes = NULL;
	r->cqes = NULL;
	r->arena = NULL;
}

/*
 * Afterwards r->ring still names the reserved range and r->info.ring_size its
 * length, but the region owns nothing: shm_region_done() is a no-op. The
 * reservation belongs to the caller, who either attaches over it (the new
 * region then owns the range) or releases it with munmap(r->ring, ring_size).
 */
void shm_region_detach_keep_range(struct shm_region *r)
{
	void *p;

	if (!r || !r->sq_ctl)
		return;
	/*
	 * MAP_FIXED swaps the mapping in one step, so no other thread's mmap
	 * can take the range in between. If the kernel cannot give us the
	 * anonymous mapping (ENOMEM), the old shared mapping stays: it holds
	 * the range just as well, and the next attach replaces it.
	 */
	p = mmap(r->ring, (size_t)r->info.ring_size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	(void)p;
	close(r->info_fd);
	close(r->ring_fd);
	r->info_fd = r->ring_fd = -1;
	r->sq_ctl = r->cq_ctl = NULL;
	r->sqes = NULL;
	r->cqes = NULL;
	r->arena = NULL;
}
