#!/bin/sh
# cgi-exec: a plain CGI program. It sets its own status and headers, then writes the body.
printf 'Status: 201 Created\n'
printf 'Content-Type: text/plain; charset=utf-8\n'
printf 'X-Example: cgi\n'
printf '\n'
printf 'created by a CGI program: %s %s\n' "$REQUEST_METHOD" "${PATH_INFO:-/}"
