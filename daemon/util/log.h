/* SPDX-License-Identifier: MIT */
/*
 * log: the programs' (moed, moectl) logging. Lines go to stderr with a
 * journald priority prefix ("<3>" for errors) when stderr is not a terminal,
 * so journald files them at the right level; on a terminal the prefix is a
 * word. Library code never calls these (STYLE 5).
 */
#pragma once

#include <stdarg.h>

enum log_level {
	LOG_LEVEL_ERR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_NOTICE = 5,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

void log_set_max_level(enum log_level level);
void log_set_program(const char *name);

void log_emit(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Log at error level and return @r (a negative errno), for `return log_errno(r, ...)`. */
int log_errno(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_emit(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warning(...) log_emit(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_emit(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_emit(LOG_LEVEL_DEBUG, __VA_ARGS__)
