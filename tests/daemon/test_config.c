/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of moed's config table (daemon/config): the defaults validate;
 * each value type (path, bounded u32, u64, octal mode, doorbell name) is set
 * and refused at its edges, and a refusal leaves the field as it was; a file
 * with comments, blank lines and stray whitespace loads, and a bad line is
 * reported as "file:line"; the cross-key checks of validate; the dump loads
 * back into exactly the same struct; and systemd/moed.conf (in the source
 * tree passed as argv[1], or the one built from) documents every key of the
 * table with its doc string and default, and loads.
 * Every test runs between an fd-count setup and teardown: the loader must
 * close what it opens, on its error paths too.
 */
#include "test_assert.h"
#include "test_fds.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "util/diag.h"

/* The source tree where systemd/moed.conf lives: argv[1], or the one built from. */
static const char *arg_source_dir;

/* ---------------------------------------------------------------- helpers */


/* A fresh temp file path in @path (PATH_MAX-sized), created empty; its fd in the return. */
static int temp_file(char *path, size_t size)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	snprintf(path, size, "%s/test_config.XXXXXX", dir && *dir ? dir : "/tmp");
	fd = mkstemp(path);
	if (fd < 0)
		fail_msg("mkstemp(%s): %s", path, strerror(errno));
	return fd;
}

/* Write @text to a new temp file whose path lands in @path. */
static void write_temp(char *path, size_t size, const char *text)
{
	int fd = temp_file(path, size);
	size_t len = strlen(text);

	ASSERT_EQ(write(fd, text, len), (long)len);
	ASSERT_EQ(close(fd), 0);
}

/* Load @text from a temp file into @c; the result of moed_config_load. */
static int load_text(struct moed_config *c, const char *text, char *path, size_t size,
		     struct diag *d)
{
	int r;

	write_temp(path, size, text);
	r = moed_config_load(c, path, d);
	ASSERT_EQ(unlink(path), 0);
	return r;
}

static void expect_diag_contains_at(const struct diag *d, const char *what, int line)
{
	if (!strstr(d->msg, what))
		fail_msg("line %d: diag \"%s\" does not contain \"%s\"", line, d->msg, what);
}

#define EXPECT_DIAG(_d, _what) expect_diag_contains_at(_d, _what, __LINE__)

/* Set @key to @value and expect -@err, with @c unchanged and a diag naming @key. */
static void expect_set_refused_at(const char *key, const char *value, int err, int line)
{
	struct moed_config c, before;
	struct diag d = { { 0 } };
	int r;

	moed_config_init(&c);
	memcpy(&before, &c, sizeof(c));
	r = moed_config_set(&c, key, value, &d);
	if (r != -err)
		fail_msg("line %d: set %s = '%s' returned %d (%s), expected %d (%s)", line, key,
			 value, r, r < 0 ? strerror(-r) : "accepted", -err, strerror(err));
	if (memcmp(&c, &before, sizeof(c)) != 0)
		fail_msg("line %d: refused set %s = '%s' changed the config", line, key, value);
	if (!strstr(d.msg, key))
		fail_msg("line %d: diag \"%s\" does not name %s", line, d.msg, key);
}

#define EXPECT_SET_REFUSED(_key, _value, _err) expect_set_refused_at(_key, _value, _err, __LINE__)

/* ------------------------------------------------------------- defaults */

static void test_defaults_validate(void **state)
{
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_validate(&c, &d));
	ASSERT_EQ(d.msg[0], '\0');
	assert_string_equal(c.socket, "/run/moed/moed.sock");
	ASSERT_EQ(c.socket_mode, 0660);
	ASSERT_EQ(c.doorbell, DOORBELL_AUTO);
}

static void test_every_key_is_named_once(void **state)
{
	unsigned n = 0;

	(void)state;
	while (moed_config_key(n))
		n++;
	assert_true(n > 0);
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++)
			if (strcmp(moed_config_key(i), moed_config_key(j)) == 0)
				fail_msg("key %s appears twice in the table", moed_config_key(i));
	assert_null(moed_config_key(n));
	assert_null(moed_config_key(UINT32_MAX));
}

/* ------------------------------------------------------------ set, by type */

static void test_set_path(void **state)
{
	struct moed_config c;
	char long_path[CONFIG_PATH_MAX + 1];

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "socket", "/tmp/x.sock", NULL));
	assert_string_equal(c.socket, "/tmp/x.sock");
	ASSERT_OK(moed_config_set(&c, "model", "", NULL)); /* empty: the default model */
	ASSERT_EQ(c.model[0], '\0');

	/* the longest path that fits, with its NUL */
	memset(long_path, 'p', CONFIG_PATH_MAX - 1);
	long_path[0] = '/';
	long_path[CONFIG_PATH_MAX - 1] = '\0';
	ASSERT_OK(moed_config_set(&c, "state_dir", long_path, NULL));
	ASSERT_EQ(strlen(c.state_dir), CONFIG_PATH_MAX - 1);
}

