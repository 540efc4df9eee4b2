/* SPDX-License-Identifier: MIT */
/*
 * peer_serve: the requests other daemons send us. A peer connects, says
 * HELLO (version, model, the experts it will ask for) and, once accepted,
 * sends EXPERT_REQs. Each request is checked on the reactor (peer_proto.c),
 * its rows received into a job of its own, computed on the serve executor
 * (engine_experts_scratch: never on the reactor) and answered on the
 * connection it came on. A connection that fails takes its unanswered jobs
 * with it: they finish computing and their replies are dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers/peers_internal.h"
#include "store/expert_store.h"
#include "util/log.h"

int serve_start(struct peers *p)
{
	return executor_new(p->cfg->runs_in_flight, &p->serve);
}

static void accepted_drop(struct peers *p, uint32_t slot);

static void job_free(struct peers *p, struct serve_job *j)
{
	for (struct serve_job **pp = &p->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	if (p->acc[j->accepted].used && p->acc[j->accepted].gen == j->acc_gen)
		p->acc[j->accepted].jobs--;
	scratch_done(&j->scratch);
	buf_cache_put(&p->serve_bufs, j->x, j->bytes);
	buf_cache_put(&p->serve_bufs, j->y, j->bytes);
	free(j);
}

void serve_stop(struct peers *p)
{
	/* the runners finish the jobs they compute, and run no others */
	p->serve = executor_free(p->serve);
}

void serve_free(struct peers *p)
{
	while (p->jobs)
		job_free(p, p->jobs);
	for (uint32_t i = 0; i < ACCEPTED_MAX; i++) {
		free(p->acc[i].asks);
		p->acc[i].asks = NULL;
	}
	buf_cache_done(&p->serve_bufs);
}

void serve_tick(struct peers *p, uint64_t now)
{
	const uint64_t hello_ns = (uint64_t)p->cfg->hello_timeout_ms * 1000000ull;
	const uint64_t reply_ns = 2ull * p->cfg->peer_deadline_ms * 1000000ull;

	for (uint32_t i = 0; i < ACCEPTED_MAX; i++) {
		struct accepted *a = &p->acc[i];

		if (!a->used)
			continue;
		/* a refusal had a second to arrive; silence is not a peer */
		if ((a->t_refused_ns && now - a->t_refused_ns > 1000000000ull) ||
		    (!a->hello_ok && !a->t_refused_ns && now - a->t_accept_ns > hello_ns))
			accepted_drop(p, i);
	}
	/*
	 * A requester that hangs (SIGSTOP) leaves our reply stuck in its
	 * socket while its kernel still acknowledges: close the connection,
	 * which ends the send and frees the job.
	 */
	for (struct serve_job *j = p->jobs; j; j = j->next)
		if (j->t_reply_ns && now - j->t_reply_ns > reply_ns &&
		    p->acc[j->accepted].used && p->acc[j->accepted].gen == j->acc_gen) {
			log_error("peer '%s' (%s) has not taken a reply for %u ms; closing its "
				  "connection",
				  p->acc[j->accepted].name, p->acc[j->accepted].addr,
				  2 * p->cfg->peer_deadline_ms);
			accepted_drop(p, j->accepted);
		}
}

int serve_find(const struct peers *p, uint32_t conn)
{
	for (uint32_t i = 0; i < ACCEPTED_MAX; i++)
		if (p->acc[i].used && p->acc[i].conn == conn)
			return (int)i;
	return -1;
}

void serve_on_accept(struct peers *p, uint32_t conn, const char *addr)
{
	for (uint32_t i = 0; i < ACCEPTED_MAX; i++) {
		struct accepted *a = &p->acc[i];

		if (a->used)
			continue;
		free(a->asks);
		*a = (struct accepted){ .used = true, .conn = conn, .gen = a->gen + 1,
					.t_accept_ns = p->now_ns };
		snprintf(a->addr, sizeof(a->addr), "%s", addr ? addr : "?");
		return;
	}
	log_error("peers: %d peer connections already, refusing the one from %s", ACCEPTED_MAX,
		  addr ? addr : "?");
	peers_close_later(p, conn);
}

