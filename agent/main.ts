// ferry-agent: one per host; drives that host's Docker, runc and CRIU for the controller.

import { Command } from 'commander';
import { createLogger } from '../src/log/logger.js';
import { isFerryError } from '../src/protocol/index.js';
import { loadAgentConfig } from './config.js';
import { startAgent } from './server.js';

const program = new Command('ferry-agent')
  .description('Ferry host agent (settings also from FERRY_AGENT_* variables)')
  .option('--host <name>', 'host name')
  .option('--docker-socket <path>', 'dockerd socket')
  .option('--exec-root <dir>', "dockerd's --exec-root")
  .option('--listen <host:port>', 'WebSocket listen address')
  .option('--data-dir <dir>', 'per-migration state (tmpfs)')
  .option('--runc <path>', 'runc binary')
  .option('--criu <path>', 'CRIU 4.2+ binary');

async function main(): Promise<void> {
  program.parse();
  const flags = program.opts<Record<string, unknown>>();
  const cfg = loadAgentConfig(flags, process.env);
  const log = createLogger('agent', { host: cfg.host });
  const running = await startAgent(cfg, log);
  const shutdown = (sig: string): void => {
    log.info({ sig }, 'shutting down');
    // Peers get a close frame; one that does not answer within a second does not hold the exit.
    setTimeout(() => process.exit(0), 1000).unref();
    running.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.stdout.write(`ready ${running.url}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`ferry-agent: ${isFerryError(e) ? `${e.code}: ` : ''}${(e as Error).message}\n`);
  process.exit(isFerryError(e) && e.code === 'E_CONFIG' ? 2 : 1);
});
