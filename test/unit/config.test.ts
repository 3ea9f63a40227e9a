import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { agentHelp, parseAgentConfig, type AgentConfig } from '../../agent/config.ts';
import { operatorHelp, parseOperatorConfig } from '../../operator/config.ts';
import { ConfigError, defineFlags, formatHelp, parseFlags, wantsHelp } from '../../common/flags/parse.ts';
import { switchFlag } from '../../common/flags/values.ts';

const ENV = { NODE_NAME: 'node-a' };

const DEFAULTS: AgentConfig = {
  serviceCidrs: [],
  discover: 'auto',
  cgroupRoot: undefined,
  bpffs: '/sys/fs/bpf/podmeter',
  stateDir: '/var/lib/podmeter',
  listen: { host: '0.0.0.0', port: 9471 },
  metricsAuth: 'none',
  intervalMs: 10_000,
  mapsIntervalMs: 30_000,
  retentionMs: 600_000,
  nodeName: 'node-a',
  kubeconfig: undefined,
  annotateIntervalMs: 60_000,
  annotateBudget: 1,
  podWatchIdleMs: 330_000,
  namespace: 'podmeter',
  logLevel: 'info',
  logFormat: 'auto',
  help: false,
};

test('defaults', () => {
  assert.deepEqual(parseAgentConfig([], ENV), DEFAULTS);
});

test('--service-cidr (repeatable, comma lists) and --conntrack-netns', () => {
  const config = parseAgentConfig(
    [
      '--service-cidr',
      '10.96.0.0/12,fd00:96::/108',
      '--service-cidr',
      '10.100.0.1',
      '--conntrack-netns',
      '/run/netns/x',
    ],
    ENV,
  );
  assert.deepEqual(
    config.serviceCidrs.map((p) => p.text),
    ['10.96.0.0/12', 'fd00:96::/108', '10.100.0.1/32'],
  );
  assert.equal(config.conntrackNetns, '/run/netns/x');
  assert.throws(() => parseAgentConfig(['--service-cidr', '10.96.0.0/33'], ENV), /--service-cidr/);
});

test('namespace: flag, then PODMETER_NAMESPACE, then POD_NAMESPACE, then podmeter; a bad name is an error', () => {
  assert.equal(parseAgentConfig(['--namespace', 'ops'], { POD_NAMESPACE: 'downward' }).namespace, 'ops');
  assert.equal(parseAgentConfig([], { PODMETER_NAMESPACE: 'env', POD_NAMESPACE: 'downward' }).namespace, 'env');
  assert.equal(parseAgentConfig([], { POD_NAMESPACE: 'downward' }).namespace, 'downward');
  assert.equal(parseAgentConfig([], {}).namespace, 'podmeter');
  assert.throws(
    () => parseAgentConfig(['--namespace', 'Not_A_Name'], {}),
    (err: Error) => err instanceof ConfigError && /--namespace/.test(err.message),
  );
});

test('node name: flag, then PODMETER_NODE_NAME, then NODE_NAME, then the host name', async (t) => {
  const cases: Array<[string, string[], Record<string, string>, string]> = [
    ['flag wins', ['--node-name', 'from-flag'], { PODMETER_NODE_NAME: 'from-env', NODE_NAME: 'downward' }, 'from-flag'],
    ['PODMETER_NODE_NAME', [], { PODMETER_NODE_NAME: 'from-env', NODE_NAME: 'downward' }, 'from-env'],
    ['NODE_NAME', [], { NODE_NAME: 'downward' }, 'downward'],
    ['host name, lower cased', [], {}, hostname().toLowerCase()],
  ];
  for (const [name, argv, env, expected] of cases) {
    await t.test(name, () => assert.equal(parseAgentConfig(argv, env).nodeName, expected));
  }
});

