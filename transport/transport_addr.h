/* SPDX-License-Identifier: MIT */
/* transport_addr: numeric addresses as sockaddrs, for the transport's listeners and peers. */
#pragma once

#include <stdint.h>
#include <sys/socket.h>

/*
 * A numeric IPv4 or IPv6 address (without brackets) and a port as a
 * sockaddr in *@ss, its length in *@len. 0, or -EINVAL when @addr is
 * neither (or NULL).
 */
int transport_sockaddr(const char *addr, uint16_t port, struct sockaddr_storage *ss,
		       socklen_t *len);
