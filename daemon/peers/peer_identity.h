/* SPDX-License-Identifier: MIT */
/*
 * peer_identity: what two daemons compare before they share experts.
 *
 * The store's identity hashes the checkpoint's headers (names, dtypes,
 * shapes, byte ranges): two checkpoints of the same shape but other values
 * (another seed, another fine-tune) share it, and a peer computing with
 * other weights would give silently wrong results. So the peers' identity
 * also hashes the values themselves, sampled: 16 evenly spaced runs of 64
 * elements of every tensor of the checkpoint, as its files hold them.
 * From the files, not from memory: a host holds only the experts it
 * computes (expert_hosts), yet must vouch for the whole model, and every
 * host reads the same bytes whether it keeps an expert in BF16 or widens
 * it. Reading every weight would cost seconds per 10 GB at each start; the
 * sample reads a few pages per tensor and catches any change that is not
 * confined between the sampled runs (a retrain changes every value).
 */
#pragma once

#include <stdint.h>

#include "util/diag.h"

/*
 * XXH3-128 of @store_identity (the store's hex identity) and the sampled
 * values of the checkpoint at @model_path (a file, index or folder, as
 * moe_model_open() takes), into @out. 0, or -errno with @d when the
 * checkpoint cannot be opened.
 */
int peer_identity(const char *model_path, const char *store_identity, uint8_t out[16],
		  struct diag *d);
