/* SPDX-License-Identifier: MIT */
/*
 * ctl_reply: sending moed's replies on the control socket (moe_proto.h),
 * for the reactor and for the responder that answers while moed loads.
 */
#pragma once

#include <stddef.h>

/*
 * Send one message with up to 3 fds (-EINVAL for more); never blocks (a
 * fresh SEQPACKET socket has room for one). 0 or -errno.
 */
int ctl_send_with_fds(int fd, void *msg, size_t len, const int *fds, unsigned n_fds);

/*
 * STATUS_REPLY: with @status 0, @json (@len bytes) in a sealed memfd
 * attached; a failure to make it is sent as the reply's status instead.
 * With @status < 0, that status and no fd. 0 or -errno of the send.
 */
int ctl_send_status(int fd, int status, const char *json, size_t len);
