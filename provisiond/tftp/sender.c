/*
 * The TFTP sender: moves the blocks of one read transfer, lock-step (RFC 1350) or in windows
 * (RFC 7440), from its first packet to its last ACK.
 *
 * Why C: every window (in lock-step, every block) is a round trip with the client, so the
 * server's cost per round trip is what a boot storm pays. Measured on loopback with atftp
 * clients (docs/tftp.md), one Python epoll loop for all transfers stayed behind in.tftpd, a
 * Python process per transfer was level with it, and this loop, one thread per transfer with
 * the GIL released (ctypes), is ahead. It does no policy: the Python server parses the
 * request, confines the path, negotiates the options, opens the content and connects the
 * socket; this file only moves blocks and reports how the transfer ended.
 * provisiond/tftp/native.py loads it. No Python API is used, so it builds with a C compiler
 * alone (hatch_build.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* Linux >= 4.18 */
#endif

enum send_outcome {
    TS_OK = 0,           /* the final block was acknowledged */
    TS_TIMEOUT = 1,      /* no progress after `retries` retransmissions */
    TS_CLIENT_ERROR = 2, /* the client sent an ERROR packet */
    TS_OS_ERROR = 3,     /* a system call failed: errno in `error` */
    TS_STOPPED = 4,      /* the server asked the transfer to stop */
};

struct send_result {
    int64_t acked;       /* number of the last acknowledged block (0: none) */
    int64_t retransmits; /* blocks (or OACKs) sent again */
    int32_t error;       /* errno, for TS_OS_ERROR */
    int32_t client_code; /* the client's TFTP error code, for TS_CLIENT_ERROR */
    int32_t gso_refused; /* UDP GSO failed with this errno; blocks went one per datagram */
    char client_message[256];
};

/* One pread serves many small blocks. Not more: with 256 KiB, one client at 65464-byte blocks
 * ran at 0.7x to 0.9x of in.tftpd (which reads each block as it sends it), with 64 KiB at
 * 1.0x to 1.3x (bench/tftp). */
#define READ_AHEAD (64 * 1024)
#define RECV_MAX 1024
#define MAX_BATCH 64 /* the kernel's UDP_MAX_SEGMENTS */

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

/*
 * The content: memory, or a file read into two slots, each large enough for a whole window.
 * The window in flight stays in its slot (a resend needs it) while the next window is read
 * into the other one, before the sender waits for the ACK: like in.tftpd's read-ahead, the
 * read overlaps the client's turn instead of delaying the next send.
 */
struct slot {
    unsigned char *buf;  /* malloc'd; the data starts at buf + DATA_SKEW */
    int64_t offset, len; /* file offset and length of the data held */
};

/* The kernel copies a datagram's payload to just after the 4-byte TFTP header, so data read
 * 4 bytes past an aligned address keeps source and destination equally aligned: a 64 KiB
 * copy from a source 4 bytes off cost several times as much (perf: _copy_from_iter). */
#define DATA_SKEW 4

struct source {
    int fd;
    const unsigned char *mem;
    int64_t size;
    int32_t blksize;
    int64_t capacity; /* bytes per slot, whole blocks */
    struct slot slots[2];
};

static int64_t block_offset(const struct source *src, int64_t block) {
    return (block - 1) * (int64_t)src->blksize;
}

static size_t block_len(const struct source *src, int64_t block) {
    int64_t left = src->size - block_offset(src, block);
    return (size_t)(left > src->blksize ? src->blksize : (left < 0 ? 0 : left));
}

/* The slot that holds all of `block`, or -1. */
static int slot_of(const struct source *src, int64_t block) {
    int64_t start = block_offset(src, block), stop = start + (int64_t)block_len(src, block);
    for (int i = 0; i < 2; i++) {
        const struct slot *slot = &src->slots[i];
        if (slot->buf != NULL && start >= slot->offset && stop <= slot->offset + slot->len)
            return i;
    }
    return -1;
}

