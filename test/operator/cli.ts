/**
 * `podmeter operator` and `podmeter top <pods|namespaces|workloads|nodes>`
 * for tests and benchmarks, with cli/main.ts's error handling (one line,
 * exit 2 for bad usage), independent of the subcommand table's wiring.
 */
import { ConfigError } from '../../cli/flags.ts';

const [command, ...argv] = process.argv.slice(2);
try {
  if (command === 'operator') await (await import('../../operator/main.ts')).runOperator(argv);
  else if (command === 'top') await (await import('../../cli/topCluster.ts')).runTopCluster(argv);
  else throw new ConfigError(`unknown command ${JSON.stringify(command)}`);
} catch (err) {
  process.stderr.write(`podmeter ${command}: ${(err as Error).message}\n`);
  process.exitCode = err instanceof ConfigError ? 2 : 1;
}
