/* _fastpath: the RTP relay's per-packet forwarding in a native thread, without the GIL.
 *
 * The C half of gateway/media/fastpath.py, used by gateway/media/relay.py. One Engine per
 * MediaRelay owns the RTP sockets of all its sessions (the RTCP sockets stay in Python). A worker
 * thread, started with the first pair, waits on one epoll set over every RTP socket; on readiness
 * it drains the socket with recvmmsg(2) and sends each packet out of the other leg's socket with
 * sendmmsg(2). Per leg it does what relay.py's _RtpProtocol.datagram_received does, in the same
 * order: the V=2 / 12-octet check, RFC 4961 latching, RFC 3550 receive statistics (Appendix A.1,
 * A.3, A.8, the algorithm of gateway/media/stats.py), PCMU⇄PCMA with a 256-octet table, RFC 4733
 * payload-type rewrite, and the counters. Telephone-event packets are also copied, as
 * (pair, leg, timestamp, event, end, duration, marker, time) records, into a ring that Python
 * drains when the eventfd `notify_fd` becomes readable, so the DtmfDetector stays in Python.
 *
 * Cost per packet is mostly the kernel's: one recvmmsg and one sendmmsg per readiness, so after a
 * round that found work the worker pauses `coalesce_us` (default 100 µs) for the next round to
 * serve many sockets per wake-up; arrival times come from SO_TIMESTAMPNS, so the statistics do
 * not see the pause. Under a real-time policy the worker runs one priority above the creating
 * (Python) thread, with a priority-inheritance mutex.
 *
 * Locking: one mutex per engine. The worker holds it while it drains one socket (recvmmsg,
 * forwarding, sendmmsg); Python holds it to configure, read or remove a pair. A removed pair is
 * taken out of epoll and its sockets closed under the mutex, so no send ever uses a closed or
 * reused descriptor; its memory goes to a graveyard the worker frees before its next epoll_wait,
 * when no epoll event still points at it. The worker never touches a Python object.
 *
 * Linux only (epoll, recvmmsg, sendmmsg, eventfd): elsewhere the module has no Engine and
 * AVAILABLE is False, and relay.py relays in Python.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>

#ifdef __linux__

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 64
#define DEFAULT_BATCH 32
#define DRAIN_ROUNDS 4          /* recvmmsg calls per readiness before going round the others */
#define MAX_EVENTS 256
#define PKT_MAX 65536           /* the largest UDP datagram: never truncated */
#define RING_SIZE 4096          /* telephone-event records waiting for Python; a power of two */
#define CLOCK_RATE 8000.0       /* G.711 (RFC 3551 §4.5.14): arrival times in timestamp units */
#define DEFAULT_COALESCE_US 100 /* pause after a busy round so the next one finds more work */
#define MAX_COALESCE_US 5000

/* RFC 3550 §A.1 constants */
#define RTP_SEQ_MOD (1 << 16)
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define MIN_SEQUENTIAL 2

/* ------------------------------------------------------------------------------------------ */
/* RFC 3550 receive statistics: a line-by-line port of gateway/media/stats.py ReceiveStats     */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int64_t packets, bytes;
    int64_t base_seq, max_seq, bad_seq, cycles, received;
    int probation; /* -1: no packet seen yet */
    double jitter;
    double transit;
    int has_transit;
    double last_arrival;
    int has_arrival;
} rstats_t;

static void rs_init_source(rstats_t *s, int64_t seq)
{
    /* RFC 3550 A.1: init_seq(s, seq); s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL */
    s->base_seq = seq;
    s->max_seq = (seq - 1) & 0xFFFF;
    s->bad_seq = RTP_SEQ_MOD + 1;
    s->cycles = 0;
    s->received = 0;
    s->probation = MIN_SEQUENTIAL;
}

static void rs_reset(rstats_t *s)
{
    s->base_seq = 0;
    s->max_seq = 0;
    s->bad_seq = RTP_SEQ_MOD + 1; /* RFC 3550 A.1: so seq == bad_seq is false */
    s->cycles = 0;
    s->received = 0;
    s->probation = -1;
    s->jitter = 0.0;
    s->has_transit = 0;
}

/* RFC 3550 A.1 update_seq: 1 if the packet counts as received. */
static int rs_count(rstats_t *s, int64_t seq, int64_t nbytes)
{
    s->packets++;
    s->bytes += nbytes;
    int probation = s->probation;
    if (probation < 0) {
        rs_init_source(s, seq);
        probation = s->probation;
    }
    if (probation) {
        /* source is not valid until MIN_SEQUENTIAL packets in sequence */
        if (seq == ((s->max_seq + 1) & 0xFFFF)) {
            s->probation = probation - 1;
            s->max_seq = seq;
            if (probation == 1) {
                s->base_seq = seq;
                s->cycles = 0;
                s->bad_seq = RTP_SEQ_MOD + 1;
                s->received = 1;
                return 1;
            }
        } else {
            s->probation = MIN_SEQUENTIAL - 1;
            s->max_seq = seq;
        }
        return 0;
    }
    int64_t udelta = (seq - s->max_seq) & 0xFFFF;
    if (udelta < MAX_DROPOUT) {
        if (seq < s->max_seq)
            s->cycles += RTP_SEQ_MOD; /* sequence number wrapped */
        s->max_seq = seq;
    } else if (udelta <= RTP_SEQ_MOD - MAX_MISORDER) {
        /* the sequence number made a very large jump */
        if (seq == s->bad_seq) {
            /* two sequential packets: the other side restarted without telling us */
            s->base_seq = seq;
            s->max_seq = seq;
            s->cycles = 0;
            s->bad_seq = RTP_SEQ_MOD + 1;
            s->received = 0;
            s->has_transit = 0;
        } else {
            s->bad_seq = (seq + 1) & 0xFFFF;
            return 0;
        }
    }
    /* else: duplicate or reordered packet */
    s->received++;
    return 1;
}

