/*
 * The course's fork server (step 01), written in C the way the book asks: a process per
 * connection that serves the step contract (docs/contract.md), so that `scripts/grade --step 01`
 * grades it like our Rust step. Build and run:
 *
 *     cc -O2 -Wall -Wextra -o server examples/c-server/server.c
 *     ./server --port 8090 --site common/site
 *
 * What the course's server.c got wrong, and what this one does instead (docs/01-fork.md):
 *   - the child fell back into the accept loop: here it always ends in _exit;
 *   - fork's -1 ran the child's branch (`if (pid > 0) ... else`): here -1 is its own case;
 *   - `socket(...) == 0` tested for failure: failure is -1 (0 is a valid descriptor);
 *   - no child was ever reaped: here SIGCHLD wakes the parent, which calls waitpid until none
 *     is left, so no zombie stays;
 *   - one read() was taken for one request: here bytes are gathered until the head is complete,
 *     and what follows it is the next (pipelined) request;
 *   - listen(fd, 10) and exit on any accept error: here SOMAXCONN, and an error ends only that
 *     attempt.
 *
 * The signals (SIGCHLD, SIGTERM, SIGINT) are blocked, and let in only while the process waits
 * in ppoll(): a handler can then only interrupt a wait, never a half-done step.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "step01-fork" /* the contract: Server and /stats name the step */
#define MAX_HEAD 8192
#define MAX_CHILDREN 512

static volatile sig_atomic_t got_child, stopping;
static sigset_t waiting_mask; /* the mask while waiting: our signals let in */
static long delay_ms, header_ms = 10000, idle_ms = 5000, grace_ms = 10000;
static int quiet;
static unsigned long served;

struct page { const char *type; char *body; size_t len; char etag[20]; };
static struct page hello, script, live_page, missing;

static void on_signal(int sig) {
    if (sig == SIGCHLD) got_child = 1; else stopping = 1;
}

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static long number(const char *option, const char *text, long max) {
    char *end;
    errno = 0;
    long value = strtol(text ? text : "", &end, 10);
    if (!text || !isdigit((unsigned char)*text) || *end || errno || value > max)
        fail("invalid value '%s' for %s", text ? text : "", option);
    return value;
}

static void load(struct page *page, const char *dir, const char *file, const char *type) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f) fail("cannot read %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    page->len = (size_t)ftell(f);
    rewind(f);
    page->body = malloc(page->len + 1);
    if (!page->body || fread(page->body, 1, page->len, f) != page->len) fail("cannot read %s", path);
    fclose(f);
    page->type = type;
    unsigned long long hash = 0xcbf29ce484222325ULL; /* FNV-1a: the ETag follows the bytes */
    for (size_t i = 0; i < page->len; i++) hash = (hash ^ (unsigned char)page->body[i]) * 0x100000001b3ULL;
    snprintf(page->etag, sizeof page->etag, "\"%016llx\"", hash);
}

/* Writes all of buf, or ends this child: the client is gone or stuck (SO_SNDTIMEO). */
static void send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(0);
        buf += n;
        len -= (size_t)n;
    }
}

/* Waits until fd is readable or deadline (ms, monotonic) passes: 1, or 0 on timeout; -1 when
 * SIGTERM came while `idle` (between requests: nothing in flight to finish). */
static int wait_readable(int fd, long deadline, int idle) {
    for (;;) {
        if (stopping && idle) return -1;
        long left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        struct timespec t = { left / 1000, (left % 1000) * 1000000 };
        int ready = ppoll(&p, 1, &t, &waiting_mask);
        if (ready > 0) return 1;
        if (ready < 0 && errno != EINTR) return 0;
    }
}

/* After an error answer: stop sending, read what the client still sends for up to two seconds,
 * then close (nginx's lingering close), so that the kernel does not reset the connection and
 * destroy the answer before the client read it. */
static void linger_and_exit(int fd) {
    char sink[4096];
    shutdown(fd, SHUT_WR);
    long deadline = now_ms() + 2000;
    while (wait_readable(fd, deadline, 0) == 1 && read(fd, sink, sizeof sink) > 0) {}
    close(fd);
    _exit(0);
}

