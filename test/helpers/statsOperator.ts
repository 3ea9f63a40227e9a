/**
 * `podmeter operator` for benchmarks: the same start as the CLI, plus an
 * IPC channel on which the message 'stats' is answered with the operator's
 * memory after a full GC (run node with --expose-gc) and the number of API
 * requests it has sent.
 *
 *   spawn(node, ['--expose-gc', 'test/helpers/statsOperator.ts', ...operator flags], { stdio: [..., 'ipc'] })
 */
import { parseOperatorConfig } from '../../operator/config.ts';
import { startOperator } from '../../operator/main.ts';
import { createLogger } from '../../common/log.ts';

const config = parseOperatorConfig(process.argv.slice(2), process.env);
const operator = await startOperator(config, createLogger({ level: config.logLevel, format: config.logFormat, name: 'podmeter-operator' }));
process.on('message', (msg) => {
  if (msg !== 'stats') return;
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  process.send?.({ heapUsed: m.heapUsed, heapTotal: m.heapTotal, rss: m.rss, external: m.external, requests: operator.requests(), gc: gc !== undefined });
});
process.on('SIGTERM', () => void operator.stop().then(() => process.exit(0)));
process.channel?.unref();
