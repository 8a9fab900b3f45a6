/* rtpgen: G.711 RTP load generator and receiver for the `rtp` benchmark (tools/bench/rtp.py).
 *
 * For each of N calls it owns two UDP sockets on 127.0.0.1, the two phones of the call. Every
 * phone sends one 160-octet PCMU packet (RFC 3551 §4.5.14, PT 0, 20 ms) every 20 ms, so each call
 * carries 50 packets/s each way. The 2N sends of a 20 ms tick are spread evenly over the tick.
 * Each packet has a proper RTP header (RFC 3550 §5.1: seq, timestamp, SSRC per stream) and carries
 * in its payload the send time (CLOCK_MONOTONIC ns), the sender's socket index and its packet
 * index, so the receiving phone measures loss per stream and one-way latency.
 *
 * Modes:
 *   -m relay   phone a of call i sends to relay port ra_i and phone b to rb_i, read from stdin
 *              as N lines "ra rb" after the phones' ports are printed; each phone's socket is
 *              connect()ed to its relay port (the relay answers from the port it latched on).
 *   -m direct  phone a sends straight to phone b and back: the generator's own ceiling and
 *              loopback baseline latency, with no system under test.
 *
 * Output on stdout, one JSON object a line: {"phones": [[pa, pb], ...]}, then {"event":
 * "measure"} when the measured window starts (after warm-up), {"event": "end"} when sending stops,
 * and the result once the in-flight packets are drained.
 *
 * Build: cc -O2 -o rtpgen tools/bench/rtpgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PTIME_NS 20000000ULL   /* 20 ms packetization (RFC 3551 §4.5.14 default for PCMU) */
#define SAMPLES 160            /* 8000 Hz * 20 ms */
#define HDR 12                 /* RFC 3550 §5.1 fixed header, no CSRC */
#define MARK 0x52545047u       /* "RTPG": our payload magic */
#define HIST_US 200000         /* latency histogram: 1 µs buckets up to 200 ms, then overflow */
#define BATCH 16
#define MAX_EVENTS 512