/* A media packet: sequence (A.1) and interarrival jitter (A.8); arrival in timestamp units. */
static void rs_update(rstats_t *s, int64_t seq, uint32_t ts, double arrival, int64_t nbytes)
{
    s->last_arrival = arrival;
    s->has_arrival = 1;
    if (!rs_count(s, seq, nbytes))
        return;
    /* RFC 3550 A.8: D = (Rj - Sj) - (Ri - Si); J += (|D| - J) / 16 */
    double transit = arrival - (double)ts;
    int had = s->has_transit;
    double previous = s->transit;
    s->transit = transit;
    s->has_transit = 1;
    if (had) {
        double d = transit - previous;
        if (d < 0)
            d = -d;
        if (d >= 2147483648.0) { /* the 32-bit timestamp wrapped between the two packets */
            d = 4294967296.0 - d;
            if (d < 0)
                d = -d;
        }
        s->jitter += (d - s->jitter) / 16.0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Engine state                                                                               */
/* ------------------------------------------------------------------------------------------ */

struct session;

typedef struct leg {
    struct session *session;
    struct leg *other;
    int index; /* 0: "a", 1: "b" */
    int fd;
    int family;
    /* where the peer's SDP says it receives, where it really sends from (latched), and so
     * where we send: the latched address once known, else the SDP one (RFC 4961) */
    struct sockaddr_storage sdp, latched;
    socklen_t sdp_len, latched_len;
    int has_sdp, has_latched;
    int codec_pt, dtmf_pt; /* -1: none */
    /* forwarding plan for packets received on this leg */
    const uint8_t *xcode;
    int out_pt, out_dtmf_pt;
    /* counters (relay.py RelayLeg) */
    uint64_t packets_in, bytes_in, packets_out, bytes_out, dropped, foreign, send_errors;
    int64_t ssrc; /* -1: none yet */
    double last_rx; /* CLOCK_MONOTONIC seconds, 0: nothing yet */
    rstats_t rs;
} leg_t;

typedef struct session {
    uint64_t id;
    int dead;
    struct session *next_dead;
    leg_t leg[2];
} session_t;

typedef struct {
    uint64_t pair;
    uint32_t timestamp;
    uint16_t duration;
    uint8_t leg, event, end, marker;
    double now;
} dtmf_rec_t;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_t thread;
    int thread_started;
    int stop; /* under lock */
    int closed;
    int epfd, wakefd, notifyfd;
    int batch;
    long coalesce_ns;
    uint8_t ulaw_to_alaw[256], alaw_to_ulaw[256];
    /* pair ids: slot | generation << 32; the slot table is only touched with the GIL held */
    session_t **slots;
    uint32_t *gens;
    uint32_t *free_slots;
    uint32_t nslots, nfree, cap;
    session_t *graveyard; /* under lock */
    dtmf_rec_t ring[RING_SIZE];
    uint32_t ring_head, ring_tail; /* under lock */
    uint64_t ring_overflow;
    /* how long datagrams waited in the sockets before the worker read them (SO_TIMESTAMPNS) */
    uint64_t waited, waited_1ms, waited_5ms;
    double waited_max;
    /* worker buffers */
    uint8_t *buf;
    struct mmsghdr rmsg[MAX_BATCH], smsg[MAX_BATCH];
    struct iovec riov[MAX_BATCH], siov[MAX_BATCH];
    struct sockaddr_storage from[MAX_BATCH];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct timespec))];
    } control[MAX_BATCH];
} Engine;

static double clock_now(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* When the kernel queued the datagram (SO_TIMESTAMPNS, CLOCK_REALTIME), on CLOCK_MONOTONIC:
 * the jitter and last_rx do not depend on how long the worker took to come round. */
static double arrival_time(Engine *e, struct msghdr *h, double mono, double real)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec t;
            memcpy(&t, CMSG_DATA(c), sizeof(t));
            double age = real - ((double)t.tv_sec + (double)t.tv_nsec * 1e-9);
            if (age < 0)
                age = 0;
            if (age >= 1.0)
                return mono; /* a clock step: use the time of reading */
            e->waited++;
            e->waited_1ms += age >= 0.001;
            e->waited_5ms += age >= 0.005;
            if (age > e->waited_max)
                e->waited_max = age;
            return mono - age;
        }
    }
    return mono;
}