static void accepted_drop(struct peers *p, uint32_t slot)
{
	struct accepted *a = &p->acc[slot];

	free(a->asks);
	a->asks = NULL;
	a->used = false;
	a->hello_ok = false;
	peers_close_later(p, a->conn);
}

void serve_on_conn_error(struct peers *p, uint32_t slot)
{
	struct accepted *a = &p->acc[slot];

	if (a->hello_ok)
		log_info("peer '%s' (%s) disconnected", a->name, a->addr);
	accepted_drop(p, slot);
}

/* ---- HELLO ---- */

static void hello_answer(struct peers *p, uint32_t slot, int status, const char *why)
{
	struct accepted *a = &p->acc[slot];
	struct peer_hello_reply rep = { .magic = PEER_PROTO_MAGIC, .version = PEER_PROTO_VERSION,
					.status = status, .model = p->model_id };
	int r;

	snprintf(rep.name, sizeof(rep.name), "%s", p->name);
	snprintf(rep.why, sizeof(rep.why), "%s", why ? why : "");
	if (status < 0 && ratelimit_below(&p->log_rl, p->now_ns, NULL))
		log_error("peers: refused '%s' (%s): %s", a->name, a->addr, rep.why);
	else if (status == 0)
		log_info("peer '%s' (%s) connected", a->name, a->addr);
	a->hello_ok = status == 0;
	if (status < 0)
		a->t_refused_ns = p->now_ns;
	r = transport_send(p->t, a->conn, PEER_MSG_HELLO_REPLY, &rep, sizeof(rep), NULL, 0,
			   cookie_make(COOKIE_NONE, 0));
	if (r < 0)
		accepted_drop(p, slot);
}

/* Does this host compute every expert the peer will ask for? */
static void hello_check_asks(struct peers *p, uint32_t slot)
{
	const struct accepted *a = &p->acc[slot];
	char why[200];

	for (uint32_t l = 0; l < moe_model_n_layers(p->model); l++)
		for (uint32_t e = 0; e < p->max_experts; e++) {
			uint8_t ask = a->asks[(size_t)l * p->max_experts + e];

			if (!ask)
				continue;
			if (e >= p->n_experts[l] || ask != 1 || p->host[l][e] != 0) {
				snprintf(why, sizeof(why),
					 "it would send layer %u's expert %u, which this host does "
					 "not compute (its expert_hosts differs)",
					 l, e);
				hello_answer(p, slot, -EINVAL, why);
				return;
			}
		}
	hello_answer(p, slot, 0, NULL);
}

static void on_hello(struct peers *p, uint32_t slot, const struct transport_msg *m,
		     struct transport_rx *rx)
{
	struct accepted *a = &p->acc[slot];
	struct diag d = { { 0 } };
	size_t asks = (size_t)moe_model_n_layers(p->model) * p->max_experts;
	char why[256];
	int r;

	if (a->hello_ok || a->asks)
		return; /* one HELLO per connection */
	if (peer_hello_decode(m->header, m->header_len, &a->hello, &d) < 0) {
		hello_answer(p, slot, -EPROTO, d.msg);
		return;
	}
	memcpy(a->name, a->hello.name, sizeof(a->name)); /* NUL-ended by the decode */
	if (memcmp(&a->hello.model, &p->model_id, sizeof(p->model_id)) != 0) {
		snprintf(why, sizeof(why), "it serves another model (identity or shape differs)");
		hello_answer(p, slot, -ESTALE, why);
		return;
	}
	if (a->hello.max_experts != p->max_experts || m->data_len != asks) {
		hello_answer(p, slot, -EPROTO, "its HELLO lists experts of another shape");
		return;
	}
	a->asks = malloc(asks + 1);
	if (!a->asks) {
		hello_answer(p, slot, -ENOMEM, "out of memory");
		return;
	}
	r = transport_recv(p->t, rx, a->asks, asks,
			   cookie_make(COOKIE_HELLO, (uint64_t)a->gen << 16 | slot));
	if (r < 0)
		accepted_drop(p, slot);
	else if (r == 0)
		hello_check_asks(p, slot);
}

/* ---- requests ---- */

