/* SPDX-License-Identifier: MIT */
/*
 * moed: the daemon. Reads its settings (config file, then the command line),
 * opens the model (the embedded default one, generated once into state_dir,
 * when none is configured), listens on the control socket and runs the
 * reactor until SIGTERM or SIGINT, which drain in-flight batches and exit 0.
 *
 *   moed [--config FILE] [--model PATH] [--socket PATH] [--set KEY=VALUE]...
 *        [--foreground] [--dump-config] [--check-config FILE]
 *
 * SIGHUP reloads the configuration (reactor_reload.c): FILE, its drop-ins
 * (FILE.d/NAME.conf) and the command line are read again, and what may
 * change live is swapped in when the whole validates.
 *
 * Without --foreground moed forks into the background and its first process
 * exits once the socket listens (0) or start-up failed (1), so a script can
 * start it and use it on the next line.
 *
 * As a systemd service (systemd/moed.service: --foreground, Type=notify)
 * moed reports its phases, readiness and a watchdog through sd_notify
 * (service_notify.h), and takes its control socket from moed.socket when
 * socket-activated (service_socket.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "compute/kernel_calibrate.h"
#include "compute/matmul_bf16_dot.h"
#include "config/config_sources.h"
#include "control/load_status.h"
#include "control/metrics_http.h"
#include "engine/engine.h"
#include "model/model.h"
#include "model/synth_model.h"
#include "numa/topology.h"
#include "peers/peer_config.h"
#include "reactor/reactor.h"
#include "service/service_notify.h"
#include "service/service_socket.h"
#include "store/expert_store.h"
#include "store/load_record.h"
#include "util/log.h"

/* Kept for moed's life: a reload reads the same sources again. */
static struct config_sources sources;

static bool arg_foreground;
static bool arg_dump_config;
static const char *arg_check_config;

static void usage(FILE *f)
{
	fprintf(f, "usage: moed [--config FILE] [--model PATH] [--socket PATH] "
		   "[--set KEY=VALUE]... [--foreground] [--dump-config] [--check-config FILE]\n");
}

/* reactor_reload_fn: the same sources, read again. */
static int config_reload(void *arg, struct moed_config *ret, struct diag *d)
{
	return config_sources_build(arg, ret, d);
}

