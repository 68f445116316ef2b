#!/bin/sh
# gen_test_certs.sh DIR: throwaway certificates for the TLS tests of rpc/,
# made fresh at every run (EC P-256, valid two days), never committed.
#   ca.crt                      the CA both sides trust
#   server.{crt,key}            signed by ca: IP 127.0.0.1, IP ::1, DNS localhost
#   client.{crt,key}            signed by ca: a worker's client certificate
#   wronghost.{crt,key}         signed by ca, but for gw.invalid only
#   other-ca.crt                a CA nobody trusts
#   other-server.{crt,key}      signed by other-ca, for 127.0.0.1
#   other-client.{crt,key}      signed by other-ca
set -eu
d=$1
mkdir -p "$d"
cd "$d"

ca() {
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -out "$1.crt" -days 2 -subj "/CN=$1" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>/dev/null
}

leaf() { # name ca extensions
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial \
        -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca
ca other-ca
leaf server ca "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf wronghost ca "subjectAltName=DNS:gw.invalid
extendedKeyUsage=serverAuth"
leaf other-server other-ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf other-client other-ca "extendedKeyUsage=clientAuth"
