/* SPDX-License-Identifier: MIT */
/*
 * config: the single table of moed's settings and the code that reads it.
 * Adding a setting means one row here, one field in struct moed_config and
 * one documented line in systemd/moed.conf (test_config checks the last).
 */
#include "config/config.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "peers/peer_config.h"
#include "util/parse.h"

enum config_type {
	CONFIG_PATH,
	CONFIG_U32,
	CONFIG_U64,
	CONFIG_SIZE, /* a byte count with an optional K/M/G/T suffix; a uint64_t */
	CONFIG_MODE,     /* octal permission bits */
	CONFIG_ENUM,     /* an enum field; its names in the row */
	CONFIG_BOOL,     /* yes | no */
};

/* Whether a reload (SIGHUP) changes a setting in the running moed. */
enum config_change {
	CONFIG_RESTART, /* read once at start: a changed value waits for a restart */
	CONFIG_LIVE,    /* read where it is used, on the reactor thread only: changes on reload */
};

struct config_row {
	const char *key;
	enum config_type type;
	size_t offset;
	uint64_t min, max;         /* numbers */
	const char *def;           /* the default, as the file writes it */
	enum config_change change;
	const char *doc;
	const char *const *names; /* CONFIG_ENUM: the values in enum order, NULL-ended */
};

#define ROW(_key, _type, _field, _min, _max, _def, _change, _doc)                               \
	{ _key, _type, offsetof(struct moed_config, _field), _min, _max, _def, CONFIG_##_change,  \
	  _doc, NULL }
#define ENUM_ROW(_key, _field, _names, _def, _change, _doc)                                     \
	{ _key, CONFIG_ENUM, offsetof(struct moed_config, _field), 0, 0, _def, CONFIG_##_change,  \
	  _doc, _names }

static const char *const doorbell_names[] = { "auto", "futex", "eventfd", NULL };
/* in the order of enum placement_policy */
static const char *const placement_names[] = { "balanced", "interleave", "explicit", NULL };
static const char *const bool_names[] = { "no", "yes", NULL };
static const char *const peer_failure_names[] = { "error", "drop", NULL };
/* in the order of enum expert_dtype */
static const char *const expert_dtype_names[] = { "checkpoint", "f32", NULL };

