/*
 * harness.h - integration test helpers: run a real seckill-gateway process
 * on a free loopback port, and talk HTTP/1.1 to it over real sockets.
 */
#ifndef SECKILL_TEST_HARNESS_H
#define SECKILL_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct gw_proc {
    pid_t pid;
    int port;
    char dir[256];      /* temp dir holding the config */
    char config[300];
    char gateway_id[40];
    int rpc_port;       /* from the banner's rpc=tcp:HOST:PORT, 0 when absent */
    int admin_port;     /* from the banner's admin=http://HOST:PORT, 0 when absent */
    int out_fd;         /* the gateway's stdout */
} gw_proc;

/* Start argv (argv[0] a path) with stdout on a pipe and stderr inherited;
 * wait up to 20 s for a stdout line containing `ready` (NULL: do not wait).
 * OUT: *pid. 0 on success. */
int proc_spawn(const char *const argv[], const char *ready, pid_t *pid);
/* SIGTERM (or sig), wait up to 30 s (then SIGKILL); the exit status, 128+signal, or -1. */
int proc_stop(pid_t pid, int sig);

/* Write ini_text to a temp config and start `binary -c CONFIG --listen
 * 127.0.0.1:0`; waits for the "listening on" line. 0 on success. Unless
 * ini_text names a data_dir, [queue] data_dir is the temp dir's data/. */
int gw_proc_start(gw_proc *p, const char *binary, const char *ini_text);
/* The same with the gateway's stderr appended to log_path (NULL: inherited). */
int gw_proc_start_logged(gw_proc *p, const char *binary, const char *ini_text,
                         const char *log_path);
/* SIGTERM, wait; returns the exit status (or -1). Removes the temp dir. */
int gw_proc_stop(gw_proc *p);
/* The [gateway] lines of a park mode as the tests name it on their command
 * line: thread, event, or event-epoll (park = event with http_io = epoll). */
void park_ini_lines(const char *mode, char *buf, size_t cap);
/* base with the INI fragment extra merged in: the lines of each section of
 * extra go right after that section's header in base, or at the end under
 * the header when base lacks it (a section may appear only once in a
 * configuration). Lines of extra before any header go at the end. Returns
 * -ENOSPC when out is too small. */
int ini_merge(char *out, size_t cap, const char *base, const char *extra);
/* Run binary with args (NULL-terminated), capture stdout into out and stderr into err;
 * returns the exit status, or -1 when it did not exit within 20 s (then killed). */
int run_capture(const char *const argv[], char *out, size_t outlen, char *err, size_t errlen);

typedef struct http_resp {
    int status;
    char headers[2048];
    char body[8192];
    size_t body_len;
} http_resp;

/* One request on a fresh connection (Connection: close). raw_extra_headers
 * are sent verbatim (each line ending in \r\n), may be NULL. 0 on success. */
int http_do(int port, const char *method, const char *path, const char *extra_headers,
            const char *body, size_t body_len, http_resp *r);
/* Send raw bytes, read the whole answer. */
int http_raw(int port, const char *req, size_t len, http_resp *r);
/* The same from source address src (a 127.0.0.0/8 address; NULL: any). */
int http_raw_from(const char *src, int port, const char *req, size_t len, http_resp *r);
/* Value of header name (case-insensitive) into out; 0 when present. */
int http_header(const http_resp *r, const char *name, char *out, size_t outlen);
/* Convenience: POST /seckill with a JSON body. */
int http_buy(int port, const char *json, http_resp *r);

/* GET /items/{item}: its stock_left, or -1 when there is no such answer. */
long http_stock_left(int port, const char *item);

/* The value of the /metrics sample line starting with line (name, labels and
 * a space), or -1 when /metrics does not show it. */
long http_metric(int port, const char *line);

/* A JSON string field value (no escapes needed for our ids), 0 when found. */
int json_field(const char *body, const char *key, char *out, size_t outlen);

/* An rpc client of the given role and group with the shared secret, connected
 * and through the handshake within 3 s. 0 and *out, or a negative errno. */
struct rpc_client;
int rpc_role_client(const char *addr, const char *id, const char *group, uint32_t role,
                    const char *secret, struct rpc_client **out);

#endif
