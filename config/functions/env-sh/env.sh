#!/bin/sh
# env-sh: prints the request's CGI/1.1 meta-variables (RFC 3875), sorted, as text/plain.
# Everything else in the environment (PATH, HOME, LANG, the function's own env) is left out.
printf 'Content-Type: text/plain; charset=utf-8\n\n'
env | LC_ALL=C sort | while IFS= read -r line; do
  case $line in
    REQUEST_*=* | PATH_INFO=* | QUERY_STRING=* | CONTENT_*=* | HTTP_*=* | FAAS_*=* | SERVER_*=*)
      printf '%s\n' "$line" ;;
  esac
done