static int addr_eq(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b)
{
    (void)alen;
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

static void plan(Engine *e, session_t *s)
{
    for (int i = 0; i < 2; i++) {
        leg_t *src = &s->leg[i], *dst = src->other;
        src->xcode = NULL;
        if (src->codec_pt == 0 && dst->codec_pt == 8)
            src->xcode = e->ulaw_to_alaw;
        else if (src->codec_pt == 8 && dst->codec_pt == 0)
            src->xcode = e->alaw_to_ulaw;
        src->out_pt = dst->codec_pt >= 0 ? dst->codec_pt : (src->codec_pt >= 0 ? src->codec_pt : 0);
        src->out_dtmf_pt = dst->dtmf_pt;
    }
}

static void lock_engine(Engine *e)
{
    /* Called with the GIL held: never wait for the worker while holding it. */
    if (pthread_mutex_trylock(&e->lock) == 0)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&e->lock);
    Py_END_ALLOW_THREADS
}

/* RFC 3550 §5.1/§5.3.1: offset of the payload, -1 if the header runs past the packet. */
static ssize_t payload_offset(const uint8_t *p, size_t n)
{
    if (p[0] == 0x80)
        return 12;
    size_t off = 12 + 4 * (size_t)(p[0] & 0x0F);
    if (p[0] & 0x10) {
        if (n < off + 4)
            return -1;
        off += 4 + 4 * (((size_t)p[off + 2] << 8) | p[off + 3]);
    }
    if (off > n)
        return -1;
    return (ssize_t)off;
}

static void push_dtmf(Engine *e, leg_t *leg, const uint8_t *p, size_t n, double now)
{
    ssize_t off = payload_offset(p, n);
    if (off < 0 || n < (size_t)off + 4)
        return;
    if (e->ring_tail - e->ring_head >= RING_SIZE) {
        e->ring_overflow++;
        return;
    }
    dtmf_rec_t *r = &e->ring[e->ring_tail & (RING_SIZE - 1)];
    r->pair = leg->session->id;
    r->leg = (uint8_t)leg->index;
    r->timestamp = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];
    /* RFC 4733 §2.3: event | E R volume | duration */
    r->event = p[off];
    r->end = (p[off + 1] & 0x80) != 0;
    r->duration = (uint16_t)((p[off + 2] << 8) | p[off + 3]);
    r->marker = (p[1] & 0x80) != 0;
    r->now = now;
    e->ring_tail++;
}

/* One received datagram: 1 when it is to be sent to the other leg's peer (rewritten in place). */
static int forward_one(Engine *e, leg_t *leg, uint8_t *p, size_t n,
                       const struct sockaddr_storage *from, socklen_t fromlen, double now,
                       int *notify)
{
    if (n < 12 || (p[0] & 0xC0) != 0x80) { /* RFC 3550 §5.1: V=2 and a full fixed header */
        leg->dropped++;
        return 0;
    }
    if (!(leg->has_latched && addr_eq(from, fromlen, &leg->latched))) {
        /* RFC 4961 symmetric RTP: the first packet latches; later ones from elsewhere are
         * dropped unless they come from the SDP address, which always wins. */
        if (!leg->has_latched || (leg->has_sdp && addr_eq(from, fromlen, &leg->sdp))) {
            memcpy(&leg->latched, from, sizeof(*from));
            leg->latched_len = fromlen;
            leg->has_latched = 1;
        } else {
            leg->foreign++;
            return 0;
        }
    }
    leg->last_rx = now;
    leg->packets_in++;
    leg->bytes_in += n;
    uint8_t b1 = p[1];
    int64_t seq = ((int64_t)p[2] << 8) | p[3];
    uint32_t ts = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7];
    int64_t ssrc = ((int64_t)p[8] << 24) | ((int64_t)p[9] << 16) | ((int64_t)p[10] << 8) | p[11];
    if (ssrc != leg->ssrc) {
        leg->ssrc = ssrc;
        rs_reset(&leg->rs);
    }
    int pt = b1 & 0x7F;
    if (pt == leg->codec_pt) {
        rs_update(&leg->rs, seq, ts, now * CLOCK_RATE, (int64_t)n);
        const uint8_t *table = leg->xcode;
        if (table != NULL) {
            size_t start = 12, end = n;
            if (p[0] != 0x80) { /* CSRCs, extension or padding (RFC 3550 §5.1, §5.3.1) */
                ssize_t off = payload_offset(p, n);
                if (off < 0) {
                    leg->dropped++;
                    return 0;
                }
                start = (size_t)off;
                if (p[0] & 0x20) {
                    size_t pad = p[n - 1];
                    if (pad == 0 || end < start + pad) {
                        leg->dropped++;
                        return 0;
                    }
                    end -= pad;
                }
            }
            p[1] = (uint8_t)((b1 & 0x80) | leg->out_pt);
            for (size_t i = start; i < end; i++)
                p[i] = table[p[i]];
        }
    } else if (pt == leg->dtmf_pt) {
        rs_count(&leg->rs, seq, (int64_t)n); /* the timestamp is the event start: no jitter */
        push_dtmf(e, leg, p, n, now);
        *notify = 1;
        int out = leg->out_dtmf_pt;
        if (out < 0) {
            leg->dropped++;
            return 0;
        }
        if (out != pt)
            p[1] = (uint8_t)((b1 & 0x80) | out);
    } else {
        rs_count(&leg->rs, seq, (int64_t)n); /* comfort noise and the like pass untouched */
    }
    leg_t *other = leg->other;
    if (!other->has_latched && !other->has_sdp) {
        leg->dropped++;
        return 0;
    }
    return 1;
}

