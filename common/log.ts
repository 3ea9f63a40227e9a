/**
 * The one pino root logger; modules take `log.child({ module })`. JSON by
 * default (for log collectors), pretty when a person watches a terminal.
 */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'pretty', 'auto'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

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

/** Runs until SIGINT or SIGTERM, then `stop()` once, flushes the log and exits 0. */
export function stopOnSignals(log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await stop();
    log.flush();
    process.exit(0);
  };
  process.on('SIGINT', (s) => void onSignal(s));
  process.on('SIGTERM', (s) => void onSignal(s));
}
