/**
 * The one pino root logger; modules take `log.child({ module })`. JSON by
 * default (for log collectors), pretty when a person watches a terminal.
 */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'pretty' | 'auto';

export function createLogger(options: { level: LogLevel; format: LogFormat; name?: string }): Logger {
  const pretty = options.format === 'pretty' || (options.format === 'auto' && process.stderr.isTTY === true);
  const base = { level: options.level, name: options.name ?? 'podmeter' };
  if (pretty) {
    return pino({
      ...base,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname' } },
    });
  }
  return pino(base, pino.destination({ dest: 2, sync: false }));
}
