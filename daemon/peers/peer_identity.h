/* SPDX-License-Identifier: MIT */
/*
 * peer_identity: what two daemons compare before they share experts.
 *
 * The store's identity hashes the checkpoint's headers (names, dtypes,
 * shapes, byte ranges): two checkpoints of the same shape but other values
 * (another seed, another fine-tune) share it, and a peer computing with
 * other weights would give silently wrong results. So the peers' identity
 * also hashes the values themselves, sampled: 16 evenly spaced runs of 64
 * floats of every weight matrix and bias the layers compute with (router,
 * experts, shared expert), as they are in memory after loading. Reading
 * every weight would cost seconds per 10 GB at each start; the sample costs
 * microseconds and catches any change that is not confined between the
 * sampled runs (a retrain changes every value).
 */
#pragma once

#include <stdint.h>

#include "model/model.h"

/* XXH3-128 of @store_identity (the store's hex identity) and the sampled values, into @out. */
void peer_identity(const struct moe_model *m, const char *store_identity, uint8_t out[16]);