struct stream { /* what one phone receives: the other phone's stream */
    uint64_t received;   /* in-window packets, first copy */
    uint64_t dupes;
    uint64_t reordered;  /* arrived after a later packet of the same stream */
    int64_t last_k;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static uint32_t xorshift(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int wait_events(int epfd, struct epoll_event *evs, uint64_t timeout_ns) {
    static int have_pwait2 = 1;
    struct timespec ts = {(time_t)(timeout_ns / 1000000000ULL), (long)(timeout_ns % 1000000000ULL)};
    if (have_pwait2) {
        int n = epoll_pwait2(epfd, evs, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        have_pwait2 = 0;
    }
    /* Kernels before 5.11: ppoll on the epoll fd has ns timeouts, epoll_wait(0) collects. */
    struct pollfd p = {epfd, POLLIN, 0};
    int r = ppoll(&p, 1, &ts, NULL);
    if (r <= 0)
        return r;
    return epoll_wait(epfd, evs, MAX_EVENTS, 0);
}

static uint64_t percentile(const uint32_t *hist, uint64_t total, double q, uint64_t max_us) {
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total)
        want = total - 1;
    uint64_t acc = 0;
    for (uint64_t i = 0; i <= HIST_US; i++) {
        acc += hist[i];
        if (acc > want)
            return i < HIST_US ? i : max_us;
    }
    return max_us;
}

static void usage(void) {
    fprintf(stderr,
            "usage: rtpgen -n CALLS [-m relay|direct] [-w WARMUP_S] [-d DURATION_S] [-r PPS]\n"
            "              [-q QUANTUM_US] [-D DRAIN_MS] [-s]\n");
    exit(2);
}

int main(int argc, char **argv) {
    long calls = 0;
    int direct = 0;
    double warmup_s = 3.0, duration_s = 20.0;
    long rate = 50;          /* packets per second per stream: 50 = 20 ms ptime */
    long quantum_us = 50;    /* sends due within this much are batched in one wake-up */
    long drain_ms = 500;
    int spin = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:m:w:d:r:q:D:s")) != -1) {
        switch (opt) {
        case 'n': calls = atol(optarg); break;
        case 'm':
            if (strcmp(optarg, "direct") == 0) direct = 1;
            else if (strcmp(optarg, "relay") == 0) direct = 0;
            else usage();
            break;
        case 'w': warmup_s = atof(optarg); break;
        case 'd': duration_s = atof(optarg); break;
        case 'r': rate = atol(optarg); break;
        case 'q': quantum_us = atol(optarg); break;
        case 'D': drain_ms = atol(optarg); break;
        case 's': spin = 1; break;
        default: usage();
        }
    }
    if (calls <= 0 || rate <= 0 || duration_s <= 0 || warmup_s < 0)
        usage();

    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* ns-precise wake-ups for the send schedule */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    const long nsock = 2 * calls;
    const uint64_t tick_ns = 1000000000ULL / (uint64_t)rate;
    const uint64_t warm_ticks = (uint64_t)(warmup_s * rate + 0.5);
    const uint64_t meas_ticks = (uint64_t)(duration_s * rate + 0.5);
    const uint64_t total_slots = (uint64_t)nsock * (warm_ticks + meas_ticks);
    const uint64_t window_lo = warm_ticks, window_hi = warm_ticks + meas_ticks; /* packet index k */

    int *fds = calloc(nsock, sizeof *fds);
    uint16_t *ports = calloc(nsock, sizeof *ports);
    uint32_t *ssrc = calloc(nsock, sizeof *ssrc);
    uint16_t *seq0 = calloc(nsock, sizeof *seq0);
    uint32_t *ts0 = calloc(nsock, sizeof *ts0);
    struct stream *st = calloc(nsock, sizeof *st);
    uint8_t *seen = calloc((size_t)nsock * ((meas_ticks + 7) / 8), 1);
    uint32_t *hist = calloc(HIST_US + 1, sizeof *hist);
    if (!fds || !ports || !ssrc || !seq0 || !ts0 || !st || !seen || !hist)
        die("calloc");

    int epfd = epoll_create1(0);
    if (epfd < 0)
        die("epoll_create1");
    uint32_t rnd = (uint32_t)now_ns() | 1u;
    for (long j = 0; j < nsock; j++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0)
            die("socket");
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
            die("bind");
        socklen_t al = sizeof a;
        getsockname(fd, (struct sockaddr *)&a, &al);
        fds[j] = fd;
        ports[j] = ntohs(a.sin_port);
        /* RFC 3550 §5.1: random initial seq and timestamp, random SSRC per source. */
        ssrc[j] = xorshift(&rnd);
        seq0[j] = (uint16_t)xorshift(&rnd);
        ts0[j] = xorshift(&rnd);
        st[j].last_k = -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)j};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }

    /* Report the phones' ports; in relay mode learn where to send. */
    fputs("{\"phones\": [", stdout);
    for (long i = 0; i < calls; i++)
        printf("%s[%u, %u]", i ? ", " : "", ports[2 * i], ports[2 * i + 1]);
    fputs("]}\n", stdout);
    fflush(stdout);
    for (long i = 0; i < calls; i++) {
        unsigned ra, rb;
        if (direct) {
            ra = ports[2 * i + 1];
            rb = ports[2 * i];
        } else if (scanf("%u %u", &ra, &rb) != 2) {
            fprintf(stderr, "rtpgen: expected %ld lines of relay ports on stdin\n", calls);
            return 2;
        }
        for (int leg = 0; leg < 2; leg++) {
            struct sockaddr_in d = {.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)(leg ? rb : ra)),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            if (connect(fds[2 * i + leg], (struct sockaddr *)&d, sizeof d) < 0)
                die("connect");
        }
    }

    uint8_t pkt[HDR + SAMPLES];
    memset(pkt, 0xFF, sizeof pkt); /* PCMU silence */
    pkt[0] = 0x80;                 /* V=2, P=0, X=0, CC=0 */
    pkt[1] = 0;                    /* M=0, PT=0 (PCMU) */

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    uint8_t rbuf[BATCH][2048];
    for (int b = 0; b < BATCH; b++) {
        iov[b].iov_base = rbuf[b];
        iov[b].iov_len = sizeof rbuf[b];
        memset(&msgs[b], 0, sizeof msgs[b]);
        msgs[b].msg_hdr.msg_iov = &iov[b];
        msgs[b].msg_hdr.msg_iovlen = 1;
    }
    struct epoll_event evs[MAX_EVENTS];

    uint64_t sent = 0, sent_window = 0, send_errors = 0, late_over_1ms = 0, late_max = 0;
    uint64_t rx_total = 0, rx_window = 0, malformed = 0, misrouted = 0, outside = 0;
    uint64_t lat_n = 0, lat_max = 0, lat_min = UINT64_MAX, overflow = 0;
    double lat_sum = 0;
    uint64_t wakeups = 0;
    const uint64_t quantum = (uint64_t)quantum_us * 1000ULL;
    const uint64_t t0 = now_ns() + 50000000ULL;
    const uint64_t window_start = t0 + warm_ticks * tick_ns;
    int measuring = 0, ended = 0;
    uint64_t end_at = 0, s = 0;
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    const uint64_t started = now_ns();

    for (;;) {
        uint64_t now = now_ns();
        while (s < total_slots) {
            /* Slot s: socket s % nsock at tick s / nsock, offset evenly within the tick. */
            uint64_t due = t0 + (s / nsock) * tick_ns + (s % nsock) * tick_ns / nsock;
            if (due > now)
                break;
            long j = (long)(s % nsock);
            uint64_t k = s / nsock;
            uint16_t seq = htons((uint16_t)(seq0[j] + k));
            uint32_t ts = htonl(ts0[j] + (uint32_t)(k * SAMPLES));
            uint32_t ss = htonl(ssrc[j]);
            memcpy(pkt + 2, &seq, 2);
            memcpy(pkt + 4, &ts, 4);
            memcpy(pkt + 8, &ss, 4);
            uint32_t magic = MARK, src = (uint32_t)j, kk = (uint32_t)k;
            memcpy(pkt + HDR + 8, &magic, 4);
            memcpy(pkt + HDR + 12, &src, 4);
            memcpy(pkt + HDR + 16, &kk, 4);
            uint64_t tx = now_ns();
            memcpy(pkt + HDR, &tx, 8);
            if (send(fds[j], pkt, sizeof pkt, 0) < 0)
                send_errors++;
            sent++;
            if (k >= window_lo && k < window_hi)
                sent_window++;
            uint64_t late = tx - due;
            if (late > late_max)
                late_max = late;
            if (late > 1000000ULL)
                late_over_1ms++;
            s++;
            now = tx;
        }
        if (!measuring && now >= window_start) {
            measuring = 1;
            fputs("{\"event\": \"measure\"}\n", stdout);
            fflush(stdout);
        }
        if (s >= total_slots && !ended) {
            ended = 1;
            end_at = now;
            fputs("{\"event\": \"end\"}\n", stdout);
            fflush(stdout);
        }
        if (ended && now >= end_at + (uint64_t)drain_ms * 1000000ULL)
            break;

        uint64_t wake;
        if (s < total_slots)
            wake = t0 + (s / nsock) * tick_ns + (s % nsock) * tick_ns / nsock;
        else
            wake = end_at + (uint64_t)drain_ms * 1000000ULL;
        uint64_t timeout = wake > now ? wake - now : 0;
        if (spin)
            timeout = 0; /* busy-poll: the relay never pays for waking us up */
        else if (timeout < quantum && s < total_slots)
            timeout = quantum;
        int n = wait_events(epfd, evs, timeout);
        wakeups++;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            long j = (long)evs[e].data.u32;
            int got = recvmmsg(fds[j], msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0)
                continue;
            uint64_t rx = now_ns();
            for (int b = 0; b < got; b++) {
                const uint8_t *p = rbuf[b];
                unsigned len = msgs[b].msg_len;
                rx_total++;
                uint32_t magic, src, kk;
                uint64_t tx;
                if (len < HDR + 20 || (p[0] & 0xC0) != 0x80) {
                    malformed++;
                    continue;
                }
                memcpy(&tx, p + HDR, 8);
                memcpy(&magic, p + HDR + 8, 4);
                memcpy(&src, p + HDR + 12, 4);
                memcpy(&kk, p + HDR + 16, 4);
                if (magic != MARK) {
                    malformed++;
                    continue;
                }
                if ((long)src != (j ^ 1)) { /* the relay crossed two calls' streams */
                    misrouted++;
                    continue;
                }
                uint16_t seq;
                memcpy(&seq, p + 2, 2);
                if ((uint16_t)(ntohs(seq) - seq0[src]) != (uint16_t)kk) {
                    malformed++; /* payload index and RTP seq disagree */
                    continue;
                }
                struct stream *sp = &st[j];
                if ((int64_t)kk < sp->last_k)
                    sp->reordered++;
                else
                    sp->last_k = kk;
                if (kk < window_lo || kk >= window_hi) {
                    outside++;
                    continue;
                }
                uint64_t bit = (uint64_t)j * ((meas_ticks + 7) / 8) * 8 + (kk - window_lo);
                if (seen[bit >> 3] & (1u << (bit & 7))) {
                    sp->dupes++;
                    continue;
                }
                seen[bit >> 3] |= (uint8_t)(1u << (bit & 7));
                sp->received++;
                rx_window++;
                uint64_t lat = rx > tx ? rx - tx : 0;
                uint64_t us = lat / 1000;
                if (us >= HIST_US) {
                    us = HIST_US;
                    overflow++;
                }
                hist[us]++;
                lat_n++;
                lat_sum += (double)lat;
                if (lat > lat_max)
                    lat_max = lat;
                if (lat < lat_min)
                    lat_min = lat;
            }
        }
    }

    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    uint64_t expected = (uint64_t)nsock * meas_ticks;
    uint64_t dupes = 0, reordered = 0, worst_lost = 0, streams_with_loss = 0;
    for (long j = 0; j < nsock; j++) {
        dupes += st[j].dupes;
        reordered += st[j].reordered;
        uint64_t lost = meas_ticks - st[j].received;
        if (lost) {
            streams_with_loss++;
            if (lost > worst_lost)
                worst_lost = lost;
        }
    }
    uint64_t lost = expected - rx_window;
    double max_us = (double)lat_max / 1000.0;
    uint64_t max_us_i = (uint64_t)max_us;
    double wall = (double)(end_at - t0) / 1e9;
    double elapsed = (double)(now_ns() - started) / 1e9;
    printf("{\"mode\": \"%s\", \"calls\": %ld, \"streams\": %ld, \"rate_pps\": %ld, "
           "\"warmup_s\": %.3f, \"duration_s\": %.3f, "
           "\"expected\": %llu, \"received\": %llu, \"lost\": %llu, \"loss_pct\": %.5f, "
           "\"streams_with_loss\": %llu, \"worst_stream_loss_pct\": %.3f, "
           "\"duplicates\": %llu, \"reordered\": %llu, \"misrouted\": %llu, \"malformed\": %llu, "
           "\"outside_window\": %llu, "
           "\"latency_us\": {\"min\": %.1f, \"mean\": %.1f, \"p50\": %llu, \"p90\": %llu, "
           "\"p99\": %llu, \"p999\": %llu, \"max\": %.1f, \"over_200ms\": %llu}, "
           "\"send\": {\"packets\": %llu, \"in_window\": %llu, \"errors\": %llu, "
           "\"late_max_us\": %.1f, \"late_over_1ms\": %llu, \"pps\": %.1f}, "
           "\"rx_packets\": %llu, \"wakeups\": %llu, \"cpu_s\": %.3f, \"cpu_pct\": %.1f}\n",
           direct ? "direct" : "relay", calls, nsock, rate, warmup_s, duration_s,
           (unsigned long long)expected, (unsigned long long)rx_window, (unsigned long long)lost,
           expected ? 100.0 * (double)lost / (double)expected : 0.0,
           (unsigned long long)streams_with_loss,
           meas_ticks ? 100.0 * (double)worst_lost / (double)meas_ticks : 0.0,
           (unsigned long long)dupes, (unsigned long long)reordered,
           (unsigned long long)misrouted, (unsigned long long)malformed,
           (unsigned long long)outside,
           lat_n ? (double)lat_min / 1000.0 : 0.0, lat_n ? lat_sum / (double)lat_n / 1000.0 : 0.0,
           (unsigned long long)percentile(hist, lat_n, 0.50, max_us_i),
           (unsigned long long)percentile(hist, lat_n, 0.90, max_us_i),
           (unsigned long long)percentile(hist, lat_n, 0.99, max_us_i),
           (unsigned long long)percentile(hist, lat_n, 0.999, max_us_i), max_us,
           (unsigned long long)overflow,
           (unsigned long long)sent, (unsigned long long)sent_window,
           (unsigned long long)send_errors, (double)late_max / 1000.0,
           (unsigned long long)late_over_1ms, wall > 0 ? (double)sent / wall : 0.0,
           (unsigned long long)rx_total, (unsigned long long)wakeups, cpu,
           elapsed > 0 ? 100.0 * cpu / elapsed : 0.0);
    fflush(stdout);
    return 0;
}