static void test_set_path_too_long_refused(void **state)
{
	char long_path[CONFIG_PATH_MAX + 1];

	(void)state;
	memset(long_path, 'p', CONFIG_PATH_MAX);
	long_path[0] = '/';
	long_path[CONFIG_PATH_MAX] = '\0';
	EXPECT_SET_REFUSED("state_dir", long_path, ERANGE);
	EXPECT_SET_REFUSED("socket", long_path, ERANGE);
}

static void test_set_u32_within_bounds(void **state)
{
	struct moed_config c;

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "workers", "0", NULL));
	ASSERT_EQ(c.workers, 0);
	ASSERT_OK(moed_config_set(&c, "workers", "4096", NULL));
	ASSERT_EQ(c.workers, 4096);
	ASSERT_OK(moed_config_set(&c, "max_clients", "1", NULL));
	ASSERT_EQ(c.max_clients, 1);
	ASSERT_OK(moed_config_set(&c, "max_clients", "65536", NULL));
	ASSERT_EQ(c.max_clients, 65536);
	ASSERT_OK(moed_config_set(&c, "hello_timeout_ms", "600000", NULL));
	ASSERT_EQ(c.hello_timeout_ms, 600000);
	ASSERT_OK(moed_config_set(&c, "max_tokens", "1048576", NULL)); /* ENGINE_MAX_TOKENS */
	ASSERT_EQ(c.max_tokens, 1u << 20);
}

static void test_set_u32_out_of_bounds_refused(void **state)
{
	(void)state;
	EXPECT_SET_REFUSED("workers", "4097", ERANGE);
	EXPECT_SET_REFUSED("max_clients", "0", ERANGE);
	EXPECT_SET_REFUSED("max_clients", "65537", ERANGE);
	EXPECT_SET_REFUSED("hello_timeout_ms", "0", ERANGE);
	EXPECT_SET_REFUSED("max_tokens", "1048577", ERANGE);
	EXPECT_SET_REFUSED("max_sq_entries", "0", ERANGE);
	EXPECT_SET_REFUSED("max_sq_entries", "65537", ERANGE);
	/* beyond 32 and 64 bits: not wrapped into range */
	EXPECT_SET_REFUSED("workers", "4294967296", ERANGE);
	EXPECT_SET_REFUSED("workers", "99999999999999999999999", ERANGE);
}

static void test_set_u32_not_a_number_refused(void **state)
{
	(void)state;
	EXPECT_SET_REFUSED("workers", "", EINVAL);
	EXPECT_SET_REFUSED("workers", "four", EINVAL);
	EXPECT_SET_REFUSED("workers", "4x", EINVAL);
	EXPECT_SET_REFUSED("workers", "-1", EINVAL);
	EXPECT_SET_REFUSED("workers", "+4", EINVAL);
	EXPECT_SET_REFUSED("workers", " 4", EINVAL);
	EXPECT_SET_REFUSED("workers", "0x10", EINVAL);
	EXPECT_SET_REFUSED("workers", "1.5", EINVAL);
}

static void test_set_u64(void **state)
{
	struct moed_config c;

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "max_arena_bytes", "4096", NULL));
	ASSERT_EQ(c.max_arena_bytes, 4096);
	ASSERT_OK(moed_config_set(&c, "max_arena_bytes", "1099511627776", NULL)); /* 2^40 */
	ASSERT_EQ(c.max_arena_bytes, 1ull << 40);
	EXPECT_SET_REFUSED("max_arena_bytes", "4095", ERANGE);
	EXPECT_SET_REFUSED("max_arena_bytes", "1099511627777", ERANGE);
	EXPECT_SET_REFUSED("max_arena_bytes", "18446744073709551616", ERANGE); /* 2^64 */
	EXPECT_SET_REFUSED("max_arena_bytes", "1G", EINVAL);
	EXPECT_SET_REFUSED("max_arena_bytes", "", EINVAL);
}

static void test_set_octal_mode(void **state)
{
	struct moed_config c;

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "socket_mode", "0600", NULL));
	ASSERT_EQ(c.socket_mode, 0600);
	ASSERT_OK(moed_config_set(&c, "socket_mode", "777", NULL)); /* octal without 0 */
	ASSERT_EQ(c.socket_mode, 0777);
	ASSERT_OK(moed_config_set(&c, "socket_mode", "0", NULL));
	ASSERT_EQ(c.socket_mode, 0);
}

