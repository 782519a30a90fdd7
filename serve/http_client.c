/*
 * A small blocking HTTP/1.1 client with keep-alive, one connection per caller, and an optional
 * overall deadline per request (connect, send and receive): what `loom loadgen` and the
 * remote step of a cascade share.
 */
#include "serve_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

void sv_http_init(sv_http_conn *c, const char *host, const char *port)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    snprintf(c->host, sizeof c->host, "%s", host);
    snprintf(c->port, sizeof c->port, "%s", port);
}

void sv_http_close(sv_http_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->have = 0;
}

/* Wait until FD is ready for EVENTS or DEADLINE (absolute, sv_now; 0: none) passes. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline > 0) {
            double left = deadline - sv_now();
            if (left <= 0)
                return -1;
            ms = (int)(left * 1000) + 1;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0;
        if (r == 0)
            return -1;
        if (errno != EINTR)
            return -1;
    }
}

static int connect_to(sv_http_conn *c, double deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    c->fd = -1;
    c->have = 0;
    if (getaddrinfo(c->host, c->port, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | (deadline > 0 ? SOCK_NONBLOCK : 0),
                    0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int ok = 0;
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0) {
            int e = 0;
            socklen_t el = sizeof e;
            ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0;
        }
        if (!ok) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    return 0;
}

static int write_all(int fd, struct iovec *iov, int n, double deadline)
{
    while (n > 0) {
        if (deadline > 0 && wait_fd(fd, POLLOUT, deadline) != 0)
            return -1;
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static ssize_t read_some(int fd, void *buf, size_t len, double deadline)
{
    for (;;) {
        if (deadline > 0 && wait_fd(fd, POLLIN, deadline) != 0)
            return -1;
        ssize_t r = read(fd, buf, len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        return r;
    }
}

int sv_http_request(sv_http_conn *c, const char *method, const char *path, const void *body,
                    size_t len, size_t header_len, double timeout_s, sv_http_reply *reply)
{
    double deadline = timeout_s > 0 ? sv_now() + timeout_s : 0;
    int want = reply->want_body;
    memset(reply, 0, sizeof *reply);
    reply->want_body = want;
    if (c->fd < 0 && connect_to(c, deadline) != 0)
        return -1;
    char head[1024];
    int hl;
    if (body)
        hl = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\n%s%.0zu%s\r\n", method, path, c->host, c->port,
                      header_len ? "application/octet-stream" : "application/json", len,
                      header_len ? "Inference-Header-Content-Length: " : "", header_len,
                      header_len ? "\r\n" : "");
    else
        hl = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", method, path,
                      c->host, c->port);
    if (hl < 0 || (size_t)hl >= sizeof head) {
        sv_http_close(c);
        return -1;
    }
    struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, body ? len : 0}};
    if (write_all(c->fd, iov, body ? 2 : 1, deadline) != 0) {
        sv_http_close(c);
        return -1;
    }
    /* Headers. */
    char *end = NULL;
    for (;;) {
        if (c->have) {
            c->buf[c->have] = '\0';
            end = strstr(c->buf, "\r\n\r\n");
            if (end)
                break;
        }
        if (c->have >= sizeof c->buf - 1) {
            sv_http_close(c);
            return -1;
        }
        ssize_t r = read_some(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have, deadline);
        if (r <= 0) {
            sv_http_close(c);
            return -1;
        }
        c->have += (size_t)r;
    }
    size_t head_len = (size_t)(end - c->buf) + 4;
    if (sscanf(c->buf, "HTTP/1.%*d %d", &reply->status) != 1) {
        sv_http_close(c);
        return -1;
    }
    size_t clen = 0;
    int close_after = 0;
    for (char *line = strstr(c->buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        if (!strncasecmp(line + 2, "Content-Length:", 15))
            clen = strtoull(line + 17, NULL, 10);
        else if (!strncasecmp(line + 2, "Inference-Header-Content-Length:", 32))
            reply->header_len = strtoull(line + 34, NULL, 10);
        else if (!strncasecmp(line + 2, "Connection: close", 17))
            close_after = 1;
    }
    char *res = reply->want_body ? malloc(clen + 1) : NULL;
    size_t got = c->have - head_len < clen ? c->have - head_len : clen;
    if (res)
        memcpy(res, c->buf + head_len, got);
    size_t rest = c->have - head_len - got;
    memmove(c->buf, c->buf + head_len + got, rest);
    c->have = rest;
    while (got < clen) {
        char tmp[16384];
        size_t want = clen - got < sizeof tmp ? clen - got : sizeof tmp;
        ssize_t r = read_some(c->fd, res ? res + got : tmp, res ? clen - got : want, deadline);
        if (r <= 0) {
            free(res);
            sv_http_close(c);
            return -1;
        }
        got += (size_t)r;
    }
    if (res) {
        res[clen] = '\0';
        reply->body = res;
        reply->len = clen;
    }
    if (close_after)
        sv_http_close(c);
    return 0;
}

int sv_http_parse_url(const char *url, char *host, size_t host_len, char *port, size_t port_len,
                      char *path, size_t path_len)
{
    if (strncmp(url, "http://", 7))
        return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    const char *colon = memchr(h, ':', slash ? (size_t)(slash - h) : strlen(h));
    if (!colon || colon == h)
        return -1;
    size_t hl = (size_t)(colon - h), pl = slash ? (size_t)(slash - colon - 1) : strlen(colon + 1);
    if (hl >= host_len || pl == 0 || pl >= port_len)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    for (size_t k = 0; k < pl; k++)
        if (port[k] < '0' || port[k] > '9')
            return -1;
    if (atoi(port) < 1 || atoi(port) > 65535)
        return -1;
    if ((size_t)snprintf(path, path_len, "%s", slash ? slash : "/") >= path_len)
        return -1;
    return 0;
}
