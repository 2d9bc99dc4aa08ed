'use strict';
// echo-node: answers with the request it was sent, as JSON.

exports.handle = (request) => {
  // console.log() goes to the function's log (stderr, then the journal), never into the response.
  console.log(`echo ${request.method} ${request.path} (${request.body.length} bytes)`);
  return {
    method: request.method,
    path: request.path,
    query: request.queryAll,        // every value: ?a=1&a=2 → {"a": ["1", "2"]}
    headers: request.headers,       // lower-case names; lookups ignore case
    body: request.body.toString('utf8'),
  };
};
