/**
 * Serves the agent's map routes (mapRoutes: /api/v1/maps, /maps, /maps/chart.js)
 * for an inventory read from a JSON file, on 127.0.0.1 port 0, through the
 * agent's own HttpServer. Used to put the page in a network namespace of its
 * own next to a headless browser, so nothing outside that namespace is
 * reachable.
 *
 *   node test/maps/serve-maps.ts <inventory.json>
 *   prints {"port":P} once listening; exits when stdin closes.
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { HttpServer } from '../../common/http/server.ts';
import { mapRoutes } from '../../agent/maps/routes.ts';
import type { MapInventory } from '../../agent/maps/inventory.ts';

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: serve-maps.ts <inventory.json>\n');
  process.exit(2);
}
const inventory = JSON.parse(readFileSync(file, 'utf8')) as MapInventory;
const server = new HttpServer(pino({ level: 'silent' }));
for (const [path, route] of Object.entries(mapRoutes(() => inventory))) server.route(path, route);
const { port } = await server.listen('127.0.0.1', 0);
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => void server.close().then(() => process.exit(0)));
