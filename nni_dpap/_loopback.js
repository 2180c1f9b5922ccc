// nni-dpap preloads this into NNI's manager (NODE_OPTIONS=--require): a server started without a
// host (NNI's web UI and REST server call app.listen(port)) listens on 127.0.0.1 only, not on all
// interfaces. NNI 3.0 has no option for it and its files stay untouched.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
