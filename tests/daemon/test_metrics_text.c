/* SPDX-License-Identifier: MIT */
/*
 * Tests of metrics_text, the status JSON as Prometheus text:
 * - a status of two layers, two NUMA nodes and a peer renders to text that
 *   a strict reading of the format accepts: every sample belongs to the
 *   family its "# TYPE" line declared just before, no series twice, values
 *   are numbers, label values are quoted and escaped;
 * - the values are the status's: per-layer counters, per-expert tokens,
 *   the latency histogram (buckets in seconds, cumulative, +Inf = _count,
 *   _sum in seconds), per-node bytes, peer up/down and traffic;
 * - a model name with a quote, a backslash and a newline is escaped;
 * - what is not a status is -EINVAL, and nothing is written.
 */
#include "test_assert.h"
#include "test_metrics.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/metrics_text.h"

static const char *status_text =
	"{\"daemon\": {\"pid\": 1, \"uptime_s\": 12.5, \"abi_major\": 1,"
	"              \"reload\": {\"count\": 3, \"refused\": 1, \"message\": \"\"}},"
	" \"model\": {\"name\": \"m\\\"q\\\\b\\nl\"},"
	" \"totals\": {\"clients\": 2, \"clients_served\": 5, \"clients_refused\": 1,"
	"             \"errors\": 4, \"rejected\": 6, \"engine_runs\": 7, \"merged_batches\": 8},"
	" \"layers\": ["
	"   {\"layer\": 0, \"batches\": 10, \"tokens\": 100, \"dropped\": 3, \"aux_loss_mean\": 0.125,"
	"    \"tokens_per_expert\": [120, 80],"
	"    \"latency_us\": {\"count\": 10, \"sum\": 2500, \"p50\": 200, \"p99\": 900,"
	"                    \"p999\": 900, \"below_pow2\": [0, 0, 0, 0, 0, 4, 9, 10]}},"
	"   {\"layer\": 2, \"batches\": 1, \"tokens\": 9, \"dropped\": 0,"
	"    \"tokens_per_expert\": [9, 0, 9]}],"
	" \"store\": {\"nodes\": [{\"node\": 0, \"bytes\": 4096, \"busy\": 0.25},"
	"                        {\"node\": 1, \"bytes\": 8192}]},"
	" \"peers\": {\"peers\": [{\"name\": \"b\", \"state\": \"up\", \"bytes_out\": 11,"
	"                         \"bytes_in\": 22, \"tokens_out\": 3, \"tokens_in\": 3,"
	"                         \"calls\": 2, \"calls_failed\": 0, \"deadline_misses\": 1,"
	"                         \"rtt_avg_us\": 250},"
	"                        {\"name\": \"c\", \"state\": \"down\"}]}}";

static char *render(const char *json_text, int *ret)
{
	json_t *st = json_loads(json_text, 0, NULL);
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	assert_non_null(st);
	assert_non_null(f);
	*ret = metrics_text_write(st, f);
	ASSERT_EQ(fclose(f), 0);
	json_decref(st);
	return text;
}

/*
 * The format, read strictly: "# HELP name ...", "# TYPE name type", then
 * samples of that family only (name, name_bucket/_sum/_count for a
 * histogram), each series once, each value a number.
 */
