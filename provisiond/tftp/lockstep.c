/*
 * The TFTP lock-step sender (RFC 1350, windowsize 1): send a block, wait for its ACK, repeat.
 *
 * Why C: in lock-step every block is one round trip, so the server's cost per block is what
 * a busy boot storm pays. Measured on loopback with 20 atftp clients (docs/tftp.md), a Python
 * loop per transfer is level with in.tftpd and a Python epoll loop for all transfers is
 * behind it; this loop, run by one thread per transfer with the GIL released (ctypes),
 * is ahead. It does no policy: the Python server parses the request, confines the path,
 * negotiates the options, opens the content and connects the socket; this file only moves
 * blocks and reports how the transfer ended. provisiond/tftp/native.py loads it.
 *
 * No Python API is used, so it builds with a C compiler alone (hatch_build.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum ls_outcome {
    LS_OK = 0,           /* the final block was acknowledged */
    LS_TIMEOUT = 1,      /* no progress after `retries` retransmissions */
    LS_CLIENT_ERROR = 2, /* the client sent an ERROR packet */
    LS_OS_ERROR = 3,     /* a system call failed: errno in `error` */
    LS_STOPPED = 4,      /* the server asked the transfer to stop */
};

struct ls_result {
    int64_t acked;       /* number of the last acknowledged block (0: none) */
    int64_t retransmits; /* packets sent again after a timeout */
    int32_t error;       /* errno, for LS_OS_ERROR */
    int32_t client_code; /* the client's TFTP error code, for LS_CLIENT_ERROR */
    char client_message[256];
};

