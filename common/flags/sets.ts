/** The flags several commands share, one definition each. */
import type { ParseContext } from './parse.ts';
import { kubernetesName, oneOf } from './values.ts';
import { LOG_FORMATS, LOG_LEVELS } from '../log.ts';

/** `--namespace`: where podmeter's own objects live (the Downward API's POD_NAMESPACE in the chart). */
export function namespaceFlag(help: string) {
  return {
    metavar: 'NAMESPACE',
    help,
    parse: kubernetesName,
    defaultFrom: (ctx: ParseContext) => (ctx.env.POD_NAMESPACE ? { raw: ctx.env.POD_NAMESPACE, from: 'POD_NAMESPACE' } : { raw: 'podmeter', from: 'the default' }),
    defaultHelp: '$POD_NAMESPACE, else podmeter',
  };
}

/** --log-level and --log-format, the same for every long-running command. */
export const logFlags = {
  'log-level': {
    metavar: 'trace|debug|info|warn|error',
    help: 'Least severe level that is logged',
    parse: oneOf(LOG_LEVELS),
    default: 'info',
  },
  'log-format': {
    metavar: 'json|pretty|auto',
    help: 'Log line format; auto is pretty when stderr is a terminal, else json',
    parse: oneOf(LOG_FORMATS),
    default: 'auto',
  },
} as const;
