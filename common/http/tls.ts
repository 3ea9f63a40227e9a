/**
 * The HTTPS certificate of the agent's and the operator's server: from
 * --tls-cert-file/--tls-key-file (reloaded when the files change, e.g. a
 * cert-manager Secret renewed under a mounted volume), else self-signed at
 * start (certificate.ts).
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server, type ServerOptions } from 'node:https';
import { hostname } from 'node:os';
import { createSecureContext } from 'node:tls';
import type { Logger } from '../log.ts';
import { fingerprintOf, selfSignedCertificate } from './certificate.ts';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export interface ServingTls {
  /** Where the certificate came from, for the start-up log. */
  readonly source: 'files' | 'self-signed';
  /** SHA-256 fingerprint of the certificate served now. */
  readonly fingerprint: string;
  /** An HTTPS server with this certificate (and the server's limits in `options`), swapped when the files change (a self-signed one never changes). */
  serve(handler: (req: IncomingMessage, res: ServerResponse) => void, options?: ServerOptions): Server;
  /** Stops following the files. */
  stop(): void;
}

/** How often mounted files are checked; Secret volumes update within about a minute anyway. */
const POLL_MS = 10_000;

/**
 * Reads and checks the files now (an error names the file and what is
 * wrong), or makes a self-signed certificate for `names` (DNS names and IPs
 * for subjectAltName besides localhost and the host name).
 */
export function servingTls(options: {
  files?: TlsFiles;
  commonName: string;
  names: readonly string[];
  log: Logger;
  pollMs?: number;
}): ServingTls {
  const { files, log } = options;
  if (files === undefined) {
    const made = selfSignedCertificate(options.commonName, [
      'localhost',
      '127.0.0.1',
      '::1',
      hostname().toLowerCase(),
      ...options.names.filter((n) => n !== '0.0.0.0' && n !== '::'),
    ]);
    return {
      source: 'self-signed',
      fingerprint: made.fingerprint,
      serve: (handler, serverOptions) => createServer({ ...serverOptions, ...made }, handler),
      stop: () => {},
    };
  }
  let current = readPair(files);
  let watching: (() => void) | undefined;
  return {
    source: 'files',
    get fingerprint() {
      return current.fingerprint;
    },
    serve(handler, serverOptions) {
      const server = createServer({ ...serverOptions, ...current }, handler);
      const reload = () => {
        try {
          const next = readPair(files);
          if (next.fingerprint === current.fingerprint) return;
          server.setSecureContext(next);
          current = next;
          log.info({ fingerprint: next.fingerprint, certFile: files.certFile }, 'TLS certificate reloaded');
        } catch (err) {
          // Mid-update (the certificate written, the key not yet): keep serving the old pair and retry at the next poll.
          log.warn(
            { err: (err as Error).message },
            'TLS certificate files changed but cannot be used; still serving the previous certificate',
          );
        }
      };
      for (const file of [files.certFile, files.keyFile])
        watchFile(file, { interval: options.pollMs ?? POLL_MS, persistent: false }, reload);
      watching = () => {
        for (const file of [files.certFile, files.keyFile]) unwatchFile(file, reload);
      };
      return server;
    },
    stop: () => watching?.(),
  };
}

/** The pair, checked: each file readable, the certificate PEM, the key matching it. */
function readPair(files: TlsFiles): { cert: string; key: string; fingerprint: string } {
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`${flag} '${path}': cannot be read: ${(err as Error).message}`, { cause: err });
    }
  };
  const cert = read('--tls-cert-file', files.certFile);
  const key = read('--tls-key-file', files.keyFile);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`--tls-cert-file '${files.certFile}': not a PEM certificate: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(
      `--tls-key-file '${files.keyFile}': not the private key of --tls-cert-file '${files.certFile}': ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { cert, key, fingerprint: fingerprintOf(x509.raw) };
}