static void drain_leg(Engine *e, leg_t *leg, int *notify)
{
    leg_t *other = leg->other;
    for (int round = 0; round < DRAIN_ROUNDS; round++) {
        for (int i = 0; i < e->batch; i++) {
            e->rmsg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            e->rmsg[i].msg_hdr.msg_control = e->control[i].buf;
            e->rmsg[i].msg_hdr.msg_controllen = sizeof(e->control[i].buf);
            e->rmsg[i].msg_hdr.msg_flags = 0;
        }
        int got = recvmmsg(leg->fd, e->rmsg, (unsigned int)e->batch, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            leg->send_errors++; /* e.g. an ICMP error queued by an earlier send */
            continue;
        }
        int out = 0;
        double mono = clock_now(CLOCK_MONOTONIC), real = clock_now(CLOCK_REALTIME);
        for (int i = 0; i < got; i++) {
            uint8_t *p = e->riov[i].iov_base;
            size_t n = e->rmsg[i].msg_len;
            struct msghdr *rh = &e->rmsg[i].msg_hdr;
            double now = arrival_time(e, rh, mono, real);
            if (!forward_one(e, leg, p, n, &e->from[i], rh->msg_namelen, now, notify))
                continue;
            e->siov[out].iov_base = p;
            e->siov[out].iov_len = n;
            struct msghdr *h = &e->smsg[out].msg_hdr;
            if (other->has_latched) {
                h->msg_name = &other->latched;
                h->msg_namelen = other->latched_len;
            } else {
                h->msg_name = &other->sdp;
                h->msg_namelen = other->sdp_len;
            }
            out++;
        }
        if (*notify) {
            /* Python hears of the telephone-event before the peer gets the packet, so a digit is
             * reported no later than the relayed packets arrive. */
            uint64_t one = 1;
            ssize_t w = write(e->notifyfd, &one, sizeof(one));
            (void)w;
            *notify = 0;
        }
        int i = 0;
        while (i < out) {
            int sent = sendmmsg(other->fd, &e->smsg[i], (unsigned int)(out - i), MSG_DONTWAIT);
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                other->send_errors++; /* this one is lost; carry on with the rest */
                i++;
                continue;
            }
            for (int k = i; k < i + sent; k++) {
                other->packets_out++;
                other->bytes_out += e->smsg[k].msg_len;
            }
            i += sent;
        }
        if (got < e->batch)
            return;
    }
}

static void free_graveyard(session_t *g)
{
    while (g != NULL) {
        session_t *next = g->next_dead;
        PyMem_RawFree(g);
        g = next;
    }
}

