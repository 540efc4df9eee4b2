/* SPDX-License-Identifier: MIT */
/* peer_config: listen, peers and expert_hosts; see peer_config.h. */
#include "peers/peer_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/expert_spec.h"
#include "util/parse.h"

#define ENTRY_MAX 200 /* bytes of one `peers` entry, with the NUL */

int peer_addr_parse(const char *s, struct peer_addr *ret, struct diag *d)
{
	const char *colon, *addr = s;
	size_t addr_len;
	unsigned char bin[16];
	uint32_t port;
	int family;

	/*
	 * IPv6 only in brackets, IPv4 only without: "2001:db8::1:7000" must not
	 * pass as 2001:db8::1 port 7000 when the port was left out.
	 */
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return diag_set(d, -EINVAL, "'%s': expected [IPV6]:PORT", s);
		addr = s + 1;
		addr_len = (size_t)(close - addr);
		colon = close + 1;
		family = AF_INET6;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return diag_set(d, -EINVAL, "'%s': expected ADDR:PORT", s);
		addr_len = (size_t)(colon - s);
		family = AF_INET;
	}
	if (addr_len == 0 || addr_len >= sizeof(ret->addr))
		return diag_set(d, -EINVAL, "'%s': the address is empty or too long", s);
	memcpy(ret->addr, addr, addr_len);
	ret->addr[addr_len] = '\0';
	if (inet_pton(family, ret->addr, bin) != 1)
		return diag_set(d, -EINVAL, "'%s': '%s' is not a numeric %s", s, ret->addr,
				family == AF_INET6 ? "IPv6 address"
						   : "IPv4 address (IPv6 goes in brackets)");
	if (parse_u32(colon + 1, 1, 65535, &port) < 0)
		return diag_set(d, -EINVAL, "'%s': the port is not a number in 1..65535", s);
	ret->port = (uint16_t)port;
	return 0;
}

static bool name_valid(const char *s, size_t len)
{
	if (len == 0 || len >= PEER_NAME_MAX || (len == 4 && memcmp(s, "self", 4) == 0))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* [p, end) without the blanks around it, into @buf (NUL-ended). -EINVAL if empty or long. */
static int entry_copy(const char *p, const char *end, char *buf, size_t size)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (p == end || (size_t)(end - p) >= size)
		return -EINVAL;
	memcpy(buf, p, (size_t)(end - p));
	buf[end - p] = '\0';
	return 0;
}

int peer_list_parse(const char *s, struct peer_list *ret, struct diag *d)
{
	const char *p = s;

	ret->n = 0;
	if (!s[strspn(s, " \t")])
		return 0;
	for (;;) {
		const char *end = p + strcspn(p, ",");
		char entry[ENTRY_MAX], *eq;
		struct peer_entry *pe;

		if (entry_copy(p, end, entry, sizeof(entry)) < 0)
			return diag_set(d, -EINVAL, "peers: an empty or overlong entry near '%.40s'",
					p);
		eq = strchr(entry, '=');
		if (!eq)
			return diag_set(d, -EINVAL, "peers entry '%s': expected NAME=ADDR:PORT",
					entry);
		if (!name_valid(entry, (size_t)(eq - entry)))
			return diag_set(d, -EINVAL,
					"peers entry '%s': NAME must be 1..%d of A-Z a-z 0-9 _ . - "
					"and not 'self'",
					entry, PEER_NAME_MAX - 1);
		if (ret->n == PEERS_MAX)
			return diag_set(d, -EINVAL, "peers: more than %d peers", PEERS_MAX);
		pe = &ret->peer[ret->n];
		memcpy(pe->name, entry, (size_t)(eq - entry));
		pe->name[eq - entry] = '\0';
		for (uint32_t i = 0; i < ret->n; i++)
			if (strcmp(ret->peer[i].name, pe->name) == 0)
				return diag_set(d, -EINVAL, "peers: '%s' is named twice", pe->name);
		if (peer_addr_parse(eq + 1, &pe->at, d) < 0)
			return diag_prefix(d, -EINVAL, "peers entry '%s'", entry);
		ret->n++;
		if (!*end)
			return 0;
		p = end + 1;
	}
}

#define HOSTS_SETTING "expert_hosts"

/* The host an entry's TARGET names: 0 for `self`, i + 1 for peer i; -EINVAL with @d. */
static int entry_host(const struct peer_list *peers, const struct expert_spec_entry *en,
		      uint16_t *ret, struct diag *d)
{
	if (en->target_len == 4 && memcmp(en->target, "self", 4) == 0) {
		*ret = 0;
		return 0;
	}
	for (uint32_t i = 0; i < peers->n; i++)
		if (strlen(peers->peer[i].name) == en->target_len &&
		    memcmp(peers->peer[i].name, en->target, en->target_len) == 0) {
			*ret = (uint16_t)(i + 1);
			return 0;
		}
	return diag_set(d, -EINVAL, HOSTS_SETTING " entry '%.*s': '%.*s' is neither self nor a peer",
			en->len, en->text, (int)en->target_len, en->target);
}

struct host_apply {
	const struct expert_spec_entry *en;
	uint16_t host_of_entry;
	uint16_t *host;      /* NULL: syntax only */
	uint8_t *named;      /* [n]: set by an entry of this level */
	uint32_t n;
	struct diag *d;
	bool shared;         /* an entry for every layer: indices past n are skipped */
};

