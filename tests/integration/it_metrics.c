/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus endpoint of a real moed (metrics_listen on a loopback
 * port) and `moectl metrics`:
 * - after N batches of layer 0, GET /metrics answers 200 with the text
 *   format's content type, moed_batches_total and the latency histogram's
 *   _count of layer 0 are N; the status's latency_us has p50 <= p99 <= p999;
 * - `moectl metrics` prints the same series (uptime and busy share aside:
 *   they move with time);
 * - another path is 404, another method 405, what is not HTTP 400;
 * - a scraper that connects and says nothing does not keep the next one
 *   from being served (it is closed after the request timeout).
 *
 * usage: it_metrics MOED MOECTL
 */
#include "test_assert.h"
#include "test_metrics.h"
#include "test_daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <moe.h>

#define N_BATCHES 12
#define T         16

static const char *arg_moed, *arg_moectl;
static struct test_daemon daemon_;
static uint16_t port;

/* A loopback port nobody listens on now (the kernel's choice). */
static uint16_t free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_OK(getsockname(fd, (struct sockaddr *)&sa, &len));
	close(fd);
	return ntohs(sa.sin_port);
}

static int connect_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 20 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	ASSERT_OK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_OK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	return fd;
}

/* Send @request as is; the whole response (malloc'd, NUL-terminated) and its status code. */
static char *http(const char *request, int *ret_code)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	int fd = connect_port();
	ssize_t got;

	assert_non_null(buf);
	ASSERT_EQ(send(fd, request, strlen(request), MSG_NOSIGNAL), (long)strlen(request));
	while ((got = recv(fd, buf + n, cap - 1 - n, 0)) > 0) {
		n += (size_t)got;
		if (n + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	assert_true(got == 0); /* moed closed it (Connection: close), not our timeout */
	close(fd);
	buf[n] = '\0';
	*ret_code = 0;
	sscanf(buf, "HTTP/1.1 %d", ret_code);
	return buf;
}

/* The CQEs' aux losses, summed, to compare with the status's mean. */
static double aux_loss_sum;

static void run_batches(void)
{
	struct moe_client_opts o;
	struct moe_model_info mi;
	struct moe_client *c;
	uint64_t seed = 3;
	float *x, *y;

	moe_client_opts_init(&o);
	o.socket_path = daemon_.socket;
	o.name = "it-metrics";
	ASSERT_OK(moe_connect(&o, &c));
	mi.size = sizeof(mi);
	ASSERT_OK(moe_model_info_get(c, &mi));
	ASSERT_OK(moe_buf_alloc(c, (size_t)T * mi.d_model * 4, (void **)&x));
	ASSERT_OK(moe_buf_alloc(c, (size_t)T * mi.d_model * 4, (void **)&y));
	test_fill_normal(x, (size_t)T * mi.d_model, &seed);
	for (int i = 0; i < N_BATCHES; i++) {
		struct moe_request rq;
		struct moe_completion done;

		moe_request_init(&rq);
		rq.layer = 0;
		rq.n_tokens = T;
		rq.input = x;
		rq.output = y;
		ASSERT_OK(moe_forward(c, &rq, &done));
		ASSERT_EQ(done.status, 0);
		aux_loss_sum += done.aux_loss;
	}
	moe_close(c);
}

/* `moectl metrics` into a malloc'd string. */
static char *moectl_metrics(void)
{
	const char *argv[] = { arg_moectl, "--socket", daemon_.socket, "metrics", NULL };
	char path[160], *text;

	snprintf(path, sizeof(path), "%s/metrics.txt", daemon_.dir);
	ASSERT_EQ(test_run(argv, path, 30000), 0);
	text = test_read_file(path);
	assert_non_null(text);
	return text;
}

/* @text without the samples of @family, whose values move with time. */
static void drop_family(char *text, const char *family)
{
	char want[96];
	char *at;

	snprintf(want, sizeof(want), "\n%s", family);
	while ((at = strstr(text, want)) && (at[strlen(want)] == ' ' || at[strlen(want)] == '{')) {
		char *end = strchr(at + 1, '\n');

		memmove(at, end, strlen(end) + 1);
	}
}

/* Uptime and busy share change between two reads; every counter must not. */
static void drop_moving(char *text)
{
	drop_family(text, "moed_uptime_seconds");
	drop_family(text, "moed_node_busy_ratio");
}

static void test_scrape(void **state)
{
	char set[64], *resp, *body, *cli;
	const char *extra[] = { "--set", set, NULL };
	json_t *st;
	int code;

	(void)state;
	port = free_port();
	snprintf(set, sizeof(set), "metrics_listen=127.0.0.1:%u", port);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	run_batches();

	resp = http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &code);
	ASSERT_EQ(code, 200);
	assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
	body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	ASSERT_EQ(test_metrics_sample(body, "moed_batches_total{layer=\"0\"}"), N_BATCHES);
	ASSERT_EQ(test_metrics_sample(body, "moed_layer_tokens_total{layer=\"0\"}"), N_BATCHES * T);
	ASSERT_EQ(test_metrics_sample(body, "moed_batch_latency_seconds_count{layer=\"0\"}"), N_BATCHES);
	ASSERT_EQ(test_metrics_sample(body, "moed_batch_latency_seconds_bucket{layer=\"0\",le=\"+Inf\"}"),
		  N_BATCHES);
	assert_true(test_metrics_sample(body, "moed_batch_latency_seconds_sum{layer=\"0\"}") > 0);

	cli = moectl_metrics();
	drop_moving(body);
	drop_moving(cli);
	if (strcmp(body, cli) != 0)
		fail_msg("moectl metrics differs from /metrics:\n%s\n---\n%s", cli, body);
	free(cli);
	free(resp);

	st = test_status_get(daemon_.socket);
	assert_non_null(st);
	assert_true(test_json_int(st, "layers.0.latency_us.p50") > 0);
	assert_true(test_json_int(st, "layers.0.latency_us.p50") <=
		    test_json_int(st, "layers.0.latency_us.p99"));
	assert_true(test_json_int(st, "layers.0.latency_us.p99") <=
		    test_json_int(st, "layers.0.latency_us.p999"));
	/* the status's mean aux loss is the mean of what the completions carried */
	{
		double mean = json_real_value(
			json_object_get(json_array_get(json_object_get(st, "layers"), 0),
					"aux_loss_mean"));

		print_message("aux loss: status %.9g, completions %.9g\n", mean,
			      aux_loss_sum / N_BATCHES);
		assert_true(fabs(mean - aux_loss_sum / N_BATCHES) <= 1e-6 * (1 + fabs(mean)));
	}
	json_decref(st);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static void test_bad_requests_and_a_silent_scraper(void **state)
{
	char set[64], *resp;
	const char *extra[] = { "--set", set, NULL };
	int code, silent;

	(void)state;
	port = free_port();
	snprintf(set, sizeof(set), "metrics_listen=127.0.0.1:%u", port);
	ASSERT_OK(test_daemon_start(&daemon_, extra));
	free(http("GET /other HTTP/1.1\r\n\r\n", &code));
	ASSERT_EQ(code, 404);
	free(http("POST /metrics HTTP/1.1\r\n\r\n", &code));
	ASSERT_EQ(code, 405);
	free(http("\x16\x03\x01 hello\r\n\r\n", &code));
	ASSERT_EQ(code, 400);

	/* one that says nothing, then a real scrape: served once the first times out */
	silent = connect_port();
	resp = http("GET /metrics HTTP/1.1\r\n\r\n", &code);
	ASSERT_EQ(code, 200);
	free(resp);
	close(silent);
	ASSERT_EQ(test_daemon_stop(&daemon_), 0);
}

static int setup(void **state)
{
	(void)state;
	return test_daemon_init(&daemon_, arg_moed) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	test_daemon_done(&daemon_);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_scrape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests_and_a_silent_scraper, setup,
						teardown),
	};

	if (argc < 3) {
		fprintf(stderr, "usage: %s MOED MOECTL\n", argv[0]);
		return 2;
	}
	arg_moed = argv[1];
	arg_moectl = argv[2];
	return cmocka_run_group_tests(tests, NULL, NULL);
}
