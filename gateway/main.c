/*
 * seckill-gateway: the flash-sale HTTP gateway.
 *
 * Signals: SIGHUP reloads the configuration file (gw_reload: what can change
 * while serving changes, the rest is logged as needing a restart; a file
 * that does not load is refused with its file:line). SIGTERM drains:
 * /readyz answers 503 for [gateway] drain_delay_ms while requests are
 * served, then the listener closes, parked requests finish and a "stopped"
 * line gives the counts. SIGINT (Ctrl-C) does the same without the delay.
 * SIGUSR1 (a logrotate that signals every process) is logged and ignored.
 *
 * Exit status: 0 after a clean stop (SIGTERM/SIGINT), 64 usage error,
 * 78 configuration error (the message names file and line), 69 when the
 * gateway cannot start (the port is taken, Redis does not answer), 65 when
 * the order log in data_dir does not read back.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>

#include "admit_token.h"
#include "config.h"
#include "gateway.h"
#include "log.h"
#include "rpc.h"
#include "service.h"

/* an installed gateway finds its configuration from any directory */
#define DEFAULT_CONFIG SECKILL_DEFAULT_CONFIG

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: seckill-gateway [OPTIONS]\n"
            "Flash-sale gateway: admits POST /seckill through a token bucket and an\n"
            "embedded queue, and answers with the worker's outcome.\n"
            "\n"
            "  -c, --config FILE     INI configuration (default " DEFAULT_CONFIG ")\n"
            "      --listen HOST:PORT  override [gateway] listen: IPv4, [IPv6] or a name (port 0 =\n"
            "                        any free port)\n"
            "      --check-config    load and check the configuration (listen resolved as\n"
            "                        at start), then exit\n"
            "      --print-config    print the effective configuration as INI (secrets\n"
            "                        shown as <set>), then exit\n"
            "      --issue-token USER  print an admission token for USER signed with\n"
            "                        [admission] key, then exit; with --token-item ITEM\n"
            "                        (default *: any item) and --token-ttl SECONDS\n"
            "                        (default 900), valid from now\n"
            "  -h, --help            show this help\n"
            "  -V, --version         show the version\n"
            "\n"
            "Exit status: 0 clean stop, 64 usage error, 78 configuration error,\n"
            "69 cannot start now (address in use, Redis unreachable),\n"
            "65 the order log in data_dir does not read back.\n");
}

/* Thousands of parked connections need thousands of descriptors. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The exit status for a gw_create error. Only a setting the gateway refuses,
 * or a data_dir that another gateway holds (two gateways configured on one
 * directory), is a configuration error (78, which supervisors take as "do not
 * restart"); a store that does not answer yet (Redis down) is 69 so the
 * gateway is started again, and a data_dir whose log does not read back 65. */
static int create_status(int rc)
{
    switch (rc) {
    case -EINVAL:
    case -EWOULDBLOCK: return EX_CONFIG;
    case -EBADMSG:
    case -EUCLEAN: return EX_DATAERR;
    default: return EX_UNAVAILABLE;
    }
}

/* SIGHUP: read the file again; a file that does not load changes nothing.
 * systemd hears RELOADING=1 then READY=1 (ExecReload waits for them). */
static void reload(gw *g, cfg *run, const char *path, const char *listen)
{
    char err[512];
    cfg n;
    cfg_init(&n);
    sk_service_reloading();
    sk_log(SK_LOG_INFO, "gateway", NULL, "SIGHUP: reloading %s", path);
    if (cfg_load(&n, path, err, sizeof err) < 0) {
        sk_log(SK_LOG_ERROR, "gateway", NULL,
               "reload rejected: %s (the running configuration stays)", err);
        goto out_release;
    }
    if (listen) /* the command line's address stays in force */
        cfg_parse_listen(listen, n.listen_host, sizeof n.listen_host, &n.listen_port);
    FILE *log = sk_log_stream(SK_LOG_INFO, "reload");
    gw_reload(g, run, &n, log ? log : stderr);
    if (log)
        fclose(log);
out_release:
    cfg_release(&n);
    sk_service_reloaded();
}

/* SIGTERM: /readyz answers 503 for delay_ms while everything else is
 * served, so a load balancer takes the gateway out before its port closes.
 * A second SIGTERM or a SIGINT ends the wait; a SIGHUP now is not applied. */