static void test_set_octal_mode_refused(void **state)
{
	(void)state;
	EXPECT_SET_REFUSED("socket_mode", "1000", EINVAL); /* 01000 > 0777 */
	EXPECT_SET_REFUSED("socket_mode", "4755", EINVAL); /* no setuid on a socket */
	EXPECT_SET_REFUSED("socket_mode", "0680", EINVAL); /* 8 is not an octal digit */
	EXPECT_SET_REFUSED("socket_mode", "9", EINVAL);
	EXPECT_SET_REFUSED("socket_mode", "rw-rw----", EINVAL);
	EXPECT_SET_REFUSED("socket_mode", "0x1ff", EINVAL);
	EXPECT_SET_REFUSED("socket_mode", "", EINVAL);
	EXPECT_SET_REFUSED("socket_mode", "-1", EINVAL);
	EXPECT_SET_REFUSED("socket_mode", "99999999999999999999999", EINVAL);
	EXPECT_SET_REFUSED("socket_mode", "7777777777777777777777777", EINVAL); /* > 2^64 */
}

static void test_set_doorbell(void **state)
{
	struct moed_config c;

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "doorbell", "futex", NULL));
	ASSERT_EQ(c.doorbell, DOORBELL_FUTEX);
	ASSERT_OK(moed_config_set(&c, "doorbell", "eventfd", NULL));
	ASSERT_EQ(c.doorbell, DOORBELL_EVENTFD);
	ASSERT_OK(moed_config_set(&c, "doorbell", "auto", NULL));
	ASSERT_EQ(c.doorbell, DOORBELL_AUTO);
	EXPECT_SET_REFUSED("doorbell", "FUTEX", EINVAL);
	EXPECT_SET_REFUSED("doorbell", "poll", EINVAL);
	EXPECT_SET_REFUSED("doorbell", "", EINVAL);
	EXPECT_SET_REFUSED("doorbell", "1", EINVAL);
}

static void test_set_unknown_key_refused(void **state)
{
	struct moed_config c, before;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	memcpy(&before, &c, sizeof(c));
	ASSERT_ERRNO(moed_config_set(&c, "no_such_key", "1", &d), EINVAL);
	EXPECT_DIAG(&d, "no_such_key");
	diag_clear(&d);
	ASSERT_ERRNO(moed_config_set(&c, "Workers", "1", &d), EINVAL); /* case matters */
	EXPECT_DIAG(&d, "Workers");
	ASSERT_ERRNO(moed_config_set(&c, "", "1", NULL), EINVAL);
	assert_memory_equal(&c, &before, sizeof(c));
}

/* ------------------------------------------------------------------- load */

static void test_load_with_comments_blank_lines_and_whitespace(void **state)
{
	static const char text[] = "# moed test config\n"
				   "\n"
				   "   \t  \n"
				   "   socket =   /tmp/t.sock   \n"
				   "\tworkers\t=\t8\t\n"
				   "max_tokens=128\n"
				   "max_merged_tokens = 256\r\n"
				   "    # an indented comment\n"
				   "doorbell = eventfd\n"
				   "socket_mode = 0600\n"
				   "model = /models/#1/x.safetensors\n" /* '#' in a value is kept */
				   "#max_clients = 3\n"
				   "max_arena_bytes = 8192"; /* no newline at the end */
	char path[PATH_MAX];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(load_text(&c, text, path, sizeof(path), &d));
	ASSERT_EQ(d.msg[0], '\0');
	assert_string_equal(c.socket, "/tmp/t.sock");
	ASSERT_EQ(c.workers, 8);
	ASSERT_EQ(c.max_tokens, 128);
	ASSERT_EQ(c.max_merged_tokens, 256);
	ASSERT_EQ(c.doorbell, DOORBELL_EVENTFD);
	ASSERT_EQ(c.socket_mode, 0600);
	assert_string_equal(c.model, "/models/#1/x.safetensors");
	ASSERT_EQ(c.max_clients, 64); /* commented out: the default stays */
	ASSERT_EQ(c.max_arena_bytes, 8192);
	assert_string_equal(c.state_dir, "/var/lib/moed"); /* not in the file */
	ASSERT_OK(moed_config_validate(&c, &d));
}

static void test_load_empty_file_keeps_defaults(void **state)
{
	struct moed_config c, defaults;
	char path[PATH_MAX];

	(void)state;
	moed_config_init(&c);
	moed_config_init(&defaults);
	ASSERT_OK(load_text(&c, "", path, sizeof(path), NULL));
	ASSERT_OK(load_text(&c, "# only a comment\n\n", path, sizeof(path), NULL));
	assert_memory_equal(&c, &defaults, sizeof(c));
}

static void test_load_later_line_overrides_earlier(void **state)
{
	struct moed_config c;
	char path[PATH_MAX];

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(load_text(&c, "workers = 2\nworkers = 3\n", path, sizeof(path), NULL));
	ASSERT_EQ(c.workers, 3);
}

static void test_load_value_may_contain_equals_sign(void **state)
{
	struct moed_config c;
	char path[PATH_MAX];

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(load_text(&c, "model = /m/a=b.safetensors\n", path, sizeof(path), NULL));
	assert_string_equal(c.model, "/m/a=b.safetensors");
}

