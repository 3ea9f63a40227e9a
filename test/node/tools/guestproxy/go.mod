module podmeter.test/node-tools/guestproxy

go 1.26.0