static void drain_delay(gw *g, const sigset_t *set, uint32_t delay_ms)
{
    gw_drain_begin(g);
    sk_log(SK_LOG_INFO, "gateway", NULL,
           "SIGTERM: /readyz answers 503 stopping for %u ms while requests are served, then the "
           "listener closes", delay_ms);
    struct timespec now, until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += delay_ms / 1000;
    until.tv_nsec += (long)(delay_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ns = (long)(until.tv_sec - now.tv_sec) * 1000000000L + (until.tv_nsec - now.tv_nsec);
        if (left_ns <= 0)
            return;
        struct timespec ts = {left_ns / 1000000000L, left_ns % 1000000000L};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return;
        if (sig == SIGHUP)
            sk_log(SK_LOG_WARN, "gateway", NULL, "SIGHUP while stopping: not reloaded");
        /* SIGUSR1: nothing to reopen, as while serving */
    }
}

/* --issue-token: print a token signed with [admission] key. */
static int issue_token(const cfg *c, const char *user, const char *item, const char *ttl)
{
    char *end, out[GW_TOKEN_MAX + 1];
    unsigned char rnd[12];
    long secs = strtol(ttl, &end, 10);
    if (*end || secs < 1 || secs > 31536000) {
        fprintf(stderr, "seckill-gateway: --token-ttl '%s': expected 1 to 31536000 seconds\n",
                ttl);
        return EX_USAGE;
    }
    if (!c->adm_key[0]) {
        fprintf(stderr, "seckill-gateway: --issue-token needs [admission] key\n");
        return EX_CONFIG;
    }
    gw_token t = {.not_before = (int64_t)time(NULL)};
    t.expires = t.not_before + secs;
    snprintf(t.user, sizeof t.user, "%s", user);
    snprintf(t.item, sizeof t.item, "%s", item);
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        fprintf(stderr, "seckill-gateway: getrandom failed\n");
        return EX_UNAVAILABLE;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(t.nonce + 2 * i, 3, "%02x", rnd[i]);
    if (strlen(user) > GW_TOKEN_ID_MAX || strlen(item) > GW_TOKEN_ID_MAX ||
        gw_token_issue(c->adm_key, &t, out, sizeof out) < 0) {
        fprintf(stderr,
                "seckill-gateway: --issue-token '%s' --token-item '%s': a user id and an item "
                "id (or *) are 1-64 characters of [A-Za-z0-9_.:-]\n",
                user, item);
        return EX_USAGE;
    }
    printf("%s\n", out);
    return 0;
}

/* Start-up, the signal loop and shutdown, in the order they happen: long
 * (options, config, logging, the gateway, the ready line, signals, drain),
 * kept in one piece so the sequence reads top to bottom; each step that has
 * logic of its own is a function above. */