/* Read the file into slot i from the start of `block`; -1 with errno on failure. */
static int fill_slot(struct source *src, int i, int64_t block) {
    struct slot *slot = &src->slots[i];
    int64_t start = block_offset(src, block), got = 0;
    slot->len = 0; /* nothing valid while it is being refilled */
    while (got < src->capacity) {
        ssize_t n = pread(src->fd, slot->buf + DATA_SKEW + got, (size_t)(src->capacity - got),
                          start + got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += n;
    }
    slot->offset = start;
    slot->len = got;
    return 0;
}

static int all_loaded(const struct source *src, int64_t first, int64_t last) {
    for (int64_t block = first; block <= last; block++)
        if (slot_of(src, block) < 0)
            return 0;
    return 1;
}

/* Make blocks first..last readable with block_data(); -1 with errno on failure. */
static int load_blocks(struct source *src, int64_t first, int64_t last) {
    if (src->mem != NULL || all_loaded(src, first, last))
        return 0;
    /* Read the whole window (a slot holds one) into the slot that does not hold what comes
     * after it, which read_ahead() may have fetched already. */
    int i = slot_of(src, last + 1) == 0 ? 1 : 0;
    if (fill_slot(src, i, first) < 0)
        return -1;
    if (!all_loaded(src, first, last)) {
        errno = ENODATA; /* the file shrank under the transfer (server.py: SHRANK) */
        return -1;
    }
    return 0;
}

/* After sending first..last, read the next window ahead if it is not in a slot yet and a
 * slot is free of the window in flight. A failed read is left to load_blocks() to report. */
static void read_ahead(struct source *src, int64_t first, int64_t last, int64_t next_last) {
    if (src->mem != NULL || last >= next_last)
        return;
    int64_t block = last + 1;
    while (block <= next_last && slot_of(src, block) >= 0)
        block++;
    if (block > next_last)
        return;
    for (int i = 0; i < 2; i++) {
        const struct slot *slot = &src->slots[i];
        int64_t start = block_offset(src, first), stop = block_offset(src, last + 1);
        if (slot->len == 0 || stop <= slot->offset || start >= slot->offset + slot->len) {
            if (fill_slot(src, i, block) < 0)
                src->slots[i].len = 0;
            return;
        }
    }
}

static const unsigned char *block_data(const struct source *src, int64_t block) {
    int64_t offset = block_offset(src, block);
    if (src->mem != NULL)
        return src->mem + (block_len(src, block) ? offset : 0);
    const struct slot *slot = &src->slots[slot_of(src, block)];
    return slot->buf + DATA_SKEW + (offset - slot->offset);
}

/*
 * Send blocks first..last: `batch` blocks per sendmsg() with UDP GSO (the kernel cuts the
 * buffer into one datagram per block; only the file's final block may be short, and it is
 * always last), else one datagram per block. Returns 0, or -1 with errno.
 */
static int send_blocks(int sock, const struct source *src, int64_t first, int64_t last,
                       int32_t *batch, struct send_result *res) {
    unsigned char heads[MAX_BATCH][4];
    struct iovec iov[2 * MAX_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control;
    int64_t block = first;
    while (block <= last) {
        int64_t count = last - block + 1;
        if (count > *batch)
            count = *batch;
        for (int64_t i = 0; i < count; i++) {
            int64_t number = block + i;
            heads[i][0] = 0;
            heads[i][1] = 3;
            heads[i][2] = (unsigned char)((number >> 8) & 0xFF);
            heads[i][3] = (unsigned char)(number & 0xFF);
            iov[2 * i].iov_base = heads[i];
            iov[2 * i].iov_len = 4;
            iov[2 * i + 1].iov_base = (void *)block_data(src, number);
            iov[2 * i + 1].iov_len = block_len(src, number);
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)(2 * count)};
        if (count > 1) {
            memset(&control, 0, sizeof control);
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof control.buf;
            struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
            cmsg->cmsg_level = SOL_UDP;
            cmsg->cmsg_type = UDP_SEGMENT;
            cmsg->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t segment = (uint16_t)(src->blksize + 4);
            memcpy(CMSG_DATA(cmsg), &segment, sizeof segment);
        }
        if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOBUFS || errno == EAGAIN)
                return 0; /* lost like any datagram: the timer resends the window */
            if (count > 1 && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT ||
                              errno == EOPNOTSUPP || errno == EMSGSIZE)) {
                res->gso_refused = errno; /* no GSO here: one datagram per block from now */
                *batch = 1;
                continue;
            }
            return -1;
        }
        block += count;
    }
    return 0;
}

/*
 * Run one read transfer to its end. `sock` is connected to the client and blocking; `oack`
 * (may be empty) is sent first and must be acknowledged with ACK 0. Content is `mem` (if not
 * NULL) or the file `fd`, `size` bytes. Windows of `windowsize` blocks (1: lock-step); an ACK
 * inside a window means the rest was lost: the next window starts after it. A duplicate or
 * stale ACK is never answered (the sorcerer's apprentice): only the timer resends. Block
 * numbers roll over past 65535. The caller stops a running transfer by setting *stop and
 * shutting the socket down.
 */
