/*
 * dnsaddr — parsing a DNS server's address (HERALD_DNS): pure, shared by
 * the settings' check and the resolver (io/dnsres.h).
 */
#ifndef HERALD_DNSADDR_H
#define HERALD_DNSADDR_H

#include "err.h"

#include <sys/socket.h>

/*
 * Parses a server "host[:port]": an IPv4 address ("192.0.2.53",
 * "192.0.2.53:5353"), an IPv6 address bare ("2001:db8::53") or in
 * brackets ("[2001:db8::53]", "[::1]:5353"); port 1..65535, default 53.
 * Names are not accepted (the resolver of the resolver would be
 * needed). Fills *out / *outlen. Returns 0 or HERR_INVALID with e
 * (field "HERALD_DNS") saying what is wrong.
 */
int dnsaddr_parse(const char *s, struct sockaddr_storage *out,
                  socklen_t *outlen, struct herr *e);

#endif
