/* SPDX-License-Identifier: MIT */
/* log: stderr lines with journald priorities; see log.h. */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level max_level = LOG_LEVEL_INFO;
static const char *program = "moed";

void log_set_max_level(enum log_level level)
{
	max_level = level;
}

void log_set_program(const char *name)
{
	program = name;
}

__attribute__((format(printf, 3, 0))) static void log_va(enum log_level level, int err,
							    const char *fmt, va_list ap)
{
	static const char *const words[] = { "", "", "", "error", "warning", "notice", "info",
					     "debug" };
	char line[2048];
	int n;

	if (level > max_level)
		return;
	/* %m in the format refers to err, as in systemd's log_*_errno() */
	errno = err;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "%s: %s%s%s\n", program, level <= LOG_LEVEL_WARNING ? words[level] : "",
			level <= LOG_LEVEL_WARNING ? ": " : "", line);
	else
		fprintf(stderr, "<%d>%s: %s\n", (int)level, program, line);
}

void log_emit(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(level, errno, fmt, ap);
	va_end(ap);
}

int log_errno(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(LOG_LEVEL_ERR, r < 0 ? -r : r, fmt, ap);
	va_end(ap);
	return r;
}