static const char *reason(int status) {
    switch (status) {
    case 100: return "Continue";            case 200: return "OK";
    case 304: return "Not Modified";        case 400: return "Bad Request";
    case 404: return "Not Found";           case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";     case 414: return "URI Too Long";
    case 417: return "Expectation Failed";  case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";     case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* The contract's Date, formatted at most once a second. */
static const char *http_date(void) {
    static time_t last;
    static char text[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
        last = now;
    }
    return text;
}

/* Sends one answer; `extra` holds further header lines, each ending in \r\n. */
static void respond(int fd, int status, const char *type, const char *body, size_t len,
                    int head_only, int keep, const char *extra) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: " NAME "\r\nDate: %s\r\nContent-Length: %zu\r\n"
                     "%s%s%s%sConnection: %s\r\n\r\n",
                     status, reason(status), http_date(), len, type ? "Content-Type: " : "",
                     type ? type : "", type ? "\r\n" : "", extra, keep ? "keep-alive" : "close");
    send_all(fd, head, (size_t)n);
    if (!head_only && status != 304) send_all(fd, body, len);
    served++;
}

static void error_and_exit(int fd, int status, const char *log_line) {
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason(status));
    respond(fd, status, "text/plain", body, (size_t)n, 0, 0, "");
    if (!quiet) printf("%d \"%s\" %d\n", getpid(), log_line, status), fflush(stdout);
    linger_and_exit(fd);
}

static int is_tchar(int c) {
    return c > 32 && c < 127 && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* The first `len` bytes of a request so far: could they still begin a valid request line?
 * (Garbage such as a TLS hello is refused before it ever completes a line.) */
static int plausible_start(const char *buf, size_t len) {
    for (size_t i = 0; i < len && buf[i] != ' '; i++)
        if (!is_tchar((unsigned char)buf[i]) && buf[i] != '\r' && buf[i] != '\n') return 0;
    return 1;
}

/* A parsed request head. */
struct request {
    char method[MAX_HEAD], target[MAX_HEAD], line[MAX_HEAD + 1], etag[256];
    int minor, keep, has_host, expect_continue;
    long long length;
};

/* `METHOD SP target SP HTTP/1.x`, single spaces only; 0, or the status to refuse with. */
static int parse_request_line(const char *line, struct request *r) {
    char version[16];
    int used = 0;
    snprintf(r->line, sizeof r->line, "%s", line);
    if (sscanf(line, "%8191[!#$%&'*+.^_`|~0-9A-Za-z-] %8191[^ ] %15s%n", r->method, r->target, version, &used) != 3
        || line[used] || strstr(line, "  ") || strchr(line, '\t'))
        return 400;
    if (!strncmp(version, "HTTP/", 5) && version[5] >= '2' && version[5] <= '9') return 505;
    if (strcmp(version, "HTTP/1.1") && strcmp(version, "HTTP/1.0")) return 400;
    /* origin-form (/path), absolute-form (http://host/path), and CONNECT's host:port (404) */
    if (r->target[0] != '/' && strncmp(r->target, "http://", 7) && strcmp(r->method, "CONNECT")) return 400;
    for (const char *c = r->target; *c; c++)
        if ((unsigned char)*c < 33 || *c == 127) return 400;
    r->minor = version[7] - '0';
    r->keep = r->minor == 1;
    return 0;
}

/* Parses the head in buf[0..len) (ending with an empty line); 0, or the status to refuse with. */
static int parse(char *buf, size_t len, struct request *r) {
    char *line = buf, *end = buf + len;
    int lines = 0, te = 0;
    memset(r, 0, sizeof *r);
    r->length = -1;
    while (line < end && (*line == '\r' || *line == '\n')) line++; /* RFC 9112 2.2 */
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) return 400;
        char *stop = nl > line && nl[-1] == '\r' ? nl - 1 : nl;
        *stop = '\0';
        if (memchr(line, '\r', (size_t)(stop - line))) return 400; /* a bare CR */
        if (lines++ == 0) {
            int status = parse_request_line(line, r);
            if (status) return status;
        } else if (*line == '\0') {
            break; /* the empty line: end of the head */
        } else {
            char *colon = strchr(line, ':'), *value;
            if (!colon || colon == line || *line == ' ' || *line == '\t') return 400;
            for (char *c = line; c < colon; c++) if (!is_tchar((unsigned char)*c)) return 400;
            *colon = '\0';
            for (value = colon + 1; *value == ' ' || *value == '\t'; value++) {}
            for (char *c = value; *c; c++)
                if (((unsigned char)*c < 32 && *c != '\t') || *c == 127) return 400;
            for (char *c = value + strlen(value); c > value && (c[-1] == ' ' || c[-1] == '\t');) *--c = '\0';
            if (lines > 101) return 431;
            if (!strcasecmp(line, "Host")) {
                if (r->has_host++ || strpbrk(value, " /@")) return 400;
            } else if (!strcasecmp(line, "Content-Length")) {
                char *e;
                if (!isdigit((unsigned char)*value) || strlen(value) > 18) return 400;
                long long n = strtoll(value, &e, 10);
                if (*e || (r->length >= 0 && r->length != n)) return 400;
                r->length = n;
            } else if (!strcasecmp(line, "Transfer-Encoding")) {
                te = 1; /* bodies are read by length only: chunked is refused below */
            } else if (!strcasecmp(line, "Connection")) {
                if (!strcasecmp(value, "close")) r->keep = 0;
                if (!strcasecmp(value, "keep-alive")) r->keep = 1;
            } else if (!strcasecmp(line, "If-None-Match")) {
                snprintf(r->etag, sizeof r->etag, "%s", value);
            } else if (!strcasecmp(line, "Expect")) {
                if (strcasecmp(value, "100-continue")) return 417;
                r->expect_continue = 1;
            }
        }
        line = nl + 1;
    }
    if (r->minor == 1 && !r->has_host) return 400;
    if (te) return r->length >= 0 || r->minor == 0 ? 400 : 501;
    if (r->length < 0) r->length = 0;
    return 0;
}

