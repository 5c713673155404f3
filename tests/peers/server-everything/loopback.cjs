// Preloaded with `node --require ./loopback.cjs`: server-everything's
// streamableHttp transport calls `app.listen(PORT)` with no host, which would
// listen on every interface. This makes a listen() call that names a port but
// no host listen on 127.0.0.1 only, so the test peer is reachable from this
// machine alone.
"use strict";
const net = require("node:net");
const original = net.Server.prototype.listen;
net.Server.prototype.listen = function listen(...args) {
  const first = args[0];
  const isPort = typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first));
  if (isPort && (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, "127.0.0.1");
  } else if (first && typeof first === "object" && first.port !== undefined && first.host === undefined && first.path === undefined) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  return original.apply(this, args);
};