static int host_apply_range(uint32_t lo, uint32_t hi, void *ctx)
{
	struct host_apply *a = ctx;

	if (!a->host)
		return 0;
	if (hi >= a->n && !a->shared)
		return diag_set(a->d, -EINVAL, HOSTS_SETTING " entry '%.*s': expert %u beyond layer "
					       "%u's %u experts",
				a->en->len, a->en->text, hi, a->en->layer, a->n);
	for (uint32_t e = lo; e <= hi && e < a->n; e++) {
		if (a->named[e])
			return diag_set(a->d, -EINVAL, HOSTS_SETTING " entry '%.*s': expert %u is "
						       "named twice",
					a->en->len, a->en->text, e);
		a->named[e] = 1;
		a->host[e] = a->host_of_entry;
	}
	return 0;
}

/*
 * Walk the entries; apply those of @layer (UINT32_MAX: those for every
 * layer) to @host ([n] entries, NULL: check only).
 */
static int entries_walk(const char *s, const struct peer_list *peers, uint32_t layer,
			uint32_t n_layers, uint16_t *host, uint8_t *named, uint32_t n,
			struct diag *d)
{
	const char *pos = s;
	struct expert_spec_entry en;
	int r;

	while ((r = expert_spec_next(HOSTS_SETTING, "HOST", &pos, &en, d)) > 0) {
		struct host_apply a = { .en = &en, .host = host, .named = named, .n = n, .d = d,
					.shared = layer == UINT32_MAX };
		bool applies = host && (layer == UINT32_MAX ? !en.has_layer
							    : en.has_layer && en.layer == layer);

		r = entry_host(peers, &en, &a.host_of_entry, d);
		if (r < 0)
			return r;
		if (n_layers && en.has_layer && en.layer >= n_layers)
			return diag_set(d, -EINVAL, HOSTS_SETTING " entry '%.*s': layer %u beyond "
						    "the model's %u layers",
					en.len, en.text, en.layer, n_layers);
		/* every entry's list is checked; only those of this level are applied */
		r = expert_spec_each(HOSTS_SETTING, &en, host_apply_range,
				     applies ? &a : &(struct host_apply){ .en = &en }, d);
		if (r < 0)
			return r;
	}
	return r;
}

int expert_hosts_parse(const char *s, const struct peer_list *peers, uint32_t n_layers,
		       const uint32_t *n_experts, uint16_t *const *host, struct diag *d)
{
	uint32_t max_experts = 0;
	uint16_t *shared;
	uint8_t *named, *shared_named;
	int r;

	if (!s[strspn(s, " \t")]) {
		for (uint32_t l = 0; l < n_layers; l++)
			memset(host[l], 0, sizeof(uint16_t) * n_experts[l]);
		return 0;
	}
	if (!n_layers)
		return entries_walk(s, peers, UINT32_MAX, 0, NULL, NULL, 0, d);
	for (uint32_t l = 0; l < n_layers; l++)
		if (n_experts[l] > max_experts)
			max_experts = n_experts[l];
	shared = calloc(max_experts + 1, sizeof(*shared));
	shared_named = calloc(max_experts + 1, 1);
	named = calloc(max_experts + 1, 1);
	if (!shared || !named || !shared_named) {
		r = diag_set(d, -ENOMEM, "expert_hosts: out of memory");
		goto out;
	}
	r = entries_walk(s, peers, UINT32_MAX, n_layers, shared, shared_named, max_experts, d);
	for (uint32_t l = 0; l < n_layers && r == 0; l++) {
		memcpy(host[l], shared, sizeof(uint16_t) * n_experts[l]);
		memset(named, 0, max_experts + 1);
		r = entries_walk(s, peers, l, n_layers, host[l], named, n_experts[l], d);
	}
out:
	free(shared);
	free(shared_named);
	free(named);
	return r;
}

int expert_hosts_remote(const char *expert_hosts, const char *peers, uint32_t n_layers,
			const uint32_t *n_experts, bool *const *remote, struct diag *d)
{
	struct peer_list *list = calloc(1, sizeof(*list)); /* 3 KB: not on the stack */
	uint16_t **host = calloc(n_layers ?: 1, sizeof(*host));
	int r = -ENOMEM;

	if (!list || !host)
		goto out;
	for (uint32_t l = 0; l < n_layers; l++)
		if (!(host[l] = calloc(n_experts[l] ?: 1, sizeof(**host))))
			goto out;
	r = peer_list_parse(peers, list, d);
	if (r == 0)
		r = expert_hosts_parse(expert_hosts, list, n_layers, n_experts,
				       (uint16_t *const *)host, d);
	for (uint32_t l = 0; r == 0 && l < n_layers; l++)
		for (uint32_t e = 0; e < n_experts[l]; e++)
			remote[l][e] = host[l][e] != 0;
out:
	if (r == -ENOMEM && !d->msg[0])
		diag_set(d, r, "expert_hosts: out of memory");
	for (uint32_t l = 0; host && l < n_layers; l++)
		free(host[l]);
	free(host);
	free(list);
	return r;
}
