/* SPDX-License-Identifier: MIT */
/* admission: per-peer limits on pending connections and sessions; see admission.h. */
#include "reactor/admission.h"

#include <errno.h>

void adm_limits_init(struct adm_limits *l, uint32_t n_pending, uint32_t clients_per_pid,
                     uint32_t clients_per_uid, uid_t self_uid)
{
	*l = (struct adm_limits){
	    .pending_per_pid = ADM_PENDING_PER_PID,
	    .pending_per_uid = ADM_PENDING_PER_UID,
	    /* a tiny table still leaves unprivileged peers half of it */
	    .pending_reserved =
	        ADM_PENDING_RESERVED < n_pending / 2 ? ADM_PENDING_RESERVED : n_pending / 2,
	    .clients_per_pid = clients_per_pid,
	    .clients_per_uid = clients_per_uid,
	    .self_uid = self_uid,
	};
}

bool adm_privileged(const struct adm_limits *l, uid_t uid)
{
	return uid == 0 || uid == l->self_uid;
}

/* The older of entries @a and @b (either may be -1: none). */
static int adm_older(const struct adm_peer *table, int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return table[b].t_ns < table[a].t_ns ? b : a;
}

int adm_pending_place(const struct adm_limits *l, const struct adm_peer *table, uint32_t n,
                      pid_t pid, uid_t uid, enum adm_place *ret_how)
{
	bool priv = adm_privileged(l, uid);
	int first_free = -1, oldest_pid = -1, oldest_uid = -1, oldest_unpriv = -1;
	int oldest_any = -1;
	uint32_t n_pid = 0, n_uid = 0, used = 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct adm_peer *e = &table[i];

		if (!e->used) {
			if (first_free < 0)
				first_free = (int)i;
			continue;
		}
		used++;
		oldest_any = adm_older(table, oldest_any, (int)i);
		if (!adm_privileged(l, e->uid))
			oldest_unpriv = adm_older(table, oldest_unpriv, (int)i);
		if (e->uid == uid) {
			n_uid++;
			oldest_uid = adm_older(table, oldest_uid, (int)i);
		}
		if (e->pid == pid) {
			n_pid++;
			oldest_pid = adm_older(table, oldest_pid, (int)i);
		}
	}
	if (n_pid >= l->pending_per_pid && oldest_pid >= 0) {
		*ret_how = ADM_PLACE_EVICT_PID;
		return oldest_pid;
	}
	if (!priv && n_uid >= l->pending_per_uid && oldest_uid >= 0) {
		*ret_how = ADM_PLACE_EVICT_UID;
		return oldest_uid;
	}
	if (first_free >= 0 && (priv || used + l->pending_reserved < n)) {
		*ret_how = ADM_PLACE_FREE;
		return first_free;
	}
	/* full for this peer: the longest-silent unprivileged connection goes */
	if (oldest_unpriv >= 0) {
		*ret_how = ADM_PLACE_EVICT_OLDEST;
		return oldest_unpriv;
	}
	/* every entry is privileged: another privileged peer may still take the oldest */
	if (priv && oldest_any >= 0) {
		*ret_how = ADM_PLACE_EVICT_OLDEST;
		return oldest_any;
	}
	return -EUSERS;
}

int adm_client_check(const struct adm_limits *l, uid_t uid, uint32_t n_pid, uint32_t n_uid,
                     const char **ret_why)
{
	if (n_pid >= l->clients_per_pid) {
		*ret_why = "max_clients_per_process";
		return -EUSERS;
	}
	if (!adm_privileged(l, uid) && n_uid >= l->clients_per_uid) {
		*ret_why = "max_clients_per_uid";
		return -EUSERS;
	}
	return 0;
}
