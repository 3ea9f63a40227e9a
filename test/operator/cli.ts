/**
 * `podmeter operator` and `podmeter top <pods|namespaces|workloads|nodes>`
 * for tests and benchmarks, with cli/main.ts's error handling (one line,
 * exit 2 for bad usage), independent of the subcommand table's wiring.
 *
 * Started with an IPC channel (a benchmark), the operator also answers the
 * message 'stats' with its memory after a full GC (needs --expose-gc) and
 * the number of API requests it has sent.
 */
import { ConfigError } from '../../cli/flags.ts';

const [command, ...argv] = process.argv.slice(2);
try {
  if (command === 'operator' && process.send !== undefined) await operatorWithStats(argv);
  else if (command === 'operator') await (await import('../../operator/main.ts')).runOperator(argv);
  else if (command === 'top') await (await import('../../cli/topCluster.ts')).runTopCluster(argv);
  else throw new ConfigError(`unknown command ${JSON.stringify(command)}`);
} catch (err) {
  process.stderr.write(`podmeter ${command}: ${(err as Error).message}\n`);
  process.exitCode = err instanceof ConfigError ? 2 : 1;
}

async function operatorWithStats(args: string[]): Promise<void> {
  const { parseOperatorConfig } = await import('../../operator/config.ts');
  const { startOperator } = await import('../../operator/main.ts');
  const { createLogger } = await import('../../agent/log.ts');
  const config = parseOperatorConfig(args, process.env);
  const operator = await startOperator(config, createLogger({ level: config.logLevel, format: config.logFormat, name: 'podmeter-operator' }));
  process.on('message', (msg) => {
    if (msg !== 'stats') return;
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    gc?.();
    const m = process.memoryUsage();
    process.send!({ heapUsed: m.heapUsed, heapTotal: m.heapTotal, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers, requests: operator.requests(), gc: gc !== undefined });
  });
  process.on('SIGTERM', () => void operator.stop().then(() => process.exit(0)));
  process.channel?.unref();
}