static void check_format(char *text)
{
	char family[128] = "", type[16] = "", *save = NULL;
	char **seen = calloc(4096, sizeof(char *));
	size_t n_seen = 0;

	assert_non_null(seen);
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *space, *endp;
		size_t flen = strlen(family);

		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (sscanf(line, "# TYPE %127s %15s", family, type) == 2) {
			assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
				    strcmp(type, "histogram") == 0);
			continue;
		}
		assert_true(flen > 0);
		if (strncmp(line, family, flen) != 0)
			fail_msg("sample outside its family %s: %s", family, line);
		if (strcmp(type, "histogram") == 0)
			assert_true(strncmp(line + flen, "_bucket{", 8) == 0 ||
				    strncmp(line + flen, "_sum", 4) == 0 ||
				    strncmp(line + flen, "_count", 6) == 0);
		else
			assert_true(line[flen] == '{' || line[flen] == ' ');
		space = strrchr(line, ' ');
		assert_non_null(space);
		strtod(space + 1, &endp);
		if (*endp)
			fail_msg("not a number: %s", line);
		*space = '\0';
		for (size_t i = 0; i < n_seen; i++)
			if (strcmp(seen[i], line) == 0)
				fail_msg("series twice: %s", line);
		assert_true(n_seen < 4096);
		seen[n_seen++] = line;
	}
	free(seen);
}

static void test_values_and_format(void **state)
{
	int r;
	char *text = render(status_text, &r);

	(void)state;
	ASSERT_OK(r);
	ASSERT_EQ(test_metrics_sample(text, "moed_clients"), 2);
	ASSERT_EQ(test_metrics_sample(text, "moed_reloads_refused_total"), 1);
	ASSERT_EQ(test_metrics_sample(text, "moed_batches_total{layer=\"2\"}"), 1);
	ASSERT_EQ(test_metrics_sample(text, "moed_layer_tokens_total{layer=\"0\"}"), 100);
	ASSERT_EQ(test_metrics_sample(text, "moed_dropped_tokens_total{layer=\"0\"}"), 3);
	ASSERT_EQ(test_metrics_sample(text, "moed_tokens_total{layer=\"0\",expert=\"1\"}"), 80);
	ASSERT_EQ(test_metrics_sample(text, "moed_tokens_total{layer=\"2\",expert=\"2\"}"), 9);
	assert_true(test_metrics_sample(text, "moed_aux_loss{layer=\"0\"}") == 0.125);
	/* below_pow2[5] counts under 2^8 us = 0.000256 s */
	ASSERT_EQ(test_metrics_sample(
			  text, "moed_batch_latency_seconds_bucket{layer=\"0\",le=\"0.000256\"}"),
		  4);
	ASSERT_EQ(test_metrics_sample(text,
				      "moed_batch_latency_seconds_bucket{layer=\"0\",le=\"+Inf\"}"),
		  10);
	ASSERT_EQ(test_metrics_sample(text, "moed_batch_latency_seconds_count{layer=\"0\"}"), 10);
	assert_true(test_metrics_sample(text, "moed_batch_latency_seconds_sum{layer=\"0\"}") == 0.0025);
	ASSERT_EQ(test_metrics_sample(text, "moed_node_expert_bytes{node=\"1\"}"), 8192);
	ASSERT_EQ(test_metrics_sample(text, "moed_peer_up{peer=\"b\"}"), 1);
	ASSERT_EQ(test_metrics_sample(text, "moed_peer_up{peer=\"c\"}"), 0);
	ASSERT_EQ(test_metrics_sample(text, "moed_peer_bytes_received_total{peer=\"b\"}"), 22);
	ASSERT_EQ(test_metrics_sample(text, "moed_peer_deadline_misses_total{peer=\"b\"}"), 1);
	assert_true(test_metrics_sample(text, "moed_peer_rtt_seconds{peer=\"b\"}") == 0.00025);
	/* the model's quote, backslash and newline, escaped */
	assert_non_null(strstr(text, "moed_info{model=\"m\\\"q\\\\b\\nl\",abi_major=\"1\"} 1\n"));
	check_format(text);
	free(text);
}

static void test_not_a_status(void **state)
{
	int r;
	char *text = render("{\"layers\": 3}", &r);

	(void)state;
	ASSERT_EQ(r, -EINVAL);
	ASSERT_EQ(strlen(text), 0);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values_and_format),
		cmocka_unit_test(test_not_a_status),
	};

	return cmocka_run_group_tests_name("metrics_text", tests, NULL, NULL);
}