static void test_load_bad_value_names_file_and_line(void **state)
{
	static const char text[] = "# header\n"
				   "\n"
				   "workers = 4\n"
				   "workers = lots\n"
				   "max_clients = 2\n";
	char path[PATH_MAX], where[PATH_MAX + 16];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_ERRNO(load_text(&c, text, path, sizeof(path), &d), EINVAL);
	snprintf(where, sizeof(where), "%s:4", path);
	EXPECT_DIAG(&d, where);
	EXPECT_DIAG(&d, "workers = lots"); /* the line itself */
	EXPECT_DIAG(&d, "'lots'");	    /* and the cause */
	ASSERT_EQ(c.max_clients, 64);	    /* nothing after the bad line is applied */

	moed_config_init(&c);
	diag_clear(&d);
	ASSERT_ERRNO(load_text(&c, "\nworkers = 5000\n", path, sizeof(path), &d), ERANGE);
	snprintf(where, sizeof(where), "%s:2", path);
	EXPECT_DIAG(&d, where);
}

static void test_load_unknown_key_names_file_and_line(void **state)
{
	char path[PATH_MAX], where[PATH_MAX + 16];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_ERRNO(load_text(&c, "workers = 1\nworkerz = 2\n", path, sizeof(path), &d), EINVAL);
	snprintf(where, sizeof(where), "%s:2", path);
	EXPECT_DIAG(&d, where);
	EXPECT_DIAG(&d, "workerz");
}

static void test_load_line_without_equals_names_file_and_line(void **state)
{
	char path[PATH_MAX], where[PATH_MAX + 16];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_ERRNO(load_text(&c, "# x\nworkers 4\n", path, sizeof(path), &d), EINVAL);
	snprintf(where, sizeof(where), "%s:2", path);
	EXPECT_DIAG(&d, where);
	EXPECT_DIAG(&d, "workers 4");

	/* an '=' only inside the comment does not count */
	moed_config_init(&c);
	diag_clear(&d);
	ASSERT_ERRNO(load_text(&c, "workers # = 4\n", path, sizeof(path), &d), EINVAL);
	snprintf(where, sizeof(where), "%s:1", path);
	EXPECT_DIAG(&d, where);
}

static void test_load_overlong_line_refused(void **state)
{
	size_t n = 3 * CONFIG_PATH_MAX;
	char *text = malloc(n + 64), path[PATH_MAX], where[PATH_MAX + 16];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	assert_non_null(text);
	strcpy(text, "workers = 1\nmodel = /");
	memset(text + strlen(text), 'm', n);
	strcpy(text + strlen("workers = 1\nmodel = /") + n, "\n");
	moed_config_init(&c);
	ASSERT_ERRNO(load_text(&c, text, path, sizeof(path), &d), EINVAL);
	snprintf(where, sizeof(where), "%s:2", path);
	EXPECT_DIAG(&d, where);
	free(text);
}

static void test_load_missing_file_refused(void **state)
{
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_ERRNO(moed_config_load(&c, "/nonexistent/moed-test/moed.conf", &d), ENOENT);
	EXPECT_DIAG(&d, "/nonexistent/moed-test/moed.conf");
}

/* --------------------------------------------------------------- validate */

static void test_validate_non_power_of_two_sq_entries_refused(void **state)
{
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "max_sq_entries", "3000", NULL)); /* in bounds */
	ASSERT_ERRNO(moed_config_validate(&c, &d), EINVAL);
	EXPECT_DIAG(&d, "max_sq_entries");
	ASSERT_OK(moed_config_set(&c, "max_sq_entries", "1", NULL));
	ASSERT_OK(moed_config_validate(&c, NULL));
	ASSERT_OK(moed_config_set(&c, "max_sq_entries", "65536", NULL));
	ASSERT_OK(moed_config_validate(&c, NULL));
}

static void test_validate_merged_tokens_below_max_tokens_refused(void **state)
{
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "max_tokens", "1024", NULL));
	ASSERT_OK(moed_config_set(&c, "max_merged_tokens", "1023", NULL));
	ASSERT_ERRNO(moed_config_validate(&c, &d), EINVAL);
	EXPECT_DIAG(&d, "max_merged_tokens");
	ASSERT_OK(moed_config_set(&c, "max_merged_tokens", "1024", NULL)); /* equal is fine */
	ASSERT_OK(moed_config_validate(&c, NULL));
}