int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
        {"check-config", no_argument, NULL, 'k'}, {"print-config", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {"issue-token", required_argument, NULL, 'i'},
        {"token-item", required_argument, NULL, 'I'},
        {"token-ttl", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0}};
    const char *issue_user = NULL, *issue_item = "*", *issue_ttl = "900";
    const char *config_path = DEFAULT_CONFIG, *listen = NULL;
    int check = 0, print = 0, ch;
    char err[512];
    cfg c;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case 'l': listen = optarg; break;
        case 'k': check = 1; break;
        case 'p': print = 1; break;
        case 'i': issue_user = optarg; break;
        case 'I': issue_item = optarg; break;
        case 'T': issue_ttl = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("seckill-gateway %s\n", SECKILL_VERSION); return 0;
        case ':':
            fprintf(stderr, "seckill-gateway: option '%s' needs a value\n", argv[optind - 1]);
            usage(stderr);
            return EX_USAGE;
        default:
            fprintf(stderr, "seckill-gateway: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return EX_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "seckill-gateway: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EX_USAGE;
    }

    cfg_init(&c);
    if (cfg_load(&c, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "seckill-gateway: %s\n", err);
        cfg_release(&c);
        return EX_CONFIG;
    }
    if (c.rpc_listen[0] &&
        rpc_tls_check(1, c.rpc_tls_cert, c.rpc_tls_key, c.rpc_tls_ca, err, sizeof err) < 0) {
        /* a missing or mismatched TLS file is a setting to fix, not a fault to retry */
        fprintf(stderr, "seckill-gateway: %s: %s\n", config_path, err);
        cfg_release(&c);
        return EX_CONFIG;
    }
    if (listen && cfg_parse_listen(listen, c.listen_host, sizeof c.listen_host, &c.listen_port) < 0) {
        fprintf(stderr, "seckill-gateway: --listen '%s': expected HOST:PORT\n", listen);
        cfg_release(&c);
        return EX_USAGE;
    }
    if (issue_user) {
        int rc = issue_token(&c, issue_user, issue_item, issue_ttl);
        cfg_release(&c);
        return rc;
    }
    if (print) {
        cfg_print(&c, stdout);
        cfg_release(&c);
        return 0;
    }
    /* the address start-up binds: a name that does not resolve is a setting to fix */
    struct sockaddr_storage ss;
    if (cfg_listen_addr(&c, &ss, err, sizeof err) < 0) {
        fprintf(stderr, "seckill-gateway: %s: %s\n", config_path, err);
        cfg_release(&c);
        return EX_CONFIG;
    }
    const char *lb = strchr(c.listen_host, ':') ? "[" : "", *rb = *lb ? "]" : "";
    if (check) {
        printf("%s: OK (%zu item%s, listen %s%s%s:%u)\n", config_path, c.nitems,
               c.nitems == 1 ? "" : "s", lb, c.listen_host, rb, c.listen_port);
        cfg_release(&c);
        return 0;
    }

    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    sk_log_setup("seckill-gateway", sk_log_format_parse(c.log_format),
                 sk_log_level_parse(c.log_level), 2);

    gw *g = NULL;
    int rc = gw_create(&c, &g, err, sizeof err);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "gateway", NULL, "%s", err);
        cfg_release(&c);
        return create_status(rc);
    }
    rc = gw_start(g, err, sizeof err);
    if (rc < 0) {
        sk_log(SK_LOG_ERROR, "gateway", NULL, "%s", err);
        gw_destroy(g);
        cfg_release(&c);
        return EX_UNAVAILABLE;
    }
    char rpc[320] = "";
    if (c.rpc_listen[0]) {
        int rport = gw_rpc_port(g);
        if (rport >= 0 && !strncmp(c.rpc_listen, "tcp:", 4)) {
            /* print the bound port (the config may say 0) */
            char host[280];
            size_t hn = strnlen(c.rpc_listen + 4, sizeof host - 1);
            memcpy(host, c.rpc_listen + 4, hn);
            host[hn] = '\0';
            char *colon = strrchr(host, ':');
            if (colon)
                *colon = '\0';
            snprintf(rpc, sizeof rpc, " rpc=tcp:%s:%d", host, rport);
        } else {
            snprintf(rpc, sizeof rpc, " rpc=%s", c.rpc_listen);
        }
    }
    char admin[96] = "";
    if (gw_admin_port(g) >= 0) {
        const char *al = strchr(c.admin_host, ':') ? "[" : "", *ar = *al ? "]" : "";
        snprintf(admin, sizeof admin, " admin=http://%s%s%s:%d", al, c.admin_host, ar,
                 gw_admin_port(g));
    }
    printf("seckill-gateway %s listening on http://%s%s%s:%u gateway_id=%s%s%s\n",
           SECKILL_VERSION, lb, c.listen_host, rb, gw_port(g), gw_id(g), rpc, admin);
    fflush(stdout);
    sk_service_ready(gw_id(g));

    int sig = 0;
    for (;;) {
        sigwait(&set, &sig);
        if (sig == SIGUSR1) { /* a logrotate that signals every process: no harm */
            sk_log(SK_LOG_INFO, "gateway", NULL, "SIGUSR1: nothing to reopen (the gateway logs to stderr)");
            continue;
        }
        if (sig != SIGHUP)
            break;
        reload(g, &c, config_path, listen);
    }
    sk_service_stopping();
    if (sig == SIGTERM && c.drain_delay_ms)
        drain_delay(g, &set, c.drain_delay_ms);
    sk_log(SK_LOG_INFO, "gateway", NULL, "%s: the listener closes, parked requests finish",
           sig == SIGINT ? "SIGINT" : "SIGTERM");
    gw_stop(g, c.wait_timeout_ms + 500);
    char summary[512];
    gw_summary(g, summary, sizeof summary);
    fprintf(stderr, "seckill-gateway: stopped: %s\n", summary);
    gw_destroy(g);
    sk_service_release();
    cfg_release(&c);
    return 0;
}
