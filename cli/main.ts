/**
 * `podmeter <command>`: dispatches to the agent, the operator and the
 * client commands. Errors end here: one line saying what failed, exit 2 for
 * bad usage and 1 for everything else.
 */
import { ConfigError, wantsHelp } from '../common/flags/parse.ts';

const usage = `usage: podmeter <command> [flags]

commands:
  agent      the node agent: counts per-pod (or per-cgroup) network bytes, serves /metrics
  operator   the cluster aggregator: namespace, workload and node totals, write budget
  top        live table of traffic per pod or cgroup from an agent; 'top pods|namespaces|workloads|nodes' cluster-wide
  maps       BPF map memory on this node: total, by map name, by owner process, by pod
  help       this text ('podmeter <command> --help' for a command's flags)

Run 'podmeter <command> --help' for the flags of a command.
`;

type Command = (argv: string[]) => Promise<void>;

const commands: Record<string, () => Promise<Command>> = {
  agent: async () => {
    const { parseAgentConfig, agentHelp } = await import('../agent/config.ts');
    return async (argv) => {
      if (wantsHelp(argv)) return void process.stdout.write(agentHelp);
      const config = parseAgentConfig(argv, process.env);
      const { runAgent } = await import('../agent/main.ts');
      await runAgent(config);
    };
  },
  top: async () => (await import('./top.ts')).runTop,
  maps: async () => (await import('./maps.ts')).runMaps,
  operator: async () => (await import('../operator/main.ts')).runOperator,
};

async function main(argv: string[]): Promise<void> {
  process.title = 'podmeter'; // the comm other tools (and podmeter maps) show for this process
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage);
    return;
  }
  const load = commands[name];
  if (load === undefined) {
    process.stderr.write(`podmeter: unknown command '${name}'\n\n${usage}`);
    process.exitCode = 2;
    return;
  }
  try {
    await (
      await load()
    )(rest);
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`podmeter ${name}: ${e.message}\n`);
    if (err instanceof ConfigError) process.stderr.write(`Run 'podmeter ${name} --help' for usage.\n`);
    process.exitCode = err instanceof ConfigError ? 2 : 1;
    // A start that failed half way can leave handles open (a listening server, timers): exit once
    // the log has had a moment to flush instead of running on without doing its job.
    setTimeout(() => process.exit(), 250);
  }
}

await main(process.argv.slice(2));