test('each flag, as --flag value, --flag=value and environment variable', async (t) => {
  const cases: Array<[flag: string, raw: string, expected: Partial<AgentConfig>]> = [
    ['discover', 'pods', { discover: 'pods' }],
    ['discover', 'children', { discover: 'children' }],
    ['cgroup-root', '/sys/fs/cgroup/unified', { cgroupRoot: '/sys/fs/cgroup/unified' }],
    ['cgroup-root', 'relative/dir', { cgroupRoot: resolve('relative/dir') }],
    ['bpffs', '/sys/fs/bpf/other', { bpffs: '/sys/fs/bpf/other' }],
    ['state-dir', '/tmp/state/', { stateDir: '/tmp/state' }],
    ['listen', '127.0.0.1:8080', { listen: { host: '127.0.0.1', port: 8080 } }],
    ['listen', '[::]:9471', { listen: { host: '::', port: 9471 } }],
    ['listen', '[fe80::1%eth0]:1', { listen: { host: 'fe80::1%eth0', port: 1 } }],
    ['listen', 'localhost:0', { listen: { host: 'localhost', port: 0 } }],
    ['listen', ':9471', { listen: { host: '0.0.0.0', port: 9471 } }],
    ['interval', '2.5', { intervalMs: 2500 }],
    ['interval', '.5', { intervalMs: 500 }],
    ['interval', '500ms', { intervalMs: 500 }],
    ['interval', '2m', { intervalMs: 120_000 }],
    ['retention', '0', { retentionMs: 0 }],
    ['retention', '1h', { retentionMs: 3_600_000 }],
    ['node-name', 'ip-10-0-0-1.ec2.internal', { nodeName: 'ip-10-0-0-1.ec2.internal' }],
    ['kubeconfig', '/etc/kube/config', { kubeconfig: '/etc/kube/config' }],
    ['annotate-interval', '30', { annotateIntervalMs: 30_000 }],
    ['annotate-budget', '0.25', { annotateBudget: 0.25 }],
    ['annotate-budget', '0', { annotateBudget: 0 }],
    ['log-level', 'debug', { logLevel: 'debug' }],
    ['log-format', 'json', { logFormat: 'json' }],
  ];
  for (const [flag, raw, expected] of cases) {
    const envName = `PODMETER_${flag.toUpperCase().replaceAll('-', '_')}`;
    const want = { ...DEFAULTS, ...expected };
    await t.test(`--${flag} ${raw}`, () => assert.deepEqual(parseAgentConfig([`--${flag}`, raw], ENV), want));
    await t.test(`--${flag}=${raw}`, () => assert.deepEqual(parseAgentConfig([`--${flag}=${raw}`], ENV), want));
    await t.test(`${envName}=${raw}`, () => assert.deepEqual(parseAgentConfig([], { ...ENV, [envName]: raw }), want));
  }
});

test('precedence and repetition', async (t) => {
  const cases: Array<[string, string[], Record<string, string>, number]> = [
    ['flag beats env', ['--interval', '3'], { PODMETER_INTERVAL: '7' }, 3000],
    ['env beats default', [], { PODMETER_INTERVAL: '7' }, 7000],
    ['empty env counts as unset', [], { PODMETER_INTERVAL: '' }, 10_000],
    ['last flag wins', ['--interval', '3', '--interval=4'], {}, 4000],
  ];
  for (const [name, argv, env, intervalMs] of cases) {
    await t.test(name, () => assert.equal(parseAgentConfig(argv, { ...ENV, ...env }).intervalMs, intervalMs));
  }
});

