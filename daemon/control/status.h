/* SPDX-License-Identifier: MIT */
/*
 * status: the daemon's state as JSON, what `moectl status` shows: the
 * model, the clients, totals, and per layer the tokens each expert received.
 */
#pragma once

#include <stddef.h>

struct reactor;

/* A malloc'd JSON text in *@ret_json (length in *@ret_len). 0 or -ENOMEM. */
int status_json(const struct reactor *r, char **ret_json, size_t *ret_len);