/* The per-peer session limits: 0 derives from max_clients; above max_clients is refused. */
static void test_clients_per_peer_derived_and_validated(void **state)
{
	struct moed_config c;
	struct diag d = { { 0 } }, d2 = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_EQ(c.max_clients_per_process, 0);
	ASSERT_EQ(c.max_clients_per_uid, 0);
	ASSERT_EQ(moed_config_clients_per_process(&c), 16); /* 64 / 4 */
	ASSERT_EQ(moed_config_clients_per_uid(&c), 32);     /* 64 / 2 */
	ASSERT_OK(moed_config_set(&c, "max_clients", "1", NULL));
	ASSERT_EQ(moed_config_clients_per_process(&c), 1); /* never 0 */
	ASSERT_EQ(moed_config_clients_per_uid(&c), 1);
	ASSERT_OK(moed_config_validate(&c, NULL));
	ASSERT_OK(moed_config_set(&c, "max_clients", "8", NULL));
	ASSERT_OK(moed_config_set(&c, "max_clients_per_process", "3", NULL));
	ASSERT_OK(moed_config_set(&c, "max_clients_per_uid", "8", NULL));
	ASSERT_EQ(moed_config_clients_per_process(&c), 3);
	ASSERT_EQ(moed_config_clients_per_uid(&c), 8);
	ASSERT_OK(moed_config_validate(&c, NULL));
	ASSERT_OK(moed_config_set(&c, "max_clients_per_process", "9", NULL));
	ASSERT_ERRNO(moed_config_validate(&c, &d), EINVAL);
	EXPECT_DIAG(&d, "max_clients_per_process");
	ASSERT_OK(moed_config_set(&c, "max_clients_per_process", "0", NULL));
	ASSERT_OK(moed_config_set(&c, "max_clients_per_uid", "9", NULL));
	ASSERT_ERRNO(moed_config_validate(&c, &d2), EINVAL);
	EXPECT_DIAG(&d2, "max_clients_per_uid");
}

static void test_validate_empty_socket_or_state_dir_refused(void **state)
{
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	moed_config_init(&c);
	ASSERT_OK(moed_config_set(&c, "socket", "", NULL));
	ASSERT_ERRNO(moed_config_validate(&c, &d), EINVAL);
	EXPECT_DIAG(&d, "socket");

	/* the default model needs a state_dir; an explicit model does not */
	moed_config_init(&c);
	diag_clear(&d);
	ASSERT_OK(moed_config_set(&c, "state_dir", "", NULL));
	ASSERT_ERRNO(moed_config_validate(&c, &d), EINVAL);
	EXPECT_DIAG(&d, "state_dir");
	ASSERT_OK(moed_config_set(&c, "model", "/m/x.safetensors", NULL));
	ASSERT_OK(moed_config_validate(&c, NULL));
}

/* ------------------------------------------------------------------- dump */

/* Dump @a to a temp file, load it into a fresh default config and compare. */
static void expect_dump_round_trip(const struct moed_config *a)
{
	struct moed_config b;
	struct diag d = { { 0 } };
	char path[PATH_MAX];
	int fd = temp_file(path, sizeof(path));
	FILE *f = fdopen(fd, "w");

	assert_non_null(f);
	moed_config_dump(a, f);
	ASSERT_EQ(fclose(f), 0);
	moed_config_init(&b);
	ASSERT_OK(moed_config_load(&b, path, &d));
	ASSERT_EQ(unlink(path), 0);
	if (memcmp(a, &b, sizeof(b)) != 0)
		fail_msg("dump does not load back to the same config (socket '%s'/'%s', "
			 "workers %u/%u, mode %o/%o, doorbell %d/%d)",
			 a->socket, b.socket, a->workers, b.workers, a->socket_mode,
			 b.socket_mode, (int)a->doorbell, (int)b.doorbell);
}

static void test_dump_of_defaults_loads_back_identical(void **state)
{
	struct moed_config c;

	(void)state;
	moed_config_init(&c);
	expect_dump_round_trip(&c);
}