static void *worker(void *arg)
{
    Engine *e = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        pthread_mutex_lock(&e->lock);
        session_t *dead = e->graveyard;
        e->graveyard = NULL;
        int stop = e->stop;
        pthread_mutex_unlock(&e->lock);
        free_graveyard(dead); /* no epoll event of an earlier round points at them any more */
        if (stop)
            break;
        int n = epoll_wait(e->epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            leg_t *leg = evs[i].data.ptr;
            if (leg == NULL) {
                uint64_t v;
                ssize_t r = read(e->wakefd, &v, sizeof(v));
                (void)r;
                continue;
            }
            int notify = 0;
            pthread_mutex_lock(&e->lock);
            if (!leg->session->dead && !e->stop)
                drain_leg(e, leg, &notify);
            pthread_mutex_unlock(&e->lock);
        }
        if (n > 0 && e->coalesce_ns > 0) {
            /* Under load, a short pause lets packets gather, so that one wake-up and one
             * epoll_wait serve many of them; an idle relay still forwards the first at once. */
            struct timespec pause = {0, e->coalesce_ns};
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Python interface                                                                           */
/* ------------------------------------------------------------------------------------------ */

static void engine_shutdown(Engine *e);

static int Engine_init(Engine *e, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ulaw_to_alaw", "alaw_to_ulaw", "batch", "coalesce_us", NULL};
    Py_buffer u2a, a2u;
    int batch = DEFAULT_BATCH, coalesce_us = DEFAULT_COALESCE_US;
    if (e->epfd > 0 || e->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*|ii", kwlist, &u2a, &a2u, &batch,
                                     &coalesce_us))
        return -1;
    int bad = u2a.len != 256 || a2u.len != 256;
    if (!bad) {
        memcpy(e->ulaw_to_alaw, u2a.buf, 256);
        memcpy(e->alaw_to_ulaw, a2u.buf, 256);
    }
    PyBuffer_Release(&u2a);
    PyBuffer_Release(&a2u);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "transcoding tables must be 256 octets");
        return -1;
    }
    if (batch < 1 || batch > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "batch must be 1-%d", MAX_BATCH);
        return -1;
    }
    if (coalesce_us < 0 || coalesce_us > MAX_COALESCE_US) {
        PyErr_Format(PyExc_ValueError, "coalesce_us must be 0-%d", MAX_COALESCE_US);
        return -1;
    }
    e->batch = batch;
    e->coalesce_ns = (long)coalesce_us * 1000;
    e->epfd = e->wakefd = e->notifyfd = -1;
    e->buf = malloc((size_t)batch * PKT_MAX); /* mmap'd: only the pages packets touch are used */
    if (e->buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < batch; i++) {
        e->riov[i].iov_base = e->buf + (size_t)i * PKT_MAX;
        e->riov[i].iov_len = PKT_MAX;
        e->rmsg[i].msg_hdr.msg_name = &e->from[i];
        e->rmsg[i].msg_hdr.msg_iov = &e->riov[i];
        e->rmsg[i].msg_hdr.msg_iovlen = 1;
        e->smsg[i].msg_hdr.msg_iov = &e->siov[i];
        e->smsg[i].msg_hdr.msg_iovlen = 1;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->notifyfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (e->epfd < 0 || e->wakefd < 0 || e->notifyfd < 0 ||
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        engine_shutdown(e);
        return -1;
    }
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    /* priority inheritance: the worker may run at a higher real-time priority than Python */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setprotocol(&attr, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(&e->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    e->epfd = e->wakefd = e->notifyfd = -1;
    return (PyObject *)e;
}

static void wake(Engine *e)
{
    uint64_t one = 1;
    if (e->wakefd >= 0) {
        ssize_t w = write(e->wakefd, &one, sizeof(one));
        (void)w;
    }
}

static void close_session_fds(Engine *e, session_t *s)
{
    for (int i = 0; i < 2; i++) {
        leg_t *leg = &s->leg[i];
        if (leg->fd >= 0) {
            if (e->epfd >= 0)
                epoll_ctl(e->epfd, EPOLL_CTL_DEL, leg->fd, NULL);
            close(leg->fd);
            leg->fd = -1;
        }
    }
}

/* Stop the worker, close every socket, free everything; idempotent. GIL held. */
static void engine_shutdown(Engine *e)
{
    if (e->thread_started) {
        pthread_mutex_lock(&e->lock);
        e->stop = 1;
        pthread_mutex_unlock(&e->lock);
        wake(e);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(e->thread, NULL);
        Py_END_ALLOW_THREADS
        e->thread_started = 0;
    }
    for (uint32_t i = 0; i < e->nslots; i++) {
        session_t *s = e->slots ? e->slots[i] : NULL;
        if (s != NULL) {
            close_session_fds(e, s);
            PyMem_RawFree(s);
            e->slots[i] = NULL;
        }
    }
    free_graveyard(e->graveyard);
    e->graveyard = NULL;
    PyMem_Free(e->slots);
    PyMem_Free(e->gens);
    PyMem_Free(e->free_slots);
    e->slots = NULL;
    e->gens = NULL;
    e->free_slots = NULL;
    e->nslots = e->nfree = e->cap = 0;
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->wakefd >= 0)
        close(e->wakefd);
    if (e->notifyfd >= 0)
        close(e->notifyfd);
    e->epfd = e->wakefd = e->notifyfd = -1;
    free(e->buf);
    e->buf = NULL;
    e->closed = 1;
}

static void Engine_dealloc(Engine *e)
{
    engine_shutdown(e);
    pthread_mutex_destroy(&e->lock);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static int check_open(Engine *e)
{
    if (e->closed || e->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the fast-path engine is closed");
        return -1;
    }
    return 0;
}

static session_t *lookup(Engine *e, unsigned long long id)
{
    uint32_t slot = (uint32_t)(id & 0xFFFFFFFFu);
    if (slot < e->nslots && e->slots[slot] != NULL && e->slots[slot]->id == id)
        return e->slots[slot];
    PyErr_Format(PyExc_KeyError, "no fast-path pair %llu", id);
    return NULL;
}

static int start_worker(Engine *e)
{
    sigset_t all, old;
    sigfillset(&all);
    /* the worker inherits a mask that blocks every signal: they stay with Python's thread */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&e->thread, NULL, worker, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    e->thread_started = 1;
    /* Under a real-time policy (e.g. `chrt -f`), forwarding goes one step above the Python thread
     * that configures it, so housekeeping over many sessions never holds packets back. */
    int policy;
    struct sched_param param;
    if (pthread_getschedparam(pthread_self(), &policy, &param) == 0 &&
        (policy == SCHED_FIFO || policy == SCHED_RR) &&
        param.sched_priority < sched_get_priority_max(policy)) {
        param.sched_priority++;
        (void)pthread_setschedparam(e->thread, policy, &param);
    }
    return 0;
}

static PyObject *Engine_add_pair(Engine *e, PyObject *args)
{
    int fds[2];
    if (!PyArg_ParseTuple(args, "ii", &fds[0], &fds[1]) || check_open(e) < 0)
        return NULL;
    int family[2];
    for (int i = 0; i < 2; i++) {
        socklen_t len = sizeof(family[i]);
        if (fds[i] < 0 || getsockopt(fds[i], SOL_SOCKET, SO_DOMAIN, &family[i], &len) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        int on = 1; /* arrival times from the kernel; without them, the time of reading */
        (void)setsockopt(fds[i], SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
    }
    if (e->nfree == 0 && e->nslots == e->cap) {
        uint32_t cap = e->cap ? e->cap * 2 : 64;
        session_t **slots = PyMem_Realloc(e->slots, cap * sizeof(*slots));
        if (slots == NULL)
            return PyErr_NoMemory();
        e->slots = slots;
        uint32_t *gens = PyMem_Realloc(e->gens, cap * sizeof(*gens));
        if (gens == NULL)
            return PyErr_NoMemory();
        e->gens = gens;
        uint32_t *free_slots = PyMem_Realloc(e->free_slots, cap * sizeof(*free_slots));
        if (free_slots == NULL)
            return PyErr_NoMemory();
        e->free_slots = free_slots;
        e->cap = cap;
    }
    session_t *s = PyMem_RawCalloc(1, sizeof(*s));
    if (s == NULL)
        return PyErr_NoMemory();
    uint32_t slot;
    if (e->nfree > 0) {
        slot = e->free_slots[--e->nfree];
    } else {
        slot = e->nslots++;
        e->gens[slot] = 0;
        e->slots[slot] = NULL;
    }
    s->id = (uint64_t)slot | ((uint64_t)e->gens[slot] << 32);
    for (int i = 0; i < 2; i++) {
        leg_t *leg = &s->leg[i];
        leg->session = s;
        leg->other = &s->leg[1 - i];
        leg->index = i;
        leg->fd = fds[i];
        leg->family = family[i];
        leg->codec_pt = leg->dtmf_pt = -1;
        leg->out_dtmf_pt = -1;
        leg->ssrc = -1;
        rs_reset(&leg->rs);
    }
    plan(e, s);
    int failed = 0;
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < 2 && !failed; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->leg[i]};
        if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
            failed = errno;
            if (i == 1)
                epoll_ctl(e->epfd, EPOLL_CTL_DEL, fds[0], NULL);
        }
    }
    pthread_mutex_unlock(&e->lock);
    if (failed) {
        /* nothing of the pair is in epoll: the caller still owns (and closes) the sockets */
        PyMem_RawFree(s);
        e->free_slots[e->nfree++] = slot;
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    e->slots[slot] = s;
    if (!e->thread_started && start_worker(e) < 0) {
        pthread_mutex_lock(&e->lock);
        s->dead = 1;
        for (int i = 0; i < 2; i++)
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, fds[i], NULL);
        pthread_mutex_unlock(&e->lock);
        e->slots[slot] = NULL;
        e->gens[slot]++;
        e->free_slots[e->nfree++] = slot;
        PyMem_RawFree(s);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(s->id);
}

static PyObject *Engine_configure(Engine *e, PyObject *args)
{
    unsigned long long id;
    int index, port, codec_pt, dtmf_pt, reset_latch;
    PyObject *host;
    if (!PyArg_ParseTuple(args, "KiOiiip", &id, &index, &host, &port, &codec_pt, &dtmf_pt,
                          &reset_latch) ||
        check_open(e) < 0)
        return NULL;
    if (index != 0 && index != 1) {
        PyErr_SetString(PyExc_ValueError, "leg index must be 0 or 1");
        return NULL;
    }
    if (codec_pt < -1 || codec_pt > 127 || dtmf_pt < -1 || dtmf_pt > 127 || port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "bad payload type or port");
        return NULL;
    }
    session_t *s = lookup(e, id);
    if (s == NULL)
        return NULL;
    leg_t *leg = &s->leg[index];
    struct sockaddr_storage sdp;
    socklen_t sdp_len = 0;
    memset(&sdp, 0, sizeof(sdp));
    int has_sdp = host != Py_None;
    if (has_sdp) {
        const char *text = PyUnicode_AsUTF8(host);
        if (text == NULL)
            return NULL;
        struct in_addr v4;
        struct in6_addr v6;
        if (inet_pton(AF_INET, text, &v4) == 1) {
            if (leg->family == AF_INET6) { /* RFC 4291 §2.5.5.2 IPv4-mapped */
                struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sdp;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons((uint16_t)port);
                a->sin6_addr.s6_addr[10] = a->sin6_addr.s6_addr[11] = 0xFF;
                memcpy(&a->sin6_addr.s6_addr[12], &v4, 4);
                sdp_len = sizeof(*a);
            } else {
                struct sockaddr_in *a = (struct sockaddr_in *)&sdp;
                a->sin_family = AF_INET;
                a->sin_port = htons((uint16_t)port);
                a->sin_addr = v4;
                sdp_len = sizeof(*a);
            }
        } else if (inet_pton(AF_INET6, text, &v6) == 1) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sdp;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons((uint16_t)port);
            a->sin6_addr = v6;
            sdp_len = sizeof(*a);
        } else {
            PyErr_Format(PyExc_ValueError, "not an IP address: %s", text);
            return NULL;
        }
    }
    lock_engine(e);
    leg->sdp = sdp;
    leg->sdp_len = sdp_len;
    leg->has_sdp = has_sdp;
    if (reset_latch)
        leg->has_latched = 0;
    leg->codec_pt = codec_pt;
    leg->dtmf_pt = dtmf_pt;
    plan(e, s);
    pthread_mutex_unlock(&e->lock);
    Py_RETURN_NONE;
}