static int parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(opt, "--help") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(opt, "--foreground") == 0) {
			arg_foreground = true;
		} else if (strcmp(opt, "--dump-config") == 0) {
			arg_dump_config = true;
		} else if (val && strcmp(opt, "--config") == 0) {
			sources.file = val;
			i++;
		} else if (val && strcmp(opt, "--check-config") == 0) {
			arg_check_config = val;
			i++;
		} else if (val && (strcmp(opt, "--model") == 0 || strcmp(opt, "--socket") == 0 ||
				   strcmp(opt, "--set") == 0)) {
			if (config_sources_add(&sources, opt, val) < 0)
				return log_errno(-E2BIG, "more than %u --model, --socket and --set",
						 CONFIG_SOURCES_MAX_SETS);
			i++;
		} else {
			log_error("unknown option or missing value: %s", opt);
			usage(stderr);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * --check-config FILE: the file, its drop-ins and the rest of the command
 * line as moed would start with them; nothing else happens. Exit 0 when
 * they validate, 1 with the reason (file:line for a bad line) otherwise.
 */
static int check_config(const char *file)
{
	struct moed_config *cfg = malloc(sizeof(*cfg));
	struct diag d = { { 0 } };
	int r;

	if (!cfg)
		return log_errno(-ENOMEM, "out of memory"), 1;
	sources.file = file;
	r = config_sources_build(&sources, cfg, &d);
	free(cfg);
	if (r < 0) {
		log_error("%s", d.msg);
		return 1;
	}
	printf("%s: ok\n", file);
	return 0;
}

static int mkdir_parents(const char *path, mode_t mode)
{
	char buf[CONFIG_PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The embedded default model, generated once into state_dir (atomically). */
static int default_model_path(const struct moed_config *cfg, char *path, size_t size)
{
	char tmp[CONFIG_PATH_MAX + 128];
	struct synth_opts o;
	struct diag d = { { 0 } };
	int r;

	if ((size_t)snprintf(path, size, "%s/default-model.safetensors", cfg->state_dir) >= size)
		return log_errno(-ENAMETOOLONG, "state_dir too long");
	if (access(path, R_OK) == 0)
		return 0;
	r = mkdir_parents(cfg->state_dir, 0755);
	if (r < 0)
		return log_errno(r, "cannot create state_dir %s: %m", cfg->state_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	synth_opts_default_model(&o);
	o.output = tmp;
	r = synth_model_write(&o, &d);
	if (r < 0) {
		unlink(tmp);
		return log_errno(r, "cannot write the default model: %s", d.msg);
	}
	if (rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return log_errno(r, "rename %s: %m", tmp);
	}
	log_info("wrote the default model to %s", path);
	return 0;
}

/* Bind and listen; a stale socket file (nobody answers) is replaced. */
/*
 * Make way for our socket at @sa: nothing there is fine; a socket nobody
 * answers on is a previous moed's leftover and is removed; a live socket is
 * another moed (-EADDRINUSE). Anything else at the path (a regular file, a
 * link, a folder) is not ours to delete: a mistyped --socket must not cost
 * the operator a file, so moed refuses to start with -EEXIST. The window
 * between lstat and unlink matters only if someone swaps the path in the
 * socket's own folder meanwhile, which is as privileged as moed itself.
 */
static int socket_path_clear(const struct sockaddr_un *sa)
{
	struct stat st;
	int fd;

	if (lstat(sa->sun_path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return log_errno(-errno, "cannot inspect %s: %m", sa->sun_path);
	}
	if (!S_ISSOCK(st.st_mode))
		return log_errno(-EEXIST, "%s exists and is not a socket; refusing to replace it",
				 sa->sun_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return log_errno(-errno, "socket: %m");
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		close(fd);
		return log_errno(-EADDRINUSE, "another moed already serves %s", sa->sun_path);
	}
	if (errno == ECONNREFUSED && unlink(sa->sun_path) < 0 && errno != ENOENT) {
		close(fd);
		return log_errno(-errno, "cannot remove the stale socket %s: %m", sa->sun_path);
	}
	close(fd);
	return 0;
}

static int listen_socket(const struct moed_config *cfg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[CONFIG_PATH_MAX];
	int fd, r;

	if (strlen(cfg->socket) >= sizeof(sa.sun_path))
		return log_errno(-ENAMETOOLONG, "socket path too long: %s", cfg->socket);
	memcpy(sa.sun_path, cfg->socket, strlen(cfg->socket) + 1);
	snprintf(dir, sizeof(dir), "%s", cfg->socket);
	r = mkdir_parents(dirname(dir), 0755);
	if (r < 0)
		return log_errno(r, "cannot create the socket's folder: %m");
	r = socket_path_clear(&sa);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return log_errno(-errno, "socket: %m");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = log_errno(-errno, "bind %s: %m", cfg->socket);
		goto err;
	}
	if (chmod(cfg->socket, cfg->socket_mode) < 0) {
		r = log_errno(-errno, "chmod %s: %m", cfg->socket);
		goto err_unlink;
	}
	if (listen(fd, 128) < 0) {
		r = log_errno(-errno, "listen: %m");
		goto err_unlink;
	}
	return fd;
err_unlink:
	unlink(cfg->socket);
err:
	close(fd);
	return r;
}

/*
 * The control socket from moed.socket, when systemd activated moed; its
 * path becomes moed's socket path (the store's default name and moectl's
 * hints follow it). -ENOENT when not activated.
 */
static int take_activated_socket(struct service_fds *fds, struct moed_config *cfg)
{
	if (fds->control < 0)
		return -ENOENT;
	if (strcmp(fds->control_path, cfg->socket) != 0)
		log_warning("socket activation: systemd listens on %s, the configuration says %s; "
			    "serving on %s",
			    fds->control_path, cfg->socket, fds->control_path);
	snprintf(cfg->socket, sizeof(cfg->socket), "%s", fds->control_path);
	log_info("control socket %s from systemd (socket activation)", fds->control_path);
	return fds->control;
}

/*
 * Hand the store's objects to systemd's fd store (@keep), or let systemd
 * drop them (a store that does not outlive moed). Kept, a restarted moed
 * has them even when their files are gone (a tmpfs cleaned, a store_dir
 * that does not outlive the service). Each goes as a fresh open file
 * description (reopened through /proc), never the one moed holds its lock
 * on: systemd keeping that one would keep the lock, and the next moed
 * could not take the store by its path.
 */
static void fdstore_update(const struct expert_store *store, bool keep)
{
	int fds[SERVICE_STORE_FDS_MAX];
	uint32_t n = expert_store_object_fds(store, fds, SERVICE_STORE_FDS_MAX);

	for (uint32_t i = 0; i < n && i < SERVICE_STORE_FDS_MAX; i++) {
		char proc[64], name[32];
		int fd;

		service_store_fd_name(i, name, sizeof(name));
		if (!keep) {
			service_notify_fdstore_remove(name);
			continue;
		}
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fds[i]);
		fd = open(proc, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			log_warning("cannot give the store's object %u to the fd store: %m", i);
			continue;
		}
		service_notify_fdstore(name, fd);
	}
}

/*
 * Fork into the background: the parent waits for the child's "ready" byte
 * on a pipe (or its end: start-up failed) and exits accordingly.
 * Returns the write end the child reports on, or -errno.
 */
static int daemonize(void)
{
	int p[2];
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		exit(read(p[0], &c, 1) == 1 ? 0 : 1);
	}
	close(p[0]);
	setsid();
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		close(devnull);
	}
	return p[1];
}

/*
 * File descriptors moed needs, estimated from the settings:
 *
 *   MOED_FDS_BASE (64): stdio, the listening socket, signalfd, timerfd,
 *     the io_uring, the model's files while they are opened, the status
 *     reply's memfd, the engine's and BLAS's own, and headroom;
 *   one per pending connection (max(64, max_clients) of them, ctl_socket);
 *   MOED_FDS_PER_CLIENT (5) per client: its socket, its pidfd, its ring
 *     memfd, its eventfd (eventfd doorbells), and its info memfd while the
 *     HELLO reply is sent.
 *
 * With the defaults (max_clients 64): 64 + 64 + 5 * 64 = 448, under the
 * usual soft limit of 1024; max_clients = 1024 needs 6208.
 */
#define MOED_FDS_BASE       64u
#define MOED_FDS_PER_CLIENT 5u

static uint64_t fds_needed(const struct moed_config *cfg)
{
	uint64_t pending = cfg->max_clients < 64 ? 64 : cfg->max_clients;

	return MOED_FDS_BASE + pending + (uint64_t)MOED_FDS_PER_CLIENT * cfg->max_clients;
}

/*
 * Raise the soft RLIMIT_NOFILE to the hard one (moed's fds grow with its
 * clients; select() is not used, so large fd numbers are fine), and refuse
 * a max_clients that cannot fit: running out of fds later refuses clients
 * at random instead of at max_clients. 0 or -EMFILE (logged).
 */
static int raise_fd_limit(const struct moed_config *cfg)
{
	uint64_t need = fds_needed(cfg);
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return log_errno(-errno, "getrlimit(RLIMIT_NOFILE): %m");
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warning("cannot raise the fd limit to %llu (%m), ignoring",
				    (unsigned long long)rl.rlim_max);
		else if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return log_errno(-errno, "getrlimit(RLIMIT_NOFILE): %m");
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		return log_errno(-EMFILE,
				 "max_clients = %u needs about %llu file descriptors (%u + %u per "
				 "client + one per waiting connection), but RLIMIT_NOFILE is %llu: "
				 "lower max_clients or raise the limit (LimitNOFILE= in the unit)",
				 cfg->max_clients, (unsigned long long)need, MOED_FDS_BASE,
				 MOED_FDS_PER_CLIENT, (unsigned long long)rl.rlim_cur);
	return 0;
}

/*
 * Refuse a threaded OpenBLAS rather than warn: it starts its threads as it
 * loads, before main() blocks the stop signals, so systemd's SIGTERM may go
 * to one of them and kill moed without the drain (clients lose the batches
 * in flight), and those threads compete with the workers. moed links the
 * serial build and finds it through its RUNPATH, so a threaded one means
 * LD_LIBRARY_PATH or LD_PRELOAD chose it, or the serial package is gone:
 * the operator's to fix, and the message says how. A serial build whose
 * buffer calls bypass blas_buffer_lock.c is refused too (wrong results).
 */
static int require_serial_blas(void)
{
	struct blas_info blas;
	char why[512];
	int r;

	blas_info_get(&blas);
	r = blas_serial_check(&blas, why, sizeof(why));
	if (r < 0)
		return log_errno(r, "%s", why);
	return 0;
}

/*
 * The opt-in BF16 dot-product kernel (bf16_dot, matmul_bf16_dot.h), before
 * the kernel bounds: they are then measured with the kernel BF16 experts
 * will use. A CPU without AVX512_BF16 costs the speed-up, not service.
 */
static void bf16_dot_setup(const struct moed_config *cfg)
{
	if (!cfg->bf16_dot)
		return;
	if (matmul_bf16_dot_enable(true) < 0) {
		log_warning("bf16_dot = yes, but this CPU lacks AVX512_BF16: BF16 experts compute "
			    "in float32, ignoring");
		return;
	}
	log_info("bf16_dot: BF16 experts multiply with vdpbf16ps, their activations rounded to "
		 "BF16");
}

/*
 * The matmul kernels' bounds for this machine and model (kernel_calibrate.h),
 * kept in STATE_DIR/kernel-bounds.json. A failure costs speed, not service:
 * the built-in bounds stay.
 */
static void calibrate_kernels(const struct moed_config *cfg, const struct moe_model *m)
{
	struct calibrate_request req = { 0 };
	const struct calibrate_result *res;
	struct matmul_bounds bounds;
	char path[CONFIG_PATH_MAX + 32];
	struct diag d = { { 0 } };
	const uint32_t *max;

	if (!cfg->kernel_calibration) {
		log_info("kernel bounds: built in (kernel_calibration = no)");
		return;
	}
	calibrate_add_model(&req, m);
	(void)mkdir_parents(cfg->state_dir, 0755); /* a model given: nothing made it yet */
	if ((size_t)snprintf(path, sizeof(path), "%s/kernel-bounds.json", cfg->state_dir) <
	    sizeof(path))
		req.cache_path = path;
	if (kernel_calibrate(&req, &d) < 0) {
		log_warning("kernel bounds: %s; the built-in ones stay", d.msg);
		return;
	}
	res = kernel_calibration();
	matmul_bounds_get(&bounds);
	max = bounds.small_m_max;
	log_info("kernel bounds %s in %.3f s: small-m kernel up to %u rows (F32), %u (BF16%s), %u "
		 "(F16); one row by %s",
		 calibrate_source_name(res->source), res->seconds, max[WEIGHT_F32],
		 max[WEIGHT_BF16], matmul_bf16_dot_enabled() ? ", vdpbf16ps" : "", max[WEIGHT_F16],
		 bounds.small_m_at_1 ? "the small-m kernel" : "sgemv");
	if (res->source == CALIBRATE_MEASURED && res->others_cores > CALIBRATE_OTHERS_MAX)
		log_warning("kernel bounds measured while other processes used %.1f cores: used "
			   "now, not cached (the next start measures again)",
			   res->others_cores);
}

/* STATE_DIR/STORE_NAME.load.json: the experts' measured load (load_record.h). */
static char load_record_path[2 * CONFIG_PATH_MAX + 16];

/*
 * Keep the tokens each expert received for the next load's balanced
 * placement; a run that served nothing leaves the last record as it was.
 */
static void save_load_record(const struct moed_config *cfg, const struct reactor *reactor,
			     uint32_t n_layers)
{
	const struct layer_stats *stats = reactor_layer_stats(reactor);
	struct diag d = { { 0 } };
	uint64_t tokens = 0;

	for (uint32_t l = 0; l < n_layers; l++)
		tokens += stats[l].tokens;
	if (!tokens)
		return;
	(void)mkdir_parents(cfg->state_dir, 0755); /* a failure shows in the write */
	if (load_record_write(load_record_path, stats, n_layers, &d) < 0)
		log_warning("the experts' load is not kept for the next start: %s", d.msg);
}

/* expert_store_opts.remote_experts: the experts expert_hosts gives to peers. */
static int remote_experts_of(const void *ctx, uint32_t n_layers, const uint32_t *n_experts,
			     bool *const *remote, struct diag *d)
{
	const struct moed_config *cfg = ctx;

	return expert_hosts_remote(cfg->expert_hosts, cfg->peers, n_layers, n_experts, remote, d);
}

/* The experts' weights: re-attached from a previous moed's store, or loaded. */
static int open_store(const struct moed_config *cfg, const char *model_path,
		      const struct topology *topo, struct store_progress *progress,
		      const int *kept_fds, struct expert_store **ret, struct diag *d)
{
	static char name[CONFIG_PATH_MAX];
	const struct expert_store_info *info;
	struct expert_store_opts so;
	int r;

	if (cfg->store_name[0])
		snprintf(name, sizeof(name), "%s", cfg->store_name);
	else
		expert_store_default_name(cfg->socket, name, sizeof(name));
	snprintf(load_record_path, sizeof(load_record_path), "%s/%s.load.json", cfg->state_dir,
		 name);
	so = (struct expert_store_opts){
		.dir = cfg->store_dir,
		.name = name,
		.keep = cfg->store_keep,
		.replica_budget = cfg->replica_budget,
		.topo = topo,
		.policy = cfg->placement,
		.expert_nodes = cfg->expert_nodes,
		.widen_experts = cfg->expert_dtype == EXPERT_DTYPE_F32,
		.progress = progress,
		.load_record = load_record_path,
		.kept_fds = kept_fds,
	};
	if (cfg->expert_hosts[0]) {
		/* this host holds only the experts it computes */
		so.remote_experts = remote_experts_of;
		so.remote_ctx = cfg;
		so.remote_key = cfg->expert_hosts;
	}
	log_info("topology: %u node(s) (%s), %u CPUs", topo->n_nodes, topo->source,
		 topology_n_cpus(topo));
	r = expert_store_open(model_path, &so, ret, d);
	if (r < 0)
		return r;
	info = expert_store_info(*ret);
	if (info->source == STORE_ATTACHED && info->from_kept_fds)
		log_info("weights: %.1f MB re-attached in %.3f s (no weight file read), %u of "
			 "%u objects from systemd's fd store: their files in %s were gone",
			 (double)info->weight_bytes / 1e6, info->seconds, info->from_kept_fds,
			 info->n_nodes, so.dir);
	else if (info->source == STORE_ATTACHED)
		log_info("weights: %.1f MB re-attached from %s/%s.node* in %.3f s (no weight "
			 "file read)",
			 (double)info->weight_bytes / 1e6, so.dir, name, info->seconds);
	else
		log_info("weights: %.1f MB loaded into %s/%s.node* in %.3f s (%.2f GB/s read)",
			 (double)info->weight_bytes / 1e6, so.dir, name, info->seconds,
			 info->seconds > 0 ? (double)info->read_bytes / info->seconds / 1e9 : 0.0);
	if (info->remote_experts)
		log_info("weights: %u experts are other hosts' (expert_hosts): not held here",
			 info->remote_experts);
	return 0;
}

int main(int argc, char **argv)
{
	struct moed_config cfg;
	struct engine_opts eo;
	struct engine *engine = NULL;
	static struct topology topo; /* large; the engine and the store keep pointers */
	struct expert_store *store = NULL;
	struct reactor *reactor = NULL;
	struct load_status *loading = NULL;
	struct metrics_http *metrics = NULL;
	static struct service_fds passed; /* what systemd handed over (large: static) */
	static struct store_progress progress; /* read by the load-time status thread */
	struct diag d = { { 0 } };
	char default_path[CONFIG_PATH_MAX + 64];
	const char *model_path, *model_name;
	int ready_fd = -1, listen_fd = -1, r;
	bool socket_activated = false;
	sigset_t mask;

	log_set_program("moed");
	if (parse_args(argc, argv) < 0)
		return 2;
	if (arg_check_config)
		return check_config(arg_check_config);
	r = config_sources_build(&sources, &cfg, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		return 2;
	}
	if (arg_dump_config) {
		moed_config_dump(&cfg, stdout);
		return 0;
	}
	if (raise_fd_limit(&cfg) < 0)
		return 2;
	if (require_serial_blas() < 0)
		return 1;
	if (!arg_foreground) {
		ready_fd = daemonize();
		if (ready_fd < 0)
			return log_errno(ready_fd, "cannot fork: %m"), 1;
	}
	/* block the stop signals before any thread exists: the signalfd takes them */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	r = service_notify_start();
	if (r < 0)
		log_warning("cannot start notifying the service manager (%s); going on without it",
			    strerror(-r));

	if (cfg.model[0]) {
		model_path = cfg.model;
		model_name = cfg.model;
	} else {
		r = default_model_path(&cfg, default_path, sizeof(default_path));
		if (r < 0)
			goto out;
		model_path = default_path;
		model_name = "default";
	}
	r = cfg.topology_file[0] ? topology_load(cfg.topology_file, &topo, &d)
				 : topology_detect(&topo, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	/*
	 * Listen first: while the experts load (minutes for a large model),
	 * `moectl status` shows the progress and clients are told to wait.
	 */
	r = service_fds_take(&passed, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	if (passed.n_unused)
		log_warning("systemd passed %u file descriptors moed does not use; closed them",
			    passed.n_unused);
	listen_fd = take_activated_socket(&passed, &cfg);
	if (listen_fd == -ENOENT)
		listen_fd = listen_socket(&cfg);
	else
		socket_activated = true;
	if (listen_fd < 0) {
		r = listen_fd;
		goto out;
	}
	store_progress_init(&progress);
	r = load_status_start(listen_fd, &progress, &loading);
	if (r < 0)
		log_warning("cannot answer on the socket while loading (%s); it answers once "
			    "the experts are in place", strerror(-r));
	r = open_store(&cfg, model_path, &topo, &progress, passed.store, &store, &d);
	service_fds_close_store(&passed); /* the store has copies of what it used */
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	if (cfg.store_keep)
		fdstore_update(store, true);
	if (cfg.rebalance_interval_ms && !cfg.replica_budget)
		log_warning("rebalance_interval_ms is set but replica_budget is 0: no replica "
			    "fits, rebalancing can only drop");
	engine_opts_init(&eo);
	eo.n_workers = cfg.workers;
	eo.topo = &topo;
	eo.steal = cfg.node_steal;
	r = engine_new(&eo, &engine, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	bf16_dot_setup(&cfg);
	calibrate_kernels(&cfg, expert_store_model(store));
	loading = load_status_stop(loading);
	r = reactor_new(&cfg, listen_fd, store, model_name, engine, &reactor, &d);
	if (r < 0) {
		log_errno(r, "%s", d.msg);
		goto out;
	}
	listen_fd = -1; /* the reactor's now */
	reactor_set_reload(reactor, &cfg, config_reload, &sources);
	/* before READY=1: a port in use is a failed start, not a half-served one */
	if (cfg.metrics_listen[0]) {
		r = metrics_http_start(cfg.metrics_listen, cfg.socket, &metrics, &d);
		if (r < 0) {
			log_errno(r, "%s", d.msg);
			goto out;
		}
		log_info("Prometheus metrics on http://%s/metrics", cfg.metrics_listen);
	}
	log_info("serving %s (%u layers) on %s with %u workers; OpenBLAS core %s from %s",
		 model_path, moe_model_n_layers(expert_store_model(store)), cfg.socket,
		 engine_n_workers(engine), engine_blas_info(engine)->core,
		 engine_blas_info(engine)->library);
	if (engine_blas_info(engine)->advice[0])
		log_warning("%s", engine_blas_info(engine)->advice);
	service_notify_ready("serving, 0 clients");
	if (ready_fd >= 0) {
		if (write(ready_fd, "1", 1) != 1)
			log_warning("cannot report readiness to the parent, ignoring");
		close(ready_fd);
		ready_fd = -1;
	}
	r = reactor_run(reactor);
	metrics = metrics_http_stop(metrics);
	save_load_record(&cfg, reactor, moe_model_n_layers(expert_store_model(store)));
out:
	metrics_http_stop(metrics);
	load_status_stop(loading);
	if (listen_fd >= 0)
		close(listen_fd);
	if ((listen_fd >= 0 || reactor) && !socket_activated)
		unlink(cfg.socket); /* an activated socket is systemd's: it stays for the next moed */
	reactor_free(reactor);
	engine_free(engine);
	if (store && !cfg.store_keep)
		fdstore_update(store, false);
	expert_store_close(store);
	if (ready_fd >= 0)
		close(ready_fd);
	if (r < 0)
		service_notify_status("failed: %s (the log says more)", strerror(-r));
	service_notify_stop();
	return r < 0 ? 1 : 0;
}