static void test_dump_of_every_key_changed_loads_back_identical(void **state)
{
	static const char *const kv[][2] = {
		{ "socket", "/tmp/other.sock" },
		{ "socket_mode", "0600" },
		{ "model", "/models/mixtral/model.safetensors.index.json" },
		{ "state_dir", "/srv/moed state" }, /* an inner space survives */
		{ "workers", "12" },
		{ "kernel_calibration", "no" },
		{ "bf16_dot", "yes" },
		{ "runs_in_flight", "5" },
		{ "merge_window_us", "0" },
		{ "inline_run_bytes", "0" },
		{ "poll_us", "1000000" },
		{ "max_clients", "7" },
		{ "max_clients_per_process", "2" },
		{ "max_clients_per_uid", "5" },
		{ "max_arena_bytes", "1099511627776" },
		{ "max_sq_entries", "256" },
		{ "max_tokens", "4096" },
		{ "max_merged_tokens", "1048576" },
		{ "hello_timeout_ms", "250" },
		{ "doorbell", "eventfd" },
		{ "topology_file", "/etc/moed/topo-4" },
		{ "placement", "explicit" },
		{ "expert_nodes", "0-3@0;4-7@1;2:0@1" },
		{ "node_steal", "yes" },
		{ "store_dir", "/dev/hugepages" },
		{ "store_name", "mixtral" },
		{ "store_keep", "no" },
		{ "expert_dtype", "f32" },
		{ "replica_budget", "3G" },
		{ "rebalance_interval_ms", "5000" },
		{ "rebalance_hot_percent", "300" },
		{ "listen", "10.0.0.1:7300" },
		{ "peers", "b=10.0.0.2:7300,c=[fd00::3]:7300" },
		{ "expert_hosts", "4-5@b;6,7@c;1:4@self" },
		{ "peer_deadline_ms", "250" },
		{ "peer_failure", "drop" },
		{ "max_hosts_per_token", "2" },
		{ "metrics_listen", "127.0.0.1:9464" },
	};
	struct moed_config c, defaults;
	unsigned n_keys = 0;

	(void)state;
	while (moed_config_key(n_keys))
		n_keys++;
	moed_config_init(&c);
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		ASSERT_OK(moed_config_set(&c, kv[i][0], kv[i][1], NULL));
	/* the list above covers the table: a new key must be added here too */
	ASSERT_EQ(sizeof(kv) / sizeof(kv[0]), n_keys);
	for (unsigned i = 0; i < n_keys; i++) {
		bool listed = false;

		for (size_t j = 0; j < sizeof(kv) / sizeof(kv[0]); j++)
			listed = listed || strcmp(kv[j][0], moed_config_key(i)) == 0;
		if (!listed)
			fail_msg("key %s is not changed by this test", moed_config_key(i));
	}
	/* and each value really differs from the default */
	moed_config_init(&defaults);
	for (size_t j = 0; j < sizeof(kv) / sizeof(kv[0]); j++) {
		struct moed_config one = defaults;

		ASSERT_OK(moed_config_set(&one, kv[j][0], kv[j][1], NULL));
		if (memcmp(&one, &defaults, sizeof(one)) == 0)
			fail_msg("%s = %s is the default", kv[j][0], kv[j][1]);
	}
	ASSERT_OK(moed_config_validate(&c, NULL));
	expect_dump_round_trip(&c);

	c.doorbell = DOORBELL_FUTEX;
	c.socket_mode = 0;
	expect_dump_round_trip(&c);
}

static void test_dump_names_every_key(void **state)
{
	struct moed_config c;
	char *buf = NULL;
	size_t size = 0;
	FILE *f;

	(void)state;
	moed_config_init(&c);
	f = open_memstream(&buf, &size);
	assert_non_null(f);
	moed_config_dump(&c, f);
	ASSERT_EQ(fclose(f), 0);
	for (unsigned i = 0; moed_config_key(i); i++) {
		char want[128];

		snprintf(want, sizeof(want), "\n%s = ", moed_config_key(i));
		if (!strstr(buf, want))
			fail_msg("dump has no line \"%s = \"", moed_config_key(i));
	}
	free(buf);
}

/* ------------------------------------------------------ systemd/moed.conf */

/* Whether a line of @text starts with "@key =" or "#@key =" (spaces around '=' optional). */
static bool conf_documents_key(const char *text, const char *key)
{
	size_t klen = strlen(key);

	for (const char *line = text; line && *line;) {
		const char *p = line, *nl = strchr(line, '\n');

		if (*p == '#')
			p++;
		if (strncmp(p, key, klen) == 0) {
			p += klen;
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p == '=')
				return true;
		}
		line = nl ? nl + 1 : NULL;
	}
	return false;
}

/* The text of systemd/moed.conf (malloc'd); a missing file fails: it is part of the tree. */
static char *moed_conf_read(char *path, size_t path_size)
{
	char *text;
	size_t n;
	long size;
	FILE *f;

	snprintf(path, path_size, "%s/systemd/moed.conf", arg_source_dir);
	f = fopen(path, "re");
	if (!f)
		fail_msg("%s: %s", path, strerror(errno));
	ASSERT_EQ(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	assert_true(size >= 0);
	rewind(f);
	text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	n = fread(text, 1, (size_t)size, f);
	ASSERT_EQ(n, size);
	ASSERT_EQ(fclose(f), 0);
	return text;
}

static void test_moed_conf_documents_every_key(void **state)
{
	char path[PATH_MAX], *text;

	(void)state;
	text = moed_conf_read(path, sizeof(path));
	for (unsigned i = 0; moed_config_key(i); i++)
		if (!conf_documents_key(text, moed_config_key(i)))
			fail_msg("%s does not document key '%s' (no \"%s =\" or \"#%s =\" line)",
				 path, moed_config_key(i), moed_config_key(i), moed_config_key(i));
	free(text);
}

/*
 * Each key of the dump of the defaults ("# doc\nkey = value") appears in
 * moed.conf commented out with the same doc line and value ("# doc\n#key =
 * value"), so the file shows the true defaults; and the file loads as is.
 */
static void test_moed_conf_shows_docs_and_defaults(void **state)
{
	char path[PATH_MAX], *text, *dump = NULL, *save = NULL;
	struct moed_config c, loaded;
	struct diag d = { { 0 } };
	size_t size = 0;
	FILE *f;

	(void)state;
	text = moed_conf_read(path, sizeof(path));
	moed_config_init(&c);
	f = open_memstream(&dump, &size);
	assert_non_null(f);
	moed_config_dump(&c, f);
	ASSERT_EQ(fclose(f), 0);

	for (char *doc = strtok_r(dump, "\n", &save); doc; doc = strtok_r(NULL, "\n", &save)) {
		char *entry = strtok_r(NULL, "\n", &save), want[1024];
		size_t len;

		assert_non_null(entry);
		len = strlen(entry);
		while (len && entry[len - 1] == ' ') /* "model = " with an empty default */
			entry[--len] = '\0';
		snprintf(want, sizeof(want), "\n%s\n#%s\n", doc, entry);
		if (!strstr(text, want))
			fail_msg("%s lacks the documented default (the lines of `moed --dump-config`, "
				 "the key commented out):\n%s\n#%s", path, doc, entry);
	}

	moed_config_init(&loaded);
	ASSERT_OK(moed_config_load(&loaded, path, &d));
	if (memcmp(&loaded, &c, sizeof(c)) != 0)
		fail_msg("%s sets a key: its entries should be commented-out defaults", path);
	free(dump);
	free(text);
}

/* ---------------------------------------------------------------- drop-ins, reload */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	ASSERT_EQ(fputs(text, f) >= 0, 1);
	ASSERT_EQ(fclose(f), 0);
}