static void job_reply(struct peers *p, struct serve_job *j)
{
	struct accepted *a = &p->acc[j->accepted];
	struct peer_expert_reply rep = { .magic = PEER_PROTO_MAGIC, .status = j->status,
					 .call = j->req.call, .total_rows = j->req.total_rows,
					 .d_model = j->req.d_model };
	size_t bytes = j->status == 0 ? sizeof(float) * j->req.total_rows * j->req.d_model : 0;
	int r;

	if (!a->used || a->gen != j->acc_gen) {
		job_free(p, j); /* the requester is gone */
		return;
	}
	snprintf(rep.why, sizeof(rep.why), "%s", j->why);
	p->served_requests++;
	if (j->status == 0)
		p->served_rows += j->req.total_rows;
	else
		p->served_errors++;
	r = transport_send(p->t, a->conn, PEER_MSG_EXPERT_REPLY, &rep, sizeof(rep),
			   bytes ? j->y : NULL, bytes, cookie_make(COOKIE_SERVE_SEND, j->id));
	if (r == 1) {
		j->t_reply_ns = p->now_ns;
		return;
	}
	job_free(p, j);
}

static void job_compute(struct exec_item *item)
{
	struct serve_job *j = (struct serve_job *)item;
	struct peers *p = j->p;
	const struct moe_layer *L = moe_model_layer(p->model, j->req.layer);
	struct expert_map *map = p->store ? expert_store_map_get(p->store) : NULL;
	const struct expert_home *homes = map ? expert_map_homes(map, j->req.layer) : NULL;
	struct diag d = { { 0 } };
	/* not from j->scratch: the engine resets that one before it copies the bins */
	uint32_t *bin_start = calloc(L->n_experts + 1, sizeof(uint32_t));
	uint32_t row = 0, bin = 0;

	if (!bin_start) {
		j->status = -ENOMEM;
		snprintf(j->why, sizeof(j->why), "out of memory");
		goto out;
	}
	/* the request's experts are ascending (checked): rows lie in that order */
	for (uint32_t e = 0; e < L->n_experts; e++) {
		bin_start[e] = row;
		if (bin < j->req.n_bins && j->req.bin[bin].expert == e)
			row += j->req.bin[bin++].rows;
	}
	bin_start[L->n_experts] = row;
	j->status = engine_experts_scratch(p->engine, &j->scratch, L,
					   (enum activation)j->req.activation, bin_start, j->x,
					   j->y, homes, &d);
	if (j->status < 0)
		snprintf(j->why, sizeof(j->why), "%.159s", d.msg);
out:
	free(bin_start);
	expert_map_put(map);
}

static void job_start(struct peers *p, struct serve_job *j)
{
	j->item.run = job_compute;
	executor_submit(p->serve, &j->item);
}

static void on_request(struct peers *p, uint32_t slot, const struct transport_msg *m,
		       struct transport_rx *rx)
{
	struct accepted *a = &p->acc[slot];
	struct serve_job *j = calloc(1, sizeof(*j));
	struct diag d = { { 0 } };
	size_t bytes;
	int r;