static PyObject *address(const struct sockaddr_storage *a)
{
    char text[INET6_ADDRSTRLEN];
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
        return Py_BuildValue("(si)", text, ntohs(v4->sin_port));
    }
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    return Py_BuildValue("(si)", text, ntohs(v6->sin6_port));
}

/* A copy taken under the lock, turned into Python objects after it. */
static PyObject *snapshot(const leg_t *g)
{
    PyObject *latched = g->has_latched ? address(&g->latched) : Py_NewRef(Py_None);
    PyObject *remote = g->has_latched ? address(&g->latched)
                       : g->has_sdp   ? address(&g->sdp)
                                      : Py_NewRef(Py_None);
    PyObject *arrival = g->rs.has_arrival ? PyFloat_FromDouble(g->rs.last_arrival) : Py_NewRef(Py_None);
    if (latched == NULL || remote == NULL || arrival == NULL) {
        Py_XDECREF(latched);
        Py_XDECREF(remote);
        Py_XDECREF(arrival);
        return NULL;
    }
    return Py_BuildValue(
        "(KKKKKKKdNNLLLLLLLLidN)", (unsigned long long)g->packets_in,
        (unsigned long long)g->bytes_in, (unsigned long long)g->packets_out,
        (unsigned long long)g->bytes_out, (unsigned long long)g->dropped,
        (unsigned long long)g->foreign, (unsigned long long)g->send_errors, g->last_rx, latched,
        remote, (long long)g->ssrc, (long long)g->rs.packets, (long long)g->rs.bytes,
        (long long)g->rs.base_seq, (long long)g->rs.max_seq, (long long)g->rs.bad_seq,
        (long long)g->rs.cycles, (long long)g->rs.received, g->rs.probation, g->rs.jitter,
        arrival);
}

