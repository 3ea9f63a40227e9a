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

/** What a program's stop() reports as it goes, so a stop that hangs can say where. */
export type StopStep = (step: string) => void;

/** How long a stop may take before the process gives up and exits: below the kubelet's default 30 s grace period. */
export const STOP_GRACE_MS = 20_000;

/**
 * Runs until SIGINT or SIGTERM, then `stop()` once, flushes the log and
 * exits 0. A stop still running after `graceMs` is logged with the step it
 * was on and the process exits 1 (rather than hanging until a SIGKILL with
 * nothing said).
 */
export function stopOnSignals(log: Logger, stop: (step: StopStep) => Promise<void>, graceMs = STOP_GRACE_MS): void {
  let stopping = false;
  let current = 'starting to stop';
  const onSignal = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    setTimeout(() => {
      log.error({ step: current, graceMs }, `stop did not finish within ${graceMs} ms (stuck at: ${current}); exiting`);
      log.flush();
      process.exit(1);
    }, graceMs).unref();
    await stop((step) => {
      current = step;
      log.info({ step }, 'stopping');
    });
    log.flush();
    process.exit(0);
  };
  process.on('SIGINT', (s) => void onSignal(s));
  process.on('SIGTERM', (s) => void onSignal(s));
}
