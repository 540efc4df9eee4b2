/* SPDX-License-Identifier: MIT */
/*
 * peer_config: the settings that make several moed daemons one expert pool,
 * parsed and checked.
 *
 *   listen       = ADDR:PORT                  where this daemon accepts peers
 *   peers        = NAME=ADDR:PORT[,NAME=ADDR:PORT...]
 *   expert_hosts = EXPERTS@HOST[;EXPERTS@HOST...], L:EXPERTS@HOST for layer L
 *
 * ADDR is a numeric IPv4 address or a bracketed IPv6 one ([::1]:7000).
 * EXPERTS is a list such as 0-3,6; HOST is `self` or a peer's NAME. Experts
 * no entry names compute here. An entry for every layer applies to each
 * layer that has the expert; an entry for layer L overrides it there. The
 * same expert named twice at the same level is refused.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util/diag.h"

#define PEERS_MAX 32
#define PEER_NAME_MAX 32  /* with the NUL */
#define PEER_ADDR_MAX 64

struct peer_addr {
	char addr[PEER_ADDR_MAX]; /* numeric, without brackets */
	uint16_t port;
};

struct peer_entry {
	char name[PEER_NAME_MAX];
	struct peer_addr at;
};

struct peer_list {
	uint32_t n;
	struct peer_entry peer[PEERS_MAX];
};

/* "ADDR:PORT" (port 1..65535). 0 or -EINVAL with the reason in @d. */
int peer_addr_parse(const char *s, struct peer_addr *ret, struct diag *d);

/*
 * The `peers` setting (empty: none). Names are 1..31 of [A-Za-z0-9_.-],
 * unique, and not `self`. 0 or -EINVAL with the entry in @d.
 */
int peer_list_parse(const char *s, struct peer_list *ret, struct diag *d);

/*
 * The `expert_hosts` setting over a model of @n_layers layers with
 * n_experts[l] experts each: host[l][e] (0 here, i + 1 for peer i of
 * @peers), into @host, an array of n_layers pointers to n_experts[l] entries
 * each, which the caller owns. @n_layers 0 checks the syntax and the host
 * names only (before the model is known). 0 or -EINVAL with the entry in @d.
 */
int expert_hosts_parse(const char *s, const struct peer_list *peers, uint32_t n_layers,
		       const uint32_t *n_experts, uint16_t *const *host, struct diag *d);

/*
 * Which experts the settings @expert_hosts and @peers give to other hosts:
 * remote[l][e] = true for each (n_layers arrays of n_experts[l]), false for
 * those computed here. The same parse as expert_hosts_parse(); the expert
 * store leaves the remote ones out. 0 or -EINVAL / -ENOMEM with @d.
 */
int expert_hosts_remote(const char *expert_hosts, const char *peers, uint32_t n_layers,
			const uint32_t *n_experts, bool *const *remote, struct diag *d);
