/* SPDX-License-Identifier: MIT */
/*
 * moectl top's frame: two samples of the daemon's status JSON in, lines of
 * text out. The status holds only totals since moed started, so every rate
 * is the change between two samples over the change of daemon.uptime_s (the
 * daemon's own clock, not the time moectl happened to wake up). Without an
 * earlier sample of the same daemon (the first frame, or moed restarted)
 * the rates show as "-" and the expert bars show totals since the start.
 *
 * The status comes from whatever answers on the socket: strings go through
 * moectl_term_safe(), numbers are clamped before they size anything.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moectl.h"
#include "top.h"

/* Low to high share of a layer's tokens; ' ' is an expert that got none. */
static const char heat_ramp[] = " .:-=+*#%@";
#define HEAT_LEVELS (sizeof(heat_ramp) - 1)

void top_lines_add(struct top_lines *l, const char *fmt, ...)
{
	char buf[4096], *copy;
	va_list ap;

	if (l->err)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		char **grown = realloc(l->line, cap * sizeof(*grown));

		if (!grown) {
			l->err = -ENOMEM;
			return;
		}
		l->line = grown;
		l->cap = cap;
	}
	copy = strdup(buf);
	if (!copy) {
		l->err = -ENOMEM;
		return;
	}
	l->line[l->n++] = copy;
}

void top_lines_clear(struct top_lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->line[i]);
	l->n = 0;
	l->err = 0;
}

