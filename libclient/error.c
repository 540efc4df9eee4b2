/* SPDX-License-Identifier: MIT */
/*
 * error: moe_strerror(), the text for a libmoe error code. libmoe has no error
 * codes of its own, only errnos, but a few of them mean something specific
 * when libmoe returns them (-EPROTONOSUPPORT is an ABI mismatch, not a socket
 * family problem), and those get their libmoe meaning. Everything else is
 * glibc's description, taken from strerrordesc_np(), which returns constant
 * strings: strerror() may format into a static buffer, which is neither
 * thread-safe nor stable across calls.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "moe.h"

static const struct {
	int err;
	const char *text;
} moe_error_texts[] = {
	{ECONNRESET, "Connection to moed lost (moe_reconnect() attaches to a new daemon)"},
	{EPROTONOSUPPORT, "moed speaks an incompatible ABI version"},
	{EPROTO, "moed sent a malformed reply or corrupted a ring"},
	{EXDEV, "The new daemon's region does not fit the arena's old addresses"},
	{EBUSY, "Another request is still in flight on this client"},
	{E2BIG, "Requested sizes exceed moed's limits"},
	{ESHUTDOWN, "moed is stopping: the batch was not run (resubmit to the next moed)"},
};

MOE_API const char *moe_strerror(int err)
{
	const char *text;

	/* Negative and positive alike; INT_MIN has no positive twin and is no errno. */
	if (err == INT_MIN)
		return "Unknown error";
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(moe_error_texts) / sizeof(moe_error_texts[0]); i++)
		if (moe_error_texts[i].err == err)
			return moe_error_texts[i].text;
	text = strerrordesc_np(err);
	return text ? text : "Unknown error";
}