static PyObject *Engine_snapshot(Engine *e, PyObject *args)
{
    unsigned long long id;
    int index;
    if (!PyArg_ParseTuple(args, "Ki", &id, &index) || check_open(e) < 0)
        return NULL;
    if (index != 0 && index != 1) {
        PyErr_SetString(PyExc_ValueError, "leg index must be 0 or 1");
        return NULL;
    }
    session_t *s = lookup(e, id);
    if (s == NULL)
        return NULL;
    leg_t copy;
    lock_engine(e);
    copy = s->leg[index];
    pthread_mutex_unlock(&e->lock);
    return snapshot(&copy);
}

static PyObject *Engine_last_rx(Engine *e, PyObject *args)
{
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K", &id) || check_open(e) < 0)
        return NULL;
    session_t *s = lookup(e, id);
    if (s == NULL)
        return NULL;
    lock_engine(e);
    double a = s->leg[0].last_rx, b = s->leg[1].last_rx;
    pthread_mutex_unlock(&e->lock);
    return Py_BuildValue("(dd)", a, b);
}

/* last_rx of every pair: [(pair, a, b), ...], for the once-a-second stall check */
static PyObject *Engine_last_rx_all(Engine *e, PyObject *Py_UNUSED(ignored))
{
    if (check_open(e) < 0)
        return NULL;
    uint32_t count = e->nslots;
    double *times = PyMem_Malloc(sizeof(double) * 2 * (count ? count : 1));
    if (times == NULL)
        return PyErr_NoMemory();
    lock_engine(e);
    for (uint32_t i = 0; i < count; i++) {
        session_t *s = e->slots[i];
        times[2 * i] = s ? s->leg[0].last_rx : 0.0;
        times[2 * i + 1] = s ? s->leg[1].last_rx : 0.0;
    }
    pthread_mutex_unlock(&e->lock);
    PyObject *out = PyList_New(0);
    for (uint32_t i = 0; out != NULL && i < count; i++) {
        session_t *s = e->slots[i];
        if (s == NULL)
            continue;
        PyObject *t = Py_BuildValue("(Kdd)", (unsigned long long)s->id, times[2 * i], times[2 * i + 1]);
        if (t == NULL || PyList_Append(out, t) < 0)
            Py_CLEAR(out);
        Py_XDECREF(t);
    }
    PyMem_Free(times);
    return out;
}

static PyObject *Engine_remove(Engine *e, PyObject *args)
{
    unsigned long long id;
    if (!PyArg_ParseTuple(args, "K", &id) || check_open(e) < 0)
        return NULL;
    session_t *s = lookup(e, id);
    if (s == NULL)
        return NULL;
    leg_t copy[2];
    lock_engine(e);
    s->dead = 1;
    close_session_fds(e, s); /* out of epoll and closed while the worker cannot be sending */
    copy[0] = s->leg[0];
    copy[1] = s->leg[1];
    s->next_dead = e->graveyard;
    e->graveyard = s;
    pthread_mutex_unlock(&e->lock);
    wake(e); /* so the worker frees it soon even when no packet comes */
    uint32_t slot = (uint32_t)(id & 0xFFFFFFFFu);
    e->slots[slot] = NULL;
    e->gens[slot]++;
    e->free_slots[e->nfree++] = slot;
    PyObject *a = snapshot(&copy[0]);
    PyObject *b = a ? snapshot(&copy[1]) : NULL;
    if (b == NULL) {
        Py_XDECREF(a);
        return NULL;
    }
    return Py_BuildValue("(NN)", a, b);
}

