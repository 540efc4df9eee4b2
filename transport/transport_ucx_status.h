/* SPDX-License-Identifier: MIT */
/*
 * transport_ucx_status: UCX's status codes as -errno, written once so that
 * every error the transport returns or reports means the same thing.
 */
#pragma once

#include <ucs/type/status.h>

/*
 * 0 for UCS_OK, -errno for a failure (-EIO when nothing closer fits).
 * UCS_INPROGRESS is not a result: -EINPROGRESS, for a caller that passes it
 * by mistake.
 */
int transport_ucx_errno(ucs_status_t status);