/* A temp folder with FILE = conf and FILE.d/; the paths land in @dir and @file. */
static void dropin_tree(char *dir, char *file, size_t size, const char *main_text)
{
	const char *tmp = getenv("TMPDIR");
	char sub[PATH_MAX + 8];

	snprintf(dir, size, "%s/test_config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(file, size, "%s/moed.conf", dir);
	write_file(file, main_text);
	snprintf(sub, sizeof(sub), "%s.d", file);
	ASSERT_OK(mkdir(sub, 0755));
}

static void dropin_write(const char *file, const char *name, const char *text)
{
	char path[2 * PATH_MAX];

	snprintf(path, sizeof(path), "%s.d/%s", file, name);
	write_file(path, text);
}

static void tree_remove(const char *dir)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ASSERT_EQ(system(cmd), 0);
}

static void test_load_all_applies_dropins_in_name_order(void **state)
{
	char dir[PATH_MAX], file[PATH_MAX];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	dropin_tree(dir, file, sizeof(dir), "poll_us = 1\nmerge_window_us = 1\nworkers = 1\n");
	/* written out of order: the names decide, not the order of creation */
	dropin_write(file, "20-b.conf", "poll_us = 3\n");
	dropin_write(file, "10-a.conf", "poll_us = 2\nmerge_window_us = 5\n");
	/* not drop-ins: another suffix, a hidden file */
	dropin_write(file, "30-c.conf.disabled", "poll_us = 99\n");
	dropin_write(file, ".40-d.conf", "poll_us = 98\n");
	moed_config_init(&c);
	ASSERT_OK(moed_config_load_all(&c, file, &d));
	ASSERT_EQ(c.poll_us, 3);
	ASSERT_EQ(c.merge_window_us, 5);
	ASSERT_EQ(c.workers, 1);
	tree_remove(dir);
}

static void test_load_all_without_dropin_folder(void **state)
{
	char dir[PATH_MAX], file[PATH_MAX], sub[PATH_MAX + 8];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	dropin_tree(dir, file, sizeof(dir), "poll_us = 7\n");
	snprintf(sub, sizeof(sub), "%s.d", file);
	ASSERT_OK(rmdir(sub));
	moed_config_init(&c);
	ASSERT_OK(moed_config_load_all(&c, file, &d));
	ASSERT_EQ(c.poll_us, 7);
	tree_remove(dir);
}

static void test_load_all_bad_dropin_names_its_file_and_line(void **state)
{
	char dir[PATH_MAX], file[PATH_MAX];
	struct moed_config c;
	struct diag d = { { 0 } };

	(void)state;
	dropin_tree(dir, file, sizeof(dir), "poll_us = 1\n");
	dropin_write(file, "10-ok.conf", "poll_us = 2\n");
	dropin_write(file, "20-bad.conf", "# fine\nmerge_window_us = soon\n");
	moed_config_init(&c);
	ASSERT_ERRNO(moed_config_load_all(&c, file, &d), EINVAL);
	EXPECT_DIAG(&d, "moed.conf.d/20-bad.conf:2");
	EXPECT_DIAG(&d, "merge_window_us");
	tree_remove(dir);
}

struct reported {
	unsigned n_live, n_restart;
	char keys[256];
};

static void record_change(const char *key, const char *was, const char *now, bool live,
			  void *arg)
{
	struct reported *rp = arg;
	size_t len = strlen(rp->keys);

	(void)was, (void)now;
	if (live)
		rp->n_live++;
	else
		rp->n_restart++;
	snprintf(rp->keys + len, sizeof(rp->keys) - len, "%s%s=%s ", live ? "+" : "-", key, now);
}

