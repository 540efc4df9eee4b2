/* SPDX-License-Identifier: MIT */
/*
 * reactor_reload: SIGHUP (and `moectl reload`, which sends it). The
 * configuration's sources are read again; the result must validate on its
 * own and together with the settings that keep their value until a restart,
 * or nothing changes. What may change live (config.c's table) is then
 * written into the configuration in force: those are settings that only
 * the reactor thread reads, at their use, so no run sees half of a change.
 * Every change is logged, the ones that wait for a restart as warnings, and
 * the outcome is in `moectl status` (daemon.reload).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reactor/reactor_internal.h"
#include "util/log.h"

void reactor_set_reload(struct reactor *r, struct moed_config *cfg, reactor_reload_fn fn,
			void *arg)
{
	r->cfg_mut = cfg;
	r->reload_fn = fn;
	r->reload_arg = arg;
}

struct change_tally {
	unsigned live, restart;
	char restart_keys[256];
};

static void log_change(const char *key, const char *was, const char *now, bool live, void *arg)
{
	struct change_tally *t = arg;
	size_t len = strlen(t->restart_keys);

	if (live) {
		log_info("reload: %s = %s (was %s)", key, now, was);
		t->live++;
		return;
	}
	log_warning("reload: %s = %s waits for a restart (it cannot change live); %s stays "
		    "in force until then",
		    key, now, was);
	t->restart++;
	snprintf(t->restart_keys + len, sizeof(t->restart_keys) - len, "%s%s", len ? ", " : "",
		 key);
}

/* What the reactor derived from live settings at start, derived again. */
static void reload_derived(struct reactor *r)
{
	adm_limits_init(&r->adm, r->n_conns, moed_config_clients_per_process(r->cfg),
			moed_config_clients_per_uid(r->cfg), geteuid());
}

/* Parse, check and apply; the outcome in r->reload_message. 0 or -errno. */
static int reload_apply(struct reactor *r, struct moed_config *next, struct moed_config *mix)
{
	struct change_tally tally = { 0 };
	struct diag d = { { 0 } };
	int ret;

	ret = r->reload_fn(r->reload_arg, next, &d);
	if (ret < 0) {
		snprintf(r->reload_message, sizeof(r->reload_message),
			 "refused: %s; the configuration in force stays", d.msg);
		return ret;
	}
	/* the live settings of @next over the rest in force: what would run */
	memcpy(mix, r->cfg, sizeof(*mix));
	moed_config_apply_live(mix, next, NULL, NULL);
	ret = moed_config_validate(mix, &d);
	if (ret < 0) {
		snprintf(r->reload_message, sizeof(r->reload_message),
			 "refused: %s (with the settings that change only on restart as they "
			 "are); the configuration in force stays",
			 d.msg);
		return ret;
	}
	moed_config_apply_live(r->cfg_mut, next, log_change, &tally);
	reload_derived(r);
	if (!tally.live && !tally.restart)
		snprintf(r->reload_message, sizeof(r->reload_message), "no setting changed");
	else if (!tally.restart)
		snprintf(r->reload_message, sizeof(r->reload_message), "applied %u change%s",
			 tally.live, tally.live == 1 ? "" : "s");
	else
		snprintf(r->reload_message, sizeof(r->reload_message),
			 "applied %u change%s; %u wait%s for a restart: %s", tally.live,
			 tally.live == 1 ? "" : "s", tally.restart, tally.restart == 1 ? "s" : "",
			 tally.restart_keys);
	return 0;
}

void reactor_reload(struct reactor *r)
{
	struct moed_config *next, *mix;
	int ret = -ENOMEM;

	if (!r->reload_fn) {
		log_info("SIGHUP: no configuration to reload, ignoring");
		return;
	}
	if (r->stopping) {
		log_info("SIGHUP while draining: ignored");
		return;
	}
	service_notify_reloading();
	next = malloc(sizeof(*next));
	mix = malloc(sizeof(*mix));
	if (next && mix)
		ret = reload_apply(r, next, mix);
	else
		snprintf(r->reload_message, sizeof(r->reload_message),
			 "refused: out of memory; the configuration in force stays");
	free(next);
	free(mix);
	r->reloads++;
	if (ret < 0) {
		r->reloads_refused++;
		log_error("reload: %s", r->reload_message);
	} else {
		log_info("reload: %s", r->reload_message);
	}
	service_notify_ready("serving, reloaded");
	r->status_clients = UINT32_MAX; /* the next tick says how many clients again */
}
