/* SPDX-License-Identifier: MIT */
/*
 * test_daemon: the harness of the integration tests that run a real moed
 * and real client processes (tests/integration/it_*.c).
 *
 *   - A daemon: fork + exec of the moed binary named on the test's command
 *     line, in the foreground, on a socket and state_dir inside a private
 *     temporary folder; start waits until the socket answers STATUS from
 *     *that* process (the pid in the status JSON), stop sends SIGTERM and
 *     returns the exit status (0 = a clean drain), with SIGKILL after a
 *     timeout. moed's log goes to the test's stderr (ctest shows it when a
 *     test fails), or to a file (log_path) that a test counts lines in;
 *     nofile starts moed under a given RLIMIT_NOFILE.
 *   - The status JSON, parsed (jansson), and polling it until a counter
 *     reaches a value.
 *   - Reference results: the embedded engine on the same model file,
 *     computed in the test's own process, and tolerant comparisons.
 *   - Checks for forked client processes, which must not call CMocka (its
 *     assertions longjmp into the runner, which would then go on running
 *     the rest of the suite in the child): CHILD_CHECK prints and _exit(1)s,
 *     and the parent asserts the child's exit status.
 *
 * Nothing here is thread-safe; a forked child may use all of it except a
 * struct test_ref opened before the fork (its engine's worker threads do not
 * survive fork(): open one in the child).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

struct engine;
struct moe_model;

/* Sanitizer builds are slow: start and stop get this long. */
#define TEST_DAEMON_START_TIMEOUT_MS 30000
#define TEST_DAEMON_STOP_TIMEOUT_MS  30000

/* ---------------------------------------------------------------- moed */

struct test_daemon {
	const char *moed;     /* the binary (argv of the test), not owned */
	char dir[96];         /* private temp folder; removed by test_daemon_done() */
	char socket[108];     /* dir/moed.sock (fits sockaddr_un.sun_path) */
	char state_dir[128];  /* dir/state: the default model is generated there once */
	char store_dir[64];   /* /dev/shm/moed-it.XXXXXX: the expert store's objects;
	                       * removed by test_daemon_done() */
	char model_path[192]; /* state_dir/default-model.safetensors */
	pid_t pid;            /* > 0 while running */
	unsigned starts;      /* how many times started (for messages) */
	/* Set between init and start (init clears them): */
	char log_path[128];     /* non-empty: moed's stderr is appended to this file */
	unsigned long nofile;   /* non-zero: moed's soft and hard RLIMIT_NOFILE */
	const char *const *launcher; /* non-NULL: a command that execs moed, argv
	                              * prefix NULL-ended (systemd-socket-activate) */
};

/*
 * Create the temp folder (under $TMPDIR or /tmp) and fill the paths; starts
 * nothing. 0 or -errno.
 */
int test_daemon_init(struct test_daemon *d, const char *moed);

/*
 * fork + exec: moed --foreground --socket SOCKET --set state_dir=STATE
 *   --set store_dir=STORE
 * [extra...] (@extra NULL-terminated, may be NULL), then wait until
 * moe_daemon_status() on SOCKET answers with daemon.pid == the child's pid
 * and daemon.phase "serving" (not "loading": the experts are in place).
 * 0; -ECHILD when moed exited first (its status is printed); -ETIMEDOUT
 * after TEST_DAEMON_START_TIMEOUT_MS (moed is then killed); -errno.
 */
int test_daemon_start(struct test_daemon *d, const char *const *extra);

/*
 * SIGTERM and wait for moed to drain and exit. Returns its exit code
 * (0: clean), 128 + signal when a signal killed it, -ETIMEDOUT when it had
 * to be SIGKILLed after TEST_DAEMON_STOP_TIMEOUT_MS, -ECHILD when it was not
 * running. Prints what happened when the result is not 0.
 */
int test_daemon_stop(struct test_daemon *d);

/* Send @sig (SIGKILL: a crash) and reap; the result as test_daemon_stop(). */
int test_daemon_kill(struct test_daemon *d, int sig);

/* Without waiting: is moed still running (not exited, not reaped)? */
bool test_daemon_alive(struct test_daemon *d);

/*
 * Use @name in d->dir as moed's log file from the next start on (emptied
 * now). 0 or -errno.
 */
int test_daemon_log_to_file(struct test_daemon *d, const char *name);

/* The number of lines of moed's log file containing @needle (NULL: all), or -errno. */
int test_daemon_log_count(const struct test_daemon *d, const char *needle);

/* SIGKILL moed if it still runs, remove the temp folder. Idempotent. */
void test_daemon_done(struct test_daemon *d);

/* ---------------------------------------------------------------- status */

/* The status JSON of the daemon at @socket, parsed; NULL (and a message) on failure. */
json_t *test_status_get(const char *socket);

/*
 * The integer at @path ("totals.batches", "daemon.pid"; a number selects an
 * array element: "layers.1.tokens"). INT64_MIN when there is none.
 */
int64_t test_json_int(json_t *root, const char *path);

/* test_json_int() of a fresh status of the daemon at @socket (INT64_MIN: no status, or no such integer). */
int64_t test_status_int(const char *socket, const char *path);

/* The string at @path, or NULL. Owned by @root. */
const char *test_json_str(json_t *root, const char *path);

/* The element of the "clients" array whose "name" is @name, or NULL. Owned by @root. */
json_t *test_status_client(json_t *root, const char *name);

/*
 * Poll the status until the integer at @path equals @want (0), or
 * @timeout_ms passes (-ETIMEDOUT; the last value seen is printed).
 */