	if (!j)
		return; /* the requester's deadline covers it */
	*j = (struct serve_job){ .p = p, .id = ++p->next_job_id, .accepted = slot,
				 .acc_gen = a->gen };
	j->next = p->jobs;
	p->jobs = j;
	a->jobs++;
	r = peer_expert_req_decode(m->header, m->header_len, m->data_len, moe_model_n_layers(p->model),
				   p->model_id.d_model, p->n_experts, ENGINE_MAX_TOKENS, &j->req,
				   &d);
	if (r == 0 && !a->hello_ok)
		r = diag_set(&d, -EPROTO, "an expert request before HELLO");
	if (r == 0 && p->stopping)
		r = diag_set(&d, -ESHUTDOWN, "this moed is stopping");
	if (r == 0 && a->jobs > SERVE_MAX_JOBS_PER_CONN)
		r = diag_set(&d, -EBUSY, "more than %d requests of one connection at once",
			     SERVE_MAX_JOBS_PER_CONN);
	/* rows as one of our own merged runs can have: the memory a request may cost */
	if (r == 0) {
		const struct moe_layer *L = moe_model_layer(p->model, j->req.layer);
		uint64_t max_rows = (uint64_t)p->cfg->max_merged_tokens *
				    router_config_slots(&L->router);

		if (j->req.total_rows > max_rows)
			r = diag_set(&d, -E2BIG, "an expert request of %u rows; at most %llu "
						 "(max_merged_tokens x slots)",
				     j->req.total_rows, (unsigned long long)max_rows);
	}
	for (uint32_t i = 0; r == 0 && i < j->req.n_bins; i++)
		if (p->host[j->req.layer][j->req.bin[i].expert] != 0)
			r = diag_set(&d, -EINVAL, "layer %u's expert %u does not compute here",
				     j->req.layer, j->req.bin[i].expert);
	if (r < 0) {
		/* echo what can be read of the call id, so the requester matches it */
		if (m->header_len >= offsetof(struct peer_expert_req, activation))
			memcpy(&j->req.call, (const char *)m->header +
						     offsetof(struct peer_expert_req, call),
			       sizeof(j->req.call));
		j->status = r;
		snprintf(j->why, sizeof(j->why), "%.159s", d.msg);
		if (ratelimit_below(&p->log_rl, p->now_ns, NULL))
			log_error("peer '%s' (%s): %s", a->name, a->addr, d.msg);
		job_reply(p, j);
		return;
	}
	bytes = sizeof(float) * j->req.total_rows * j->req.d_model;
	j->bytes = bytes;
	j->x = buf_cache_get(&p->serve_bufs, bytes);
	j->y = buf_cache_get(&p->serve_bufs, bytes);
	if (!j->x || !j->y) {
		j->status = -ENOMEM;
		snprintf(j->why, sizeof(j->why), "out of memory for %u rows", j->req.total_rows);
		job_reply(p, j);
		return;
	}
	r = transport_recv(p->t, rx, j->x, bytes, cookie_make(COOKIE_SERVE_RECV, j->id));
	if (r < 0) {
		job_free(p, j);
		return;
	}
	if (r == 0)
		job_start(p, j);
}

void serve_on_message(struct peers *p, uint32_t slot, const struct transport_msg *m,
		      struct transport_rx *rx)
{
	if (m->id == PEER_MSG_HELLO)
		on_hello(p, slot, m, rx);
	else if (m->id == PEER_MSG_EXPERT_REQ)
		on_request(p, slot, m, rx);
	else
		log_error("peers: '%s' (%s) sent message kind %u, ignored", p->acc[slot].name,
			  p->acc[slot].addr, m->id);
}

static struct serve_job *job_find(struct peers *p, uint64_t id)
{
	for (struct serve_job *j = p->jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

void serve_on_transfer_done(struct peers *p, uint64_t cookie, int status)
{
	struct serve_job *j;

	if (cookie_kind(cookie) == COOKIE_HELLO) {
		uint32_t slot = (uint32_t)(cookie_value(cookie) & 0xffff);
		uint32_t gen = (uint32_t)(cookie_value(cookie) >> 16);

		if (slot < ACCEPTED_MAX && p->acc[slot].used && p->acc[slot].gen == gen &&
		    p->acc[slot].asks && !p->acc[slot].hello_ok) {
			if (status == 0)
				hello_check_asks(p, slot);
			else
				accepted_drop(p, slot);
		}
		return;
	}
	j = job_find(p, cookie_value(cookie));
	if (!j)
		return;
	if (cookie_kind(cookie) == COOKIE_SERVE_SEND) {
		job_free(p, j);
		return;
	}
	if (status < 0)
		job_free(p, j);
	else
		job_start(p, j);
}

int serve_take_done(struct peers *p, bool fd_ready)
{
	struct exec_item *done;
	int n = 0;

	/* the eventfd only when its poll fired (see calls_take_inbox) */
	if (fd_ready)
		executor_ack_event(p->serve);
	done = executor_take_done(p->serve);
	while (done) {
		struct serve_job *j = (struct serve_job *)done;

		done = done->next;
		job_reply(p, j);
		n++;
	}
	return n;
}
