/* SPDX-License-Identifier: MIT */
/* moectl: the subcommands, each in its own file. */
#pragma once

#include <stdbool.h>

#include <stddef.h>
#include <stdint.h>

/* @socket_path: NULL runs the engine in-process, else the batch goes to that moed. */
int cmd_forward(int argc, char **argv, const char *socket_path);
int cmd_status(int argc, char **argv, const char *socket_path);
int cmd_experts(int argc, char **argv, const char *socket_path);
int cmd_peers(int argc, char **argv, const char *socket_path);
int cmd_top(int argc, char **argv, const char *socket_path);
int cmd_store(int argc, char **argv, const char *socket_path);
int cmd_reload(int argc, char **argv, const char *socket_path);
int cmd_metrics(int argc, char **argv, const char *socket_path);
int cmd_config(int argc, char **argv, const char *socket_path);
int cmd_workload(int argc, char **argv, const char *socket_path);
int forward_via_daemon(const char *socket_path, const char *input, const char *input_tensor,
		       const char *output, uint32_t layer);
int cmd_gen_model(int argc, char **argv);

/*
 * @s made safe to print on a terminal, in @buf: control characters, DEL and
 * every byte >= 0x80 become \xNN. Whatever answers on the socket may not be
 * moed, and an escape sequence in its text must not reach the operator's
 * terminal.
 */
const char *moectl_term_safe(const char *s, char *buf, size_t size);

/* @n bytes as "1.5 MiB" into @buf. */
const char *moectl_human_bytes(uint64_t n, char *buf, size_t len);

/* One line for a node of the status's "store"."nodes": memory, replicas, and its workers. */
struct json_t;
void moectl_print_node(const struct json_t *node);

/* Seconds on the monotonic clock, for timing what a command did. */
double moectl_now_s(void);

/*
 * Collect a router option given as "--key value" or "--key=value" (dashes in
 * the key read as underscores) into "key=value" for moe_model_open(). Returns
 * the number of argv entries consumed (1 or 2), 0 if argv[*i] is not a router
 * option, or -EINVAL (message logged) for a missing value.
 */
int moectl_router_option(int argc, char **argv, int i, char *buf, unsigned size);

/* The daemon's status, parsed, or NULL after a log line saying why. */
struct json_t *moectl_status_get(const char *socket_path);

/*
 * As moectl_status_get(), but the reason for a NULL goes into @why (made safe
 * for a terminal) instead of the log: for a caller that must put the terminal
 * back before it says anything (moectl top).
 */
struct json_t *moectl_status_fetch(const char *socket_path, char *why, size_t why_size);

/*
 * The options of a command that shows something: --json and --help (which
 * prints @usage). -1 to go on, else the exit status to return (0 or 2).
 */
int moectl_show_options(int argc, char **argv, const char *usage, bool *ret_json);

/* The status's "peers" object, for people (moectl peers, moectl status). */
void moectl_print_peers(const struct json_t *peers);