static PyObject *Engine_events(Engine *e, PyObject *Py_UNUSED(ignored))
{
    if (check_open(e) < 0)
        return NULL;
    uint64_t v;
    ssize_t r = read(e->notifyfd, &v, sizeof(v)); /* clear the readiness first */
    (void)r;
    dtmf_rec_t recs[256];
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (;;) {
        uint32_t n = 0;
        lock_engine(e);
        while (n < 256 && e->ring_head != e->ring_tail)
            recs[n++] = e->ring[e->ring_head++ & (RING_SIZE - 1)];
        pthread_mutex_unlock(&e->lock);
        for (uint32_t i = 0; i < n; i++) {
            dtmf_rec_t *x = &recs[i];
            PyObject *t = Py_BuildValue("(KikiNiNd)", (unsigned long long)x->pair, (int)x->leg,
                                        (unsigned long)x->timestamp, (int)x->event,
                                        PyBool_FromLong(x->end), (int)x->duration,
                                        PyBool_FromLong(x->marker), x->now);
            if (t == NULL || PyList_Append(out, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(t);
        }
        if (n < 256)
            return out;
    }
}

static PyObject *Engine_close(Engine *e, PyObject *Py_UNUSED(ignored))
{
    engine_shutdown(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_get_notify_fd(Engine *e, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(e->notifyfd);
}

static PyObject *Engine_get_pairs(Engine *e, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong((unsigned long)(e->nslots - e->nfree));
}

static PyObject *Engine_get_running(Engine *e, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(e->thread_started);
}

static PyObject *Engine_get_dtmf_overflow(Engine *e, void *Py_UNUSED(closure))
{
    lock_engine(e);
    unsigned long long n = e->ring_overflow;
    pthread_mutex_unlock(&e->lock);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *Engine_queue_delay(Engine *e, PyObject *Py_UNUSED(ignored))
{
    lock_engine(e);
    unsigned long long n = e->waited, n1 = e->waited_1ms, n5 = e->waited_5ms;
    double mx = e->waited_max;
    pthread_mutex_unlock(&e->lock);
    return Py_BuildValue("(KKKd)", n, n1, n5, mx);
}

static PyMethodDef Engine_methods[] = {
    {"queue_delay", (PyCFunction)Engine_queue_delay, METH_NOARGS,
     "queue_delay() -> (packets, waited >= 1 ms, waited >= 5 ms, longest wait in seconds)"},
    {"add_pair", (PyCFunction)Engine_add_pair, METH_VARARGS,
     "add_pair(fd_a, fd_b) -> pair id; the engine owns (and closes) both sockets from then on"},
    {"configure", (PyCFunction)Engine_configure, METH_VARARGS,
     "configure(pair, leg, host|None, port, codec_pt|-1, dtmf_pt|-1, reset_latch)"},
    {"snapshot", (PyCFunction)Engine_snapshot, METH_VARARGS, "snapshot(pair, leg) -> tuple"},
    {"last_rx", (PyCFunction)Engine_last_rx, METH_VARARGS, "last_rx(pair) -> (a, b)"},
    {"last_rx_all", (PyCFunction)Engine_last_rx_all, METH_NOARGS, "[(pair, a, b), ...]"},
    {"remove", (PyCFunction)Engine_remove, METH_VARARGS,
     "remove(pair) -> (snapshot a, snapshot b); closes the pair's sockets"},
    {"events", (PyCFunction)Engine_events, METH_NOARGS,
     "events() -> [(pair, leg, timestamp, event, end, duration, marker, now)]"},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "stop the worker and close every socket"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"notify_fd", (getter)Engine_get_notify_fd, NULL, "eventfd readable when events() has records", NULL},
    {"pairs", (getter)Engine_get_pairs, NULL, "pairs open", NULL},
    {"running", (getter)Engine_get_running, NULL, "the worker thread is running", NULL},
    {"dtmf_overflow", (getter)Engine_get_dtmf_overflow, NULL, "event records lost to a full ring", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.media._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RTP forwarding engine: one worker thread, epoll over every pair's sockets",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* stats_replay([(kind, seq, ts, arrival, nbytes), ...]): the C statistics over a given stream
 * (kind 0: count, 1: update, 2: reset_source), for tests against stats.py. */
static PyObject *stats_replay(PyObject *Py_UNUSED(module), PyObject *ops)
{
    rstats_t s;
    memset(&s, 0, sizeof(s));
    rs_reset(&s);
    PyObject *it = PyObject_GetIter(ops);
    if (it == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int kind;
        long long seq, ts, nbytes;
        double arrival;
        int ok = PyArg_ParseTuple(item, "iLLdL", &kind, &seq, &ts, &arrival, &nbytes);
        Py_DECREF(item);
        if (!ok) {
            Py_DECREF(it);
            return NULL;
        }
        if (kind == 0)
            rs_count(&s, seq & 0xFFFF, nbytes);
        else if (kind == 1)
            rs_update(&s, seq & 0xFFFF, (uint32_t)ts, arrival, nbytes);
        else
            rs_reset(&s);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(LLLLLLLid)", (long long)s.packets, (long long)s.bytes,
                         (long long)s.base_seq, (long long)s.max_seq, (long long)s.bad_seq,
                         (long long)s.cycles, (long long)s.received, s.probation, s.jitter);
}

static PyMethodDef module_methods[] = {
    {"stats_replay", stats_replay, METH_O, "RFC 3550 statistics of a stream, for tests"},
    {NULL, NULL, 0, NULL},
};

#define AVAILABLE 1
#else /* !__linux__ */
static PyMethodDef module_methods[] = {{NULL, NULL, 0, NULL}};
#define AVAILABLE 0
#endif

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "Native RTP forwarding for gateway.media.relay (Linux: epoll, recvmmsg, sendmmsg).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
#ifdef __linux__
    if (PyType_Ready(&EngineType) < 0 || PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH_MAX", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    if (PyModule_AddIntConstant(m, "AVAILABLE", AVAILABLE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
