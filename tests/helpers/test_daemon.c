/* SPDX-License-Identifier: MIT */
/*
 * test_daemon: a real moed for the integration tests, its status JSON, and
 * reference results from the embedded engine; see test_daemon.h.
 */
#include "test_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <moe.h>

#include "engine/engine.h"
#include "model/model.h"
#include "router/router_config.h"
#include "util/rng.h"

/* ---------------------------------------------------------------- time, scale */

int64_t test_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void test_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

bool test_sanitize_build(void)
{
	const char *v = getenv("MOE_SANITIZE_BUILD");

	return v && *v && strcmp(v, "0") != 0;
}

unsigned test_scale(unsigned plain, unsigned sanitized)
{
	return test_sanitize_build() ? sanitized : plain;
}

char test_proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may hold spaces and parentheses, so from the last ')' */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

const char *test_wait_status_str(int status, char *buf, size_t size)
{
	if (WIFEXITED(status))
		snprintf(buf, size, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(buf, size, "wait status 0x%x", (unsigned)status);
	return buf;
}

int test_child_wait(pid_t pid, int timeout_ms, int *ret_status)
{
	int64_t deadline = test_now_ns() + (int64_t)timeout_ms * 1000000;
	int status;
	pid_t w;

	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			*ret_status = status;
			return 0;
		}
		if (w < 0 && errno != EINTR)
			return -errno;
		if (test_now_ns() >= deadline)
			break;
		test_sleep_ms(5);
	}
	fprintf(stderr, "test: process %d still running after %d ms, killing it\n", (int)pid,
	        timeout_ms);
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return -ETIMEDOUT;
}

pid_t test_fork(void)
{
	fflush(NULL);
	return fork();
}

int test_run(const char *const *argv, const char *out_path, int timeout_ms)
{
	int status, r;
	pid_t pid = test_fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* execv's prototype predates const; it does not write the strings */
		union {
			const char *const *c;
			char *const *v;
		} av = { .c = argv };
		int fd = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)
				  : -1;

		if (out_path && (fd < 0 || dup2(fd, STDOUT_FILENO) < 0))
			_exit(127);
		execv(argv[0], av.v);
		_exit(127);
	}
	r = test_child_wait(pid, timeout_ms, &status);
	if (r < 0)
		return r;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

char *test_read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char *text = NULL;
	long size;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0) {
		rewind(f);
		text = calloc(1, (size_t)size + 1);
		if (text && fread(text, 1, (size_t)size, f) != (size_t)size) {
			free(text);
			text = NULL;
			errno = EIO;
		}
	}
	fclose(f);
	return text;
}

int test_children_wait(const pid_t *pids, unsigned n, int timeout_ms)
{
	char buf[64];
	int r = 0;

	for (unsigned i = 0; i < n; i++) {
		int status = 0;

		if (r < 0) {
			kill(pids[i], SIGKILL);
			while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
				;
			continue;
		}
		if (test_child_wait(pids[i], timeout_ms, &status) < 0) {
			fprintf(stderr, "test: FAILED: child %u (pid %d) timed out\n", i,
			        (int)pids[i]);
			r = -ECHILD;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "test: FAILED: child %u (pid %d): %s\n", i, (int)pids[i],
			        test_wait_status_str(status, buf, sizeof(buf)));
			r = -ECHILD;
		}
		if (r < 0)
			for (unsigned j = i + 1; j < n; j++)
				kill(pids[j], SIGKILL);
	}
	return r;
}

/* ---------------------------------------------------------------- moed */