static const struct config_row config_table[] = {
	ROW("socket", CONFIG_PATH, socket, 0, 0, "/run/moed/moed.sock", RESTART, "control socket path"),
	ROW("socket_mode", CONFIG_MODE, socket_mode, 0, 0777, "0660", RESTART,
	    "permission bits of the control socket (octal)"),
	ROW("model", CONFIG_PATH, model, 0, 0, "", RESTART,
	    "safetensors file, index.json or folder; empty: the embedded default model"),
	ROW("state_dir", CONFIG_PATH, state_dir, 0, 0, "/var/lib/moed", RESTART,
	    "where moed keeps state (the generated default model)"),
	ROW("workers", CONFIG_U32, workers, 0, 4096, "0", RESTART,
	    "engine workers; 0: one per allowed CPU"),
	ROW("kernel_calibration", CONFIG_BOOL, kernel_calibration, 0, 0, "yes", RESTART,
	    "yes: measure where the small-m kernel hands over to sgemm at start, at the "
	    "model's shapes (cached in state_dir); no: the built-in bounds"),
	ROW("bf16_dot", CONFIG_BOOL, bf16_dot, 0, 0, "no", RESTART,
	    "yes: BF16 experts multiply with AVX512_BF16's vdpbf16ps where the CPU has it, "
	    "the activations rounded to BF16; no: float32 compute on the stored weights"),
	ROW("runs_in_flight", CONFIG_U32, runs_in_flight, 1, 64, "2", RESTART,
	    "engine runs computing at once (each client has at most one in flight)"),
	ROW("merge_window_us", CONFIG_U32, merge_window_us, 0, 1000000, "200", LIVE,
	    "how long a batch waits for same-layer batches of other clients; 0: no merging"),
	ROW("inline_run_bytes", CONFIG_U64, inline_run_bytes, 0, 1ull << 40, "262144", LIVE,
	    "a run that reads at most this many bytes of weights computes on the reactor "
	    "thread, without a hand-off to a runner; 0: every run goes to a runner"),
	ROW("poll_us", CONFIG_U32, poll_us, 0, 1000000, "50", LIVE,
	    "after the last work, poll the rings this long before sleeping"),
	ROW("max_clients", CONFIG_U32, max_clients, 1, 65536, "64", RESTART, "connected clients at most"),
	ROW("max_clients_per_process", CONFIG_U32, max_clients_per_process, 0, 65536, "0", LIVE,
	    "connected clients of one process at most (root's too); 0: max(1, max_clients / 4)"),
	ROW("max_clients_per_uid", CONFIG_U32, max_clients_per_uid, 0, 65536, "0", LIVE,
	    "connected clients of one uid at most (root and moed's uid exempt); "
	    "0: max(1, max_clients / 2)"),
	ROW("max_arena_bytes", CONFIG_U64, max_arena_bytes, 4096, 1ull << 40, "1073741824", RESTART,
	    "largest arena a client may ask for"),
	ROW("max_sq_entries", CONFIG_U32, max_sq_entries, 1, 1u << 16, "4096", RESTART,
	    "largest submission ring a client may ask for (power of two)"),
	ROW("max_tokens", CONFIG_U32, max_tokens, 1, ENGINE_MAX_TOKENS, "65536", RESTART,
	    "tokens per batch at most"),
	ROW("max_merged_tokens", CONFIG_U32, max_merged_tokens, 1, ENGINE_MAX_TOKENS, "65536", RESTART,
	    "tokens per merged engine run at most"),
	ROW("hello_timeout_ms", CONFIG_U32, hello_timeout_ms, 1, 600000, "5000", LIVE,
	    "a new connection that sends nothing for this long is closed"),
	ENUM_ROW("doorbell", doorbell, doorbell_names, "auto", RESTART,
		 "auto | futex (io_uring futex wait) | eventfd"),
	ROW("topology_file", CONFIG_PATH, topology_file, 0, 0, "", RESTART,
	    "NUMA nodes and their CPUs from this file instead of the machine (tests); "
	    "empty: detect"),
	ENUM_ROW("placement", placement, placement_names, "balanced", RESTART,
		 "which node holds each expert: balanced | interleave | explicit"),
	ROW("expert_nodes", CONFIG_PATH, expert_nodes, 0, 0, "", RESTART,
	    "placement = explicit: EXPERTS@NODE[;EXPERTS@NODE...], L:EXPERTS@NODE for one layer"),
	ROW("node_steal", CONFIG_BOOL, node_steal, 0, 0, "no", RESTART,
	    "yes: a node's idle workers compute other nodes' experts (remote reads)"),
	ROW("store_dir", CONFIG_PATH, store_dir, 0, 0, "/dev/shm", RESTART,
	    "where the expert store's objects live (tmpfs, or hugetlbfs for huge pages)"),
	ROW("store_name", CONFIG_PATH, store_name, 0, 0, "", RESTART,
	    "name of the expert store's objects; empty: derived from the socket path"),
	ROW("store_keep", CONFIG_BOOL, store_keep, 0, 0, "yes", RESTART,
	    "yes: the expert store outlives moed and a restart re-attaches it; no: freed at exit"),
	ENUM_ROW("expert_dtype", expert_dtype, expert_dtype_names, "checkpoint", RESTART,
		 "the experts' matrices in memory: checkpoint (its dtype: BF16/F16 stay half "
		 "precision) | f32 (widened at load, twice the memory of a half-precision "
		 "checkpoint)"),
	ROW("replica_budget", CONFIG_SIZE, replica_budget, 0, 1ull << 50, "0", RESTART,
	    "bytes per node for copies made while serving (replicas, moves); 0: none"),
	ROW("rebalance_interval_ms", CONFIG_U32, rebalance_interval_ms, 0, 3600000, "0", LIVE,
	    "every this many ms, replicate hot experts and drop cold replicas "
	    "(within replica_budget); 0: off"),
	ROW("rebalance_hot_percent", CONFIG_U32, rebalance_hot_percent, 101, 100000, "200", LIVE,
	    "an expert receiving more than this percent of its layer's mean tokens is hot"),
	ROW("listen", CONFIG_PATH, listen, 0, 0, "", RESTART,
	    "ADDR:PORT where this daemon accepts peer daemons ([::1]:7000 for IPv6); empty: none"),
	ROW("peers", CONFIG_PATH, peers, 0, 0, "", RESTART,
	    "the other daemons of the pool: NAME=ADDR:PORT[,NAME=ADDR:PORT...]"),
	ROW("expert_hosts", CONFIG_PATH, expert_hosts, 0, 0, "", RESTART,
	    "which host computes which experts: EXPERTS@HOST[;...], L:EXPERTS@HOST for layer L; "
	    "HOST is self or a peer's NAME; experts not named compute here"),
	ROW("peer_deadline_ms", CONFIG_U32, peer_deadline_ms, 1, 600000, "1000", RESTART,
	    "the longest a remote transfer may take; past it the peer's tokens get peer_failure"),
	ROW("max_hosts_per_token", CONFIG_U32, max_hosts_per_token, 0, PEERS_MAX + 1, "0", RESTART,
	    "top-k layers: a token's experts lie on at most this many hosts (DeepSeek-V3's "
	    "node-limited routing; each host's experts one block of equal size); 0: any"),
	ENUM_ROW("peer_failure", peer_failure, peer_failure_names, "error", RESTART,
		 "a peer gone or past its deadline: error (the batch fails with -EHOSTUNREACH) | "
		 "drop (its slots are dropped and counted)"),
	ROW("metrics_listen", CONFIG_PATH, metrics_listen, 0, 0, "", RESTART,
	    "ADDR:PORT where moed serves Prometheus metrics at /metrics (127.0.0.1:9464: "
	    "this host only); empty: off"),
};

