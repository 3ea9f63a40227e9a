/**
 * How `podmeter top` and `podmeter maps --agent` read an agent's JSON API,
 * also when it runs with --metrics-auth kubernetes: HTTPS, and a bearer
 * token (--token, --token-file) that the agent has the Kubernetes API
 * review. The agent's self-signed certificate is trusted on localhost only
 * (where a man in the middle is already root on the node); anywhere else
 * it needs --ca-file.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { ConfigError } from '../common/flags/parse.ts';
import { pathValue } from '../common/flags/values.ts';

/** --token, --token-file, --ca-file: the same for every command that reads an agent. */
export const agentAccessFlags = {
  token: {
    metavar: 'TOKEN',
    help: "Bearer token for an agent with --metrics-auth kubernetes (e.g. from 'kubectl create token'); it needs get on the path (nonResourceURLs)",
    parse: (raw: string) => raw.trim(),
  },
  'token-file': {
    metavar: 'PATH',
    help: 'File holding the bearer token (e.g. a service account token)',
    parse: pathValue,
  },
  'ca-file': {
    metavar: 'PATH',
    help: 'PEM CA certificate(s) to verify an https agent with; without it only an agent on localhost is trusted unverified',
    parse: pathValue,
  },
} as const;

export interface AgentAccess {
  token?: string;
  ca?: string;
}

/** Reads --token-file and --ca-file now, so a wrong path is a usage error before any request. */
export function agentAccess(values: {
  token: string | undefined;
  'token-file': string | undefined;
  'ca-file': string | undefined;
}): AgentAccess {
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`${flag} '${path}': cannot be read: ${(err as Error).message}`, flag, path);
    }
  };
  if (values.token !== undefined && values['token-file'] !== undefined)
    throw new ConfigError('give --token or --token-file, not both', '--token');
  const token =
    values.token ??
    (values['token-file'] === undefined ? undefined : read('--token-file', values['token-file']).trim());
  if (token === '')
    throw new ConfigError(`${values.token === undefined ? '--token-file' : '--token'}: the token is empty`, '--token');
  return {
    ...(token === undefined ? {} : { token }),
    ...(values['ca-file'] === undefined ? {} : { ca: read('--ca-file', values['ca-file']) }),
  };
}

/** The agent URL when none is given: https when a token is, since an agent checking tokens serves HTTPS. */
export function defaultAgentUrl(access: AgentAccess): string {
  return `${access.token === undefined ? 'http' : 'https'}://127.0.0.1:9471`;
}

const LOCALHOST = new Set(['localhost', '127.0.0.1', '[::1]']);

/** GET `agent + path` as JSON; errors say what to do (start an agent, give a token, grant the path). */
export async function getFromAgent<T>(agent: string, path: string, access: AgentAccess, timeoutMs: number): Promise<T> {
  const url = new URL(path, `${agent}/`);
  const secure = url.protocol === 'https:';
  const headers = access.token === undefined ? {} : { authorization: `Bearer ${access.token}` };
  const tls = secure
    ? access.ca !== undefined
      ? { ca: access.ca }
      : { rejectUnauthorized: !LOCALHOST.has(url.hostname) }
    : {};
  let res: IncomingMessage;
  let body: string;
  try {
    ({ res, body } = await get(url, { headers, ...tls, signal: AbortSignal.timeout(timeoutMs) }, secure));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : (e.code ?? e.message);
    const hint =
      !secure && (e.code === 'ECONNRESET' || e.code === 'HPE_INVALID_CONSTANT')
        ? '; an agent with --metrics-auth kubernetes serves https: pass --agent https://... and --token or --token-file'
        : secure && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(e.code ?? '')
          ? '; pass --ca-file with the CA of its certificate (a self-signed agent certificate is trusted on localhost only)'
          : '';
    throw new Error(`cannot reach the agent at ${agent} (${why})${hint}`, { cause: err });
  }
  const status = res.statusCode ?? 0;
  const said = body.trim().split('\n')[0] ?? '';
  if (status === 401) {
    const what =
      access.token === undefined
        ? 'it checks Kubernetes tokens: pass --token or --token-file'
        : 'the token was not accepted (expired, or not a token of this cluster)';
    throw new Error(`agent at ${agent} answered 401 Unauthorized: ${what}${said ? ` (${said})` : ''}`);
  }
  if (status === 403)
    throw new Error(`agent at ${agent} answered 403 Forbidden: ${said || `the token may not get ${url.pathname}`}`);
  if (status < 200 || status >= 300)
    throw new Error(`agent at ${agent} answered ${status} ${res.statusMessage ?? ''}${said ? `: ${said}` : ''}`);
  return JSON.parse(body) as T;
}

function get(
  url: URL,
  options: Record<string, unknown>,
  secure: boolean,
): Promise<{ res: IncomingMessage; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (secure ? httpsRequest : httpRequest)(url, { method: 'GET', ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ res, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}
