/* SPDX-License-Identifier: MIT */
/*
 * transport_ucx_status: see transport_ucx_status.h. The daemon decides what
 * to do with a peer from the errno (retry a timeout, forget a refused peer),
 * so the mapping keeps UCX's distinctions wherever errno has a match.
 */
#include "transport_ucx_status.h"

#include <errno.h>

int transport_ucx_errno(ucs_status_t status)
{
	switch (status) {
	case UCS_OK:
		return 0;
	case UCS_INPROGRESS:
		return -EINPROGRESS;
	case UCS_ERR_NO_MESSAGE:
		return -ENOMSG;
	case UCS_ERR_NO_RESOURCE:
		return -EAGAIN;
	case UCS_ERR_IO_ERROR:
		return -EIO;
	case UCS_ERR_NO_MEMORY:
		return -ENOMEM;
	case UCS_ERR_INVALID_PARAM:
		return -EINVAL;
	case UCS_ERR_UNREACHABLE:
		return -EHOSTUNREACH;
	case UCS_ERR_INVALID_ADDR:
		return -EADDRNOTAVAIL;
	case UCS_ERR_NOT_IMPLEMENTED:
		return -ENOSYS;
	case UCS_ERR_MESSAGE_TRUNCATED:
	case UCS_ERR_BUFFER_TOO_SMALL:
		return -EMSGSIZE;
	case UCS_ERR_NO_ELEM:
		return -ENOENT;
	case UCS_ERR_NO_DEVICE:
		return -ENODEV;
	case UCS_ERR_BUSY: /* also a listener's port in use (EADDRINUSE) */
		return -EBUSY;
	case UCS_ERR_CANCELED:
		return -ECANCELED;
	case UCS_ERR_ALREADY_EXISTS:
		return -EEXIST;
	case UCS_ERR_OUT_OF_RANGE:
		return -ERANGE;
	case UCS_ERR_TIMED_OUT:
	case UCS_ERR_ENDPOINT_TIMEOUT:
		return -ETIMEDOUT;
	case UCS_ERR_EXCEEDS_LIMIT:
		return -ENOBUFS;
	case UCS_ERR_UNSUPPORTED:
		return -EOPNOTSUPP;
	case UCS_ERR_REJECTED:
		return -ECONNREFUSED;
	case UCS_ERR_NOT_CONNECTED:
		return -ENOTCONN;
	case UCS_ERR_CONNECTION_RESET:
		return -ECONNRESET;
	default:
		break;
	}
	/* the ranges UCX reserves for transport failures, below the named codes */
	if (status <= UCS_ERR_FIRST_LINK_FAILURE && status >= UCS_ERR_LAST_LINK_FAILURE)
		return -ENOLINK;
	if (status <= UCS_ERR_FIRST_ENDPOINT_FAILURE && status >= UCS_ERR_LAST_ENDPOINT_FAILURE)
		return -ECONNRESET;
	return -EIO;
}
