/* SPDX-License-Identifier: MIT */
/*
 * expert_spec: the syntax two settings share to say where experts go,
 * expert_nodes (NUMA nodes: placement/placement_explicit.c) and
 * expert_hosts (hosts: peers/peer_config.c). Entries `[LAYER:]EXPERTS@TARGET`
 * are separated by ';', with spaces and tabs allowed around an entry and
 * none inside it; LAYER is a number and EXPERTS a list such as 0-3,6
 * (parse_id_list). This file splits and checks entries and walks their
 * experts; each setting looks its TARGET up and applies the experts by its
 * own rules (which entries win, what an index beyond a layer means).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/diag.h"

#define EXPERT_SPEC_ENTRY_MAX 199 /* bytes of one entry, trimmed */

/* One entry; every pointer points into the setting, which must outlive it. */
struct expert_spec_entry {
	const char *text; /* the whole entry, trimmed: "%.*s" with len in messages */
	int len;
	bool has_layer;
	uint32_t layer;
	const char *experts;
	size_t experts_len;
	const char *target;
	size_t target_len;
};

/*
 * The next entry of the setting called @name, at *@pos (start with *@pos
 * the setting itself; each call moves it on): 1 with @ret filled, 0 past
 * the last entry, or -EINVAL with @d saying why: an empty entry (two ';' in
 * a row, or one at either end), one longer than EXPERT_SPEC_ENTRY_MAX, or
 * one that is not [LAYER:]EXPERTS@TARGET with LAYER a number
 * (@target_word, "NODE" or "HOST", names TARGET in the message).
 */
int expert_spec_next(const char *name, const char *target_word, const char **pos,
		     struct expert_spec_entry *ret, struct diag *d);

/* @en's TARGET as a number (expert_nodes' NODE): 0, or -EINVAL for anything but digits. */
int expert_spec_target_u32(const struct expert_spec_entry *en, uint32_t *ret);

/*
 * Call @each(lo, hi, ctx) for every range of @en's EXPERTS, in order. 0, or
 * -EINVAL: @each refused a range (its message in @d), or the list is not
 * one such as 0-3,6 (said in @d, which keeps the first message it gets).
 */
int expert_spec_each(const char *name, const struct expert_spec_entry *en,
		     int (*each)(uint32_t lo, uint32_t hi, void *ctx), void *ctx, struct diag *d);