test('bad values name the flag and the value', async (t) => {
  const cases: Array<
    [argv: string[], env: Record<string, string>, message: string | RegExp, flag: string | undefined]
  > = [
    [['--interval', 'abc'], {}, '--interval: "abc" is not a number of seconds > 0', '--interval'],
    [['--interval=0'], {}, '--interval: "0" is not a number of seconds > 0', '--interval'],
    [['--interval=-1'], {}, '--interval: "-1" is not a number of seconds > 0', '--interval'],
    [['--interval', '1e3'], {}, '--interval: "1e3" is not a number of seconds > 0', '--interval'],
    [['--interval', 'Infinity'], {}, '--interval: "Infinity" is not a number of seconds > 0', '--interval'],
    [['--interval', '0.0001'], {}, '--interval: "0.0001" is shorter than 1 ms', '--interval'],
    [['--interval', '30d'], {}, '--interval: "30d" is not a number of seconds > 0', '--interval'],
    [['--retention', '9999999'], {}, /--retention: "9999999" is longer than 24 days/, '--retention'],
    [['--retention', '-5'], {}, '--retention: "-5" is not a number of seconds >= 0', '--retention'],
    [
      [],
      { PODMETER_INTERVAL: 'soon' },
      '--interval (from PODMETER_INTERVAL): "soon" is not a number of seconds > 0',
      '--interval',
    ],
    [['--discover', 'everything'], {}, '--discover: "everything" is not one of pods, children, auto', '--discover'],
    [
      ['--log-level=verbose'],
      {},
      '--log-level: "verbose" is not one of trace, debug, info, warn, error',
      '--log-level',
    ],
    [['--log-format=text'], {}, '--log-format: "text" is not one of json, pretty, auto', '--log-format'],
    [
      ['--annotate-budget', '-1'],
      {},
      '--annotate-budget: "-1" is not a number of writes per second >= 0',
      '--annotate-budget',
    ],
    [
      ['--annotate-budget', 'lots'],
      {},
      '--annotate-budget: "lots" is not a number of writes per second >= 0',
      '--annotate-budget',
    ],
    [
      ['--annotate-interval', '0'],
      {},
      '--annotate-interval: "0" is not a number of seconds > 0',
      '--annotate-interval',
    ],
    [['--listen', '9471'], {}, /--listen: "9471" is not HOST:PORT/, '--listen'],
    [['--listen', '::1:9471'], {}, /put an IPv6 address in brackets/, '--listen'],
    [['--listen', '[::]'], {}, /--listen: "\[::\]" is not HOST:PORT/, '--listen'],
    [['--listen', '[1.2.3.4]:80'], {}, /"1.2.3.4" is not an IPv6 address/, '--listen'],
    [['--listen', '0.0.0.0:65536'], {}, /the port must be a number from 0 to 65535/, '--listen'],
    [['--listen', '0.0.0.0:http'], {}, /the port must be a number from 0 to 65535/, '--listen'],
    [['--listen', 'bad_host:80'], {}, /"bad_host" is not an IP address or host name/, '--listen'],
    [['--listen', '999.1.1.1:80'], {}, /"999.1.1.1" is not an IP address or host name/, '--listen'],
    [['--node-name', 'Node_1'], {}, /--node-name: "Node_1" is not a valid Kubernetes name/, '--node-name'],
    [
      [],
      { NODE_NAME: 'UPPER' },
      /--node-name \(from NODE_NAME\): "UPPER" is not a valid Kubernetes name/,
      '--node-name',
    ],
    [['--bpffs='], {}, '--bpffs: "" is not a path', '--bpffs'],
    [['--state-dir', ' '], {}, '--state-dir: " " is not a path', '--state-dir'],
    [['--interval'], {}, '--interval needs a value: --interval SECONDS or --interval=SECONDS', '--interval'],
    [['--cgroup-root', '--interval', '3'], {}, /--cgroup-root needs a value/, '--cgroup-root'],
    [['--help=maybe'], {}, '--help: "maybe" is not true or false', '--help'],
    [['extra'], {}, 'unexpected argument "extra": podmeter agent takes only flags (see --help)', undefined],
    [['--', '--interval'], {}, /unexpected argument "--interval"/, undefined],
  ];
  for (const [argv, env, message, flag] of cases) {
    await t.test(`${argv.join(' ')} ${JSON.stringify(env)}`, () => {
      assert.throws(
        () => parseAgentConfig(argv, { ...ENV, ...env }),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.code, 'ERR_PODMETER_CONFIG');
          if (typeof message === 'string') assert.equal(error.message, message);
          else assert.match(error.message, message);
          assert.equal(error.flag, flag);
          return true;
        },
      );
    });
  }
});

