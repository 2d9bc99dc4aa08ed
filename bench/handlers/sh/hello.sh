# The cheapest CGI handler: a 3-line response (one header, the blank line, one body line).
printf 'Content-Type: text/plain\n\nhello from sh\n'
