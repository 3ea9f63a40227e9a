/**
 * A self-signed X.509 serving certificate made at start, for HTTPS when no
 * certificate files are mounted. Node has no certificate builder, so the
 * DER is written here: a v3 certificate (RFC 5280) over an ECDSA P-256 key,
 * signed with ecdsa-with-SHA256, with subjectAltName, basicConstraints
 * (not a CA), keyUsage digitalSignature and extKeyUsage serverAuth. Nobody
 * verifies it against a CA (Prometheus scrapes it with insecureSkipVerify,
 * `podmeter top` trusts it on localhost only), so it encrypts; it does not
 * prove who the server is. Its SHA-256 fingerprint is logged at start so it
 * can be pinned.
 */
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

export interface ServingCertificate {
  /** PEM. */
  cert: string;
  /** PEM (PKCS#8). */
  key: string;
  /** SHA-256 of the DER certificate, colon-separated hex (as `openssl x509 -fingerprint -sha256` prints). */
  fingerprint: string;
}

/** Long: the certificate is regenerated at every start and never checked against a clock-sensitive CA chain. */
const VALIDITY_MS = 10 * 365 * 24 * 3600 * 1000;

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
};

/** `names`: DNS names and IP addresses for subjectAltName (duplicates and empty entries are dropped). */
export function selfSignedCertificate(
  commonName: string,
  names: readonly string[],
  now = new Date(),
): ServingCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const algorithm = seq(oid(OID.ecdsaWithSha256));
  const serial = randomSerial();
  const name = seq(set(seq(oid(OID.organization), utf8('podmeter'))), set(seq(oid(OID.commonName), utf8(commonName))));
  const validity = seq(time(new Date(now.getTime() - 3600_000)), time(new Date(now.getTime() + VALIDITY_MS)));
  const tbs = seq(
    tagged(0xa0, integer(Buffer.from([2]))), // v3
    integer(serial),
    algorithm,
    name,
    validity,
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    tagged(
      0xa3,
      seq(
        extension(OID.subjectAltName, false, seq(...altNames(names))),
        extension(OID.basicConstraints, true, seq()),
        extension(OID.keyUsage, true, tagged(0x03, Buffer.from([0x07, 0x80]))), // digitalSignature
        extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
      ),
    ),
  );
  const signature = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const der = seq(tbs, algorithm, tagged(0x03, Buffer.concat([Buffer.from([0]), signature])));
  return {
    cert: pem('CERTIFICATE', der),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    fingerprint: fingerprintOf(der),
  };
}

/** SHA-256 of a DER certificate, as openssl prints it (AB:CD:...). */
export function fingerprintOf(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}

// --- DER --------------------------------------------------------------------

function tagged(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const seq = (...parts: Buffer[]) => tagged(0x30, ...parts);
const set = (...parts: Buffer[]) => tagged(0x31, ...parts);
const utf8 = (text: string) => tagged(0x0c, Buffer.from(text, 'utf8'));

/** A non-negative INTEGER from big-endian bytes (minimal: a leading 0 only before a set high bit). */
function integer(bytes: Buffer): Buffer {
  return tagged(0x02, (bytes[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}

function oid(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split('.').map(Number);
  const out = [40 * first + second];
  for (const value of rest) {
    const chunk = [value & 0x7f];
    for (let v = Math.floor(value / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tagged(0x06, Buffer.from(out));
}

/** UTCTime before 2050, GeneralizedTime from then on (RFC 5280 4.1.2.5). */
function time(at: Date): Buffer {
  const iso = at.toISOString().replace(/[-:T]|\.\d+/g, ''); // YYYYMMDDHHMMSSZ
  return at.getUTCFullYear() < 2050
    ? tagged(0x17, Buffer.from(iso.slice(2), 'ascii'))
    : tagged(0x18, Buffer.from(iso, 'ascii'));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), tagged(0x04, value));
}

/** 16 random bytes, positive and minimal (first byte 0x40..0x7f). */
function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x3f) | 0x40;
  return bytes;
}

/** dNSName [2] or iPAddress [7] for each name. */
function altNames(names: readonly string[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  for (const name of names) {
    if (name === '' || seen.has(name)) continue;
    seen.add(name);
    if (isIPv4(name)) out.push(tagged(0x87, Buffer.from(name.split('.').map(Number))));
    else if (isIPv6(name)) out.push(tagged(0x87, ipv6Bytes(name)));
    else out.push(tagged(0x82, Buffer.from(name, 'ascii')));
  }
  return out;
}

/** The 16 bytes of an IPv6 address ('::' expanded; an embedded IPv4 tail is converted). */
function ipv6Bytes(address: string): Buffer {
  let text = address.split('%')[0] ?? '';
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a = 0, b = 0, c = 0, d = 0] = (v4[1] ?? '').split('.').map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((group, i) => out.writeUInt16BE(parseInt(group, 16), i * 2));
  return out;
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}