test('unknown flags are rejected, with a suggestion when close', async (t) => {
  const cases: Array<[string, string]> = [
    ['--intervall', 'unknown flag --intervall; did you mean --interval?'],
    ['--cgroup_root', 'unknown flag --cgroup_root; did you mean --cgroup-root?'],
    ['--Node-Name', 'unknown flag --Node-Name; did you mean --node-name?'],
    ['--retent=5', 'unknown flag --retent; did you mean --retention?'],
    ['--log-levle', 'unknown flag --log-levle; did you mean --log-level?'],
    ['--bpfs', 'unknown flag --bpfs; did you mean --bpffs?'],
    ['--verbose', 'unknown flag --verbose (see --help)'],
    ['--constructor', 'unknown flag --constructor (see --help)'],
    ['-x', 'unknown flag -x (see --help)'],
  ];
  for (const [arg, message] of cases) {
    await t.test(arg, () => assert.throws(() => parseAgentConfig([arg], ENV), { name: 'ConfigError', message }));
  }
});

test('the config is frozen', () => {
  const config = parseAgentConfig([], ENV);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.listen));
});

test('--help and -h', async (t) => {
  await t.test('parse as a switch', () => {
    assert.equal(parseAgentConfig(['--help'], ENV).help, true);
    assert.equal(parseAgentConfig(['-h'], ENV).help, true);
    assert.equal(parseAgentConfig(['--help=false'], ENV).help, false);
  });
  await t.test('wantsHelp sees help even next to a bad flag', () => {
    assert.equal(wantsHelp(['--interval', 'abc', '--help']), true);
    assert.equal(wantsHelp(['-h']), true);
    assert.equal(wantsHelp(['--', '--help']), false);
    assert.equal(wantsHelp([]), false);
  });
});

test('agentHelp lists every flag with its default and environment variable', async (t) => {
  const flags: Array<[string, string | undefined]> = [
    ['--discover pods|children|auto', 'default auto; env PODMETER_DISCOVER'],
    [
      '--cgroup-root PATH',
      'default the cgroup2 mount: /sys/fs/cgroup, else /sys/fs/cgroup/unified, else any other; env PODMETER_CGROUP_ROOT',
    ],
    ['--bpffs PATH', 'default /sys/fs/bpf/podmeter; env PODMETER_BPFFS'],
    ['--state-dir PATH', 'default /var/lib/podmeter; env PODMETER_STATE_DIR'],
    ['--listen HOST:PORT', 'default 0.0.0.0:9471; env PODMETER_LISTEN'],
    ['--interval SECONDS', 'default 10; env PODMETER_INTERVAL'],
    ['--retention SECONDS', 'default 600; env PODMETER_RETENTION'],
    ['--node-name NAME', 'default $NODE_NAME, else the host name; env PODMETER_NODE_NAME'],
    ['--kubeconfig PATH', 'env PODMETER_KUBECONFIG'],
    ['--annotate-interval SECONDS', 'default 60; env PODMETER_ANNOTATE_INTERVAL'],
    ['--annotate-budget WRITES_PER_SECOND', 'default 1; env PODMETER_ANNOTATE_BUDGET'],
    ['--log-level trace|debug|info|warn|error', 'default info; env PODMETER_LOG_LEVEL'],
    ['--log-format json|pretty|auto', 'default auto; env PODMETER_LOG_FORMAT'],
    ['-h, --help', undefined],
  ];
  assert.match(agentHelp, /^Usage: podmeter agent \[flags\]/);
  for (const [flag, facts] of flags) {
    await t.test(flag, () => {
      assert.ok(agentHelp.includes(`  ${flag}\n`), `missing ${flag}`);
      if (facts) assert.ok(agentHelp.includes(`(${facts})`), `missing "${facts}" for ${flag}`);
    });
  }
  await t.test('no environment variable for --help', () => assert.ok(!agentHelp.includes('PODMETER_HELP')));
});

