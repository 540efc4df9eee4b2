/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for ctl_request_parse(): any bytes a process connecting
 * to moed's socket might send as its first message. An accepted HELLO must
 * hold everything moed then relies on when it sizes a region from it; an
 * accepted EXPERT_CHANGE or STATUS is exactly its struct; a HELLO refused
 * for its ABI major gets a terminated refusal line (hello_abi_refusal()).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe_abi.h"
#include "session/hello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct hello_limits lim = { .max_sq_entries = 4096, .max_arena_bytes = 1ull << 30 };
	struct ctl_request req;
	const char *why = NULL;

	int r = ctl_request_parse(data, size, &lim, &req, &why);

	if (r < 0) {
		if (!why)
			abort();
		if (r == -EPROTONOSUPPORT) {
			/* the refusal line moed logs: terminated, within its buffer */
			char line[128];

			hello_abi_refusal(data, size, line, sizeof(line));
			if (!memchr(line, '\0', sizeof(line)))
				abort();
		}
		return 0;
	}
	if (req.kind == CTL_REQUEST_STATUS)
		return size == sizeof(struct moe_status_request) ? 0 : (abort(), 0);
	if (req.kind == CTL_REQUEST_EXPERT_CHANGE)
		return size == sizeof(struct moe_expert_change) ? 0 : (abort(), 0);
	const struct moe_hello *h = &req.hello;
	if (size != sizeof(*h) || h->abi_major != MOE_ABI_MAJOR)
		abort();
	if (!h->sq_entries || (h->sq_entries & (h->sq_entries - 1)) ||
	    h->sq_entries > lim.max_sq_entries || h->cq_entries < h->sq_entries ||
	    (h->cq_entries & (h->cq_entries - 1)) || !h->arena_size ||
	    h->arena_size > lim.max_arena_bytes)
		abort();
	if (!memchr(h->name, '\0', sizeof(h->name)))
		abort();
	return 0;
}