/* Answers one parsed request. */
static void answer(int fd, struct request *r, int keep) {
    int head_only = !strcmp(r->method, "HEAD"), get = head_only || !strcmp(r->method, "GET");
    char *path = r->target, *query, body[256];
    if (!strncmp(path, "http://", 7)) path = strchr(path + 7, '/') ? strchr(path + 7, '/') : "/";
    if ((query = strchr(path, '?'))) *query++ = '\0';
    struct page *page = !strcmp(path, "/") || !strcmp(path, "/hello.html") ? &hello
                      : !strcmp(path, "/script.js") ? &script
                      : !strcmp(path, "/live") ? &live_page : NULL;
    int known = page || !strcmp(path, "/sleep") || !strcmp(path, "/stats"), status;
    if (!known) page = &missing;
    if (known && !get) {
        status = 405;
        int n = snprintf(body, sizeof body, "405 Method Not Allowed\n");
        respond(fd, status, "text/plain", body, (size_t)n, 0, keep, "Allow: GET, HEAD\r\n");
    } else if (!strcmp(path, "/sleep")) {
        char *e = NULL;
        long ms = query && !strncmp(query, "ms=", 3) && isdigit((unsigned char)query[3]) ? strtol(query + 3, &e, 10) : -1;
        if (ms < 0 || ms > 60000 || (e && *e)) {
            status = 400;
            int n = snprintf(body, sizeof body, "ms must be 0 to 60000\n");
            respond(fd, status, "text/plain", body, (size_t)n, head_only, keep, "");
        } else {
            /* The simulated slow I/O; SIGTERM does not cut it short (the request is in flight). */
            struct timespec t = { ms / 1000, (ms % 1000) * 1000000 };
            while (nanosleep(&t, &t) < 0 && errno == EINTR) {}
            status = 200;
            int n = snprintf(body, sizeof body, "slept %ld ms\n", ms);
            respond(fd, status, "text/plain", body, (size_t)n, head_only, keep, "");
        }
    } else if (!strcmp(path, "/stats")) {
        status = 200;
        int n = snprintf(body, sizeof body, "{\"step\":\"" NAME "\",\"pid\":%d,\"parent_pid\":%d,\"served\":%lu,\"mode\":\"fork\"}",
                         getpid(), getppid(), served);
        respond(fd, status, "application/json", body, (size_t)n, head_only, keep, "");
    } else {
        char extra[64];
        snprintf(extra, sizeof extra, "ETag: %s\r\n", page->etag);
        status = page == &missing ? 404 : 200;
        if (status == 200 && r->etag[0] && (strstr(r->etag, page->etag) || !strcmp(r->etag, "*")))
            status = 304; /* the browser's copy is current: no body */
        respond(fd, status, page->type, page->body, page->len, head_only, keep, extra);
    }
    if (!quiet) printf("%d \"%s\" %d\n", getpid(), r->line, status), fflush(stdout);
}

