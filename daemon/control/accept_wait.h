/* SPDX-License-Identifier: MIT */
/*
 * accept_wait: the blocking accept loop of the threads that serve a
 * listening socket beside the reactor (load_status.c while the experts load,
 * metrics_http.c), each stopped by a write to an eventfd of its own.
 */
#pragma once

/*
 * Wait up to @timeout_ms (-1: no limit) for a connection on @listen_fd or a
 * write to @stop_fd, and accept it (close-on-exec, plus @flags such as
 * SOCK_NONBLOCK). Returns the new fd; -EAGAIN when there is none this time
 * (the wait ran out or was interrupted, the peer left before it was taken,
 * or the process is out of fds: then after a pause of 100 ms, so that a
 * connection left queued is not spun on); -ECANCELED when the thread
 * should end (@stop_fd was written, or poll failed).
 */
int accept_wait(int listen_fd, int stop_fd, int timeout_ms, int flags);