#define READ_AHEAD (256 * 1024) /* one pread serves many blocks */
#define RECV_MAX 1024

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_recv_timeout(int sock, int64_t ms) {
    if (ms < 1)
        ms = 1; /* 0 would mean "wait forever" */
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Where block `block` (1-based) of the content lies; file content is read ahead in chunks. */
struct source {
    int fd;
    const unsigned char *mem;
    int64_t size;
    int32_t blksize;
    unsigned char *chunk;
    int64_t chunk_offset, chunk_len, chunk_capacity;
};

static int block_payload(struct source *src, int64_t block, const unsigned char **data,
                         size_t *len) {
    int64_t offset = (block - 1) * (int64_t)src->blksize;
    int64_t want = src->size - offset;
    if (want > src->blksize)
        want = src->blksize;
    if (want < 0)
        want = 0;
    *len = (size_t)want;
    if (src->mem != NULL || want == 0) {
        *data = src->mem != NULL ? src->mem + offset : (const unsigned char *)"";
        return 0;
    }
    if (offset < src->chunk_offset || offset + want > src->chunk_offset + src->chunk_len) {
        int64_t got = 0;
        while (got < src->chunk_capacity) {
            ssize_t n = pread(src->fd, src->chunk + got, (size_t)(src->chunk_capacity - got),
                              offset + got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            got += n;
        }
        src->chunk_offset = offset;
        src->chunk_len = got;
        if (got < want) { /* the file shrank under the transfer (server.py: SHRANK) */
            errno = ENODATA;
            return -1;
        }
    }
    *data = src->chunk + (offset - src->chunk_offset);
    return 0;
}

/*
 * Run one read transfer to its end. `sock` is connected to the client and blocking; `oack`
 * (may be empty) is sent first and must be acknowledged with ACK 0. Content is `mem` (if not
 * NULL) or the file `fd`, `size` bytes. A duplicate or stale ACK is never answered (the
 * sorcerer's apprentice): only the timer resends. Block numbers roll over past 65535.
 * The caller stops a running transfer by setting *stop and shutting the socket down.
 */
int ls_run(int sock, int fd, const unsigned char *mem, int64_t size, int32_t blksize,
           const unsigned char *oack, int32_t oack_len, int32_t timeout_ms, int32_t retries,
           const volatile int32_t *stop, struct ls_result *res) {
    memset(res, 0, sizeof *res);
    struct source src = {.fd = fd, .mem = mem, .size = size, .blksize = blksize};
    if (mem == NULL) {
        int64_t per = READ_AHEAD / blksize;
        src.chunk_capacity = (per < 1 ? 1 : per) * (int64_t)blksize;
        src.chunk = malloc((size_t)src.chunk_capacity);
        if (src.chunk == NULL) {
            res->error = ENOMEM;
            return LS_OS_ERROR;
        }
    }
    const int64_t last = size / blksize + 1; /* the final block is short, maybe empty */
    int in_oack = oack_len > 0;
    int64_t acked = 0;
    int32_t tries = 0;
    int outcome = -1;
    unsigned char head[4] = {0, 3, 0, 0};
    unsigned char pkt[RECV_MAX];
    struct iovec iov[2];
    struct msghdr msg = {.msg_iov = iov};

    if (set_recv_timeout(sock, timeout_ms) < 0) {
        res->error = errno;
        outcome = LS_OS_ERROR;
    }
    while (outcome < 0) {
        /* Send the current packet: the OACK, or the block after the last acknowledged. */
        if (in_oack) {
            iov[0].iov_base = (void *)oack;
            iov[0].iov_len = (size_t)oack_len;
            msg.msg_iovlen = 1;
        } else {
            int64_t block = acked + 1;
            const unsigned char *data;
            size_t len;
            if (block_payload(&src, block, &data, &len) < 0) {
                res->error = errno;
                outcome = LS_OS_ERROR;
                break;
            }
            head[2] = (unsigned char)((block >> 8) & 0xFF);
            head[3] = (unsigned char)(block & 0xFF);
            iov[0].iov_base = head;
            iov[0].iov_len = 4;
            iov[1].iov_base = (void *)data;
            iov[1].iov_len = len;
            msg.msg_iovlen = 2;
        }
        if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno != EINTR && errno != ENOBUFS &&
            errno != EAGAIN) { /* those three: the datagram is lost, the timer resends it */
            if (*stop) {
                outcome = LS_STOPPED;
            } else {
                res->error = errno;
                outcome = LS_OS_ERROR;
            }
            break;
        }
        /* Wait for the ACK that moves the transfer forward. */
        int64_t deadline = now_ms() + timeout_ms;
        int shortened = 0; /* the receive timeout was cut to what is left of the deadline */
        for (;;) {
            ssize_t n = recv(sock, pkt, sizeof pkt, 0);
            if (*stop) {
                outcome = LS_STOPPED;
                break;
            }
            if (n < 0 && errno == EINTR)
                continue;
            int expired = 0;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                expired = 1;
            } else if (n < 0) {
                res->error = errno;
                outcome = LS_OS_ERROR;
                break;
            } else if (n == 4 && pkt[0] == 0 && pkt[1] == 4) {
                int number = (pkt[2] << 8) | pkt[3];
                if (in_oack ? number == 0 : ((number - acked) & 0xFFFF) == 1) {
                    if (in_oack)
                        in_oack = 0;
                    else
                        acked++;
                    tries = 0;
                    if (!in_oack && acked >= last)
                        outcome = LS_OK;
                    break; /* send the next packet */
                }
            } else if (n >= 4 && pkt[0] == 0 && pkt[1] == 5) {
                res->client_code = (pkt[2] << 8) | pkt[3];
                size_t len = strnlen((const char *)pkt + 4, (size_t)n - 4);
                if (len >= sizeof res->client_message)
                    len = sizeof res->client_message - 1;
                memcpy(res->client_message, pkt + 4, len);
                res->client_message[len] = '\0';
                outcome = LS_CLIENT_ERROR;
                break;
            }
            /* A duplicate or stale ACK, or junk from the client's port: keep waiting, but
             * only until the deadline of the packet we sent. */
            int64_t left = deadline - now_ms();
            if (!expired && left > 0) {
                if (set_recv_timeout(sock, left) == 0)
                    shortened = 1;
                continue;
            }
            if (++tries > retries) {
                outcome = LS_TIMEOUT;
                break;
            }
            res->retransmits++;
            break; /* resend the same packet */
        }
        if (shortened && outcome < 0 && set_recv_timeout(sock, timeout_ms) < 0) {
            res->error = errno;
            outcome = LS_OS_ERROR;
        }
    }
    res->acked = acked;
    free(src.chunk);
    return outcome;
}