int test_daemon_init(struct test_daemon *d, const char *moed)
{
	const char *tmp = getenv("TMPDIR");

	memset(d, 0, sizeof(*d));
	d->moed = moed;
	if (!tmp || !*tmp || strlen(tmp) > 40)
		tmp = "/tmp";
	snprintf(d->dir, sizeof(d->dir), "%s/moed-it.XXXXXX", tmp);
	if (!mkdtemp(d->dir)) {
		int r = -errno;

		fprintf(stderr, "test: mkdtemp %s: %s\n", d->dir, strerror(errno));
		d->dir[0] = '\0';
		return r;
	}
	/* the store's objects on tmpfs, as in production, but private to the
	 * test: a daemon that the test kills leaves nothing in /dev/shm */
	snprintf(d->store_dir, sizeof(d->store_dir), "/dev/shm/moed-it.XXXXXX");
	if (!mkdtemp(d->store_dir)) {
		int r = -errno;

		fprintf(stderr, "test: mkdtemp %s: %s\n", d->store_dir, strerror(errno));
		d->store_dir[0] = '\0';
		rmdir(d->dir);
		d->dir[0] = '\0';
		return r;
	}
	snprintf(d->socket, sizeof(d->socket), "%s/moed.sock", d->dir);
	snprintf(d->state_dir, sizeof(d->state_dir), "%s/state", d->dir);
	snprintf(d->model_path, sizeof(d->model_path), "%s/default-model.safetensors",
	         d->state_dir);
	return 0;
}