#define N_ROWS (sizeof(config_table) / sizeof(config_table[0]))

void moed_config_init(struct moed_config *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < N_ROWS; i++)
		if (moed_config_set(c, config_table[i].key, config_table[i].def, NULL) < 0)
			abort(); /* a default the table cannot parse: test_config catches it first */
}

const char *moed_config_key(unsigned i)
{
	return i < N_ROWS ? config_table[i].key : NULL;
}

bool moed_config_key_live(unsigned i)
{
	return i < N_ROWS && config_table[i].change == CONFIG_LIVE;
}

static const struct config_row *config_row_find(const char *key)
{
	for (size_t i = 0; i < N_ROWS; i++)
		if (strcmp(config_table[i].key, key) == 0)
			return &config_table[i];
	return NULL;
}

int moed_config_set(struct moed_config *c, const char *key, const char *value, struct diag *d)
{
	const struct config_row *row = config_row_find(key);
	uint8_t *field;
	uint64_t v64;
	uint32_t v32;
	char *end;
	int r;

	if (!row)
		return diag_set(d, -EINVAL, "unknown setting '%s'", key);
	field = (uint8_t *)c + row->offset;
	switch (row->type) {
	case CONFIG_PATH:
		if (strlen(value) >= CONFIG_PATH_MAX)
			return diag_set(d, -ERANGE, "%s: path too long", key);
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case CONFIG_U32:
		r = parse_u32(value, (uint32_t)row->min, (uint32_t)row->max, &v32);
		if (r < 0)
			return diag_set(d, r, "%s: '%s' is not an integer in [%llu, %llu]", key,
					value, (unsigned long long)row->min,
					(unsigned long long)row->max);
		memcpy(field, &v32, sizeof(v32));
		return 0;
	case CONFIG_U64:
		r = parse_u64(value, row->min, row->max, &v64);
		if (r < 0)
			return diag_set(d, r, "%s: '%s' is not an integer in [%llu, %llu]", key,
					value, (unsigned long long)row->min,
					(unsigned long long)row->max);
		memcpy(field, &v64, sizeof(v64));
		return 0;
	case CONFIG_SIZE:
		r = parse_size(value, &v64);
		if (r < 0 || v64 < row->min || v64 > row->max)
			return diag_set(d, r < 0 ? r : -ERANGE,
					"%s: '%s' is not a size (digits, then K, M, G or T) in "
					"[%llu, %llu]",
					key, value, (unsigned long long)row->min,
					(unsigned long long)row->max);
		memcpy(field, &v64, sizeof(v64));
		return 0;
	case CONFIG_MODE:
		/* digits 0-7 only: strtoull alone would take signs and spaces */
		if (!*value || strspn(value, "01234567") != strlen(value))
			return diag_set(d, -EINVAL, "%s: '%s' is not an octal mode", key, value);
		errno = 0;
		v64 = strtoull(value, &end, 8);
		if (errno || end == value || *end || v64 > row->max)
			return diag_set(d, -EINVAL, "%s: '%s' is not an octal mode", key, value);
		v32 = (uint32_t)v64;
		memcpy(field, &v32, sizeof(v32));
		return 0;
	case CONFIG_ENUM:
		r = parse_name(value, row->names);
		if (r < 0)
			return diag_set(d, r, "%s: '%s' is not one of %s", key, value, row->doc);
		memcpy(field, &r, sizeof(r)); /* enum fields are int-sized */
		return 0;
	case CONFIG_BOOL:
		r = parse_name(value, bool_names);
		if (r < 0)
			return diag_set(d, r, "%s: '%s' is not yes or no", key, value);
		*(bool *)(void *)field = r == 1;
		return 0;
	}
	return diag_set(d, -EINVAL, "%s: unhandled type", key);
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

int moed_config_load(struct moed_config *c, const char *path, struct diag *d)
{
	char line[2 * CONFIG_PATH_MAX];
	unsigned lineno = 0;
	FILE *f;
	int r = 0;

	f = fopen(path, "re");
	if (!f)
		return diag_set(d, -errno, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char copy[sizeof(line)], *key, *value, *eq;

		lineno++;
		snprintf(copy, sizeof(copy), "%s", line);
		if (!strchr(line, '\n') && !feof(f)) {
			r = diag_set(d, -EINVAL, "%s:%u: line too long", path, lineno);
			break;
		}
		/* a comment is a whole line: '#' inside a value (a path) is kept */
		key = trim(line);
		if (!*key || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (!eq) {
			r = diag_set(d, -EINVAL, "%s:%u: expected 'key = value': %s", path, lineno,
				     trim(copy));
			break;
		}
		*eq = '\0';
		value = trim(eq + 1);
		key = trim(key);
		r = moed_config_set(c, key, value, d);
		if (r < 0) {
			diag_prefix(d, r, "%s:%u: %s", path, lineno, trim(copy));
			break;
		}
	}
	if (r == 0 && ferror(f))
		r = diag_set(d, -EIO, "%s: read error", path);
	fclose(f);
	return r;
}

static int dropin_filter(const struct dirent *e)
{
	size_t n = strlen(e->d_name);

	return e->d_name[0] != '.' && n > 5 && strcmp(e->d_name + n - 5, ".conf") == 0;
}

int moed_config_load_all(struct moed_config *c, const char *path, struct diag *d)
{
	char dir[CONFIG_PATH_MAX + 2], file[2 * CONFIG_PATH_MAX + 8];
	struct dirent **names = NULL;
	int n, r;

	r = moed_config_load(c, path, d);
	if (r < 0)
		return r;
	if ((size_t)snprintf(dir, sizeof(dir), "%s.d", path) >= sizeof(dir))
		return diag_set(d, -ENAMETOOLONG, "%s.d: path too long", path);
	/* alphasort: the C locale's byte order, as systemd orders drop-ins */
	n = scandir(dir, &names, dropin_filter, alphasort);
	if (n < 0)
		return errno == ENOENT || errno == ENOTDIR
		           ? 0
		           : diag_set(d, -errno, "%s: %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		snprintf(file, sizeof(file), "%s/%s", dir, names[i]->d_name);
		if (r == 0)
			r = moed_config_load(c, file, d);
		free(names[i]);
	}
	free(names);
	return r;
}

/* The peer settings' syntax, and that expert_hosts names only listed peers. */
static int peers_config_validate(const struct moed_config *c, struct diag *d)
{
	struct peer_list peers;
	struct peer_addr at;
	int r;

	if (c->listen[0] && peer_addr_parse(c->listen, &at, d) < 0)
		return diag_prefix(d, -EINVAL, "listen");
	r = peer_list_parse(c->peers, &peers, d);
	if (r < 0)
		return r;
	return expert_hosts_parse(c->expert_hosts, &peers, 0, NULL, NULL, d);
}

int moed_config_validate(const struct moed_config *c, struct diag *d)
{
	if (!c->socket[0])
		return diag_set(d, -EINVAL, "socket: must not be empty");
	if (!c->model[0] && !c->state_dir[0])
		return diag_set(d, -EINVAL, "state_dir: needed for the default model");
	if (!c->max_sq_entries || (c->max_sq_entries & (c->max_sq_entries - 1)))
		return diag_set(d, -EINVAL, "max_sq_entries: %u is not a power of two",
				c->max_sq_entries);
	if (c->max_clients_per_process > c->max_clients)
		return diag_set(d, -EINVAL, "max_clients_per_process (%u) > max_clients (%u)",
				c->max_clients_per_process, c->max_clients);
	if (c->max_clients_per_uid > c->max_clients)
		return diag_set(d, -EINVAL, "max_clients_per_uid (%u) > max_clients (%u)",
				c->max_clients_per_uid, c->max_clients);
	if (c->max_merged_tokens < c->max_tokens)
		return diag_set(d, -EINVAL, "max_merged_tokens (%u) < max_tokens (%u)",
				c->max_merged_tokens, c->max_tokens);
	if (c->placement == PLACEMENT_EXPLICIT && !c->expert_nodes[0])
		return diag_set(d, -EINVAL, "placement = explicit needs expert_nodes");
	if (!c->store_dir[0])
		return diag_set(d, -EINVAL, "store_dir: must not be empty");
	if (c->metrics_listen[0]) {
		struct peer_addr at;

		if (peer_addr_parse(c->metrics_listen, &at, d) < 0)
			return diag_prefix(d, -EINVAL, "metrics_listen");
	}
	return peers_config_validate(c, d);
}

uint32_t moed_config_clients_per_process(const struct moed_config *c)
{
	/* a quarter: one process cannot take the daemon, a few tenants fit side by side */
	if (c->max_clients_per_process)
		return c->max_clients_per_process;
	return c->max_clients / 4 ? c->max_clients / 4 : 1;
}

uint32_t moed_config_clients_per_uid(const struct moed_config *c)
{
	/* half: a single uid never takes every slot, whoever else waits */
	if (c->max_clients_per_uid)
		return c->max_clients_per_uid;
	return c->max_clients / 2 ? c->max_clients / 2 : 1;
}

/* @row's value in @c as the file would write it. */
static void config_format(const struct moed_config *c, const struct config_row *row, char *buf,
                          size_t size)
{
	const uint8_t *field = (const uint8_t *)c + row->offset;
	uint64_t v64;
	uint32_t v32;
	int v;

	switch (row->type) {
	case CONFIG_PATH:
		snprintf(buf, size, "%s", (const char *)field);
		return;
	case CONFIG_U32:
		memcpy(&v32, field, sizeof(v32));
		snprintf(buf, size, "%u", v32);
		return;
	case CONFIG_U64:
	case CONFIG_SIZE:
		memcpy(&v64, field, sizeof(v64));
		snprintf(buf, size, "%llu", (unsigned long long)v64);
		return;
	case CONFIG_MODE:
		memcpy(&v32, field, sizeof(v32));
		snprintf(buf, size, "%04o", v32);
		return;
	case CONFIG_ENUM:
		memcpy(&v, field, sizeof(v));
		snprintf(buf, size, "%s", row->names[v]);
		return;
	case CONFIG_BOOL:
		snprintf(buf, size, "%s", bool_names[*(const bool *)(const void *)field]);
		return;
	}
	snprintf(buf, size, "?");
}

void moed_config_dump(const struct moed_config *c, FILE *f)
{
	char value[CONFIG_PATH_MAX];

	for (size_t i = 0; i < N_ROWS; i++) {
		const struct config_row *row = &config_table[i];

		config_format(c, row, value, sizeof(value));
		fprintf(f, "# %s%s\n%s = %s\n", row->doc,
		        row->change == CONFIG_LIVE ? " (changes on reload)" : "", row->key, value);
	}
}

unsigned moed_config_apply_live(struct moed_config *dst, const struct moed_config *src,
								moed_config_change_fn report, void *arg)
{
	char was[CONFIG_PATH_MAX], now[CONFIG_PATH_MAX];
	unsigned applied = 0;

	for (size_t i = 0; i < N_ROWS; i++) {
		const struct config_row *row = &config_table[i];
		bool live = row->change == CONFIG_LIVE;

		config_format(dst, row, was, sizeof(was));
		config_format(src, row, now, sizeof(now));
		if (strcmp(was, now) == 0)
			continue;
		if (report)
			report(row->key, was, now, live, arg);
		if (!live)
			continue;
		/* the same text parses back to the same field: copy through the parser */
		if (moed_config_set(dst, row->key, now, NULL) == 0)
			applied++;
	}
	return applied;
}

json_t *moed_config_to_json(const struct moed_config *c)
{
	char value[CONFIG_PATH_MAX];
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < N_ROWS; i++) {
		const struct config_row *row = &config_table[i];

		config_format(c, row, value, sizeof(value));
		if (json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b}", "key", row->key,
							  "value", value, "default", row->def,
							  "live", row->change == CONFIG_LIVE)) < 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}