/* The child's life: requests on one connection, until it closes, errs or times out. */
static void serve_connection(int fd) {
    static char buf[MAX_HEAD + 1];
    static struct request r;
    size_t len = 0;
    int first = 1;
    for (;;) {
        /* Gather a whole head. The first request has the header timeout from the connection's
         * start; later ones may idle for the idle timeout, then have the header timeout. */
        long deadline = now_ms() + (first || len ? header_ms : idle_ms);
        char *end;
        for (;;) {
            size_t blank = 0; /* blank lines before a request line are allowed (RFC 9112 2.2) */
            while (blank < len && (buf[blank] == '\r' || buf[blank] == '\n')) blank++;
            memmove(buf, buf + blank, len - blank);
            len -= blank;
            if ((end = memmem(buf, len, "\r\n\r\n", 4)) || (end = memmem(buf, len, "\n\n", 2))) break;
            char *eol = memchr(buf, '\n', len);
            if (!plausible_start(buf, len)) error_and_exit(fd, 400, "(not HTTP)");
            if (eol) { /* a whole request line already: refuse it now if it is wrong */
                int nul = memchr(buf, '\0', (size_t)(eol - buf)) != NULL;
                *eol = '\0';
                if (eol > buf && eol[-1] == '\r') eol[-1] = '\0';
                int status = nul ? 400 : parse_request_line(buf, &r);
                if (eol > buf && eol[-1] == '\0') eol[-1] = '\r';
                *eol = '\n';
                if (status) error_and_exit(fd, status, r.line[0] ? r.line : "(bad request line)");
            }
            if (len >= MAX_HEAD) error_and_exit(fd, memchr(buf, '\n', len) ? 431 : 414, "(too long)");
            int ready = wait_readable(fd, deadline, len == 0);
            if (ready < 0) _exit(0); /* SIGTERM while idle */
            if (ready == 0) {
                if (len == 0 && !first) _exit(0); /* idle keep-alive connection: close silently */
                error_and_exit(fd, 408, "(timeout)");
            }
            ssize_t n = read(fd, buf + len, MAX_HEAD - len);
            if (n <= 0) _exit(0); /* the client left (perhaps mid-head): nobody to answer */
            if (len == 0) deadline = now_ms() + header_ms;
            len += (size_t)n;
        }
        size_t head_len = (size_t)(end - buf) + (end[0] == '\r' ? 4 : 2);
        int status = memchr(buf, '\0', head_len) ? 400 : parse(buf, head_len, &r);
        if (status) error_and_exit(fd, status, r.line[0] ? r.line : "(bad request)");
        /* Skip the body: what is already buffered, then the rest from the socket. */
        if (r.expect_continue && r.length > 0 && len == head_len)
            send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        long long left = r.length;
        size_t taken = head_len + (size_t)(left < (long long)(len - head_len) ? left : (long long)(len - head_len));
        left -= (long long)(taken - head_len);
        memmove(buf, buf + taken, len - taken);
        len -= taken;
        while (left > 0) {
            if (wait_readable(fd, now_ms() + header_ms, 0) == 0) error_and_exit(fd, 408, r.line);
            ssize_t n = read(fd, buf, (size_t)(left < MAX_HEAD ? left : MAX_HEAD));
            if (n <= 0) _exit(0);
            left -= n;
        }
        if (delay_ms) {
            struct timespec t = { delay_ms / 1000, (delay_ms % 1000) * 1000000 };
            while (nanosleep(&t, &t) < 0 && errno == EINTR) {}
        }
        /* A SIGTERM that came while this request was served (signals wait, blocked, outside
         * ppoll) makes this answer the last. */
        sigset_t pending;
        sigpending(&pending);
        int keep = r.keep && !stopping && !sigismember(&pending, SIGTERM) && !sigismember(&pending, SIGINT);
        answer(fd, &r, keep);
        if (!keep) linger_and_exit(fd);
        first = 0;
    }
}