static long long get_int(const json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

/*
 * A counter, kept within [0, 2^53]: sums and differences of these cannot
 * overflow, whatever numbers the peer sends.
 */
static long long get_count(const json_t *o, const char *key)
{
	const long long limit = 1LL << 53;
	long long v = get_int(o, key);

	return v < 0 ? 0 : v > limit ? limit : v;
}

static double get_num(const json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static const char *get_str(const json_t *o, const char *key, char *buf, size_t size)
{
	const char *s = json_string_value(json_object_get(o, key));

	return moectl_term_safe(s ? s : "?", buf, size);
}

/* How much a counter grew since @prev; false without @prev or when it went back. */
static bool counter_delta(const json_t *cur, const json_t *prev, const char *key,
			  long long *ret_delta)
{
	long long was = get_count(prev, key), now = get_count(cur, key);

	if (!json_is_integer(json_object_get(prev, key)) || now < was)
		return false;
	*ret_delta = now - was;
	return true;
}

/* "12.3" per second of @dt, or "-" when there is no rate to give. */
static const char *rate_str(const json_t *cur, const json_t *prev, const char *key, double dt,
			    char *buf, size_t size)
{
	long long d;

	if (dt <= 0 || !counter_delta(cur, prev, key, &d))
		return "-";
	snprintf(buf, size, "%.1f", (double)d / dt);
	return buf;
}

/* "59.2 s", "5m03s", "2h05m", "3d04h": as long as it needs to be. */
static const char *uptime_str(double s, char *buf, size_t size)
{
	unsigned long long t = s > 0 && s < 1e15 ? (unsigned long long)s : 0;

	if (s < 60)
		snprintf(buf, size, "%.1f s", s > 0 ? s : 0.0);
	else if (t < 3600)
		snprintf(buf, size, "%llum%02llus", t / 60, t % 60);
	else if (t < 86400)
		snprintf(buf, size, "%lluh%02llum", t / 3600, t % 3600 / 60);
	else
		snprintf(buf, size, "%llud%02lluh", t / 86400, t % 86400 / 3600);
	return buf;
}

/*
 * The seconds between two samples of one daemon, or 0 when they cannot be
 * compared: no @prev, another pid (a restart), or a clock that did not move.
 */
static double samples_dt(const json_t *cur, const json_t *prev)
{
	const json_t *d = json_object_get(cur, "daemon"), *pd = json_object_get(prev, "daemon");
	double dt;

	if (!prev || get_int(d, "pid") != get_int(pd, "pid"))
		return 0;
	dt = get_num(d, "uptime_s") - get_num(pd, "uptime_s");
	return dt > 0 && isfinite(dt) ? dt : 0;
}

static void render_daemon(const json_t *root, struct top_lines *out)
{
	const json_t *d = json_object_get(root, "daemon"), *m = json_object_get(root, "model");
	const json_t *load = json_object_get(root, "load");
	long long clients = get_int(json_object_get(root, "totals"), "clients");
	char up[32], name[256], phase[64];

	if (load) {
		top_lines_add(out, "moed pid %lld, up %s: %s its experts, %.0f%% read",
			      get_int(d, "pid"), uptime_str(get_num(d, "uptime_s"), up, sizeof(up)),
			      get_str(load, "phase", phase, sizeof(phase)), get_num(load, "percent"));
		return;
	}
	top_lines_add(out,
		      "moed pid %lld, up %s, model %s: %lld layers, %lld experts, d_model %lld; "
		      "%lld workers, %lld client%s",
		      get_int(d, "pid"), uptime_str(get_num(d, "uptime_s"), up, sizeof(up)),
		      get_str(m, "name", name, sizeof(name)), get_int(m, "layers"),
		      get_int(m, "max_experts"), get_int(m, "d_model"), get_int(d, "workers"),
		      clients, clients == 1 ? "" : "s");
}

static void render_throughput(const json_t *t, const json_t *pt, double dt,
			      struct top_lines *out)
{
	char b[32], tk[32], dr[32];

	top_lines_add(out, "throughput: %s batches/s, %s tokens/s, %s dropped/s",
		      rate_str(t, pt, "batches", dt, b, sizeof(b)),
		      rate_str(t, pt, "tokens", dt, tk, sizeof(tk)),
		      rate_str(t, pt, "dropped", dt, dr, sizeof(dr)));
	top_lines_add(out, "since start: %lld batches, %lld tokens, %lld dropped, %lld failed",
		      get_int(t, "batches"), get_int(t, "tokens"), get_int(t, "dropped"),
		      get_int(t, "errors"));
}

/* One line for "peers": how many in which state, traffic, failures. */
static void render_peers(const json_t *peers, const json_t *prev_peers, double dt,
			 struct top_lines *out)
{
	const json_t *list = json_object_get(peers, "peers"), *pe;
	long long up = 0, failed = 0, tokens_out = 0, tokens_in = 0, was_out = 0, was_in = 0;
	char rate_out[32] = "-", rate_in[32] = "-";
	size_t i;

	if (!peers || json_is_null(peers))
		return;
	json_array_foreach(list, i, pe) {
		const char *state = json_string_value(json_object_get(pe, "state"));

		up += state && strcmp(state, "up") == 0;
		failed += get_count(pe, "calls_failed");
		tokens_out += get_count(pe, "tokens_out");
		tokens_in += get_count(pe, "tokens_in");
	}
	json_array_foreach(json_object_get(prev_peers, "peers"), i, pe) {
		was_out += get_count(pe, "tokens_out");
		was_in += get_count(pe, "tokens_in");
	}
	if (dt > 0 && prev_peers && tokens_out >= was_out && tokens_in >= was_in) {
		snprintf(rate_out, sizeof(rate_out), "%.1f", (double)(tokens_out - was_out) / dt);
		snprintf(rate_in, sizeof(rate_in), "%.1f", (double)(tokens_in - was_in) / dt);
	}
	top_lines_add(out,
		      "peers: %zu, %lld up; out %s tokens/s, in %s tokens/s; %lld calls failed; "
		      "serving %zu peer connections",
		      json_array_size(list), up, rate_out, rate_in, failed,
		      json_array_size(json_object_get(json_object_get(peers, "served_by_us"),
						      "connections")));
}

/* The layer of @prev_layers at index @i, when it is the same layer. */
static const json_t *prev_layer(const json_t *prev_layers, size_t i, const json_t *l)
{
	const json_t *p = json_array_get(prev_layers, i);

	return p && get_int(p, "layer") == get_int(l, "layer") ? p : NULL;
}

static bool any_latency(const json_t *layers)
{
	const json_t *l;
	size_t i;

	json_array_foreach(layers, i, l)
		if (json_is_object(json_object_get(l, "latency_us")))
			return true;
	return false;
}

static void render_layer_table(const json_t *layers, const json_t *prev_layers, double dt,
			       struct top_lines *out)
{
	bool latency = any_latency(layers);
	const json_t *l;
	size_t i;

	top_lines_add(out, "layer  experts  batches/s   tokens/s  dropped/s    dropped%s",
		      latency ? "     p50 us     p99 us    p999 us" : "");
	json_array_foreach(layers, i, l) {
		const json_t *p = prev_layer(prev_layers, i, l);
		const json_t *lat = json_object_get(l, "latency_us");
		char b[32], t[32], d[32], lat_cols[64] = "";

		if (latency && json_is_object(lat))
			snprintf(lat_cols, sizeof(lat_cols), " %10.0f %10.0f %10.0f",
				 get_num(lat, "p50"), get_num(lat, "p99"), get_num(lat, "p999"));
		else if (latency)
			snprintf(lat_cols, sizeof(lat_cols), " %10s %10s %10s", "-", "-", "-");
		top_lines_add(out, "%5lld %8zu %10s %10s %10s %10lld%s", get_int(l, "layer"),
			      json_array_size(json_object_get(l, "tokens_per_expert")),
			      rate_str(l, p, "batches", dt, b, sizeof(b)),
			      rate_str(l, p, "tokens", dt, t, sizeof(t)),
			      rate_str(l, p, "dropped", dt, d, sizeof(d)), get_int(l, "dropped"),
			      lat_cols);
	}
}

/*
 * The tokens expert @e of layer @l received: since @p when there is an
 * earlier sample of the layer with as many experts, else since the start.
 */
static long long expert_tokens(const json_t *l, const json_t *p, size_t e)
{
	const long long limit = 1LL << 53; /* exact in a double, where the heat map sums */
	const json_t *tpe = json_object_get(l, "tokens_per_expert");
	const json_t *ptpe = json_object_get(p, "tokens_per_expert");
	long long now = (long long)json_integer_value(json_array_get(tpe, e)), was = 0;

	if (p && json_array_size(ptpe) == json_array_size(tpe))
		was = (long long)json_integer_value(json_array_get(ptpe, e));
	now = now > limit ? limit : now;
	was = was < 0 ? 0 : was;
	return now > was ? now - was : 0;
}

/*
 * The heat map cell: the expert's share against an even split of the
 * layer's tokens, so that balance reads at a glance: an even share is the
 * middle of the ramp, twice that or more the top, none a blank.
 */
static char heat_cell(long long tokens, double layer_tokens, size_t experts)
{
	double even_ratio;
	size_t level;

	if (tokens <= 0 || layer_tokens <= 0)
		return heat_ramp[0];
	even_ratio = (double)tokens * (double)experts / layer_tokens;
	if (!(even_ratio < 2))
		return heat_ramp[HEAT_LEVELS - 1];
	/* an even share (1) rounds to the middle, '+'; twice that to the top */
	level = 1 + (size_t)(even_ratio * (HEAT_LEVELS - 2) / 2 + 0.5);
	level = level < HEAT_LEVELS ? level : HEAT_LEVELS - 1;
	return heat_ramp[level];
}

static void render_heat(const json_t *layers, const json_t *prev_layers, unsigned width,
			struct top_lines *out)
{
	/* "  12 |" before the cells and "|" after */
	size_t per_row = width > 8 + 16 ? width - 8 : 16;
	const json_t *l;
	size_t i;

	if (per_row > 4095)
		per_row = 4095;

	top_lines_add(out, "heat map, a cell per expert: '+' an even share of the layer's tokens, "
			   "'@' twice that, ' ' none");
	json_array_foreach(layers, i, l) {
		const json_t *p = prev_layer(prev_layers, i, l);
		size_t n = json_array_size(json_object_get(l, "tokens_per_expert"));
		double sum = 0;
		char cells[4096];

		for (size_t e = 0; e < n; e++)
			sum += (double)expert_tokens(l, p, e);
		for (size_t start = 0; start < n || start == 0; start += per_row) {
			size_t k = 0;

			for (size_t e = start; e < n && k < per_row; e++)
				cells[k++] = heat_cell(expert_tokens(l, p, e), sum, n);
			cells[k] = '\0';
			if (start == 0)
				top_lines_add(out, "%5lld |%s|", get_int(l, "layer"), cells);
			else
				top_lines_add(out, "      |%s|", cells);
			if (n == 0)
				break;
		}
	}
}

/* Bars on one scale over all layers, so that a hot layer looks hot. */
static void render_bars(const json_t *layers, const json_t *prev_layers, bool since_prev,
			unsigned width, struct top_lines *out)
{
	/* "  e123 1234567890 " before the bar */
	size_t bar_max = width > 18 + 10 ? width - 18 : 10;
	long long max = 0;
	const json_t *l;
	size_t i;
	char bar[1024];

	if (bar_max >= sizeof(bar))
		bar_max = sizeof(bar) - 1;
	json_array_foreach(layers, i, l) {
		size_t n = json_array_size(json_object_get(l, "tokens_per_expert"));

		for (size_t e = 0; e < n; e++) {
			long long t = expert_tokens(l, prev_layer(prev_layers, i, l), e);

			max = t > max ? t : max;
		}
	}
	json_array_foreach(layers, i, l) {
		const json_t *p = prev_layer(prev_layers, i, l);
		size_t n = json_array_size(json_object_get(l, "tokens_per_expert"));

		top_lines_add(out, "layer %lld: tokens per expert %s", get_int(l, "layer"),
			      since_prev ? "since the last refresh" : "since moed started");
		for (size_t e = 0; e < n; e++) {
			long long t = expert_tokens(l, p, e);
			/* any token at all gets a mark: an expert that works never looks idle */
			size_t len = t > 0 ? (size_t)ceil((double)t * (double)bar_max / (double)max)
					   : 0;

			memset(bar, '#', len);
			bar[len] = '\0';
			top_lines_add(out, "  e%-3zu %10lld %s", e, t, bar);
		}
	}
}

int top_render(const json_t *cur, const json_t *prev, unsigned width, struct top_lines *ret_lines)
{
	double dt = samples_dt(cur, prev);
	const json_t *layers = json_object_get(cur, "layers");
	const json_t *prev_layers = dt > 0 ? json_object_get(prev, "layers") : NULL;

	top_lines_clear(ret_lines);
	render_daemon(cur, ret_lines);
	if (!json_object_get(cur, "load")) {
		render_throughput(json_object_get(cur, "totals"),
				  dt > 0 ? json_object_get(prev, "totals") : NULL, dt, ret_lines);
		render_peers(json_object_get(cur, "peers"),
			     dt > 0 ? json_object_get(prev, "peers") : NULL, dt, ret_lines);
		top_lines_add(ret_lines, "%s", "");
		render_layer_table(layers, prev_layers, dt, ret_lines);
		top_lines_add(ret_lines, "%s", "");
		render_heat(layers, prev_layers, width, ret_lines);
		top_lines_add(ret_lines, "%s", "");
		render_bars(layers, prev_layers, prev_layers != NULL, width, ret_lines);
	}
	return ret_lines->err;
}