int test_daemon_log_to_file(struct test_daemon *d, const char *name)
{
	int fd;

	if ((size_t)snprintf(d->log_path, sizeof(d->log_path), "%s/%s", d->dir, name) >=
	    sizeof(d->log_path))
		return -ENAMETOOLONG;
	fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

int test_daemon_log_count(const struct test_daemon *d, const char *needle)
{
	char line[4096];
	FILE *f;
	int n = 0;

	f = fopen(d->log_path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (!needle || strstr(line, needle))
			n++;
	fclose(f);
	return n;
}

bool test_daemon_alive(struct test_daemon *d)
{
	siginfo_t si = {0};

	/* WNOWAIT: leave an exited moed to be reaped (and its status read) by stop */
	if (d->pid <= 0 || waitid(P_PID, (id_t)d->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		return false;
	return si.si_pid == 0;
}

/* The status answers, from our child, and it serves (its experts loaded): 1; not (yet): 0. */
static int daemon_answers(const struct test_daemon *d)
{
	char *text = NULL;
	json_t *root;
	int64_t pid;
	bool loading;

	if (moe_daemon_status(d->socket, &text) < 0)
		return 0;
	root = json_loads(text, 0, NULL);
	free(text);
	pid = root ? test_json_int(root, "daemon.pid") : INT64_MIN;
	loading = root && strcmp(test_json_str(root, "daemon.phase") ?: "", "serving") != 0;
	json_decref(root);
	if (pid == d->pid && loading)
		return 0; /* its experts are still loading: clients would be told to wait */
	if (pid != d->pid) {
		/* another moed on our private socket cannot be: say so, keep waiting */
		fprintf(stderr, "test: %s answered with daemon.pid %lld, expected %d\n", d->socket,
		        (long long)pid, (int)d->pid);
		return 0;
	}
	return 1;
}

int test_daemon_start(struct test_daemon *d, const char *const *extra)
{
	const char *argv[64];
	char state_set[sizeof(d->state_dir) + 16], store_set[sizeof(d->store_dir) + 16], buf[64];
	unsigned n = 0;
	int64_t t0 = test_now_ns(), deadline;
	pid_t pid, parent = getpid();
	int status, r;

	if (d->pid > 0)
		return -EBUSY;
	snprintf(state_set, sizeof(state_set), "state_dir=%s", d->state_dir);
	for (unsigned i = 0; d->launcher && d->launcher[i]; i++) {
		if (n + 16 >= sizeof(argv) / sizeof(argv[0]))
			return -E2BIG;
		argv[n++] = d->launcher[i];
	}
	argv[n++] = d->moed;
	argv[n++] = "--foreground";
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	argv[n++] = "--set";
	argv[n++] = state_set;
	snprintf(store_set, sizeof(store_set), "store_dir=%s", d->store_dir);
	argv[n++] = "--set";
	argv[n++] = store_set;
	for (unsigned i = 0; extra && extra[i]; i++) {
		if (n + 1 >= sizeof(argv) / sizeof(argv[0]))
			return -E2BIG;
		argv[n++] = extra[i];
	}
	argv[n] = NULL;

	fprintf(stderr, "test: starting");
	for (unsigned i = 0; i < n; i++)
		fprintf(stderr, " %s", argv[i]);
	fputc('\n', stderr);
	fflush(NULL); /* nothing buffered may be written twice by the child */
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* never outlive a test that crashed or was killed by ctest's timeout */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (d->log_path[0]) {
			int lfd = open(d->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

			if (lfd < 0 || dup2(lfd, STDERR_FILENO) < 0)
				_exit(127);
			close(lfd);
		}
		if (d->nofile) {
			struct rlimit rl = {.rlim_cur = d->nofile, .rlim_max = d->nofile};

			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				_exit(127);
		}
		/* execv's prototype predates const; it does not write the strings */
		union {
			const char **c;
			char *const *v;
		} av = {.c = argv};

		execvp(argv[0], av.v);
		fprintf(stderr, "test: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	d->pid = pid;
	d->starts++;

	deadline = t0 + (int64_t)TEST_DAEMON_START_TIMEOUT_MS * 1000000;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid) {
			fprintf(
			    stderr, "test: FAILED: moed (pid %d) ended before it served %s: %s\n",
			    (int)pid, d->socket, test_wait_status_str(status, buf, sizeof(buf)));
			d->pid = 0;
			return -ECHILD;
		}
		if (daemon_answers(d))
			break;
		if (test_now_ns() >= deadline) {
			fprintf(stderr,
			        "test: FAILED: moed (pid %d) did not answer STATUS on %s "
			        "within %d ms; killing it\n",
			        (int)pid, d->socket, TEST_DAEMON_START_TIMEOUT_MS);
			r = test_daemon_kill(d, SIGKILL);
			(void)r;
			return -ETIMEDOUT;
		}
		test_sleep_ms(10);
	}
	fprintf(stderr, "test: moed pid %d ready after %.0f ms\n", (int)pid,
	        (double)(test_now_ns() - t0) / 1e6);
	return 0;
}

/* Wait for d->pid, SIGKILL after @timeout_ms; the result as test_daemon_stop(). */
static int daemon_reap(struct test_daemon *d, int timeout_ms, const char *how)
{
	char buf[64];
	int status, r;

	r = test_child_wait(d->pid, timeout_ms, &status);
	if (r < 0) {
		fprintf(stderr,
		        "test: FAILED: moed (pid %d) did not exit within %d ms of %s; "
		        "it was killed\n",
		        (int)d->pid, timeout_ms, how);
		d->pid = 0;
		return r;
	}
	d->pid = 0;
	if (WIFEXITED(status))
		r = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		r = 128 + WTERMSIG(status);
	else
		r = 255;
	if (r != 0)
		fprintf(stderr, "test: moed after %s: %s\n", how,
		        test_wait_status_str(status, buf, sizeof(buf)));
	return r;
}

int test_daemon_stop(struct test_daemon *d)
{
	int64_t t0 = test_now_ns();
	int r;

	if (d->pid <= 0)
		return -ECHILD;
	if (kill(d->pid, SIGTERM) < 0)
		return -errno;
	r = daemon_reap(d, TEST_DAEMON_STOP_TIMEOUT_MS, "SIGTERM");
	fprintf(stderr, "test: moed stopped in %.0f ms: %d\n", (double)(test_now_ns() - t0) / 1e6,
	        r);
	return r;
}

int test_daemon_kill(struct test_daemon *d, int sig)
{
	if (d->pid <= 0)
		return -ECHILD;
	if (kill(d->pid, sig) < 0)
		return -errno;
	return daemon_reap(d, TEST_DAEMON_STOP_TIMEOUT_MS, strsignal(sig));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0)
		fprintf(stderr, "test: cannot remove %s: %s, ignoring\n", path, strerror(errno));
	return 0;
}

void test_daemon_done(struct test_daemon *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		while (waitpid(d->pid, &(int){0}, 0) < 0 && errno == EINTR)
			;
		d->pid = 0;
	}
	if (d->dir[0]) {
		nftw(d->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		d->dir[0] = '\0';
	}
	if (d->store_dir[0]) {
		nftw(d->store_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		d->store_dir[0] = '\0';
	}
}

/* ---------------------------------------------------------------- status */

json_t *test_status_get(const char *socket)
{
	json_error_t err;
	char *text = NULL;
	json_t *root;
	int r;

	r = moe_daemon_status(socket, &text);
	if (r < 0) {
		fprintf(stderr, "test: moe_daemon_status(%s): %s\n", socket, moe_strerror(r));
		return NULL;
	}
	root = json_loads(text, 0, &err);
	if (!root)
		fprintf(stderr, "test: status is not JSON (%s): %.200s\n", err.text, text);
	free(text);
	return root;
}

static json_t *json_path(json_t *root, const char *path)
{
	char buf[256], *save = NULL, *tok;
	json_t *v = root;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); v && tok; tok = strtok_r(NULL, ".", &save)) {
		if (json_is_array(v)) {
			char *end;
			unsigned long i = strtoul(tok, &end, 10);

			v = *end ? NULL : json_array_get(v, i);
		} else {
			v = json_object_get(v, tok);
		}
	}
	return v;
}

int64_t test_json_int(json_t *root, const char *path)
{
	json_t *v = root ? json_path(root, path) : NULL;

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : INT64_MIN;
}

const char *test_json_str(json_t *root, const char *path)
{
	json_t *v = root ? json_path(root, path) : NULL;

	return json_is_string(v) ? json_string_value(v) : NULL;
}

json_t *test_status_client(json_t *root, const char *name)
{
	json_t *clients = json_object_get(root, "clients"), *c;
	size_t i;

	json_array_foreach(clients, i, c)
	{
		const char *n = json_string_value(json_object_get(c, "name"));

		if (n && strcmp(n, name) == 0)
			return c;
	}
	return NULL;
}

int64_t test_status_int(const char *socket, const char *path)
{
	json_t *root = test_status_get(socket);
	int64_t v = root ? test_json_int(root, path) : INT64_MIN;

	json_decref(root);
	return v;
}

int test_status_wait_int(const char *socket, const char *path, int64_t want, int timeout_ms)
{
	int64_t deadline = test_now_ns() + (int64_t)timeout_ms * 1000000, v = INT64_MIN;

	for (;;) {
		json_t *root = test_status_get(socket);

		v = test_json_int(root, path);
		json_decref(root);
		if (v == want)
			return 0;
		if (test_now_ns() >= deadline)
			break;
		test_sleep_ms(20);
	}
	fprintf(stderr, "test: status %s is %lld after %d ms, expected %lld\n", path, (long long)v,
	        timeout_ms, (long long)want);
	return -ETIMEDOUT;
}

/* ---------------------------------------------------------------- reference */

int test_ref_open(struct test_ref *ref, const char *model_path)
{
	return test_ref_open_as(ref, model_path, false);
}

int test_ref_open_as(struct test_ref *ref, const char *model_path, bool widen_experts)
{
	struct engine_opts eo;
	struct diag d = {{0}};
	struct st_set *set;
	int r;

	memset(ref, 0, sizeof(*ref));
	r = st_set_open(model_path, &set, &d);
	if (r >= 0)
		r = moe_model_open_set(set, model_path,
		                       &(struct model_opts){.widen_experts = widen_experts},
		                       &ref->model, &d);
	if (r < 0) {
		fprintf(stderr, "test: cannot open %s: %s\n", model_path, d.msg);
		return r;
	}
	engine_opts_init(&eo);
	eo.n_workers = 1;
	r = engine_new(&eo, &ref->engine, &d);
	if (r < 0) {
		fprintf(stderr, "test: engine_new: %s\n", d.msg);
		ref->model = moe_model_free(ref->model);
		return r;
	}
	ref->n_layers = moe_model_n_layers(ref->model);
	for (uint32_t l = 0; l < ref->n_layers; l++)
		if (moe_model_layer(ref->model, l))
			ref->d_model = moe_model_layer(ref->model, l)->d_model;
	return 0;
}

void test_ref_close(struct test_ref *ref)
{
	ref->engine = engine_free(ref->engine);
	ref->model = moe_model_free(ref->model);
}

uint32_t test_ref_experts(const struct test_ref *ref, uint32_t layer)
{
	const struct moe_layer *L = moe_model_layer(ref->model, layer);

	return L ? L->n_experts : 0;
}

uint32_t test_ref_slots(const struct test_ref *ref, uint32_t layer)
{
	const struct moe_layer *L = moe_model_layer(ref->model, layer);

	return L ? router_config_slots(&L->router) : 0;
}

int test_ref_forward(struct test_ref *ref, uint32_t layer, const float *x, uint32_t T,
                     const int32_t *given_expert, const float *given_weight, uint32_t given_k,
                     float *y, int32_t *expert, float *weight, int32_t *counts)
{
	const struct moe_layer *L = moe_model_layer(ref->model, layer);
	struct router_config cfg;
	struct route_given given = {.expert = given_expert, .weight = given_weight};
	struct engine_batch b = {.x = x,
	                         .n_tokens = T,
	                         .output = y,
	                         .expert_index = expert,
	                         .expert_weight = weight,
	                         .tokens_per_expert = counts};
	struct diag d = {{0}};
	int r;

	if (!L)
		return -EINVAL;
	if (given_expert) {
		/* what moed does for MOE_SQE_F_ROUTE_GIVEN (reactor/batch_exec.c) */
		cfg = L->router;
		cfg.kind = ROUTER_GIVEN;
		cfg.top_k = given_k;
		b.given = &given;
	}
	r = engine_forward(ref->engine, L, given_expert ? &cfg : NULL, &b, &d);
	if (r < 0 && r != -EDOM)
		fprintf(stderr, "test: reference engine_forward: %s (%s)\n", d.msg, strerror(-r));
	return r;
}

double test_ref_route_margin(const struct test_ref *ref, uint32_t layer, const float *x)
{
	const struct moe_layer *L = moe_model_layer(ref->model, layer);
	double *logit, kth, next = -INFINITY;
	uint32_t E, k;

	if (!L)
		return INFINITY;
	E = L->n_experts;
	k = router_config_slots(&L->router);
	if (k >= E)
		return INFINITY;
	logit = malloc(sizeof(*logit) * E);
	if (!logit)
		return 0; /* "too close to call": the caller compares less, never wrongly */
	for (uint32_t e = 0; e < E; e++) {
		double s = L->router_b ? L->router_b[e] : 0.0;

		for (uint32_t i = 0; i < L->d_model; i++)
			s += (double)L->router_w[(size_t)e * L->d_model + i] * x[i];
		logit[e] = s;
	}
	/* partial selection: the k-th largest, then the largest of the rest */
	for (uint32_t j = 0; j < k; j++) {
		uint32_t best = j;

		for (uint32_t e = j + 1; e < E; e++)
			if (logit[e] > logit[best])
				best = e;
		double t = logit[j];

		logit[j] = logit[best];
		logit[best] = t;
	}
	kth = logit[k - 1];
	for (uint32_t e = k; e < E; e++)
		if (logit[e] > next)
			next = logit[e];
	free(logit);
	return kth - next;
}

void test_fill_normal(float *x, size_t n, uint64_t *seed)
{
	for (size_t i = 0; i < n; i++) {
		double u = 1.0 - rng_uniform01(seed), v = rng_uniform01(seed);

		x[i] = (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
	}
}

size_t test_count_mismatches(const char *what, const float *got, const float *want, size_t n,
                             double atol, double rtol)
{
	size_t bad = 0;

	for (size_t i = 0; i < n; i++) {
		double g = got[i], w = want[i];

		if (fabs(g - w) <= atol + rtol * fabs(w))
			continue;
		if (bad++ < 4)
			fprintf(stderr, "[%d] %s: element %zu: got %.9g, want %.9g (diff %.3g)\n",
			        (int)getpid(), what, i, g, w, fabs(g - w));
	}
	if (bad > 4)
		fprintf(stderr, "[%d] %s: %zu of %zu elements differ\n", (int)getpid(), what, bad,
		        n);
	return bad;
}

long test_ref_check(struct test_ref *ref, uint32_t layer, const float *x, uint32_t T,
                    const float *y, double atol, double rtol, double tie_margin,
                    const char *what)
{
	const size_t d = ref->d_model;
	float *want = malloc(sizeof(float) * ((size_t)T * d ?: 1));
	long bad = 0;
	int r;

	if (!want)
		return -ENOMEM;
	r = test_ref_forward(ref, layer, x, T, NULL, NULL, 0, want, NULL, NULL, NULL);
	if (r < 0) {
		free(want);
		return r;
	}
	for (uint32_t t = 0; t < T; t++)
		if (test_ref_route_margin(ref, layer, x + t * d) >= tie_margin)
			bad += (long)test_count_mismatches(what, y + t * d, want + t * d, d, atol,
			                                   rtol);
	free(want);
	return bad;
}
