/*
 * dnsaddr — a DNS server's address as HERALD_DNS gives it (dnsaddr.h).
 */
#include "dnsaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int
parse_port(const char *s, uint16_t *port)
{
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    unsigned v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v < 1 || v > 65535 || (s[0] == '0'))
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int
dnsaddr_parse(const char *s, struct sockaddr_storage *out, socklen_t *outlen,
              struct herr *e)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *portstr = NULL;
    uint16_t port = 53;
    size_t n = strlen(s);
    memset(out, 0, sizeof *out);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || (size_t)(close - s - 1) >= sizeof host)
            return herr_set(e, HERR_INVALID, "HERALD_DNS",
                            "'[' without a matching ']'");
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (close[1] == ':')
            portstr = close + 2;
        else if (close[1] != '\0')
            return herr_set(e, HERR_INVALID, "HERALD_DNS",
                            "expected ':PORT' after ']'");
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            return herr_set(e, HERR_INVALID, "HERALD_DNS",
                            "not an IPv6 address inside [...]");
        a6->sin6_family = AF_INET6;
    } else {
        const char *colon = strchr(s, ':');
        int v6 = colon && strchr(colon + 1, ':'); /* bare IPv6 */
        size_t hl = (colon && !v6) ? (size_t)(colon - s) : n;
        if (hl == 0 || hl >= sizeof host)
            return herr_set(e, HERR_INVALID, "HERALD_DNS",
                            "not host[:port] with an IPv4 or IPv6 address");
        memcpy(host, s, hl);
        host[hl] = '\0';
        if (colon && !v6)
            portstr = colon + 1;
        if (v6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
            if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
                return herr_set(e, HERR_INVALID, "HERALD_DNS",
                                "not an IPv6 address (a port needs "
                                "[ADDR]:PORT)");
            a6->sin6_family = AF_INET6;
        } else {
            struct sockaddr_in *a4 = (struct sockaddr_in *)out;
            if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
                return herr_set(e, HERR_INVALID, "HERALD_DNS",
                                "not an IPv4 or IPv6 address (a server "
                                "name is not accepted)");
            a4->sin_family = AF_INET;
        }
    }
    if (portstr && parse_port(portstr, &port) < 0)
        return herr_set(e, HERR_INVALID, "HERALD_DNS",
                        "port is not a number from 1 to 65535");
    if (out->ss_family == AF_INET) {
        ((struct sockaddr_in *)out)->sin_port = htons(port);
        *outlen = sizeof(struct sockaddr_in);
    } else {
        ((struct sockaddr_in6 *)out)->sin6_port = htons(port);
        *outlen = sizeof(struct sockaddr_in6);
    }
    return 0;
}