static pid_t children[MAX_CHILDREN];
static int live;

/* Collects every child that has exited: none is left a zombie. */
static void reap(void) {
    pid_t pid;
    got_child = 0;
    while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
        for (int i = 0; i < live; i++)
            if (children[i] == pid) { children[i] = children[--live]; break; }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *site = "common/site";
    long port = 8090;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--quiet")) quiet = 1;
        else if (!strcmp(o, "--host") && v) host = argv[++i];
        else if (!strcmp(o, "--site") && v) site = argv[++i];
        else if (!strcmp(o, "--port")) port = number(o, argv[++i < argc ? i : 0], 65535);
        else if (!strcmp(o, "--delay-ms")) delay_ms = number(o, argv[++i < argc ? i : 0], 600000);
        else if (!strcmp(o, "--header-timeout-ms")) header_ms = number(o, argv[++i < argc ? i : 0], 3600000);
        else if (!strcmp(o, "--idle-timeout-ms")) idle_ms = number(o, argv[++i < argc ? i : 0], 3600000);
        else if (!strcmp(o, "--grace-ms")) grace_ms = number(o, argv[++i < argc ? i : 0], 3600000);
        else fail("unknown option '%s' (options: --host --port --delay-ms --quiet --header-timeout-ms "
                  "--idle-timeout-ms --grace-ms --site)", o);
    }
    if (header_ms == 0 || idle_ms == 0) fail("timeouts must be at least 1 ms");
    load(&hello, site, "hello.html", "text/html; charset=utf-8");
    load(&script, site, "script.js", "application/javascript");
    load(&live_page, site, "live.html", "text/html; charset=utf-8");
    load(&missing, site, "404.html", "text/html; charset=utf-8");

    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    int one = 1, listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) fail("cannot create a socket: %s", strerror(errno));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) fail("cannot listen on %s:%ld: not an IPv4 address", host, port);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, SOMAXCONN) < 0)
        fail("cannot listen on %s:%ld: %s", host, port, strerror(errno));
    socklen_t size = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &size);
    printf("listening on http://%s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);

    struct sigaction sa = { .sa_handler = on_signal };
    sigset_t ours;
    sigemptyset(&ours);
    sigaddset(&ours, SIGCHLD), sigaddset(&ours, SIGTERM), sigaddset(&ours, SIGINT);
    sigprocmask(SIG_BLOCK, &ours, &waiting_mask); /* waiting_mask: the mask before, ours let in */
    sigaction(SIGCHLD, &sa, NULL), sigaction(SIGTERM, &sa, NULL), sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-answer: write fails with EPIPE, no death */

    while (!stopping) {
        struct pollfd p = { .fd = listener, .events = POLLIN };
        /* At the cap, stop accepting until a child exits (clients wait in the backlog). */
        int ready = ppoll(&p, live < MAX_CHILDREN ? 1 : 0, NULL, &waiting_mask);
        if (got_child) reap();
        if (ready <= 0) continue;
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) { /* a client gone before we took it, or out of descriptors: go on */
            if (errno == EMFILE || errno == ENFILE) usleep(100000);
            continue;
        }
        pid_t pid = fork();
        if (pid < 0) { /* no child: this client gets a close, the others go on */
            perror("fork");
            close(fd);
        } else if (pid == 0) {
            close(listener); /* the child serves; only the parent accepts */
            struct timeval t = { header_ms / 1000, (header_ms % 1000) * 1000 };
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t); /* a client that never reads */
            stopping = 0;
            serve_connection(fd);
            _exit(0); /* never back into the accept loop */
        } else {
            children[live++] = pid;
            close(fd); /* the child's copy is the one that serves */
        }
    }
    /* SIGTERM: no more accepts; children finish what they serve (idle ones exit at once). */
    close(listener);
    for (int i = 0; i < live; i++) kill(children[i], SIGTERM);
    long deadline = now_ms() + grace_ms;
    while (live > 0) {
        if (now_ms() > deadline)
            for (int i = 0; i < live; i++) kill(children[i], SIGKILL);
        struct timespec t = { 0, 10000000 };
        ppoll(NULL, 0, &t, &waiting_mask);
        reap();
    }
    return 0;
}
