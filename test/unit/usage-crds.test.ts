/**
 * The fields the operator checks in the installed CRDs at start
 * (operator/crds.ts) are those of the chart's CRDs: every leaf of their spec
 * and status schema, no more and no fewer. A field added to a CRD or to
 * what the operator writes without the other fails here.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { load } from 'js-yaml';
import { missingFields, WRITTEN_FIELDS } from '../../operator/crds.ts';
import type { UsageKind } from '../../common/contract/usage.ts';

interface Schema {
  properties?: Record<string, Schema>;
  items?: Schema;
}

const CRDS = new URL('../../helm/podmeter/crds/', import.meta.url).pathname;

function leaves(schema: Schema, prefix: string): string[] {
  if (schema.items) return leaves(schema.items, `${prefix}[]`);
  if (!schema.properties) return [prefix];
  return Object.entries(schema.properties).flatMap(([k, s]) => leaves(s, prefix === '' ? k : `${prefix}.${k}`));
}

test("the checked fields are the leaves of the chart's CRD schemas", () => {
  const kinds = new Set<string>();
  for (const file of readdirSync(CRDS).filter((f) => f.endsWith('.yaml'))) {
    const crd = load(readFileSync(join(CRDS, file), 'utf8')) as {
      spec: { names: { kind: UsageKind }; versions: { storage: boolean; schema: { openAPIV3Schema: Schema } }[] };
    };
    const kind = crd.spec.names.kind;
    kinds.add(kind);
    const schema = crd.spec.versions.find((v) => v.storage)!.schema.openAPIV3Schema;
    const expected = ['spec', 'status'].flatMap((top) =>
      schema.properties?.[top] ? leaves(schema.properties[top], top) : [],
    );
    assert.deepEqual([...WRITTEN_FIELDS[kind]].sort(), expected.sort(), kind);
    assert.deepEqual(missingFields(schema, WRITTEN_FIELDS[kind]), [], kind);
  }
  assert.deepEqual([...kinds].sort(), Object.keys(WRITTEN_FIELDS).sort());
});

test('a schema without a field, or without a list item field, is reported; preserve-unknown-fields takes anything', () => {
  const schema = {
    properties: {
      status: {
        properties: {
          pods: {},
          retiring: { items: { properties: { uid: {} } } },
          extra: { 'x-kubernetes-preserve-unknown-fields': true },
        },
      },
    },
  };
  assert.deepEqual(
    missingFields(schema, [
      'status.pods',
      'status.goneSince',
      'status.retiring[].uid',
      'status.retiring[].at',
      'status.extra.anything',
    ]),
    ['status.goneSince', 'status.retiring[].at'],
  );
  assert.deepEqual(missingFields(undefined, ['status.pods']), ['status.pods']);
});