int test_status_wait_int(const char *socket, const char *path, int64_t want, int timeout_ms);

/* ---------------------------------------------------------------- time, scale */

int64_t test_now_ns(void);
void test_sleep_ms(unsigned ms);

/* True when $MOE_SANITIZE_BUILD is set (ctest sets it for sanitizer builds). */
bool test_sanitize_build(void);

/* @plain, or @sanitized in a sanitizer build: iteration counts. */
unsigned test_scale(unsigned plain, unsigned sanitized);

/* /proc/@pid/stat's state letter ('R', 'S', 'Z' ...), or '?'. */
char test_proc_state(pid_t pid);

/*
 * Wait up to @timeout_ms for child @pid; 0 and its raw wait status in
 * *@ret_status, or -ETIMEDOUT (the child is then SIGKILLed and reaped).
 */
int test_child_wait(pid_t pid, int timeout_ms, int *ret_status);

/* fork() with stdio flushed first (nothing buffered is written twice). */
pid_t test_fork(void);

/*
 * Run @argv (NULL-ended, argv[0] a path) to its end within @timeout_ms,
 * its stdout into the file @out_path (NULL: the test's). Its exit code,
 * -1 when a signal ended it, or -errno (-ETIMEDOUT: killed).
 */
int test_run(const char *const *argv, const char *out_path, int timeout_ms);

/* The whole file at @path, malloc'd and NUL-terminated; NULL (errno set) when unreadable. */
char *test_read_file(const char *path);

/*
 * Wait for @n children, each within @timeout_ms. 0 when all exited 0; else
 * -ECHILD after printing the first failure and SIGKILLing and reaping the
 * others (which would otherwise run on against a daemon the test kills).
 */
int test_children_wait(const pid_t *pids, unsigned n, int timeout_ms);

/* "exit 0", "exit 3", "signal 9 (Killed)": for messages. */
const char *test_wait_status_str(int status, char *buf, size_t size);

/* ---------------------------------------------------------------- child checks */

#define CHILD_CHECK(_cond, ...)                                                                    \
	do {                                                                                       \
		if (!(_cond)) {                                                                    \
			fprintf(stderr, "[child %d] %s:%d: check failed: %s: ", (int)getpid(),     \
			        __FILE__, __LINE__, #_cond);                                       \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

/* An int-returning call that must succeed (>= 0); prints strerror(-r) otherwise. */
#define CHILD_OK(_expr)                                                                            \
	do {                                                                                       \
		long _r = (long)(_expr);                                                           \
		CHILD_CHECK(_r >= 0, "%s returned %ld (%s)", #_expr, _r, strerror((int)-_r));      \
	} while (0)

/* ---------------------------------------------------------------- reference */

/* The embedded engine (one worker) on the model file moed serves. */
struct test_ref {
	struct moe_model *model;
	struct engine *engine;
	uint32_t d_model;
	uint32_t n_layers;
};

/* 0 or -errno (with a message). */
int test_ref_open(struct test_ref *ref, const char *model_path);
/* The same with the experts' matrices widened to float32 (expert_dtype = f32) or not. */
int test_ref_open_as(struct test_ref *ref, const char *model_path, bool widen_experts);
void test_ref_close(struct test_ref *ref);

/* The layer's experts and routing slots per token (0 when it is not an MoE layer). */
uint32_t test_ref_experts(const struct test_ref *ref, uint32_t layer);
uint32_t test_ref_slots(const struct test_ref *ref, uint32_t layer);

/*
 * One batch as moed computes it. @y [T][d] is required; @expert and
 * @weight [T][slots] and @counts [experts] may be NULL. With @given_expert
 * non-NULL the routing is the client's ([T][@given_k], as MOE_REQ_ROUTE_GIVEN:
 * the layer's router settings with kind "given" and top_k = @given_k).
 * 0 or the engine's -errno.
 */
int test_ref_forward(struct test_ref *ref, uint32_t layer, const float *x, uint32_t T,
                     const int32_t *given_expert, const float *given_weight, uint32_t given_k,
                     float *y, int32_t *expert, float *weight, int32_t *counts);

/*
 * How safe token @x's routing is from rounding: the gap between the
 * slots-th and the next largest router logit (+ router bias), computed in
 * double. Infinity when every expert is selected. A token with a gap below
 * ~1e-3 may legitimately be routed differently by a merged run (other GEMM
 * kernels round differently). Exact for routers that select by the logit's
 * order (top-k and switch over softmax or sigmoid scores, the default
 * model's); not for selection biases or group-limited routing.
 */
double test_ref_route_margin(const struct test_ref *ref, uint32_t layer, const float *x);

/*
 * Check moed's output @y [T][d] for @x on @layer against the reference
 * (router's own routing): the number of elements off by more than atol +
 * rtol * |want| (test_count_mismatches, printed with @what), counting only
 * tokens whose routing margin (test_ref_route_margin) is at least
 * @tie_margin. -errno when the reference itself fails.
 */
long test_ref_check(struct test_ref *ref, uint32_t layer, const float *x, uint32_t T,
                    const float *y, double atol, double rtol, double tie_margin,
                    const char *what);

/* Fill @n floats with N(0, 1) values from @seed (splitmix64 + Box-Muller). */
void test_fill_normal(float *x, size_t n, uint64_t *seed);

/*
 * The number of i < n with |got - want| > atol + rtol * |want| (NaN counts);
 * the first few are printed with @what.
 */
size_t test_count_mismatches(const char *what, const float *got, const float *want, size_t n,
                             double atol, double rtol);