test('the flag core serves other subcommands with their own tables', () => {
  const table = defineFlags({
    json: switchFlag('Print JSON'),
    node: { metavar: 'NAME', help: 'Node to show', parse: (raw: string) => raw },
    limit: { metavar: 'N', help: 'Rows', parse: Number, default: 10, env: 'TOP_LIMIT' },
  });
  const parsed = parseFlags(
    table,
    ['--json', 'pods', '--node=n1'],
    { TOP_LIMIT: '5', MAPS_JSON: 'false' },
    { envPrefix: 'MAPS_' },
  );
  const typed: { json: boolean; node: string | undefined; limit: number } = parsed.values;
  assert.deepEqual(typed, { json: true, node: 'n1', limit: 5 });
  assert.deepEqual(parsed.positionals, ['pods']);
  assert.equal(parseFlags(table, [], { MAPS_JSON: '1' }, { envPrefix: 'MAPS_' }).values.json, true);
  assert.match(
    formatHelp(table, { usage: 'podmeter maps [flags]', summary: 's' }),
    /--limit N\n\s+Rows \(default 10; env TOP_LIMIT\)/,
  );
});

test('--metrics-auth: none by default; kubernetes with or without certificate files; the files go in pairs and only with kubernetes', () => {
  assert.equal(parseAgentConfig([], ENV).metricsAuth, 'none');
  assert.equal(parseAgentConfig([], ENV).tls, undefined);
  const secured = parseAgentConfig(
    ['--metrics-auth', 'kubernetes', '--tls-cert-file', 'tls.crt', '--tls-key-file', '/etc/tls.key'],
    ENV,
  );
  assert.equal(secured.metricsAuth, 'kubernetes');
  assert.deepEqual(secured.tls, { certFile: resolve('tls.crt'), keyFile: '/etc/tls.key' });
  assert.equal(parseAgentConfig([], { ...ENV, PODMETER_METRICS_AUTH: 'kubernetes' }).metricsAuth, 'kubernetes');
  const rejects = (argv: string[], pattern: RegExp) =>
    assert.throws(
      () => parseAgentConfig(argv, ENV),
      (err: Error) => err instanceof ConfigError && pattern.test(err.message),
      argv.join(' '),
    );
  rejects(['--metrics-auth', 'rbac'], /--metrics-auth: "rbac" is not one of none, kubernetes/);
  rejects(['--metrics-auth', 'kubernetes', '--tls-cert-file', 'tls.crt'], /--tls-cert-file needs --tls-key-file too/);
  rejects(['--metrics-auth', 'kubernetes', '--tls-key-file', 'tls.key'], /--tls-key-file needs --tls-cert-file too/);
  rejects(
    ['--tls-cert-file', 'tls.crt', '--tls-key-file', 'tls.key'],
    /are for HTTPS, which comes with --metrics-auth kubernetes/,
  );
  assert.match(agentHelp, /--metrics-auth none\|kubernetes/);
  // The operator takes the same three flags, with the same checks.
  assert.equal(parseOperatorConfig([], {}).metricsAuth, 'none');
  assert.deepEqual(
    parseOperatorConfig(['--metrics-auth=kubernetes', '--tls-cert-file=/c', '--tls-key-file=/k'], {}).tls,
    { certFile: '/c', keyFile: '/k' },
  );
  assert.throws(() => parseOperatorConfig(['--tls-key-file=/k'], {}), /--tls-key-file needs --tls-cert-file too/);
  assert.match(operatorHelp, /--tls-cert-file PATH/);
});

test('operator --usage-retention: a duration with a unit, days allowed beyond the 24-day timer limit', () => {
  assert.equal(parseOperatorConfig([], {}).usageRetentionMs, 30 * 86_400_000);
  assert.equal(parseOperatorConfig(['--usage-retention', '45d'], {}).usageRetentionMs, 45 * 86_400_000);
  assert.equal(parseOperatorConfig(['--usage-retention=90s'], {}).usageRetentionMs, 90_000);
  assert.equal(parseOperatorConfig(['--usage-retention=1.5h'], {}).usageRetentionMs, 5_400_000);
  for (const bad of ['30', '0s', '-1d', 'forever', '0.0001ms']) {
    assert.throws(
      () => parseOperatorConfig([`--usage-retention=${bad}`], {}),
      /--usage-retention: .* (is not a retention|above zero)/,
      bad,
    );
  }
  assert.match(operatorHelp, /--usage-retention DURATION/);
});
