'use strict';
// hello for node, the twin of ../python/main.py: GET /hello-node?name=ada -> {"hello":"ada"}.

exports.handle = (request) => {
  const name = request.query.name || process.env.GREETING_DEFAULT || 'world';
  // console.log() goes to the function's log (stderr), never into the response.
  console.log(`hello ${name}: ${request.method} ${request.path} invocation ${request.invocationId}`);
  if (request.method === 'POST') {
    return { hello: name, echo: request.json() };
  }
  return { hello: name };
};
