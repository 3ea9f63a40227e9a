/**
 * HTTPS for --metrics-auth kubernetes (common/http/certificate.ts, tls.ts):
 * the hand-written DER of the self-signed certificate is a valid X.509 v3
 * certificate (node's X509Certificate, and openssl when installed), a real
 * TLS handshake serves it, and mounted certificate files are checked at
 * start and followed when they change.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect, type PeerCertificate } from 'node:tls';
import { selfSignedCertificate } from '../../common/http/certificate.ts';
import { HttpServer, text } from '../../common/http/server.ts';
import { servingTls } from '../../common/http/tls.ts';
import { createLogger } from '../../common/log.ts';

const log = createLogger({ level: 'error', format: 'json' });
const openssl = spawnSync('openssl', ['version']).status === 0;

test('the self-signed certificate: X.509 v3, ECDSA P-256 signed by its own key, names in subjectAltName, server auth only', () => {
  const made = selfSignedCertificate('podmeter-agent', [
    'localhost',
    '127.0.0.1',
    '::1',
    'node-a',
    'fd00::1:2',
    '10.1.2.3',
    'node-a',
  ]);
  const x509 = new X509Certificate(made.cert);
  assert.equal(x509.subject, 'O=podmeter\nCN=podmeter-agent');
  assert.equal(x509.issuer, x509.subject);
  assert.ok(x509.verify(x509.publicKey), 'signed by its own key');
  assert.ok(x509.checkPrivateKey(createPrivateKey(made.key)));
  assert.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.equal(
    x509.subjectAltName,
    'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:node-a, IP Address:FD00:0:0:0:0:0:1:2, IP Address:10.1.2.3',
  );
  assert.equal(x509.checkHost('node-a'), 'node-a');
  assert.equal(x509.checkIP('::1'), '::1');
  assert.equal(x509.ca, false);
  assert.deepEqual(x509.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  assert.equal(x509.fingerprint256, made.fingerprint);
  assert.ok(new Date(x509.validFrom) < new Date() && new Date(x509.validTo) > new Date(Date.now() + 365 * 86400_000));
  const other = selfSignedCertificate('podmeter-agent', ['localhost']);
  assert.notEqual(new X509Certificate(other.cert).serialNumber, x509.serialNumber, 'a random serial each time');
});

test(
  'openssl reads the self-signed certificate and verifies its signature',
  { skip: openssl ? false : 'openssl is not installed' },
  (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'podmeter-test-tls-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'tls.crt');
    writeFileSync(file, selfSignedCertificate('podmeter-operator', ['localhost', '127.0.0.1']).cert);
    const printed = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file], { encoding: 'utf8' });
    for (const fact of [
      'Version: 3 (0x2)',
      'Signature Algorithm: ecdsa-with-SHA256',
      'NIST CURVE: P-256',
      'DNS:localhost, IP Address:127.0.0.1',
      'CA:FALSE',
      'Digital Signature',
      'TLS Web Server Authentication',
    ]) {
      assert.ok(printed.includes(fact), `openssl x509 -text lacks ${fact}:\n${printed}`);
    }
    // A self-signed certificate as its own trust anchor: openssl checks the signature and the validity dates.
    assert.equal(
      execFileSync('openssl', ['verify', '-CAfile', file, file], { encoding: 'utf8' }).trim(),
      `${file}: OK`,
    );
  },
);

/** The certificate the server presents in a real handshake (verification off: we compare what it is). */
function presented(port: number): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate());
      socket.end();
    });
    socket.on('error', reject);
  });
}

test('mounted certificate files: checked at start with the file named, served over HTTPS, swapped when they change', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'podmeter-test-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const files = { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') };
  const first = selfSignedCertificate('first', ['localhost']);
  const second = selfSignedCertificate('second', ['localhost']);

  assert.throws(
    () => servingTls({ files, commonName: 'x', names: [], log }),
    /--tls-cert-file '.*tls\.crt': cannot be read/,
  );
  writeFileSync(files.certFile, first.cert);
  writeFileSync(files.keyFile, second.key);
  assert.throws(
    () => servingTls({ files, commonName: 'x', names: [], log }),
    /--tls-key-file '.*tls\.key': not the private key of --tls-cert-file/,
  );
  writeFileSync(files.certFile, 'not a certificate');
  assert.throws(
    () => servingTls({ files, commonName: 'x', names: [], log }),
    /--tls-cert-file '.*tls\.crt': not a PEM certificate/,
  );

  writeFileSync(files.certFile, first.cert);
  writeFileSync(files.keyFile, first.key);
  const tls = servingTls({ files, commonName: 'x', names: [], log, pollMs: 50 });
  assert.equal(tls.fingerprint, first.fingerprint);
  // An open gate: this test is about the transport; the Kubernetes gate is tested against a real apiserver (test/kube/metrics-auth.test.ts).
  const server = new HttpServer(log, { tls, gate: { check: () => undefined } }).route('/healthz', () => text('ok\n'));
  t.after(() => server.close());
  const { port } = await server.listen('127.0.0.1', 0);
  assert.equal(server.scheme, 'https');
  assert.equal((await presented(port)).fingerprint256, first.fingerprint);

  // A half-written update (the new certificate, the old key) keeps the old pair; the whole pair is then picked up.
  writeFileSync(files.certFile, second.cert);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await presented(port)).fingerprint256, first.fingerprint, 'a mismatched pair is not served');
  writeFileSync(files.keyFile, second.key);
  const deadline = Date.now() + 30_000;
  while ((await presented(port)).fingerprint256 !== second.fingerprint) {
    assert.ok(Date.now() < deadline, 'the renewed certificate was not served within 30 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(tls.fingerprint, second.fingerprint);
});