/* A reload copies what may change live, reports everything that differs, writes nothing else. */
static void test_apply_live_changes_only_live_keys(void **state)
{
	struct moed_config in_force, next, before;
	struct reported rp = { 0 };

	(void)state;
	moed_config_init(&in_force);
	moed_config_init(&next);
	ASSERT_OK(moed_config_set(&next, "merge_window_us", "7", NULL)); /* live */
	ASSERT_OK(moed_config_set(&next, "rebalance_interval_ms", "500", NULL)); /* live */
	ASSERT_OK(moed_config_set(&next, "workers", "3", NULL)); /* restart */
	ASSERT_OK(moed_config_set(&next, "socket", "/elsewhere.sock", NULL)); /* restart */
	before = in_force;
	ASSERT_EQ(moed_config_apply_live(&in_force, &next, record_change, &rp), 2);
	ASSERT_EQ(rp.n_live, 2);
	ASSERT_EQ(rp.n_restart, 2);
	assert_non_null(strstr(rp.keys, "+merge_window_us=7"));
	assert_non_null(strstr(rp.keys, "-workers=3"));
	ASSERT_EQ(in_force.merge_window_us, 7);
	ASSERT_EQ(in_force.rebalance_interval_ms, 500);
	ASSERT_EQ(in_force.workers, before.workers);
	assert_string_equal(in_force.socket, before.socket);
	/* nothing left to change: a second reload of the same reports nothing */
	memset(&rp, 0, sizeof(rp));
	moed_config_init(&next);
	next.merge_window_us = 7;
	next.rebalance_interval_ms = 500;
	ASSERT_EQ(moed_config_apply_live(&in_force, &next, record_change, &rp), 0);
	ASSERT_EQ(rp.n_live + rp.n_restart, 0);
}

/* The live keys are the ones the dump (and so moed.conf) marks "(changes on reload)". */
static void test_live_keys_marked_in_the_dump(void **state)
{
	struct moed_config c;
	char *dump = NULL;
	size_t size = 0;
	FILE *f;

	(void)state;
	moed_config_init(&c);
	f = open_memstream(&dump, &size);
	assert_non_null(f);
	moed_config_dump(&c, f);
	ASSERT_EQ(fclose(f), 0);
	for (unsigned i = 0; moed_config_key(i); i++) {
		char want[128];
		const char *at;

		snprintf(want, sizeof(want), "\n%s = ", moed_config_key(i));
		at = strstr(dump, want);
		assert_non_null(at);
		/* the doc line ends right before the key's line */
		if (moed_config_key_live(i) !=
		    (at - dump >= 19 && strncmp(at - 19, "(changes on reload)", 19) == 0))
			fail_msg("key %s: live %d, but its doc line says otherwise",
				 moed_config_key(i), moed_config_key_live(i));
	}
	assert_false(moed_config_key_live(9999));
	free(dump);
}

#define T(_f) cmocka_unit_test_setup_teardown(_f, fd_check_setup, fd_check_teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(test_defaults_validate),
		T(test_every_key_is_named_once),
		T(test_set_path),
		T(test_set_path_too_long_refused),
		T(test_set_u32_within_bounds),
		T(test_set_u32_out_of_bounds_refused),
		T(test_set_u32_not_a_number_refused),
		T(test_set_u64),
		T(test_set_octal_mode),
		T(test_set_octal_mode_refused),
		T(test_set_doorbell),
		T(test_set_unknown_key_refused),
		T(test_load_with_comments_blank_lines_and_whitespace),
		T(test_load_empty_file_keeps_defaults),
		T(test_load_later_line_overrides_earlier),
		T(test_load_value_may_contain_equals_sign),
		T(test_load_bad_value_names_file_and_line),
		T(test_load_unknown_key_names_file_and_line),
		T(test_load_line_without_equals_names_file_and_line),
		T(test_load_overlong_line_refused),
		T(test_load_missing_file_refused),
		T(test_validate_non_power_of_two_sq_entries_refused),
		T(test_validate_merged_tokens_below_max_tokens_refused),
		T(test_clients_per_peer_derived_and_validated),
		T(test_validate_empty_socket_or_state_dir_refused),
		T(test_dump_of_defaults_loads_back_identical),
		T(test_dump_of_every_key_changed_loads_back_identical),
		T(test_dump_names_every_key),
		T(test_moed_conf_documents_every_key),
		T(test_moed_conf_shows_docs_and_defaults),
		T(test_load_all_applies_dropins_in_name_order),
		T(test_load_all_without_dropin_folder),
		T(test_load_all_bad_dropin_names_its_file_and_line),
		T(test_apply_live_changes_only_live_keys),
		T(test_live_keys_marked_in_the_dump),
	};

	arg_source_dir = argc > 1 ? argv[1] : MOE_SOURCE_DIR;
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