int tftp_send(int sock, int fd, const unsigned char *mem, int64_t size, int32_t blksize,
              int32_t windowsize, int32_t gso_batch, const unsigned char *oack,
              int32_t oack_len, int32_t timeout_ms, int32_t retries,
              const volatile int32_t *stop, struct send_result *res) {
    memset(res, 0, sizeof *res);
    struct source src = {.fd = fd, .mem = mem, .size = size, .blksize = blksize};
    if (windowsize < 1)
        windowsize = 1;
    int32_t batch = gso_batch < 1 ? 1 : (gso_batch > MAX_BATCH ? MAX_BATCH : gso_batch);
    if (mem == NULL) {
        int64_t window_bytes = (int64_t)windowsize * blksize;
        src.capacity = window_bytes > READ_AHEAD ? window_bytes
                                                 : (READ_AHEAD / blksize) * (int64_t)blksize;
        if (src.capacity < blksize)
            src.capacity = blksize;
        for (int i = 0; i < 2; i++) {
            src.slots[i].buf = malloc((size_t)(src.capacity + DATA_SKEW));
            if (src.slots[i].buf == NULL) {
                free(src.slots[0].buf);
                res->error = ENOMEM;
                return TS_OS_ERROR;
            }
        }
    }
    const int64_t last = size / blksize + 1; /* the final block is short, maybe empty */
    int in_oack = oack_len > 0;
    int64_t acked = 0, end = 0;
    int32_t tries = 0;
    int outcome = -1;
    unsigned char pkt[RECV_MAX];

    if (set_recv_timeout(sock, timeout_ms) < 0) {
        res->error = errno;
        outcome = TS_OS_ERROR;
    }
    while (outcome < 0) {
        /* Send the OACK, or the window after the last acknowledged block. */
        int failed;
        if (in_oack) {
            failed = send(sock, oack, (size_t)oack_len, MSG_NOSIGNAL) < 0 && errno != EINTR &&
                     errno != ENOBUFS && errno != EAGAIN;
        } else {
            end = acked + windowsize < last ? acked + windowsize : last;
            failed = load_blocks(&src, acked + 1, end) < 0 ||
                     send_blocks(sock, &src, acked + 1, end, &batch, res) < 0;
            if (!failed)
                read_ahead(&src, acked + 1, end,
                           end + windowsize < last ? end + windowsize : last);
        }
        if (failed) {
            if (*stop) {
                outcome = TS_STOPPED;
            } else {
                res->error = errno;
                outcome = TS_OS_ERROR;
            }
            break;
        }
        /* Wait for an ACK that moves the transfer forward. */
        int64_t deadline = now_ms() + timeout_ms;
        int shortened = 0; /* the receive timeout was cut to what is left of the deadline */
        for (;;) {
            ssize_t n = recv(sock, pkt, sizeof pkt, 0);
            if (*stop) {
                outcome = TS_STOPPED;
                break;
            }
            if (n < 0 && errno == EINTR)
                continue;
            int expired = 0;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                expired = 1;
            } else if (n < 0) {
                res->error = errno;
                outcome = TS_OS_ERROR;
                break;
            } else if (n == 4 && pkt[0] == 0 && pkt[1] == 4) {
                int64_t number = (pkt[2] << 8) | pkt[3];
                if (in_oack && number == 0) {
                    in_oack = 0;
                    tries = 0;
                    break; /* send the first window */
                }
                int64_t delta = (number - acked) & 0xFFFF;
                if (!in_oack && delta > 0 && delta <= end - acked) {
                    acked += delta;
                    tries = 0;
                    if (acked >= last)
                        outcome = TS_OK;
                    else if (acked < end) /* the client saw a gap: go back (RFC 7440) */
                        res->retransmits += end - acked;
                    break; /* send the next window */
                }
            } else if (n >= 4 && pkt[0] == 0 && pkt[1] == 5) {
                res->client_code = (pkt[2] << 8) | pkt[3];
                size_t len = strnlen((const char *)pkt + 4, (size_t)n - 4);
                if (len >= sizeof res->client_message)
                    len = sizeof res->client_message - 1;
                memcpy(res->client_message, pkt + 4, len);
                res->client_message[len] = '\0';
                outcome = TS_CLIENT_ERROR;
                break;
            }
            /* A duplicate or stale ACK, or junk from the client's port: keep waiting, but
             * only until the deadline of what we sent. */
            int64_t left = deadline - now_ms();
            if (!expired && left > 0) {
                if (set_recv_timeout(sock, left) == 0)
                    shortened = 1;
                continue;
            }
            if (++tries > retries) {
                outcome = TS_TIMEOUT;
                break;
            }
            res->retransmits += in_oack ? 1 : end - acked;
            break; /* resend */
        }
        if (shortened && outcome < 0 && set_recv_timeout(sock, timeout_ms) < 0) {
            res->error = errno;
            outcome = TS_OS_ERROR;
        }
    }
    res->acked = acked;
    free(src.slots[0].buf);
    free(src.slots[1].buf);
    return outcome;
}
